"""SAPIEN simulation of RoboTwin's block_hammer_beat, block_handover and blocks_stack_easy with two Panda arms.

Importing this package does not import SAPIEN; ``make_task`` (and ``SimEnv.reset``) does. Any controller (a
policy, a replay, the expert tick by tick): ``SimEnv`` (``frameplan_core.sim.env``: reset/step/success/done).
The scripted expert's saved frames (the collector, the ROS sim bridge)::

    from frameplan_core.sim import make_task
    task = make_task("block_hammer_beat", seed=0, camera_type="D435", cameras=("head_camera",))
    for f in task.stream(save_freq=None):  # f.index, f.observation, f.instruction, f.sim_time
        ...
    task.success(); task.close()
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from frameplan_core.sim.task_config import TASK_NAMES, TaskConfig, load_task_config

if TYPE_CHECKING:  # pragma: no cover
    from frameplan_core.sim.base_task import Command, SimFrame, SimTask
    from frameplan_core.sim.env import Observation, SimEnv

__all__ = ["TASK_NAMES", "Command", "Observation", "SimEnv", "SimFrame", "SimTask", "TaskConfig", "load_task_config",
           "make_task"]


def make_task(name: str, seed: int = 0, camera_type: str | None = "D435", cameras: Sequence[str] | None = ("head_camera",),
              config: TaskConfig | str | None = None, overrides: list[str] | None = None,
              augment: dict | None = None) -> SimTask:
    """Build the scene of task ``name`` for ``seed``: objects placed, arms at rest, cameras created.

    ``config`` is a TaskConfig, a YAML path, or None for the packaged ``tasks/<name>.yaml``; ``camera_type``
    (head camera) and ``cameras`` override it when not None; ``augment`` is a recorded augmentation record
    (scene_info.json) to apply instead of drawing one. Raises SimError without a Vulkan driver."""
    from frameplan_core.sim.tasks import task_class

    cls = task_class(name)
    if config is None or isinstance(config, str) or hasattr(config, "__fspath__"):
        config = load_task_config(name, config, overrides)
    elif overrides:
        from frameplan_core.errors import ConfigError

        raise ConfigError("overrides apply to a config file; pass them with config=None or a path")
    return cls(seed=seed, camera_type=camera_type, cameras=cameras, config=config, augment=augment)


def __getattr__(name: str):
    if name in ("Command", "SimFrame", "SimTask"):
        from frameplan_core.sim import base_task

        return getattr(base_task, name)
    if name in ("Observation", "SimEnv"):
        from frameplan_core.sim import env

        return getattr(env, name)
    raise AttributeError(name)
