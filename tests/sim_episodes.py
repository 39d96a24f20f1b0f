"""One short simulated episode per task (tiny images, save_freq 50), collected once per test session and shared by
test_sim.py and test_replay.py: collection is the expensive part of both (a few seconds per task on 2 cores)."""
from __future__ import annotations

from pathlib import Path

from frameplan_core.sim.task_config import TASK_NAMES as TASKS
TINY = "Tiny"
TINY_W, TINY_H, TINY_FOVY = 96, 72, 37.0
SAVE_FREQ = 50  # few frames: every 0.2 s of simulated time
ALL_CAMERAS = ("front_camera", "head_camera", "left_camera", "right_camera")
CAMERAS = {"block_hammer_beat": ("head_camera",), "block_handover": ALL_CAMERAS, "blocks_stack_easy": ("head_camera",)}

_cache: dict = {}


def camera_config(dir_: Path) -> Path:
    path = Path(dir_) / "cameras.yaml"
    path.write_text(f"{TINY}: {{w: {TINY_W}, h: {TINY_H}, fovy: {TINY_FOVY}}}\n")  # only the types in use are needed
    return path


def config(task: str, cams_yaml: Path, **extra):
    from frameplan_core.sim.task_config import load_task_config

    overrides = [f"camera_config={cams_yaml}", f"head_camera_type={TINY}", f"wrist_camera_type={TINY}",
                 f"front_camera_type={TINY}", f"save_freq={SAVE_FREQ}", "episode_num=1", "shadows=false"]
    overrides += [f"{k}={v}" for k, v in extra.items()]
    return load_task_config(task, None, overrides)


def collected(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(data root, camera YAML, {task: CollectSummary}): one episode per task written through the collector (all
    four cameras for the handover, the head camera for the others). Tests must not write into the data root."""
    if "out" not in _cache:
        from frameplan_core.sim.collect import collect

        root = tmp_path_factory.mktemp("sim")
        cams_yaml = camera_config(root)
        out = root / "data"
        summaries = {t: collect(config(t, cams_yaml, cameras=f"[{', '.join(CAMERAS[t])}]"), out, workers=1,
                                progress=False) for t in TASKS}
        _cache["out"] = (out, cams_yaml, summaries)
    return _cache["out"]
