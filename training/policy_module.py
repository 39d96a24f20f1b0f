"""Behaviour cloning of the frameplan_core ``GoalPolicy`` network (``frameplan train policy``) on the policy frame
cache (frameplan_core.policy.data) with hindsight goals.

Loss: smooth-L1 on the joint entries of the action chunk, normalised per (chunk step, joint) by the training
split's statistics, plus ``gripper_loss_weight`` x binary cross-entropy of the gripper commands (targets in
[0, 1]). The normalisation is measured on the train split when the run starts, stored in every checkpoint (so a
resumed or exported run keeps it even when the data grew) and written into the exported ``policy.json``.

Augmentation (training only, seeded per sample): random shifts of each image, shared colour jitter, goal blur
(predicted goals are smoother than real frames), Gaussian noise on the input joint angles, and with ``goal_dropout``
the goal replaced by the no-goal token, so that one network learns to act with and without foresight (the
difference is what action guidance scales)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from frameplan_training.base_module import FrameplanModule
from frameplan_training.config import PolicyTrainConfig
from torch.utils.data import Dataset

from frameplan_core.errors import ConfigError, DataError, ModelError
from frameplan_core.policy.config import GRIPPERS, JOINTS, NO_GOAL, PolicyConfig
from frameplan_core.policy.data import PolicySamples, build_cache, check_geometry, is_cache

log = logging.getLogger(__name__)

STAT_KEYS = ("state_mean", "state_std", "action_mean", "action_std")


# ----------------------------------------------------------------------------------------------- data

def prepare_data(cfg: PolicyTrainConfig, data: str | Path, out: str | Path) -> Path:
    """The frame cache to train on: ``data`` itself when it is one, else a cache built (or refreshed: episodes
    already in it are reused) from the episodes under ``data`` at ``cfg.cache`` or ``<out>/data``."""
    data = Path(data)
    if is_cache(data):
        check_geometry(data, cfg.image_size, cfg.crop, cfg.camera, "the config asks for", error=ConfigError,
                       remedy="pass the episodes folder to rebuild, or match the config")
        return data
    cache = Path(cfg.cache) if cfg.cache else Path(out) / "data"
    if cache.resolve() == data.resolve() or data.resolve() in cache.resolve().parents:
        raise ConfigError(f"cache={cache}: must not be inside --data {data} (the episodes folder is read-only input)")
    log.info("building the policy frame cache %s from %s (episodes already cached are reused)", cache, data)
    build_cache(data, cache, image_size=cfg.image_size, crop=cfg.crop, camera=cfg.camera, tasks=cfg.tasks,
                val_fraction=cfg.val_fraction, seed=cfg.seed)
    return cache


def fast_color_jitter(images: list[np.ndarray], rng: np.random.Generator, strength: float) -> list[np.ndarray]:
    """Brightness, contrast and saturation factors in [1 - s, 1 + s], the same for every image (the contrast pivot is
    the first image's mean grey), as training/augment.color_jitter but with OpenCV look-up tables and blending:
    ~10x faster on the policy's small frames, where the float version cost as much as the network step."""
    if strength <= 0:
        return images
    b, c, sat = rng.uniform(1 - strength, 1 + strength, size=3)
    pivot = float(cv2.cvtColor(images[0], cv2.COLOR_RGB2GRAY).mean())
    lut = np.clip(np.rint((np.arange(256) * b - pivot * b) * c + pivot * b), 0, 255).astype(np.uint8)
    out = []
    for im in images:
        x = cv2.LUT(im, lut)
        grey = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
        out.append(cv2.addWeighted(x, float(sat), grey, float(1 - sat), 0.0))
    return out


def images_to_float(images: torch.Tensor) -> torch.Tensor:
    """A batch of uint8 (B, C, S, S) images -> float in [-1, 1] (done per batch: per item it cost ~3 ms)."""
    return images.float().div_(127.5).sub_(1.0)


def _shift(image: np.ndarray, rng: np.random.Generator, pad: int) -> np.ndarray:
    if pad <= 0:
        return image
    h, w = image.shape[:2]
    padded = cv2.copyMakeBorder(image, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    y, x = (int(v) for v in rng.integers(0, 2 * pad + 1, size=2))
    return padded[y : y + h, x : x + w]


class PolicyDataset(Dataset):
    """Items ``{"images" (3 or 6, S, S) uint8 (made float per batch: ``images_to_float``), "state" (16,)
    rad/opening, "action" (chunk, 16), "index", "task", "goal_t", "t"}``; keys are ``index`` or
    ``(index, augmentation_seed)`` (sampler.py)."""

    def __init__(self, root: str | Path, split: str | None, cfg: PolicyTrainConfig, augment: bool) -> None:
        self.samples = PolicySamples(root, split, cfg.chunk, cfg.interval, cfg.action,
                                     segment_prob=cfg.segment_prob if augment else 0.0, tasks=cfg.tasks)
        self.cfg, self.augment = cfg, augment
        # training draws segment-onset samples onset_repeat times per epoch (validation: every sample once)
        repeats = np.ones(len(self.samples), np.int64)
        if augment and cfg.onset_repeat > 1:
            repeats[self.samples.onsets(cfg.onset_frames)] = cfg.onset_repeat
        self.order = np.repeat(np.arange(len(self.samples)), repeats)

    def __len__(self) -> int:
        return len(self.order)

    def __getitem__(self, key: Any) -> dict[str, Any]:
        i, seed = (int(key[0]), int(key[1])) if isinstance(key, (tuple, list)) else (int(key), None)
        i = int(self.order[i])
        rng = np.random.default_rng(seed) if (seed is not None and self.augment) else None
        s = self.samples.get(i, rng)
        c = self.cfg
        frame, goal, state = s.frame, s.goal, s.state.copy()
        if rng is not None:
            frame, goal = _shift(frame, rng, c.shift), _shift(goal, rng, c.shift)
            if c.goal_blur_prob > 0 and rng.random() < c.goal_blur_prob:
                goal = cv2.GaussianBlur(goal, (0, 0), float(rng.uniform(0.5, 1.5)))
            frame, goal = fast_color_jitter([frame, goal], rng, c.color_jitter)
            if c.state_noise > 0:
                state[list(JOINTS)] += rng.normal(0.0, c.state_noise, len(JOINTS)).astype(np.float32)
            if c.goal and c.goal_dropout > 0 and rng.random() < c.goal_dropout:
                goal = np.full_like(goal, NO_GOAL)  # after the jitter: the token is exact
        images = np.concatenate([frame, goal], axis=-1) if c.goal else frame
        item = {"images": torch.from_numpy(np.ascontiguousarray(images.transpose(2, 0, 1))),
                "state": torch.from_numpy(state),
                "action": torch.from_numpy(s.action), "index": i, "task": s.task, "t": s.t, "goal_t": s.goal_t}
        if seed is not None:
            item["seed"] = seed
        return item


# ----------------------------------------------------------------------------------------------- model

def load_policy(cfg: PolicyTrainConfig, device: str = "cpu"):
    """The GoalPolicy a run starts from: the preset with the run's settings (random, seeded), or a saved policy
    folder to continue (its goal/chunk/action/image_size/crop/camera must be the run's)."""
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.config import PRESETS

    settings = {"goal": cfg.goal, "chunk": cfg.chunk, "action": cfg.action, "image_size": cfg.image_size,
                "crop": cfg.crop, "camera": cfg.camera, "interval": cfg.interval, "goal_dropout": cfg.goal_dropout}
    if cfg.model in PRESETS and not Path(cfg.model).exists():
        # the run's settings decide (goal too): the preset name only picks the architecture's defaults
        return GoalPolicy.from_config(PolicyConfig.preset(cfg.model, **settings), seed=cfg.seed, device=device)
    policy = GoalPolicy.from_pretrained(cfg.model, device=device)
    differ = [f"{k}: {getattr(policy.config, k)!r} (model) vs {v!r} (config)" for k, v in settings.items()
              if k not in ("interval", "goal_dropout") and getattr(policy.config, k) != v]
    if differ:
        raise ConfigError(f"model={cfg.model}: a saved policy is continued with its own layout; {'; '.join(differ)}")
    policy.config.interval, policy.config.goal_dropout = cfg.interval, cfg.goal_dropout
    return policy


class PolicyModule(FrameplanModule):
    def __init__(self, cfg: PolicyTrainConfig, policy) -> None:
        super().__init__(cfg)
        self.policy = policy
        self.net = policy.net  # registered here, the same object GoalPolicy.act runs
        self.net.train()
        stats = policy.config.stats or {}
        for key in STAT_KEYS:  # buffers (moved with the module); filled from the data in setup() when empty
            self.register_buffer(key, torch.tensor(stats[key], dtype=torch.float32) if key in stats else
                                 torch.empty(0), persistent=False)

    # ------------------------------------------------------------ normalisation
    @property
    def has_stats(self) -> bool:
        return self.state_mean.numel() > 0

    def set_stats(self, stats: dict) -> None:
        for key in STAT_KEYS:
            setattr(self, key, torch.tensor(stats[key], dtype=torch.float32, device=self.device))
        self.policy.config.stats = {k: np.asarray(stats[k], dtype=np.float64).tolist() for k in STAT_KEYS}
        self.policy.config.check_stats()

    def stats_dict(self) -> dict:
        return {k: getattr(self, k).detach().cpu().tolist() for k in STAT_KEYS}

    def setup(self, stage: str) -> None:
        """Measure the normalisation on the train split unless the model (a continued policy) or a checkpoint
        being resumed brings its own (on_load_checkpoint runs after this and overrides it)."""
        if self.has_stats:
            return
        dm = self.trainer.datamodule if self.trainer is not None else None
        if dm is None or dm.train_set is None:
            raise DataError("policy training: no training data to measure the normalisation on")
        self.set_stats(dm.train_set.samples.stats())
        self.policy.config.task_frames = dm.train_set.samples.task_frames()
        log.info("policy normalisation measured on %d training frames", len(dm.train_set.samples))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["policy_stats"] = self.stats_dict()
        checkpoint["policy_task_frames"] = dict(self.policy.config.task_frames)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        super().on_load_checkpoint(checkpoint)
        stats = checkpoint.get("policy_stats")
        if not stats:
            raise ModelError("checkpoint has no policy_stats (not a policy checkpoint?)")
        self.set_stats(stats)
        self.policy.config.task_frames = {str(k): float(v) for k, v in checkpoint.get("policy_task_frames", {}).items()}

    # ------------------------------------------------------------ training
    def trainable_named_parameters(self):
        return [(f"net.{n}", p) for n, p in self.net.named_parameters()]

    def normalized_state(self, state: torch.Tensor) -> torch.Tensor:
        return (state - self.state_mean) / self.state_std

    def compute_loss(self, batch: dict, generator, train: bool) -> tuple[torch.Tensor, dict]:
        c: PolicyTrainConfig = self.cfg
        joints, grippers = list(JOINTS), list(GRIPPERS)
        out = self.net(images_to_float(batch["images"]), self.normalized_state(batch["state"].float()))
        action = batch["action"].float()
        target = (action - self.action_mean) / self.action_std
        joint_loss = F.smooth_l1_loss(out[..., joints], target[..., joints], beta=0.5)
        grip_loss = F.binary_cross_entropy_with_logits(out[..., grippers], action[..., grippers].clamp(0, 1))
        loss = joint_loss + c.gripper_loss_weight * grip_loss
        with torch.no_grad():
            pred = out[..., joints] * self.action_std[..., joints] + self.action_mean[..., joints]
            mae = (pred - action[..., joints]).abs()
            grip_acc = ((out[..., grippers] > 0) == (action[..., grippers] > 0.5)).float().mean()
        return loss, {"joint_loss": joint_loss.detach(), "gripper_bce": grip_loss.detach(),
                      "joint_mae_rad": mae.mean(), "joint_mae_first_rad": mae[:, 0].mean(),
                      "gripper_acc": grip_acc}

    # ------------------------------------------------------------ samples and export
    @torch.no_grad()
    def sample_rows(self, n: int) -> list[tuple]:
        """(current, goal, chart) per validation sample: the chart shows, for each joint, the target (green) and
        predicted (red) offset at the chunk's last step, in units of the training std."""
        ds = self.trainer.datamodule.val_set
        items = [ds[i * max(1, len(ds) // max(1, n))] for i in range(min(n, len(ds)))]
        if not items:
            return []
        was = self.net.training
        self.net.eval()
        try:
            with self.ema_applied():
                out = self.net(images_to_float(torch.stack([it["images"] for it in items]).to(self.device)),
                               self.normalized_state(torch.stack([it["state"] for it in items]).to(self.device)))
        finally:
            self.net.train(was)
        rows = []
        for it, o in zip(items, out):
            target = ((it["action"].to(self.device) - self.action_mean) / self.action_std)[-1]
            imgs = it["images"].permute(1, 2, 0).numpy()  # uint8 (S, S, 3 or 6)
            cur = np.ascontiguousarray(imgs[..., :3])
            goal = np.ascontiguousarray(imgs[..., 3:6]) if imgs.shape[-1] == 6 else np.zeros_like(cur)
            rows.append((cur, goal, _bar_chart(target.cpu().numpy(), o[-1].cpu().numpy(), cur.shape[0])))
        return rows

    def export(self, folder: str | Path) -> Path:
        from frameplan_training.export import to_fp16_where_safe

        if not self.has_stats:
            raise ModelError("policy export: the normalisation was never measured (no training data seen)")
        self.policy.config.stats = self.stats_dict()  # the buffers are what the weights were trained with
        self.net.eval()
        try:
            with self.ema_applied():
                out = self.policy.save_pretrained(folder)
        finally:
            self.net.train()
        if self.cfg.export_fp16:
            to_fp16_where_safe(out)
        return Path(out)


def _bar_chart(target: np.ndarray, pred: np.ndarray, height: int) -> np.ndarray:
    """A small (height, 2*height) chart of 14 joints: target bar green, prediction red (clipped to +-3 std)."""
    w = 2 * height
    img = np.full((height, w, 3), 255, np.uint8)
    mid = height // 2
    cv2.line(img, (0, mid), (w - 1, mid), (180, 180, 180), 1)
    joints = list(JOINTS)
    col = w / len(joints)
    for k, j in enumerate(joints):
        x0 = int(k * col + 1)
        for dx, value, color in ((0, target[j], (40, 170, 40)), (int(col / 2), pred[j], (220, 40, 40))):
            y = int(mid - np.clip(value, -3, 3) / 3 * (mid - 2))
            cv2.rectangle(img, (x0 + dx, min(mid, y)), (x0 + dx + max(1, int(col / 2) - 2), max(mid, y)), color, -1)
    return img


__all__ = ["PolicyDataset", "PolicyModule", "load_policy", "prepare_data"]
