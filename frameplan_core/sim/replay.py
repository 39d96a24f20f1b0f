"""Open-loop replay of a recorded episode's commands: rebuild the scene from scene_info.json (task, seed,
augmentation record), send every saved frame's ``joint_command_full`` through ``SimEnv`` (linearly interpolated
over the episode's save_freq ticks, with the ramp's velocity as feed-forward), and compare the outcome with the
recording: success, final object poses, and the measured joints at every saved frame.

A replay is the check that recorded actions reproduce the expert's episode -- the precondition for imitating it."""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from frameplan_core.errors import ConfigError, DataError

_JOINTS = np.r_[0:7, 8:15]  # the 14 arm joints of a 16-d vector (grippers are openings, not angles)
LAYOUT_TOL_M = 1e-4  # initial object positions must match the recording this closely (they are stored to 1e-6 m)


@dataclass
class ReplayResult:
    """What one replay found. Pose errors compare the replay's final object poses with scene_info's ``final``."""

    episode: str
    task: str
    seed: int
    frames: int
    save_freq: int
    ticks: int
    success: bool
    first_success_tick: int | None
    objects: dict = field(default_factory=dict)  # name -> {position_error_m, rotation_error_deg, initial_error_m}
    max_position_error_m: float = 0.0
    layout_ok: bool = True  # the rebuilt scene starts where the recorded one did
    joint_error_max_rad: float | None = None  # measured arm joints vs joint_state_full at the saved frames
    joint_error_mean_rad: float | None = None
    image_diff: dict | None = None  # camera -> mean |replayed - recorded| pixel difference (0..255), if rendered
    seconds: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line for people."""
        where = f"{self.task} {Path(self.episode).name} (seed {self.seed}, {self.frames} frames x {self.save_freq} ticks)"
        ok = (f"SUCCESS (goal first held at tick {self.first_success_tick} of {self.ticks})" if self.success
              else f"FAILED (goal not reached after {self.ticks} ticks)")
        poses = ", ".join(f"{k} {1000 * v['position_error_m']:.1f} mm / {v['rotation_error_deg']:.1f} deg"
                          for k, v in self.objects.items())
        parts = [f"{where}: {ok}", f"final pose error vs recording: {poses or 'no objects recorded'}"]
        if self.joint_error_max_rad is not None:
            parts.append(f"joints max {self.joint_error_max_rad:.4f} rad (mean {self.joint_error_mean_rad:.4f})")
        if self.image_diff:
            parts.append("images " + ", ".join(f"{c} {d:.2f}" for c, d in self.image_diff.items()))
        if not self.layout_ok:
            parts.append("WARNING: the rebuilt scene does not start where the recording did "
                         "(collected with other code or config?)")
        return "; ".join(parts) + f"; {self.seconds:.1f} s"


def _angle_deg(q1: Sequence[float], q2: Sequence[float]) -> float:
    d = abs(float(np.dot(np.asarray(q1, dtype=np.float64), np.asarray(q2, dtype=np.float64))))
    return math.degrees(2.0 * math.acos(min(1.0, d)))


def episode_plan(ep) -> dict:
    """What a replay needs from an opened episode -- task, seed, save_freq, sim_steps, augmentation, recorded
    object poses, commands (frames, 16) and measured states -- or a DataError naming the episode and the gap."""
    from frameplan_core.sim.task_config import TASK_NAMES

    info = ep.scene_info
    if not info:
        raise DataError(f"{ep.path}: no scene_info.json entry 'episode_{ep.index}' next to it: a replay needs the task "
                        "and seed the episode was collected with (frameplan collect writes them)")
    missing = [k for k in ("task", "seed", "save_freq") if k not in info]
    if missing:
        raise DataError(f"{ep.path}: scene_info has no {', '.join(missing)} (have {sorted(info)})")
    task = info["task"]
    if task not in TASK_NAMES:
        raise DataError(f"{ep.path}: task {task!r} is not one of the simulated tasks {list(TASK_NAMES)}")
    numbers = {}
    for key in ("seed", "save_freq", "frames", "sim_steps"):
        if key in info:
            try:
                numbers[key] = int(info[key])
            except (TypeError, ValueError):
                raise DataError(f"{ep.path}: scene_info {key} must be an integer, got {info[key]!r}") from None
    objects = info.get("objects") or {}
    for name, rec in objects.items():
        for key in ("initial", "final"):
            pose = rec.get(key) if isinstance(rec, dict) else None
            if not (isinstance(pose, list) and len(pose) == 7 and all(isinstance(v, (int, float)) for v in pose)):
                raise DataError(f"{ep.path}: scene_info objects/{name}/{key} must be [x, y, z, qw, qx, qy, qz]")
    vectors = ep.full_vectors(require=("joint_command_full",))
    commands = vectors["joint_command_full"]
    if numbers.get("frames", len(commands)) != len(commands):
        raise DataError(f"{ep.path}: scene_info says {info['frames']} frames but the episode has {len(commands)}")
    save_freq = numbers["save_freq"]
    if save_freq < 1:
        raise DataError(f"{ep.path}: scene_info save_freq must be >= 1, got {save_freq}")
    span = (len(commands) - 1) * save_freq
    sim_steps = numbers.get("sim_steps", span)
    if not span <= sim_steps < span + save_freq:
        raise DataError(f"{ep.path}: scene_info sim_steps {sim_steps} does not fit {len(commands)} frames saved every "
                        f"{save_freq} ticks")
    return {"task": task, "seed": numbers["seed"], "save_freq": save_freq, "sim_steps": sim_steps,
            "camera_type": info.get("camera_type") or ep.camera_type or None,
            "render": [f"{k}={str(v).lower() if isinstance(v, bool) else v}"
                       for k, v in (info.get("render") or {}).items()],
            "augmentation": info.get("augmentation") or {}, "objects": objects,
            "commands": commands, "states": vectors.get("joint_state_full")}


def replay_episode(path: str | Path, cameras: Sequence[str] = (), interpolate: bool = True, feedforward: bool = True,
                   overrides: list[str] | None = None) -> ReplayResult:
    """Replay the episode at ``path`` open loop. ``cameras`` (e.g. ("head_camera",)) renders them at every saved
    frame and compares with the recorded images (slower; the episode's camera type); by default nothing renders.
    ``overrides`` are task config ``key=value`` settings (e.g. ``camera_config=...`` for a custom camera type)."""
    from frameplan_core.data.episode import open_episode
    from frameplan_core.sim.env import SimEnv

    t0 = time.perf_counter()
    ep = open_episode(path)
    plan = episode_plan(ep)
    cams = tuple(cameras)
    if cams:
        have = ep.cameras()
        absent = [c for c in cams if c not in have]
        if absent:
            raise DataError(f"{ep.path}: no recorded {', '.join(absent)} to compare with (have {have})")
    # the process keeps one renderer, so a fresh env per episode costs only the scene (about 0.4 s)
    # the recorded render settings first, so that the caller's overrides win
    overrides = [*plan["render"], *(overrides or [])] or None
    with SimEnv(cameras=cams, camera_type=plan["camera_type"] if cams else None, overrides=overrides,
                render_every=0, feedforward=feedforward) as env:
        try:
            env.reset(plan["task"], plan["seed"], augment=plan["augmentation"])
        except ConfigError as exc:
            if cams and "camera type" in str(exc):
                raise ConfigError(f"{ep.path}: {exc} (the episode's camera type; point the camera_config "
                                  "override at the camera YAML it was collected with)") from None
            raise
        result = _run(env, ep, plan, cams, interpolate)
    result.seconds = time.perf_counter() - t0
    return result


def _run(env, ep, plan: dict, cams: tuple, interpolate: bool) -> ReplayResult:
    commands, states, sf = plan["commands"], plan["states"], plan["save_freq"]
    initial = env.task.initial_poses
    objects = {}
    layout_ok = True
    for name, rec in plan["objects"].items():
        if name in initial and rec.get("initial") is not None:
            err = float(np.linalg.norm(np.subtract(initial[name][:3], rec["initial"][:3])))
            objects[name] = {"initial_error_m": err}
            layout_ok &= err <= LAYOUT_TOL_M
    diffs: dict[str, list[float]] = {c: [] for c in cams}

    def compare(i: int, obs) -> None:
        for c in cams:
            diffs[c].append(float(np.abs(obs.rgb(c).astype(np.int16) - ep.rgb(i, c).astype(np.int16)).mean()))

    joint_err = []
    first_success = None
    if cams:
        compare(0, env.observe(render=True))
    for i in range(1, len(commands)):
        obs = env.step(commands[i], ticks=sf, interpolate=interpolate, render=bool(cams))
        if states is not None:
            joint_err.append(float(np.abs(obs.joint_state[_JOINTS] - states[i][_JOINTS]).max()))
        if cams:
            compare(i, obs)
        if first_success is None and env.success():
            first_success = env.tick
    rest = plan["sim_steps"] - (len(commands) - 1) * sf
    if rest > 0:
        env.step(commands[-1], ticks=rest, interpolate=False, render=False)
    success = env.success()
    if first_success is None and success:
        first_success = env.tick
    final = env.object_poses()
    for name, rec in plan["objects"].items():
        if name in final and rec.get("final") is not None:
            o = objects.setdefault(name, {})
            o["position_error_m"] = float(np.linalg.norm(np.subtract(final[name][:3], rec["final"][:3])))
            o["rotation_error_deg"] = _angle_deg(final[name][3:], rec["final"][3:])
    return ReplayResult(
        episode=str(ep.path), task=plan["task"], seed=plan["seed"], frames=len(commands), save_freq=sf,
        ticks=env.tick, success=bool(success), first_success_tick=first_success, objects=objects,
        max_position_error_m=max((o.get("position_error_m", 0.0) for o in objects.values()), default=0.0),
        layout_ok=bool(layout_ok),
        joint_error_max_rad=max(joint_err) if joint_err else None,
        joint_error_mean_rad=float(np.mean(joint_err)) if joint_err else None,
        image_diff={c: float(np.mean(v)) for c, v in diffs.items()} if cams else None)


__all__ = ["LAYOUT_TOL_M", "ReplayResult", "episode_plan", "replay_episode"]
