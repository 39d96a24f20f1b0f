"""Policy mode of the foresight node: camera frame + joint states + instruction -> a goal frame (the frame predictor,
or a subgoal of the grid planner's plan) -> the goal-conditioned policy's joint targets as a JointTrajectory.

``PolicyRunner`` is ``frameplan rollout``'s closed loop (``run_policy`` in frameplan_core/policy/rollout.py) turned
inside out for a node that is handed frames as they come instead of stepping a simulator: the same settings
(``RolloutConfig``: goal ``period``, ``execute``, ``gripper``, ``subgoal_steps``, ``threshold``, ``replan``), the
same goal renewal (a prediction every ``period`` policy steps; a plan followed subgoal by subgoal with
``PlanFollower`` and replanned when used up), the same ``GoalPolicy.act`` and gripper binarisation, the same
seeds (node seed + steps). Policy steps are counted from the frames' stamps: one step is the policy's
``step_ticks`` x 4 ms (60 ms), so with the sim bridge's ``clock: sim`` one frame is one step, as in a rollout.
A test feeds it a rollout's frames and gets the rollout's commands back.

Difference from the rollout, on purpose: the whole chunk goes out as one trajectory (point k at (k + 1) x 60 ms
after the frame's stamp) and the next one replaces it ``execute`` steps later; if that one is late (inference,
transport), the robot goes on along the chunk instead of stopping."""
from __future__ import annotations

import os
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from frameplan_core.errors import InputError, one_line
from frameplan_core.models import PolicyModels

# frameplan_core.policy.config.EMBEDDED (a test keeps them equal)
POLICY_PRESETS = ("tiny", "tiny-nogoal", "hammer", "hammer-nogoal", "handover", "handover-nogoal", "stack",
                  "stack-nogoal")


def policy_refusal(value: str, roots: list[Path], trusted: str) -> str | None:
    """Why a run-time ``policy`` value is refused: as ``model``, a preset, the launch-time policy, or a folder under
    ``model_roots``, decided on the path alone."""
    from frameplan_ros.foresight_params import model_outside_roots

    if not value or (value in POLICY_PRESETS and not os.path.lexists(value)):
        return None
    if model_outside_roots(value, roots, trusted):
        return (f"policy={one_line(value, 200)!r}: outside model_roots ({os.pathsep.join(map(str, roots))}); put the "
                "policy folder under one of them, or start the node with a model_roots that holds it")
    if not Path(value).expanduser().exists():
        return f"policy={one_line(value, 200)!r}: no such policy folder"
    return None


@dataclass
class Decision:
    """What to send after one frame: ``commands`` (chunk, 16) absolute targets from the frame's time on."""

    commands: np.ndarray
    goal: np.ndarray | None
    new_goal: bool
    plan: Any = None  # a new Plan (planner goals)
    steps: int = 0  # policy steps since the episode started (the rollout's ``steps``)
    goal_ms: float = 0.0
    policy_ms: float = 0.0


