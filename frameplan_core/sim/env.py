"""SimEnv: the rollout API for any controller (a policy, a replay of recorded commands, the scripted expert).

::

    from frameplan_core.sim.env import SimEnv
    env = SimEnv(cameras=("head_camera",), render_every=1)
    obs = env.reset("block_handover", seed=3)      # obs.images, obs.joint_state (16), obs.endpose (14), ...
    while not env.done:
        obs = env.step(policy(obs))                 # 16 numbers, held for ticks_per_step physics ticks
    env.success(); env.close()

    for cmd in env.expert():                        # the scripted expert: one Command per physics tick
        env.step(cmd, ticks=1, render=False)

A command is ``[left joints 1..7 (rad), left gripper in [0, 1] (1 = open), right joints 1..7, right gripper]``,
the layout of the recorded ``joint_command_full``. Every tick goes through ``SimTask.tick``, the stepping function
the collector's expert uses, so a seed and a command sequence give the same states and images every time.
Rendering happens only on the steps that ask for it (``render_every`` steps, or ``render=True``)."""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from frameplan_core.errors import ConfigError, InputError, SimError
from frameplan_core.sim.base_task import COMMAND_DIM, Command  # (neither imports SAPIEN)
from frameplan_core.sim.robots import ARM_DOF, endpose_of, joint_state_of
from frameplan_core.sim.scene import TIMESTEP
from frameplan_core.sim.task_config import TASK_NAMES, TaskConfig

DEFAULT_MAX_TICKS = 6000  # 24 s simulated: about twice the longest expert episode (handover, ~3,400 ticks)
_JOINTS = np.r_[0:ARM_DOF, ARM_DOF + 1:2 * ARM_DOF + 1]  # the 14 joint entries of a 16-d command
_GRIPPERS = [ARM_DOF, 2 * ARM_DOF + 1]


@dataclass
class Observation:
    """What a controller sees after a step. The robot state is captured when the step ends (cheaply: raw joint
    positions and TCP poses); ``joint_state``, ``endpose`` and ``joint_action`` are derived on first access.

    ``images`` is ``{camera: {"rgb" (H,W,3) uint8, "depth" (H,W) mm if asked, "intrinsic_cv", "extrinsic_cv",
    "cam2world_gl"}}`` (RoboTwin's per-camera dict) on steps that rendered, else empty."""

    tick: int  # physics ticks since reset (1/250 s each)
    sim_time: float
    command: np.ndarray  # (16,) the command in force (the last one sent)
    images: dict
    instruction: str  # the episode's instruction (first "seen" paraphrase of the collector's list for this seed)
    segment: str | None  # the scripted expert's current step instruction, when the expert drives; else None
    _qpos: tuple = field(repr=False, default=())
    _tcp: tuple = field(repr=False, default=())

    @property
    def rendered(self) -> bool:
        return bool(self.images)

    @cached_property
    def joint_state(self) -> np.ndarray:
        """(16,) measured: left joints 1..7 (rad), left gripper opening in [0, 1], right joints 1..7, right gripper
        (``joint_state_full`` of a recorded frame)."""
        return np.concatenate([joint_state_of(q) for q in self._qpos])

    @cached_property
    def endpose(self) -> np.ndarray:
        """(14,) left TCP xyz (m), roll/pitch/yaw (rad), gripper opening, then the same for the right arm."""
        js = self.joint_state
        return np.concatenate([endpose_of(p, js[g]) for p, g in zip(self._tcp, _GRIPPERS)])

    @property
    def joint_action(self) -> np.ndarray:
        """(14,) RoboTwin's layout: 6 joints + gripper per arm (joint 7, the wrist roll, is left out)."""
        js = self.joint_state
        return np.concatenate([js[0:6], js[7:8], js[8:14], js[15:16]])

    def rgb(self, camera: str = "head_camera") -> np.ndarray:
        if camera not in self.images:
            why = "this step did not render" if not self.images else f"rendered {sorted(self.images)}"
            raise InputError(f"observation at tick {self.tick} has no {camera!r} image ({why})")
        return self.images[camera]["rgb"]


