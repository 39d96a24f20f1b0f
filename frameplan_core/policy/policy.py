"""``GoalPolicy``: the inference wrapper. (current frame, joint state, goal frame) -> the next ``chunk`` commands.

A policy folder holds ``policy.json`` (``{"kind": "frameplan-policy", "config": PolicyConfig}``) and
``model.safetensors``; ``from_pretrained("tiny")`` / ``("tiny-nogoal")`` load the embedded defaults from
``frameplan_core/weights/policy-tiny`` / ``policy-tiny-nogoal``."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch

from frameplan_core import atomic
from frameplan_core.device import resolve_device
from frameplan_core.errors import ConfigError, InputError, ModelError
from frameplan_core.image import ensure_rgb_uint8, fit
from frameplan_core.jsonfile import read_json
from frameplan_core.pixels import to_tensor
from frameplan_core.policy.config import EMBEDDED, GRIPPERS, JOINT_DIM, JOINTS, NO_GOAL, PolicyConfig
from frameplan_core.policy.data import commands_from_actions
from frameplan_core.policy.model import PolicyNet

log = logging.getLogger(__name__)

WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
KIND = "frameplan-policy"
CONFIG_FILE = "policy.json"
WEIGHTS_FILE = "model.safetensors"
ASPECT_TOL = 0.02  # a goal's width/height may differ from the frame's by this fraction (rounding of a resize)


def preset_folder(name: str) -> Path:
    return WEIGHTS_DIR / f"policy-{name}"


class GoalPolicy:
    """The network, its config (with the normalisation measured in training) and the pre/post-processing."""

    def __init__(self, config: PolicyConfig, net: PolicyNet | None = None, device: str | torch.device = "cpu",
                 source: str | None = None) -> None:
        self.config = config
        self.net = net if net is not None else PolicyNet(config)
        self.source = source
        self.device = resolve_device(device)
        self.net.to(self.device).eval()

    # ------------------------------------------------------------------ persistence
    @classmethod
    def from_config(cls, config: PolicyConfig | str = "tiny", seed: int = 0, device: str = "cpu") -> GoalPolicy:
        """Random weights (seeded): tests, and the start of a training run."""
        cfg = PolicyConfig.preset(config) if isinstance(config, str) else config
        torch.manual_seed(seed)
        return cls(cfg, PolicyNet(cfg), device)

    @classmethod
    def from_pretrained(cls, path_or_preset: str | Path = "tiny", device: str = "auto") -> GoalPolicy:
        """Load a policy folder, or an embedded one (``tiny`` / ``tiny-nogoal``; the specialists ``handover`` /
        ``stack`` and their ``-nogoal``). ModelError naming the folder when it is missing, not a policy, or its
        weights do not fit its config."""
        from safetensors.torch import load_file

        name = str(path_or_preset)
        folder = preset_folder(name) if name in EMBEDDED and not Path(name).exists() else Path(name)
        if name in EMBEDDED and not (folder / CONFIG_FILE).is_file():
            raise ModelError(f"the embedded policy {name!r} ({folder}) is not there: train one with "
                             "`frameplan train policy` and pass --policy PATH")
        cfg_path = folder / CONFIG_FILE
        if not folder.is_dir():
            raise ModelError(f"{folder}: policy folder not found")
        if not cfg_path.is_file():
            raise ModelError(f"{folder}: not a policy folder (no {CONFIG_FILE}; `frameplan train policy` writes one)")
        meta = read_json(cfg_path, ModelError, kind=None, what="the policy config")
        if not isinstance(meta, dict) or meta.get("kind") != KIND or not isinstance(meta.get("config"), dict):
            raise ModelError(f"{cfg_path}: not a {KIND} config (expected {{'kind': '{KIND}', 'config': {{...}}}})")
        raw = meta["config"]
        if raw.get("joint_dim", JOINT_DIM) != JOINT_DIM:
            raise ModelError(f"{folder}: the policy commands {raw.get('joint_dim')} joints but this robot has "
                             f"{JOINT_DIM} (2 arms x (7 joints + gripper)); it was trained for another robot")
        try:
            cfg = PolicyConfig.from_dict(raw, str(cfg_path))
        except ConfigError as exc:
            raise ModelError(str(exc)) from None
        if not cfg.stats:
            raise ModelError(f"{cfg_path}: no normalisation stats (an untrained policy?)")
        net = PolicyNet(cfg)
        wpath = folder / WEIGHTS_FILE
        if not wpath.is_file():
            raise ModelError(f"{folder}: no {WEIGHTS_FILE}")
        try:
            state = load_file(str(wpath))
        except Exception as exc:  # noqa: BLE001 - safetensors raises several types for a damaged file
            raise ModelError(f"{wpath}: cannot read the weights ({type(exc).__name__}: {exc})") from None
        expected = net.state_dict()
        missing = sorted(set(expected) - set(state))
        unexpected = sorted(set(state) - set(expected))
        wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
        if missing or unexpected or wrong:
            detail = "; ".join(part for part in (
                f"missing {missing[:3]}" if missing else "", f"unexpected {unexpected[:3]}" if unexpected else "",
                f"shape mismatch {wrong[:3]}" if wrong else "") if part)
            raise ModelError(f"{wpath}: weights do not fit the config in {CONFIG_FILE} ({detail})")
        net.load_state_dict({k: v.float() for k, v in state.items()})
        log.info("policy %s: %s, %.2f M parameters, goal %s", folder, cfg.name, net.parameter_count() / 1e6,
                 "on" if cfg.goal else "off (no-foresight baseline)")
        return cls(cfg, net, device, source=str(folder))

    def save_pretrained(self, folder: str | Path, overwrite: bool = True) -> Path:
        """Write ``policy.json`` + ``model.safetensors`` (fp32) atomically."""
        from safetensors.torch import save

        folder = Path(folder)
        self.config.check_stats()
        state = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in self.net.state_dict().items()}
        with atomic.atomic_dir(folder, overwrite=overwrite) as tmp:
            atomic.write_bytes(tmp / WEIGHTS_FILE, save(state, metadata={"format": "pt"}))
            atomic.write_json(tmp / CONFIG_FILE, {"kind": KIND, "config": self.config.to_dict()})
        return folder

    # ------------------------------------------------------------------ normalisation
    def _stats(self) -> dict[str, np.ndarray]:
        s = self.config.stats
        if not s:
            z, o = np.zeros(JOINT_DIM), np.ones(JOINT_DIM)
            return {"state_mean": z, "state_std": o, "action_mean": np.zeros((self.config.chunk, JOINT_DIM)),
                    "action_std": np.ones((self.config.chunk, JOINT_DIM))}
        return {k: np.asarray(v, dtype=np.float64) for k, v in s.items()}

    def normalize_state(self, state: np.ndarray) -> np.ndarray:
        st = self._stats()
        return ((np.asarray(state, np.float64) - st["state_mean"]) / st["state_std"]).astype(np.float32)

    def decode(self, out: np.ndarray) -> np.ndarray:
        """Network output (..., chunk, 16) -> actions: joints de-normalised, grippers through the sigmoid."""
        st = self._stats()
        act = np.asarray(out, np.float64) * st["action_std"] + st["action_mean"]
        act[..., list(GRIPPERS)] = 1.0 / (1.0 + np.exp(-np.asarray(out, np.float64)[..., list(GRIPPERS)]))
        return act

    # ------------------------------------------------------------------ inputs
    def prepare(self, image: np.ndarray, where: str = "image") -> np.ndarray:
        """Any-size RGB uint8 frame -> the model's S x S input (``fit`` with the config's crop)."""
        image = ensure_rgb_uint8(image, where)
        return fit(image, self.config.image_size, self.config.crop)

    def check_goal(self, goal: np.ndarray, image: np.ndarray) -> None:
        """A goal must show the same field of view as the frame: the same size, or a size with the same aspect
        ratio (resized like the frame); another aspect ratio is refused."""
        goal = ensure_rgb_uint8(goal, "goal image")
        (h, w), (gh, gw) = image.shape[:2], goal.shape[:2]
        if (gh, gw) != (h, w) and abs((gw / gh) / (w / h) - 1.0) > ASPECT_TOL:
            raise InputError(f"goal image is {gw}x{gh} but the camera frame is {w}x{h} (aspect {gw / gh:.2f} vs "
                             f"{w / h:.2f}): a goal must show the camera's field of view; map a model-size prediction "
                             "back first (FramePredictor.predict(..., output_size='input'), image.unfit)")

    def check_state(self, state) -> np.ndarray:
        arr = np.asarray(state, dtype=np.float64)
        if arr.shape != (JOINT_DIM,):
            raise InputError(f"joint state: expected {JOINT_DIM} numbers [left joints 1..7, left gripper, right joints "
                             f"1..7, right gripper], got shape {arr.shape}")
        if not np.isfinite(arr).all():
            raise InputError(f"joint state entries {np.flatnonzero(~np.isfinite(arr)).tolist()} are not finite")
        return arr

    # ------------------------------------------------------------------ acting
    @torch.no_grad()
    def act(self, image: np.ndarray, joint_state, goal: np.ndarray | None = None,
            guidance: float | None = None) -> np.ndarray:
        """The next ``chunk`` commands (chunk, 16) as absolute targets: joints in rad, grippers in [0, 1].

        ``goal`` is required by a goal-conditioned policy unless it was trained with ``goal_dropout`` (then None
        means "no goal": the no-goal token), and ignored by the no-foresight baseline. ``guidance`` overrides the
        config's action guidance (PolicyConfig)."""
        image = ensure_rgb_uint8(image, "image")
        state = self.check_state(joint_state)
        c = self.config
        w = c.check_guidance(c.guidance if guidance is None else guidance)
        x = self.prepare(image)
        batch = [x]
        if c.goal:
            if goal is None and not c.goal_dropout:
                raise InputError("this policy is goal-conditioned: pass a goal frame (or use a goal: false policy)")
            no_goal = np.full_like(x, NO_GOAL)
            if goal is None:
                batch = [np.concatenate([x, no_goal], axis=-1)]
            else:
                self.check_goal(goal, image)
                batch = [np.concatenate([x, self.prepare(goal, "goal image")], axis=-1)]
                if w != 1.0:
                    batch.append(np.concatenate([x, no_goal], axis=-1))
        images = torch.stack([to_tensor(b) for b in batch]).to(self.device)
        s = torch.from_numpy(self.normalize_state(state))[None].to(self.device).expand(len(batch), -1)
        out = self.net(images, s).float().cpu().numpy()
        out = out[1] + w * (out[0] - out[1]) if len(batch) == 2 else out[0]
        return commands_from_actions(self.decode(out), state, c.action)

    def describe(self) -> str:
        c = self.config
        goal = "on" if c.goal else "off"
        if c.goal and c.goal_dropout:
            goal += f" (dropout {c.goal_dropout:g}, guidance {c.guidance:g})"
        return (f"policy {c.name} ({self.source or 'in memory'}): {self.net.parameter_count() / 1e6:.2f} M parameters, "
                f"{c.image_size} px {c.crop}, goal {goal}, chunk {c.chunk} x {c.step_ticks} ticks, {c.action} actions")


__all__ = ["GoalPolicy", "JOINTS", "preset_folder"]
