"""The simulated robot behind the sim bridge: SAPIEN episodes through ``SimEnv`` (frameplan_core.sim.env), driven
by the task's scripted expert (``control: expert``) or by joint commands from ROS (``control: command``).

One published frame is ``ticks_per_step`` physics ticks (the task's save_freq, 15 ticks = 60 ms simulated). With
the expert, frames are its saved frames (what ``frameplan collect`` records). With commands, each frame first runs
the command of the trajectory being followed (``joint_command.TrajectoryFollower``, sampled at the frame's end
and interpolated over its ticks with velocity feed-forward, as ``frameplan rollout`` sends a policy's commands),
then renders. An episode ends with the task's success or after ``max_ticks``; then the next seed starts (``loop``).

Time: ``sim_time`` runs on over episodes (never backwards), so the bridge can stamp messages with it
(``clock: sim``) and map a command's stamp back to the simulated time it refers to."""
from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from frameplan_core.errors import SimError
from frameplan_core.sim.scene import TIMESTEP  # 1/250 s (the module does not import SAPIEN)
from frameplan_ros.joint_command import JointTrajectoryCommand, TrajectoryFollower
from frameplan_ros.robot_model import GRIPPER_INDICES


@dataclass
class CameraFrame:
    """One published frame; the robot fields are None for a replayed recording."""

    rgb: np.ndarray  # (H, W, 3) uint8
    depth_mm: np.ndarray | None  # (H, W) float millimetres
    K: np.ndarray  # 3x3
    instruction: str | None  # set at the start of a motion segment (expert) or of an episode (command)
    episode: int
    index: int
    joint_state: np.ndarray | None = None  # (16,) measured: 7 joints (rad) + gripper opening [0, 1] per arm
    command: np.ndarray | None = None  # (16,) the command in force
    success: bool | None = None
    sim_time: float | None = None  # s, continuous over episodes
    done: bool = False  # the episode's last frame
    extrinsic: np.ndarray | None = None  # 3x4 world -> camera (OpenCV, the optical frame)


@dataclass
class CommandStats:
    received: int = 0
    accepted: int = 0
    refused: int = 0
    late_points: int = 0  # points already in the past when their trajectory arrived (skipped)
    stream_stops: int = 0  # command_timeout expired while following: the arm stopped where it was
    last_accepted: float = field(default=0.0)  # time.monotonic()


