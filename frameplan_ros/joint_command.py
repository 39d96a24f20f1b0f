"""Joint commands for the simulated robot, without ROS types: checking a trajectory (names, points, limits) and
following it in simulated time.

Semantics (those of ros2_control's joint_trajectory_controller, in the simulator's clock):
- A trajectory names some of the 16 joints (``robot_model.JOINT_NAMES``); joints it does not name keep their
  current command. Each point gives one position per named joint and a ``time_from_start``; times are >= 0 and
  strictly increasing. Velocities, accelerations and efforts are ignored (the simulator interpolates linearly,
  with the ramp's velocity as feed-forward, like ``frameplan rollout``).
- A new trajectory replaces the one being followed. It starts at ``start`` (its header stamp mapped to simulated
  time, or the time it arrived); points already in the past are skipped, and the command moves linearly from
  the command in force when it arrived to the next future point. After the last point the arm holds it.
- A trajectory with a malformed point, an unknown joint or a position outside the joint's limits is refused as
  a whole (``CommandRefused`` with its kind and a one-line reason); nothing of it is executed."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from frameplan_core.errors import InputError, one_line
from frameplan_ros.robot_model import JOINT_NAMES

MAX_POINTS = 10_000  # a policy chunk has 8; a planned motion at 250 Hz for 40 s has 10,000
LIMIT_TOLERANCE = 1e-9
KINDS = ("command_malformed", "command_unknown_joint", "command_out_of_limits")


class CommandRefused(InputError):
    """A joint command that is not executed; ``kind`` is one of ``KINDS`` (counted per kind in /diagnostics)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(one_line(message), kind=kind)


@dataclass(frozen=True)
class JointTrajectoryCommand:
    """A checked trajectory: ``indices`` (J,) into the 16 joints, ``times`` (P,) s from its start, ``positions``
    (P, J)."""

    indices: np.ndarray
    times: np.ndarray
    positions: np.ndarray

    def full(self, current: np.ndarray) -> np.ndarray:
        """(P, 16) commands: the named joints from the points, the others from ``current``."""
        out = np.repeat(np.asarray(current, dtype=np.float64)[None], len(self.times), axis=0)
        out[:, self.indices] = self.positions
        return out


def check_trajectory(names: Sequence[str], points: Sequence[tuple[Sequence[float], float]], limits: np.ndarray,
                     where: str = "joint command") -> JointTrajectoryCommand:
    """(joint names, [(positions, time_from_start s), ...]) -> a JointTrajectoryCommand, else CommandRefused."""
    names = list(names)
    if not names:
        raise CommandRefused("command_malformed", f"{where}: no joint_names")
    if len(names) > len(JOINT_NAMES) or len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise CommandRefused("command_malformed", f"{where}: joint_names must be distinct, at most "
                             f"{len(JOINT_NAMES)}; got {len(names)}{f' (repeated: {dup[:4]})' if dup else ''}")
    index = {n: i for i, n in enumerate(JOINT_NAMES)}
    unknown = [n for n in names if n not in index]
    if unknown:
        raise CommandRefused("command_unknown_joint", f"{where}: unknown joint(s) {[one_line(n, 40) for n in unknown[:4]]}"
                             f"; this robot's joints: {JOINT_NAMES[0]} .. {JOINT_NAMES[-1]} (docs/ROS.md)")
    if not points:
        raise CommandRefused("command_malformed", f"{where}: no points")
    if len(points) > MAX_POINTS:
        raise CommandRefused("command_malformed", f"{where}: {len(points)} points; at most {MAX_POINTS}")
    times = np.empty(len(points))
    positions = np.empty((len(points), len(names)))
    for k, (pos, t) in enumerate(points):
        if len(pos) != len(names):
            raise CommandRefused("command_malformed", f"{where}: point {k} has {len(pos)} positions for "
                                 f"{len(names)} joint_names")
        positions[k] = pos
        times[k] = t
    if not np.isfinite(positions).all():
        k = int(np.flatnonzero(~np.isfinite(positions).all(axis=1))[0])
        raise CommandRefused("command_malformed", f"{where}: point {k} has a position that is not finite")
    if not np.isfinite(times).all() or (times < 0).any() or (np.diff(times) <= 0).any():
        raise CommandRefused("command_malformed", f"{where}: time_from_start must be >= 0 and strictly increasing, "
                             f"got {[round(float(t), 4) for t in times[:6]]}{' ...' if len(times) > 6 else ''}")
    idx = np.array([index[n] for n in names], dtype=np.int64)
    lo, hi = limits[idx, 0], limits[idx, 1]
    bad = (positions < lo - LIMIT_TOLERANCE) | (positions > hi + LIMIT_TOLERANCE)
    if bad.any():
        k, j = (int(v) for v in np.argwhere(bad)[0])
        raise CommandRefused("command_out_of_limits", f"{where}: point {k}: {names[j]} = {positions[k, j]:.4f} is "
                             f"outside its limits [{lo[j]:.4f}, {hi[j]:.4f}]; the whole trajectory is refused")
    return JointTrajectoryCommand(idx, times, positions)


class TrajectoryFollower:
    """The command in force over simulated time: holding, or following a trajectory (see the module docstring).

    ``state``: ``waiting`` (holding the start pose, no command yet), ``following``, ``done`` (holding the last
    point), ``stopped`` (holding where the arm was when the command stream stopped)."""

    def __init__(self, command: np.ndarray) -> None:
        self.state = "waiting"
        self._knots_t = np.zeros(1)
        self._knots = np.asarray(command, dtype=np.float64)[None].copy()

    def hold(self, command: np.ndarray, state: str) -> None:
        self._knots_t = np.zeros(1)
        self._knots = np.asarray(command, dtype=np.float64)[None].copy()
        self.state = state

    def start(self, cmd: JointTrajectoryCommand, start: float, now: float, current: np.ndarray) -> int:
        """Follow ``cmd`` from simulated time ``start`` (its points at start + time_from_start); ``current`` is the
        command in force ``now``. Returns how many points were already in the past (skipped)."""
        t = start + cmd.times
        pts = cmd.full(current)
        future = t > now
        skipped = int((~future).sum())
        if not future.any():  # all late: go to the last point
            self._knots_t, self._knots = np.array([now]), pts[-1:].copy()
        else:
            self._knots_t = np.concatenate([[now], t[future]])
            self._knots = np.concatenate([np.asarray(current, dtype=np.float64)[None], pts[future]])
        self.state = "following"
        return skipped

    def target(self, t: float) -> np.ndarray:
        """The command at simulated time ``t`` (piecewise linear between the knots, the last one after them)."""
        kt = self._knots_t
        if t >= kt[-1]:
            if self.state == "following":
                self.state = "done"
            return self._knots[-1].copy()
        if t <= kt[0]:
            return self._knots[0].copy()
        k = int(np.searchsorted(kt, t, side="right"))
        w = (t - kt[k - 1]) / (kt[k] - kt[k - 1])
        return self._knots[k - 1] + w * (self._knots[k] - self._knots[k - 1])


__all__ = ["KINDS", "MAX_POINTS", "CommandRefused", "JointTrajectoryCommand", "TrajectoryFollower", "check_trajectory"]