def check_command(targets, where: str = "SimEnv.step") -> np.ndarray:
    """A 16-number command as a float64 copy, grippers clipped to [0, 1]; InputError for a wrong shape or NaN/inf."""
    try:
        arr = np.array(targets, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{where}: a command is 16 numbers, got {type(targets).__name__} ({exc})") from None
    if arr.shape != (COMMAND_DIM,):
        raise InputError(f"{where}: a command is 16 numbers [left joints 1..7, left gripper, right joints 1..7, "
                         f"right gripper], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise InputError(f"{where}: command entries {np.flatnonzero(~np.isfinite(arr)).tolist()} are not finite")
    if arr[ARM_DOF] < 0 or arr[ARM_DOF] > 1 or arr[-1] < 0 or arr[-1] > 1:
        arr[_GRIPPERS] = np.clip(arr[_GRIPPERS], 0.0, 1.0)
    return arr


class SimEnv:
    """Rollouts of one task at a time: ``reset(task, seed)`` builds the scene, ``step(command)`` drives both arms.

    - ``cameras``: cameras created (and rendered when asked); ``()`` for none (fastest: nothing ever renders).
    - ``ticks_per_step``: physics ticks per ``step`` (default: the task config's save_freq, 15 = 60 ms).
    - ``interpolate``: False holds the command for the whole step; True moves linearly from the previous command
      and reaches it on the step's last tick, with ``feedforward`` sending the ramp's joint velocity to the drives
      (as the expert's planned trajectories do; otherwise the PD damping drags behind the ramp).
    - ``render_every``: render on reset and on every k-th step (0 = only when asked with ``render=True``).
    - ``max_ticks``: ``done`` turns True at success or once this many ticks have run.
    - ``config``/``overrides``: a TaskConfig (for one task), a YAML path, or None for the packaged config."""

    def __init__(self, cameras: Sequence[str] = ("head_camera",), camera_type: str | None = None,
                 config: TaskConfig | str | None = None, overrides: list[str] | None = None,
                 ticks_per_step: int | None = None, interpolate: bool = False, feedforward: bool = True,
                 render_every: int = 1, depth: bool = False, max_ticks: int = DEFAULT_MAX_TICKS):
        self.cameras = tuple(cameras)
        self.camera_type = camera_type
        self.config, self.overrides = config, overrides
        if ticks_per_step is not None and int(ticks_per_step) < 1:
            raise ConfigError(f"SimEnv: ticks_per_step must be >= 1, got {ticks_per_step}")
        if int(render_every) < 0:
            raise ConfigError(f"SimEnv: render_every must be >= 0 (0 = only when asked), got {render_every}")
        if int(max_ticks) < 1:
            raise ConfigError(f"SimEnv: max_ticks must be >= 1, got {max_ticks}")
        self._ticks_per_step = None if ticks_per_step is None else int(ticks_per_step)
        self.interpolate, self.feedforward = bool(interpolate), bool(feedforward)
        self.render_every = int(render_every) if self.cameras else 0
        self.depth = bool(depth)
        self.max_ticks = int(max_ticks)
        self.task = None  # the SimTask (scene, arms, objects); None before the first reset
        self.instruction = ""
        self.steps = 0
        self._command: np.ndarray | None = None
        self._success_tick = -1
        self._success = False

    # ------------------------------------------------------------------------------------------------ episode
    def reset(self, task: str | None = None, seed: int = 0, augment: dict | None = None) -> Observation:
        """Build ``task``'s scene for ``seed`` (objects placed, arms at rest; same seed, same scene) and return the
        first observation. ``task`` defaults to the current one; ``augment`` applies a recorded augmentation
        record (scene_info.json) instead of drawing one."""
        from frameplan_core.sim import make_task

        name = task or (self.task.name if self.task is not None else None)
        if name is None:
            raise ConfigError(f"SimEnv.reset: name a task ({', '.join(TASK_NAMES)})")
        config = self.config
        if isinstance(config, TaskConfig) and config.task_name != name:
            raise ConfigError(f"SimEnv.reset: the env's TaskConfig is for {config.task_name!r}, not {name!r}; "
                              "pass config=None or a YAML path to switch tasks")
        self.close()
        self.task = make_task(name, seed=seed, camera_type=self.camera_type, cameras=self.cameras, config=config,
                              overrides=None if isinstance(config, TaskConfig) else self.overrides, augment=augment)
        self.instruction = self.task.instructions()["seen"][0]
        self.steps = 0
        self._command = self.task.joint_command()
        self._success_tick = -1
        return self._observe(self.render_every > 0)

    @property
    def ticks_per_step(self) -> int:
        if self._ticks_per_step is not None:
            return self._ticks_per_step
        return int(self.task.cfg.save_freq) if self.task is not None else 15

    def step(self, command, ticks: int | None = None, interpolate: bool | None = None,
             render: bool | None = None) -> Observation:
        """Send ``command`` (16 numbers, or a ``Command`` from ``expert()`` with its velocity feed-forward) for
        ``ticks`` physics ticks (default ``ticks_per_step``), held or interpolated (default: the env's setting);
        gripper entries are clipped to [0, 1]. Renders when ``render`` is True, or (None) on every
        ``render_every``-th step. Stepping on after ``done`` is allowed (the tick budget only sets ``done``)."""
        task = self._live("step")
        n = self.ticks_per_step if ticks is None else int(ticks)
        if n < 1:
            raise InputError(f"SimEnv.step: ticks must be >= 1, got {ticks}")
        if isinstance(command, Command) and getattr(command.targets, "shape", None) == (COMMAND_DIM,):
            targets, velocity = command.targets, command.velocity  # from expert(): fresh arrays, sent as they are
        else:
            targets, velocity = check_command(command), None
        lerp = self.interpolate if interpolate is None else bool(interpolate)
        if lerp:
            prev = self._command
            delta = targets - prev
            ff = delta[_JOINTS] / (n * TIMESTEP) if self.feedforward and velocity is None else velocity
            for k in range(1, n):
                task.tick(prev + delta * (k / n), ff)
            task.tick(targets, ff)
        else:
            task.tick(targets, velocity)
            for _ in range(n - 1):
                task.tick()
        self._command = targets
        self.steps += 1
        if render is None:
            render = self.render_every > 0 and self.steps % self.render_every == 0
        return self._observe(render)

    def observe(self, render: bool = True) -> Observation:
        """The current observation without stepping (``render=True`` renders the cameras now)."""
        self._live("observe")
        return self._observe(render)

    def expert(self) -> Iterator:
        """The scripted expert as a command source: one ``Command`` per physics tick, planned from the live scene.
        Send each with ``step(cmd, ticks=1)`` in order (it reads object poses when each motion starts)."""
        return self._live("expert").expert_commands()

    def success(self) -> bool:
        """Whether the task's goal holds now (any controller; evaluated at most once per tick)."""
        task = self._live("success")
        if self._success_tick != task.step_count:
            self._success = task.success()
            self._success_tick = task.step_count
        return self._success

    @property
    def tick(self) -> int:
        return self.task.step_count if self.task is not None else 0

    @property
    def truncated(self) -> bool:
        """The tick budget ``max_ticks`` is used up."""
        return self.task is not None and self.task.step_count >= self.max_ticks

    @property
    def done(self) -> bool:
        """Success, or the tick budget is used up."""
        return self.task is not None and (self.truncated or self.success())

    def object_poses(self) -> dict:
        """{object: [x, y, z, qw, qx, qy, qz]} (world, m) -- for evaluation, not for a policy's input."""
        return self._live("object_poses").object_poses()

    def close(self) -> None:
        if self.task is not None:
            self.task.close()
        self.task = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    # ------------------------------------------------------------------------------------------------ internals
    def _live(self, what: str):
        if self.task is None:
            raise SimError(f"SimEnv.{what}: call reset(task, seed) first")
        return self.task

    def _observe(self, render: bool) -> Observation:
        import time

        task = self.task
        images: dict = {}
        if render:
            if not self.cameras:
                raise ConfigError("SimEnv: render=True but the env has no cameras (pass cameras=(...) to SimEnv)")
            t = time.perf_counter()
            images = task.cameras.capture(self.cameras, depth=self.depth)
            task.timings["render_s"] += time.perf_counter() - t
        left, right = task.arms["left"], task.arms["right"]
        return Observation(tick=task.step_count, sim_time=task.step_count * TIMESTEP, command=self._command.copy(),
                           images=images, instruction=self.instruction,
                           segment=task.segments[-1]["instruction"] if task.segments else None,
                           _qpos=(left.robot.get_qpos(), right.robot.get_qpos()),
                           _tcp=(left.tcp.entity_pose, right.tcp.entity_pose))


__all__ = ["COMMAND_DIM", "DEFAULT_MAX_TICKS", "Command", "Observation", "SimEnv", "check_command"]
