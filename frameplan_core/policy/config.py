"""Goal-conditioned policy configuration: one dataclass saved as ``policy.json`` beside ``model.safetensors``.

The policy maps (current head-camera frame, measured joint state, goal frame) to a chunk of ``chunk`` future
joint commands, one per saved frame (``step_ticks`` physics ticks apart). ``goal: false`` is the same network
without the goal input: the no-foresight baseline.

Actions (``action``): ``delta`` (the default) predicts each future command's 14 joint targets *relative to the
measured joint state* of the current frame, and the two gripper commands as absolute values in [0, 1]. Why
relative to the measured state: it is what the policy observes both in training and in a rollout (no hidden
"previous command" to drift from), the offsets are small and alike across scene layouts (absolute targets would
make the network read the absolute arm pose off the image), and they normalise well per chunk step. ``absolute``
predicts the targets themselves (for comparison)."""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Literal

from frameplan_core import config as cfgmod
from frameplan_core.errors import ConfigError

PRESETS = ("tiny", "tiny-nogoal")  # network presets (random start) and the embedded multi-task pair
# the embedded specialist of each task (trained on that task alone; model card "Policy: per-task specialists"); its
# no-foresight twin is "<name>-nogoal"
SPECIALISTS = {"block_hammer_beat": "hammer", "block_handover": "handover", "blocks_stack_easy": "stack"}
PER_TASK = "specialists"  # as a rollout's --policy / --baseline: each task's own specialist (or its -nogoal twin)
# embedded policy folders (frameplan_core/weights/policy-<name>): the presets' trained pair and the specialists
EMBEDDED = PRESETS + tuple(f"{n}{s}" for n in SPECIALISTS.values() for s in ("", "-nogoal"))
JOINT_DIM = 16  # per arm 7 joint targets (rad) + gripper command in [0, 1]; left arm first (joint_command_full)
GRIPPERS = (7, 15)  # gripper entries of a 16-d vector
JOINTS = tuple(i for i in range(JOINT_DIM) if i not in GRIPPERS)
LEFT_ARM, RIGHT_ARM = list(JOINTS[:7]), list(JOINTS[7:])  # each arm's 7 joint entries
NO_GOAL = 128  # the "no goal" token: a uniform mid-grey goal frame (a policy trained with goal_dropout knows it)


def check_guidance_range(guidance, where: str) -> float:
    """The one range check of action guidance, shared by the policy's and the rollout's configs."""
    if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not math.isfinite(guidance) \
            or not 0.0 <= guidance <= 10.0:
        raise ConfigError(f"{where} guidance={guidance!r}: must be a number in [0, 10]")
    return float(guidance)