class SimRobot:
    """Episodes of ``task`` from ``seed`` on. ``frames(stop)`` runs them (in the caller's thread) and yields
    CameraFrames; ``command(cmd, stamp_time)`` hands a checked trajectory over from any thread."""

    def __init__(self, task: str, seed: int, control: str, camera: str = "head_camera", camera_type: str = "D435",
                 depth: bool = True, loop: bool = True, max_episodes: int = 0, max_ticks: int = 6000,
                 command_timeout: float = 1.0, on_failure=None) -> None:
        if control not in ("expert", "command"):
            raise SimError(f"control={control!r}: expected expert or command")
        self.task, self.seed, self.control = task, int(seed), control
        self.camera, self.camera_type, self.depth = camera, camera_type, bool(depth)
        self.loop, self.max_episodes, self.max_ticks = loop, int(max_episodes), int(max_ticks)
        self.command_timeout = float(command_timeout)
        self.on_failure = on_failure
        self.stats = CommandStats()
        self.state = "starting"
        self.episode = 0
        self.success = False
        self.episodes_succeeded = 0
        self.env = None
        self._lock = threading.Lock()
        self._pending: tuple[JointTrajectoryCommand, float | None] | None = None
        self._time_offset = 0.0
        self._frame_times: deque = deque(maxlen=512)  # (stamp key, sim time) of published frames
        self.follower: TrajectoryFollower | None = None

    # ------------------------------------------------------------------ commands (any thread)
    def command(self, cmd: JointTrajectoryCommand, start: float | None) -> None:
        """Follow ``cmd`` from simulated time ``start`` (None: when the simulator picks it up)."""
        with self._lock:
            self._pending = (cmd, start)
            self.stats.accepted += 1
            self.stats.last_accepted = time.monotonic()

    def remember_stamp(self, key: tuple[int, int], sim_time: float) -> None:
        with self._lock:
            self._frame_times.append((key, sim_time))

    def sim_time_of(self, key: tuple[int, int]) -> float | None:
        """The simulated time of the published frame stamped ``key`` (sec, nanosec), None if not one of ours."""
        with self._lock:
            for k, t in reversed(self._frame_times):
                if k == key:
                    return t
        return None

    @property
    def sim_time(self) -> float:
        env = self.env
        return self._time_offset + (env.tick * TIMESTEP if env is not None and env.task is not None else 0.0)

    # ------------------------------------------------------------------ episodes (the publisher thread)
    def frames(self, stop: threading.Event) -> Iterator[CameraFrame]:
        """Episode after episode; an episode whose expert cannot plan a motion is reported through
        ``on_failure(seed, exc)`` and the next seed starts (three failures in a row stop the source)."""
        from frameplan_core.sim.env import SimEnv

        self.env = SimEnv(cameras=(self.camera,), camera_type=self.camera_type, render_every=0, depth=self.depth,
                          interpolate=True, max_ticks=self.max_ticks)
        failures = 0
        try:
            while not stop.is_set():
                seed = self.seed + self.episode
                try:
                    if self.control == "expert":
                        yield from self._expert_episode(seed, stop)
                    else:
                        yield from self._command_episode(seed, stop)
                    failures = 0
                except SimError as exc:
                    failures += 1
                    if self.on_failure is not None:
                        self.on_failure(seed, exc)
                    if failures >= 3:
                        raise
                # the next episode's clock starts one frame after this one's end
                self._time_offset = self.sim_time + self.env.ticks_per_step * TIMESTEP
                self.episode += 1
                if not self.loop or (self.max_episodes and self.episode >= self.max_episodes):
                    return
        finally:
            self.env.close()

    def _frame(self, obs, instruction: str | None, index: int, done: bool = False) -> CameraFrame:
        cam = obs.images[self.camera]
        self.success = bool(self.env.success())
        return CameraFrame(np.asarray(cam["rgb"]), cam.get("depth"), np.asarray(cam["intrinsic_cv"]), instruction,
                           self.episode, index, obs.joint_state.copy(), obs.command, self.success, self.sim_time, done,
                           cam.get("extrinsic_cv"))

    def _expert_episode(self, seed: int, stop: threading.Event) -> Iterator[CameraFrame]:
        """The scripted expert, one command per tick; a frame every ``ticks_per_step`` ticks (the collector's
        frames: each shows the state before the tick of the command sent then)."""
        env = self.env
        env.reset(self.task, seed)
        self.state = "expert"
        save = env.ticks_per_step
        commands = env.expert()
        first = next(commands, None)  # starts the first motion segment, so frame 0 carries its instruction
        obs = env.observe(render=True)
        index = 0
        frame = self._frame(obs, obs.segment, index, done=first is None)
        said = obs.segment
        yield frame
        pending = [first] if first is not None else []
        for cmd in _chain(pending, commands):
            if stop.is_set():
                return
            obs = env.step(cmd, ticks=1, interpolate=False, render=(env.tick + 1) % save == 0)
            if obs.rendered:
                index += 1
                new = obs.segment if obs.segment != said else None
                said = obs.segment
                yield self._frame(obs, new, index)
        if self.env.success():
            self.episodes_succeeded += 1

    def _command_episode(self, seed: int, stop: threading.Event) -> Iterator[CameraFrame]:
        env = self.env
        obs = env.reset(self.task, seed)
        with self._lock:
            self._pending = None  # a trajectory meant for the previous episode
        self.follower = TrajectoryFollower(obs.command)
        n = env.ticks_per_step
        index = 0
        obs = env.observe(render=True)
        yield self._frame(obs, env.instruction, index)
        while not stop.is_set():
            now = self.sim_time
            with self._lock:
                pending, self._pending = self._pending, None
                last = self.stats.last_accepted
            if pending is not None:
                cmd, start = pending
                self.stats.late_points += self.follower.start(cmd, now if start is None else min(start, now), now,
                                                              obs.command)
            elif (self.follower.state == "following" and self.command_timeout > 0
                  and time.monotonic() - last > self.command_timeout):
                hold = obs.command.copy()
                arm = np.ones(len(hold), bool)
                arm[list(GRIPPER_INDICES)] = False
                hold[arm] = obs.joint_state[arm]  # joints where they are; grippers keep their command (a grasp holds)
                self.follower.hold(hold, "stopped")
                self.stats.stream_stops += 1
            target = self.follower.target(now + n * TIMESTEP)
            obs = env.step(target, ticks=n, interpolate=True, render=True)
            index += 1
            self.state = self.follower.state
            done = env.done
            yield self._frame(obs, None, index, done=done)
            if done:
                if self.success:
                    self.episodes_succeeded += 1
                return


def _chain(first: list, rest: Iterator) -> Iterator:
    yield from first
    yield from rest


__all__ = ["CameraFrame", "CommandStats", "SimRobot", "TIMESTEP"]
