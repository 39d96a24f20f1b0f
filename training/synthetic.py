"""Tiny synthetic datasets in the exact on-disk formats ``frameplan convert`` writes (via frameplan_core's
writers), for tests and smoke runs of ``frameplan train``/``eval`` without the simulator: per task, an object of
a task-specific colour slides across a textured table; pairs are (frame t, frame t + interval), grids are nine
frames with the object's path as the end-effector trajectory. Deterministic given the seed."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from frameplan_core import grid
from frameplan_core.data.grid_samples import GridDataset  # noqa: F401  (format partner of the writer below)
from frameplan_core.data.instructions import pick, templates
from frameplan_core.data.ip2p import FolderDatasetWriter
from frameplan_core.sim.task_config import TASK_NAMES as TASKS

COLORS = {"block_hammer_beat": (220, 40, 40), "block_handover": (40, 200, 60), "blocks_stack_easy": (40, 60, 220)}


def _background(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w]
    base = np.stack([120 + 30 * np.sin(x / 6.0 + rng.uniform(0, 6)), 110 + 25 * np.cos(y / 5.0),
                     100 + 20 * np.sin((x + y) / 9.0)], axis=-1)
    return np.clip(base + rng.normal(0, 3, (h, w, 3)), 0, 255).astype(np.uint8)


def episode_frames(task: str, seed: int, length: int = 24, hw: tuple[int, int] = (48, 64)) -> tuple[list[np.ndarray], np.ndarray]:
    """Frames of one synthetic episode and the object's centre path (length, 2) in pixels."""
    rng = np.random.default_rng([seed, TASKS.index(task) if task in TASKS else 99])
    h, w = hw
    bg = _background(rng, h, w)
    start = np.array([rng.uniform(0.15, 0.35) * w, rng.uniform(0.3, 0.7) * h])
    end = np.array([rng.uniform(0.65, 0.85) * w, rng.uniform(0.3, 0.7) * h])
    side = max(4, h // 6)
    frames, path = [], []
    for i in range(length):
        c = start + (end - start) * i / max(1, length - 1)
        f = bg.copy()
        x0, y0 = round(c[0] - side / 2), round(c[1] - side / 2)
        cv2.rectangle(f, (x0, y0), (x0 + side, y0 + side), COLORS.get(task, (200, 200, 0)), -1)
        frames.append(f)
        path.append(c)
    return frames, np.array(path)


def _split_of(ep: int, n_eps: int, held_out: int) -> str:
    return "val" if ep >= n_eps - held_out else "train"


def write_ip2p(root: str | Path, episodes_per_task: int = 3, held_out: int = 1, pairs_per_episode: int = 2,
               interval: int = 8, hw: tuple[int, int] = (48, 64), seed: int = 0, tasks=TASKS) -> Path:
    """An IP2P pair dataset; the last ``held_out`` episodes of each task form the val split."""
    with FolderDatasetWriter(root, "ip2p", ext=".png", params={"seed": seed, "interval": interval}) as w:
        for task in tasks:
            for ep in range(episodes_per_task):
                frames, _ = episode_frames(task, seed * 1000 + ep, hw=hw)
                for k in range(pairs_per_episode):
                    t = k * (len(frames) - 1 - interval) // max(1, pairs_per_episode - 1)
                    text = pick(templates(task)["seen"], seed, f"{task}/{ep}/{k}")
                    w.add(frames[t], frames[t + interval], text, meta={"task": task, "frames": [t, t + interval]},
                          split=_split_of(ep, episodes_per_task, held_out), episode=f"{task}/episode{ep}")
    return Path(root)


def write_grid(root: str | Path, episodes_per_task: int = 3, held_out: int = 1, hw: tuple[int, int] = (48, 64),
               seed: int = 0, tasks=TASKS) -> Path:
    """A grid dataset (source grid, target grid) with the object's path stored as the trajectory."""
    with FolderDatasetWriter(root, "grid", ext=".png", params={"seed": seed}) as w:
        for task in tasks:
            for ep in range(episodes_per_task):
                frames, path = episode_frames(task, seed * 1000 + ep, hw=hw)
                idx = grid.frame_indices(len(frames))
                nine = [frames[i] for i in idx]
                text = pick(templates(task)["seen"], seed, f"{task}/{ep}")
                meta = {"task": task, "indices": idx,
                        "trajectory": {"points": path.tolist(), "image_hw": list(hw)}}
                w.add(grid.source_grid(nine[0]), grid.compose(nine), text, meta=meta,
                      split=_split_of(ep, episodes_per_task, held_out), episode=f"{task}/episode{ep}")
    return Path(root)