@dataclass
class PolicyConfig:
    """Everything needed to rebuild a policy except the weights.

    image_size: frames (current and goal) are mapped to this square with ``crop`` (``resize``: the whole field of
        view squeezed, as ``image.fit(..., "resize")``), so nothing the camera sees is cut off.
    goal: whether the network takes a goal frame (stacked on the channels of the current frame); False is the
        no-foresight baseline.
    chunk: future commands predicted per call (saved frames t+1 .. t+chunk).
    channels: output channels of the four stride-2 conv stages; hidden: width of the action MLP.
    interval: the hindsight-goal interval the policy was trained with (saved frames ahead); rollouts use it as the
        default goal horizon.
    goal_dropout: the probability with which training replaced the goal by the no-goal token (``NO_GOAL``); > 0
        means the same network also acts without a goal, which ``guidance`` uses.
    guidance: action guidance, as classifier-free guidance does for images: the output is
        ``out(no goal) + guidance * (out(goal) - out(no goal))`` (1: the goal-conditioned output alone; 0: the
        network's own no-foresight output). Needs ``goal_dropout`` > 0 when not 1.
    stats: normalisation measured on the training split (filled by training): ``state_mean``/``state_std`` (16,),
        ``action_mean``/``action_std`` (chunk, 16; gripper entries unused).
    task_frames: mean expert episode length per task in the training split (saved frames); rollouts derive their
        step limit and plan-following budgets from it.
    """

    name: str = "tiny"
    image_size: int = 96
    crop: Literal["center", "resize", "pad"] = "resize"
    camera: str = "head_camera"
    goal: bool = True
    joint_dim: int = JOINT_DIM
    chunk: int = 8
    action: Literal["delta", "absolute"] = "delta"
    step_ticks: int = 15
    channels: list[int] = field(default_factory=lambda: [32, 64, 128, 128])
    state_hidden: int = 64
    hidden: int = 512
    interval: int = 50
    goal_dropout: float = 0.0
    guidance: float = 1.0
    stats: dict[str, Any] = field(default_factory=dict)
    task_frames: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 32 <= self.image_size <= 512 or self.image_size % 16:
            raise ConfigError(f"policy image_size={self.image_size}: must be a multiple of 16 in [32, 512]")
        if self.crop not in ("center", "resize", "pad"):
            raise ConfigError(f"policy crop={self.crop!r}: expected center, resize or pad")
        if self.action not in ("delta", "absolute"):
            raise ConfigError(f"policy action={self.action!r}: expected delta or absolute")
        if self.joint_dim != JOINT_DIM:
            raise ConfigError(f"policy joint_dim={self.joint_dim}: this robot has {JOINT_DIM} (2 x (7 joints + gripper))")
        for name in ("chunk", "step_ticks", "state_hidden", "hidden", "interval"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"policy {name}={value!r}: must be an integer >= 1")
        if len(self.channels) != 4 or any(not isinstance(c, int) or c < 8 or c % 8 for c in self.channels):
            raise ConfigError(f"policy channels={self.channels}: four stage widths, each a multiple of 8 (GroupNorm)")
        if isinstance(self.goal_dropout, bool) or not 0.0 <= float(self.goal_dropout) < 1.0:
            raise ConfigError(f"policy goal_dropout={self.goal_dropout!r}: must be in [0, 1)")
        self.check_guidance(self.guidance)
        self.check_stats()

    def check_guidance(self, guidance: float) -> float:
        """``guidance`` other than 1 needs a goal network that also learned the no-goal token."""
        check_guidance_range(guidance, "policy")
        if guidance != 1.0 and not (self.goal and self.goal_dropout > 0):
            raise ConfigError(f"policy guidance={guidance}: only a goal-conditioned policy trained with goal_dropout > 0 "
                              f"can blend its goal and no-goal outputs (this one: goal {self.goal}, goal_dropout "
                              f"{self.goal_dropout})")
        return float(guidance)

    def check_stats(self) -> None:
        """Refuse stats of the wrong shape (an empty dict means "not measured yet": identity normalisation)."""
        if not self.stats:
            return
        shapes = {"state_mean": (self.joint_dim,), "state_std": (self.joint_dim,),
                  "action_mean": (self.chunk, self.joint_dim), "action_std": (self.chunk, self.joint_dim)}
        import numpy as np

        for key, shape in shapes.items():
            if key not in self.stats:
                raise ConfigError(f"policy stats: missing {key!r} (have {sorted(self.stats)})")
            arr = np.asarray(self.stats[key], dtype=np.float64)
            if arr.shape != shape or not np.isfinite(arr).all():
                raise ConfigError(f"policy stats {key}: expected finite values of shape {shape}, got {arr.shape}")
            if key.endswith("std") and (arr <= 0).any():
                raise ConfigError(f"policy stats {key}: standard deviations must be > 0")

    @property
    def in_channels(self) -> int:
        return 6 if self.goal else 3

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> PolicyConfig:
        """``tiny`` (goal-conditioned) or ``tiny-nogoal`` (the no-foresight baseline); overrides replace fields."""
        if name not in PRESETS:
            raise ConfigError(f"policy preset {name!r}: expected one of {list(PRESETS)}")
        base = cls(name=name, goal=name == "tiny")
        return dataclasses.replace(base, **overrides) if overrides else base

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "policy.json") -> PolicyConfig:
        return cfgmod.from_dict(cls, data, where)


__all__ = ["EMBEDDED", "GRIPPERS", "JOINTS", "JOINT_DIM", "NO_GOAL", "PER_TASK", "PRESETS", "SPECIALISTS", "PolicyConfig"]
