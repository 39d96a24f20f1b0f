"""Task config: RoboTwin's task_config field names where they apply, plus frameplan's own (cameras, augmentation).

Unknown keys are rejected by frameplan_core.config; RoboTwin fields whose features are not implemented here
(a viewer, raw_data output, segmentation) are accepted only with the values that mean "off", and any other value
is rejected with a message that says why."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Literal

from frameplan_core.config import apply_override, from_dict, load_yaml
from frameplan_core.errors import ConfigError

TASK_NAMES = ("block_hammer_beat", "block_handover", "blocks_stack_easy")


@dataclass
class SaveType:
    """RoboTwin ``save_type``: only the per-frame pickles are written (raw_data = per-camera image folders)."""

    raw_data: bool = False
    pkl: bool = True

    def __post_init__(self):
        if self.raw_data:
            raise ValueError("save_type.raw_data: true is not supported (frameplan writes RoboTwin 1.0 pickles only)")
        if not self.pkl:
            raise ValueError("save_type.pkl: false leaves nothing to write; pickles are the only output")


@dataclass
class DataType:
    """RoboTwin ``data_type``: which entries each frame records."""

    rgb: bool = True
    depth: bool = True
    pointcloud: bool = False
    endpose: bool = True
    qpos: bool = True
    observer: bool = False
    conbine: bool = False
    mesh_segmentation: bool = False
    actor_segmentation: bool = False

    def __post_init__(self):
        for name in ("observer", "conbine", "mesh_segmentation", "actor_segmentation"):
            if getattr(self, name):
                raise ValueError(f"data_type.{name}: true is not supported by the frameplan simulator")
        if not self.rgb:
            raise ValueError("data_type.rgb: false is not supported (every consumer needs the images)")


@dataclass
class Augmentation:
    """Conditional augmentation (seed 000 section 2.3), sampled per episode and recorded in scene_info.json."""

    enabled: bool = False
    light: bool = True  # direction, colour and intensity of the directional light, ambient level
    table_color: bool = True
    wall_color: bool = True
    textures: bool = True  # procedural stripes/checker textures on table and wall instead of flat colours
    block_color: bool = True  # only where the task allows (blocks_stack_easy keeps red and black)
    camera_jitter: bool = True
    camera_jitter_pos: float = 0.01  # m, uniform per axis
    camera_jitter_rot: float = 1.0  # degrees, uniform per axis

    def __post_init__(self):
        if self.camera_jitter_pos < 0 or self.camera_jitter_rot < 0:
            raise ValueError("augmentation.camera_jitter_pos/rot must be >= 0")


@dataclass
class TaskConfig:
    task_name: str = "block_hammer_beat"
    # --- RoboTwin fields
    render_freq: int = 0
    use_seed: bool = False
    collect_data: bool = True
    save_path: str = "data/sim"
    dual_arm: bool = True
    st_episode: int = 0
    head_camera_type: str = "D435"
    wrist_camera_type: str = "D435"
    front_camera_type: str = "D435"
    pcd_crop: bool = True
    pcd_down_sample_num: int = 1024
    episode_num: int = 100
    save_freq: int = 15
    save_type: SaveType = field(default_factory=SaveType)
    data_type: DataType = field(default_factory=DataType)
    # --- frameplan fields
    seed: int = 0  # episode N tries seeds seed + 1000*N, +1, +2 ... until the expert succeeds
    max_attempts: int = 20  # per episode, before giving up with an error
    cameras: list = field(default_factory=lambda: ["head_camera", "front_camera", "left_camera", "right_camera"])
    camera_config: str | None = None  # path of the camera-type YAML; default: the packaged _camera_config.yaml
    shadows: bool = True
    shadow_map_size: int = 512
    robot_visual: Literal["lowpoly", "full"] = "lowpoly"  # lowpoly: ~8x fewer arm triangles, 2-3x faster on CPU
    # fixed: one way to do each task (the arm on the object's side, one hand-over point): the current frame decides
    # the next commands. varied: per episode, a strategy the first frame does not show (which arm stacks / strikes,
    # where the hand-over happens), drawn from its own seed stream and recorded in scene_info's layout.strategy.
    # instructed: the varied arm choice (block_hammer_beat, blocks_stack_easy), named in the episode's instruction
    # ("... with the left arm"), and the success check asks for that arm: only the instruction tells which is right.
    # block_handover: the block in the middle, a mat on either side, the instruction names the giver and success asks
    # for the block on the other arm's mat.
    expert_strategy: Literal["fixed", "varied", "instructed"] = "fixed"
    # varied / instructed tasks with an arm choice: drawn = the arm the seed's strategy stream draws; swapped = the
    # other one, in the very same scene (the counterfactual of the drawn episode: same seed, the other arm named)
    arm_choice: Literal["drawn", "swapped"] = "drawn"
    # the expert tries nearby poses where a task leaves the choice free (block_handover: the hand-over point) when the
    # preferred one cannot be planned; false = give up at once (every collection made before 2026-12-06)
    plan_fallback: bool = True
    augmentation: Augmentation = field(default_factory=Augmentation)

    def __post_init__(self):
        if self.task_name not in TASK_NAMES:
            raise ValueError(f"task_name: {self.task_name!r} is not one of {list(TASK_NAMES)}")
        if self.render_freq != 0:
            raise ValueError("render_freq: only 0 is supported (no interactive viewer; use `frameplan collect --preview`)")
        if self.use_seed:
            raise ValueError("use_seed: true is not supported; seeds are derived from `seed` and the episode index, "
                             "and every episode records its seed in scene_info.json")
        if not self.collect_data:
            raise ValueError("collect_data: false is not supported (frameplan collect always writes episodes)")
        if not self.dual_arm:
            raise ValueError("dual_arm: false is not supported: the scenes always hold two Panda arms")
        if self.save_freq < 1:
            raise ValueError(f"save_freq: must be >= 1 sim step, got {self.save_freq}")
        if self.episode_num < 0 or self.st_episode < 0:
            raise ValueError("episode_num and st_episode must be >= 0")
        if self.pcd_down_sample_num < 1:
            raise ValueError("pcd_down_sample_num: must be >= 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts: must be >= 1")
        from frameplan_core.sim.cameras import CAMERA_NAMES

        bad = [c for c in self.cameras if c not in CAMERA_NAMES]
        if bad or not self.cameras:
            raise ValueError(f"cameras: {bad or 'empty'}; choose from {list(CAMERA_NAMES)}")


def default_config_path(task: str) -> Path:
    if task not in TASK_NAMES:
        raise ConfigError(f"task {task!r}: unknown; choose one of {list(TASK_NAMES)}")
    return Path(str(resources.files("frameplan_core.sim") / "tasks" / f"{task}.yaml"))


def load_task_config(task: str, path: str | Path | None = None, overrides: list[str] | None = None) -> TaskConfig:
    """The packaged ``tasks/<task>.yaml`` (or ``path``) with ``key=value`` overrides; task_name must match."""
    path = Path(path) if path else default_config_path(task)
    data = load_yaml(path)
    data.setdefault("task_name", task)
    for item in overrides or []:
        apply_override(data, item)
    cfg = from_dict(TaskConfig, data, str(path))
    if cfg.task_name != task:
        raise ConfigError(f"{path}: task_name is {cfg.task_name!r} but the task asked for is {task!r}")
    return cfg


def config_to_dict(cfg: TaskConfig) -> dict:
    return dataclasses.asdict(cfg)
