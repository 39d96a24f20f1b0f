"""Goal-conditioned policy (issue 21): (current head-camera frame, joint state, goal frame) -> a chunk of joint
commands; plan following turns a visual plan into subgoals for it; ``rollout`` runs it closed loop in SAPIEN."""
from frameplan_core.policy.config import PolicyConfig
from frameplan_core.policy.policy import GoalPolicy

__all__ = ["GoalPolicy", "PolicyConfig"]