@dataclass
class PolicyRunner:
    """State of one closed loop (see the module docstring). ``step`` returns a Decision when a new chunk is due
    (the first frame, then once ``execute`` policy steps have passed), else None."""

    models: PolicyModels  # frameplan_core.models: the policy and its goal model
    cfg: Any  # frameplan_core.policy.rollout.RolloutConfig
    seed: int = 0
    predict_kw: dict = field(default_factory=dict)  # steps, samples for the goal model
    steps: int = 0
    _t: float | None = None
    _since_goal: int = 0
    _since_plan: int = 0
    _taken: int = 0
    _goal: np.ndarray | None = None
    _follower: Any = None

    @property
    def execute(self) -> int:
        return max(1, min(self.cfg.execute, self.models.policy.config.chunk))

    def reset(self) -> None:
        """A new episode (or instruction): forget the goal and the step count."""
        self.steps, self._t, self._since_goal, self._since_plan, self._taken = 0, None, 0, 0, 0
        self._goal, self._follower = None, None

    def due(self, t: float) -> bool:
        """Whether a frame at time ``t`` (s) gets a new chunk."""
        return self._t is None or t < self._t or round((t - self._t) / self.models.step_s) >= self.execute

    def step(self, image: np.ndarray, joint_state: np.ndarray, instruction: str | None, t: float) -> Decision | None:
        from frameplan_core.policy.config import GRIPPERS
        from frameplan_core.policy.follow import PlanFollower

        if self._t is not None and t < self._t:
            self.reset()  # time went backwards: a new episode, a replay started over
        if not self.due(t):
            return None
        if self._t is not None:
            taken = int(round((t - self._t) / self.models.step_s))
            self.steps += taken
            self._since_goal += taken
            self._since_plan += taken
            self._taken = taken
        self._t = t
        m, cfg, policy = self.models, self.cfg, self.models.policy
        new_goal, plan = False, None
        tg = time.perf_counter()
        if policy.config.goal and m.goal_source == "predictor":
            if self._goal is None or self._since_goal >= cfg.period:
                if not instruction:
                    raise InputError("predictor: no instruction yet (publish one on the instruction topic)",
                                     kind="no_instruction")
                self._goal = m.goal_model.predict(image, instruction, output_size="input", seed=self.seed + self.steps,
                                                  samples=cfg.predictor_samples, **self.predict_kw)
                self._since_goal, new_goal = 0, True
        elif policy.config.goal:
            f = self._follower
            if f is None or f.exhausted or (cfg.replan and self._since_plan >= cfg.replan):
                plan = m.goal_model.plan(image, instruction=instruction, seed=self.seed + self.steps,
                                         samples=cfg.planner_samples, **self.predict_kw)
                self._follower = PlanFollower.from_plan(plan.frames, image, m.goal_model.config.crop_policy,
                                                        self.subgoal_budget(), cfg.threshold)
                self._since_plan = self._taken = 0
            before = self._follower.index
            self._goal = self._follower.update(image, self._taken)
            new_goal = plan is not None or self._follower.index != before
        goal_ms = (time.perf_counter() - tg) * 1e3
        tp = time.perf_counter()
        chunk = policy.act(image, joint_state, self._goal if policy.config.goal else None)
        policy_ms = (time.perf_counter() - tp) * 1e3
        if cfg.gripper == "binary":
            chunk[:, list(GRIPPERS)] = (chunk[:, list(GRIPPERS)] >= 0.5).astype(np.float64)
        return Decision(chunk, self._goal, new_goal, plan, self.steps, goal_ms, policy_ms)

    def subgoal_budget(self) -> int:
        """Policy steps per plan subgoal: ``subgoal_steps``, else the rollout's rule (1.5 x the mean expert
        episode length / 8) over the policy's tasks."""
        from frameplan_core.policy.rollout import task_frames

        if self.cfg.subgoal_steps:
            return int(self.cfg.subgoal_steps)
        from frameplan_core.sim.task_config import TASK_NAMES

        tasks = list(self.models.policy.config.task_frames) or list(TASK_NAMES)
        mean = float(np.mean([task_frames(self.models.policy, t) for t in tasks]))
        return max(1, int(round(1.5 * mean / 8)))


def rollout_config(period_s: float, goal_period_s: float, step_s: float, gripper: str, subgoal_steps: int,
                   samples: int) -> Any:
    """The RolloutConfig of the node's parameters (seconds -> policy steps of ``step_s``)."""
    from frameplan_core.policy.rollout import RolloutConfig

    return RolloutConfig(execute=max(1, int(round(period_s / step_s))), period=max(1, int(round(goal_period_s / step_s))),
                         gripper=gripper, subgoal_steps=subgoal_steps or None,
                         predictor_samples=samples or None, planner_samples=samples or None)


class JointStateBuffer:
    """Recent joint states by stamp (thread-safe); ``match`` pairs a camera frame with the state of its stamp (or the
    nearest within ``tolerance`` s), waiting up to ``wait`` s for it: the state and the image of one instant travel
    on two topics, and the image may be handled first."""

    def __init__(self, maxlen: int = 64) -> None:
        self._items: deque = deque(maxlen=maxlen)
        self._cond = threading.Condition()

    def add(self, t: float, q: np.ndarray) -> None:
        with self._cond:
            self._items.append((t, q))
            self._cond.notify_all()

    def _nearest(self, t: float) -> tuple[float, np.ndarray] | None:
        return min(self._items, key=lambda it: abs(it[0] - t), default=None)

    def match(self, t: float, tolerance: float, where: str, wait: float = 0.2) -> np.ndarray:
        deadline = time.monotonic() + wait
        with self._cond:
            while True:
                best = self._nearest(t)
                if best is not None and abs(best[0] - t) <= tolerance:
                    return best[1]
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
        if best is None:
            raise InputError(f"{where}: no joint state received yet", kind="joint_state")
        raise InputError(f"{where}: no joint state within {tolerance} s of the frame (nearest {best[0] - t:+.3f} s; "
                         "joint_state_tolerance)", kind="joint_state")


__all__ = ["POLICY_PRESETS", "Decision", "JointStateBuffer", "PolicyRunner", "policy_refusal", "rollout_config"]
