"""Plan following: a visual plan (nine frames in time order, frame 1 = the observation it was made from) becomes a
sequence of subgoals for the goal-conditioned policy.

The follower holds the current subgoal and advances to the next one when the camera frame is *close enough* to it
(``frame_distance`` below ``threshold``) or when the subgoal's time budget (policy steps) is spent, so a slow or
stuck policy still moves on through the plan and a fast one does not wait. After the last subgoal the follower
stays on it (the plan's end state); ``exhausted`` tells the caller to replan.

Plans come at the planner's cell size (e.g. 64 px, centre crop); ``to_camera`` maps each frame back onto the camera
frame's geometry (``image.unfit``, the cropped-away borders from the current frame) so the policy sees a goal with
the field of view it was trained on.

End-effector waypoints through the arm's IK are not used: the plan's trajectory is a 2-D track in the image (no
depth, and the planner's frames carry none), so lifting it to 3-D poses would need a depth guess per point, while
the frames themselves already show where the arm should be — which is what the policy consumes."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from frameplan_core.errors import InputError
from frameplan_core.image import ensure_rgb_uint8, unfit

DISTANCE_SIZE = 32  # both frames are compared as 32x32 grey images: detail a blurry prediction lacks is averaged out
DEFAULT_THRESHOLD = 3.0  # mean |difference| in grey levels; real frames 3 saved frames apart differ by ~2.8 (median)


def frame_distance(a: np.ndarray, b: np.ndarray, size: int = DISTANCE_SIZE) -> float:
    """Mean absolute grey-level difference (0..255) of two RGB frames shrunk to ``size`` x ``size``."""
    def small(x: np.ndarray) -> np.ndarray:
        grey = cv2.cvtColor(np.ascontiguousarray(x), cv2.COLOR_RGB2GRAY)
        return cv2.resize(grey, (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)

    return float(np.abs(small(a) - small(b)).mean())


def to_camera(frame: np.ndarray, camera_image: np.ndarray, crop: str) -> np.ndarray:
    """A model-resolution frame (made from ``camera_image`` with crop policy ``crop``) on the camera's geometry."""
    frame = ensure_rgb_uint8(frame, "plan frame")
    if frame.shape[:2] == camera_image.shape[:2]:
        return frame
    return unfit(frame, camera_image.shape[:2], crop, background=camera_image)


class PlanFollower:
    """Subgoals (time order, the observation excluded) with a per-subgoal step budget and a closeness threshold
    (None: advance on the budget alone)."""

    def __init__(self, subgoals: Sequence[np.ndarray], budget: int, threshold: float | None = DEFAULT_THRESHOLD) -> None:
        if not subgoals:
            raise InputError("plan following: the plan has no subgoals (it needs at least 2 frames)")
        if int(budget) < 1:
            raise InputError(f"plan following: subgoal budget must be >= 1 policy step, got {budget}")
        if threshold is not None and not threshold > 0:
            raise InputError(f"plan following: closeness threshold must be > 0 (or None), got {threshold}")
        self.subgoals = [ensure_rgb_uint8(g, f"subgoal {i + 1}") for i, g in enumerate(subgoals)]
        self.budget, self.threshold = int(budget), threshold
        self.index = 0
        self.steps_on = 0  # policy steps spent on the current subgoal
        self.advanced: list[tuple[int, str]] = []  # (step count at the advance, "reached" | "budget")
        self._steps = 0
        self._reached = False

    @classmethod
    def from_plan(cls, frames: Sequence[np.ndarray], camera_image: np.ndarray, crop: str, budget: int,
                  threshold: float | None = DEFAULT_THRESHOLD) -> PlanFollower:
        """Frames of a ``Plan`` (frame 1 = the observation, dropped) mapped onto ``camera_image``'s geometry."""
        if len(frames) < 2:
            raise InputError(f"plan following: a plan of {len(frames)} frame(s) has no subgoal")
        return cls([to_camera(f, camera_image, crop) for f in frames[1:]], budget, threshold)

    @property
    def goal(self) -> np.ndarray:
        return self.subgoals[self.index]

    @property
    def last(self) -> bool:
        return self.index == len(self.subgoals) - 1

    @property
    def exhausted(self) -> bool:
        """On the last subgoal with its budget spent (or reached): time for a new plan."""
        if not self.last:
            return False
        return self.steps_on >= self.budget or self._reached

    def update(self, image: np.ndarray, steps: int) -> np.ndarray:
        """Account ``steps`` policy steps taken since the last call, advance at most one subgoal if the current
        one is reached or its budget spent, and return the subgoal to pursue now."""
        self.steps_on += int(steps)
        self._steps += int(steps)
        close = self.threshold is not None and frame_distance(image, self.goal) < self.threshold
        self._reached = close
        if not self.last and (close or self.steps_on >= self.budget):
            self.advanced.append((self._steps, "reached" if close else "budget"))
            self.index += 1
            self.steps_on = 0
            self._reached = False
        return self.goal


class OracleGoals:
    """The expert's own future frames as goals: the rollout is matched to the expert's timeline (the nearest of
    its frames within a window ahead of the last match, by ``frame_distance``; or simply the step count with
    ``sync='time'``) and the goal is the expert frame ``horizon`` saved frames after the match, capped at its end."""

    def __init__(self, frames: Sequence[np.ndarray], horizon: int, sync: str = "match", window: int = 20) -> None:
        if not frames:
            raise InputError("oracle goals: no expert frames")
        if sync not in ("match", "time"):
            raise InputError(f"oracle sync {sync!r}: expected match or time")
        self.frames = list(frames)
        self.horizon, self.sync, self.window = int(horizon), sync, int(window)
        self.position = 0

    def goal(self, image: np.ndarray, step: int) -> np.ndarray:
        if self.sync == "time":
            self.position = min(int(step), len(self.frames) - 1)
        else:
            lo, hi = self.position, min(len(self.frames), self.position + self.window + 1)
            d = [frame_distance(image, self.frames[i]) for i in range(lo, hi)]
            self.position = lo + int(np.argmin(d))
        return self.frames[min(self.position + self.horizon, len(self.frames) - 1)]


__all__ = ["DEFAULT_THRESHOLD", "OracleGoals", "PlanFollower", "frame_distance", "to_camera"]
