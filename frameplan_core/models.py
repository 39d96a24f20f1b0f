"""Load a model by what it is for: ``load_model(kind, model, device)`` with kind ``predictor`` (FramePredictor),
``planner`` (GridPlanner) or ``policy`` (a GoalPolicy with the model that makes its goals: ``PolicyModels``).

Why one entry: the foresight node, its policy mode and the tools that drive it load "the model of this mode" from
a folder or a preset name, check it and warm it up; the two foresight families differ there only in their class
and their call (``predict`` / ``plan``). ``''`` as a name means the mode's embedded default (``tiny``)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Union

import numpy as np

from frameplan_core.errors import ConfigError, FrameplanError, one_line

if TYPE_CHECKING:
    from frameplan_core.planner import GridPlanner
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.predictor import FramePredictor

KINDS = ("predictor", "planner", "policy")
GOAL_SOURCES = ("predictor", "planner")  # what makes a policy's goal frames


@dataclass
class PolicyModels:
    """What policy mode runs: the policy and, for a goal-conditioned one, the model that makes its goals."""

    policy: GoalPolicy
    goal_model: FramePredictor | GridPlanner | None  # None for a goal: false policy
    goal_source: str  # predictor | planner

    @property
    def step_s(self) -> float:
        """Seconds of robot time per policy step (a chunk's commands are this far apart)."""
        from frameplan_core.sim.scene import TIMESTEP

        return self.policy.config.step_ticks * TIMESTEP

    def describe(self) -> str:
        goal = "no goal model (goal: false policy)" if self.goal_model is None else \
            f"goals from the {self.goal_source}: {describe(self.goal_model)}"
        return f"{self.policy.describe()}; {goal}"

    def warmup(self) -> None:
        """One pass through each model on a blank frame, so the first real frame is not slowed by lazy set-up."""
        blank = np.zeros((64, 64, 3), np.uint8)
        goal = None
        if self.goal_source == "predictor" and self.goal_model is not None:
            goal = self.goal_model.predict(blank, "warm up", steps=1, seed=0, output_size="input")
        elif self.goal_model is not None:
            self.goal_model.plan(blank, "warm up", steps=1, seed=0)
            goal = blank
        from frameplan_core.policy.config import JOINT_DIM

        self.policy.act(blank, np.zeros(JOINT_DIM), goal if self.policy.config.goal else None)


# what load_model gives: a FramePredictor, a GridPlanner or the PolicyModels of policy mode
Model = Union["FramePredictor", "GridPlanner", PolicyModels]


def load_model(kind: str, model: str = "", device: str = "auto", policy: str = "",
               goal: str = "predictor") -> Model:
    """The model of ``kind`` from a folder or preset (``model``; ``''`` = the embedded default). ``policy``: the
    policy (folder or preset, ``''`` = the embedded ``tiny``) and, when it takes goals, its ``goal`` model
    (``model`` names it). ModelError/ConfigError name what could not be loaded."""
    if kind not in KINDS:
        raise ConfigError(f"model kind {kind!r}: expected one of {list(KINDS)}")
    if kind == "policy":
        if goal not in GOAL_SOURCES:
            raise ConfigError(f"policy goal source {goal!r}: expected one of {list(GOAL_SOURCES)}")
        from frameplan_core.policy import GoalPolicy

        pol = GoalPolicy.from_pretrained(policy or "tiny", device=device)
        return PolicyModels(pol, load_model(goal, model, device) if pol.config.goal else None, goal)
    if kind == "predictor":
        from frameplan_core.predictor import FramePredictor

        return FramePredictor.from_pretrained(model or "tiny", device=device)
    from frameplan_core.planner import GridPlanner

    return GridPlanner.from_pretrained(model or "tiny", device=device)


def describe(model: Any) -> str:
    """A loaded model's one-line description (its class name when it has none)."""
    try:
        return str(model.describe())
    except Exception:  # noqa: BLE001 - a description is cosmetic
        return type(model).__name__


def warmup(model: Model, kind: str) -> None:
    """One 1-step inference on a blank frame, so the first real one is not slowed by lazy initialisation."""
    if kind == "policy":
        model.warmup()
        return
    blank = np.zeros((64, 64, 3), np.uint8)
    if kind == "predictor":
        model.predict(blank, "warm up", steps=1, seed=0)
    else:
        model.plan(blank, "warm up", steps=1, seed=0)


def steps_refusal(model: Model | None, kind: str | None, steps: int) -> str | None:
    """Why ``steps`` (0 = the model's default) cannot run on ``model``, else None: the check its predict would
    make on every frame (the predictor's schedule must stay inside its training range; the planner takes any
    count), made once, when the value is set or the model loaded. Policy mode: the goal model's schedule (a goal:
    false policy has none)."""
    if kind == "policy":
        model, kind = getattr(model, "goal_model", None), getattr(model, "goal_source", None)
    if model is None or kind is None:
        return None
    try:
        if kind == "predictor" and steps:
            from frameplan_core.predictor import sampling

            # a fresh scheduler: the model's own ones may be in use by another thread right now
            sched = sampling.make_scheduler(model.config.sampling.sampler, dict(model.scheduler.config))
            sampling.set_timesteps(sched, int(steps), "cpu")
    except FrameplanError as exc:
        return one_line(exc)
    return None


__all__ = ["GOAL_SOURCES", "KINDS", "Model", "PolicyModels", "describe", "load_model", "steps_refusal", "warmup"]
