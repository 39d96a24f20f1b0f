"""Goal-conditioned policy (issue 21): (current head-camera frame, joint state, goal frame) -> a chunk of joint
commands; plan following turns a visual plan into subgoals for it; ``rollout`` runs it closed loop in SAPIEN.

``GoalPolicy`` and ``PolicyConfig`` are imported on first use, so the CLI's argument parsing (which reads the
rollout defaults) does not import torch."""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from frameplan_core.policy.config import PolicyConfig
    from frameplan_core.policy.policy import GoalPolicy

__all__ = ["GoalPolicy", "PolicyConfig"]


def __getattr__(name: str):
    if name == "GoalPolicy":
        from frameplan_core.policy.policy import GoalPolicy

        return GoalPolicy
    if name == "PolicyConfig":
        from frameplan_core.policy.config import PolicyConfig

        return PolicyConfig
    raise AttributeError(name)
