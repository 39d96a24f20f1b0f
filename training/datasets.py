"""Torch datasets over the dataset folders written by ``frameplan convert`` (read with frameplan_core's readers):
InstructPix2Pix pairs (predictor), 3x3 grid samples (planner) and single frames (VAE).

Items are keyed by ``index`` or ``(index, augmentation_seed)`` (see sampler.py): with a seed the sample is
augmented with a generator made from it, without one it is only fitted to the model resolution. Unreadable
samples are reported by path and replaced by the next readable one; more than ``max_bad`` stop training with a
DataError listing them."""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from frameplan_training.augment import color_jitter, paired_augment
from torch.utils.data import Dataset

from frameplan_core import grid
from frameplan_core.pixels import to_tensor
from frameplan_core.data.grid_samples import GridDataset
from frameplan_core.data.instructions import swap_sides
from frameplan_core.data.ip2p import FolderDataset, IP2PDataset
from frameplan_core.errors import DataError, InputError
from frameplan_core.image import CropPolicy, fit

log = logging.getLogger(__name__)


class BadSampleTracker:
    """Counts unreadable samples (by path) and raises once more than ``limit`` were seen."""

    def __init__(self, limit: int, where: str) -> None:
        self.limit, self.where = limit, where
        self.bad: dict[int, str] = {}

    def report(self, index: int, message: str) -> None:
        if index not in self.bad:
            self.bad[index] = message
            log.warning("skipping unreadable sample %d: %s", index, message)
        if len(self.bad) > self.limit:
            listing = "\n  ".join(list(self.bad.values())[:20])
            raise DataError(f"{self.where}: {len(self.bad)} unreadable samples, more than max_bad_samples={self.limit}; "
                            f"fix or remove them:\n  {listing}")


def _split_key(key: Any) -> tuple[int, int | None]:
    if isinstance(key, (tuple, list)):
        return int(key[0]), int(key[1])
    return int(key), None


def _with_seed(item: dict[str, Any], seed: int | None) -> dict[str, Any]:
    """The item with its augmentation seed as ``seed`` (training items only): the modules seed the sample's
    noise from it, so a sample draws the same noise on whichever rank, and in whichever batch, it lands."""
    if seed is not None:
        item["seed"] = seed
    return item


class _FolderItems(Dataset):
    """Common part: a FolderDataset reader restricted to readable samples, with skip-and-report."""

    reader_cls: type[FolderDataset] = IP2PDataset

    def __init__(self, root, split: str | None, max_bad: int = 10, verify: bool = True) -> None:
        self.reader = self.reader_cls(root, split=split)
        self.where = f"{root} ({split or 'all'} split)"
        if len(self.reader) == 0:
            raise DataError(f"{self.where}: no samples")
        self.tracker = BadSampleTracker(max_bad, self.where)
        self.indices = list(range(len(self.reader)))
        if verify:
            self.indices = [i for i in self.indices if self._readable(i)]
            if not self.indices:
                raise DataError(f"{self.where}: no readable samples")

    def _readable(self, i: int) -> bool:
        try:
            self.reader[i]
            return True
        except (DataError, InputError) as exc:
            self.tracker.report(i, str(exc))
            return False

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, pos: int):
        """Reader sample at position ``pos``, skipping (and reporting) unreadable ones."""
        for k in range(len(self.indices)):
            i = self.indices[(pos + k) % len(self.indices)]
            try:
                return i, self.reader[i]
            except (DataError, InputError) as exc:
                self.tracker.report(i, str(exc))
        raise DataError(f"{self.where}: no readable samples left")

    def task(self, i: int) -> str:
        return str(self.reader.meta(i).get("task", ""))


class PairDataset(_FolderItems):
    """InstructPix2Pix pairs -> {"input", "target" (3, S, S) in [-1, 1], "text", "index", "task"}.

    ``mirror_prob``: a training sample is mirrored with this probability, its instruction with left and right
    exchanged, so the mirrored pair is a true example (the left arm's future, seen in a mirror, is the right arm's).
    Arm-naming data then hold every scene layout with either arm, and only the side word tells them apart."""

    def __init__(self, root, split: str | None, image_size: int, crop_res: int, crop_min_scale: float = 1.0,
                 flip_prob: float = 0.0, jitter: float = 0.0, max_bad: int = 10, verify: bool = True,
                 instruction_override: dict[int, str] | None = None, policy: CropPolicy = "center",
                 mirror_prob: float = 0.0) -> None:
        super().__init__(root, split, max_bad, verify)
        self.image_size, self.crop_res, self.policy = image_size, crop_res, policy
        self.crop_min_scale, self.flip_prob, self.jitter = crop_min_scale, flip_prob, jitter
        self.instruction_override = instruction_override or {}
        self.mirror_prob = mirror_prob

    def __getitem__(self, key) -> dict[str, Any]:
        pos, seed = _split_key(key)
        i, s = self.sample(pos)
        rng = np.random.default_rng(seed) if seed is not None else None
        a, b = paired_augment([s.input, s.output], rng, self.image_size, self.crop_res, self.crop_min_scale,
                              self.flip_prob, self.jitter, self.policy)
        text = self.instruction_override.get(i, s.edit)
        # its own stream, so turning mirroring on leaves every other draw of the sample as it was
        if seed is not None and self.mirror_prob > 0 and np.random.default_rng([seed, 1]).random() < self.mirror_prob:
            a, b, text = np.ascontiguousarray(a[:, ::-1]), np.ascontiguousarray(b[:, ::-1]), swap_sides(text)
        return _with_seed({"input": to_tensor(a), "target": to_tensor(b), "text": text, "index": i,
                           "task": str(s.meta.get("task", ""))}, seed)


class FrameDataset(_FolderItems):
    """Every input and target frame of an IP2P dataset as a single image (VAE training): {"image", "index"}."""

    def __init__(self, root, split: str | None, image_size: int, crop_res: int, crop_min_scale: float = 1.0,
                 flip_prob: float = 0.0, jitter: float = 0.0, max_bad: int = 10, verify: bool = True,
                 policy: CropPolicy = "center") -> None:
        super().__init__(root, split, max_bad, verify)
        self.image_size, self.crop_res, self.policy = image_size, crop_res, policy
        self.crop_min_scale, self.flip_prob, self.jitter = crop_min_scale, flip_prob, jitter

    def __len__(self) -> int:
        return 2 * len(self.indices)

    def __getitem__(self, key) -> dict[str, Any]:
        pos, seed = _split_key(key)
        i, s = self.sample(pos // 2)
        rng = np.random.default_rng(seed) if seed is not None else None
        (img,) = paired_augment([s.output if pos % 2 else s.input], rng, self.image_size, self.crop_res,
                                self.crop_min_scale, self.flip_prob, self.jitter, self.policy)
        return _with_seed({"image": to_tensor(img), "index": i}, seed)


def trajectory_from_meta(meta: dict, cell: int) -> np.ndarray | None:
    """The end-effector path stored with a grid sample (``meta["trajectory"]`` = {"points": [[x, y], ...],
    "image_hw": [h, w]} in pixels of the camera frame), mapped to a ``cell`` x ``cell`` frame like
    ``image.fit(.., "center")``; None when the sample has none."""
    from frameplan_core.trajectory import as_trajectory, fit_points

    t = meta.get("trajectory")
    if not t:
        return None
    try:
        traj = as_trajectory(t)
    except InputError as exc:
        raise DataError(f"grid sample trajectory: {exc}") from None
    hw = traj.image_hw
    if hw is None:
        raise DataError("grid sample trajectory: 'image_hw' (the frame size the points refer to) is missing")
    return fit_points(traj.points, tuple(hw), cell, "center")


class GridSampleDataset(_FolderItems):
    """3x3 grid samples -> {"source", "target" (3, 3C, 3C) in [-1, 1], "text", "mode", "index", "task"}.

    With an augmentation seed, the modality is drawn: ``text`` (plain first frame), ``trajectory`` (path drawn on
    the first frame, empty instruction), ``none`` (neither) or ``both``. Without a seed the sample is ``both``
    when a trajectory exists (``modality`` overrides)."""

    reader_cls = GridDataset

    def __init__(self, root, split: str | None, cell: int, jitter: float = 0.0, drop_text: float = 0.0,
                 drop_trajectory: float = 0.0, drop_both: float = 0.0, thickness: int = 1, max_bad: int = 10,
                 verify: bool = True, modality: str | None = None,
                 instruction_override: dict[int, str] | None = None, marks: bool = False) -> None:
        super().__init__(root, split, max_bad, verify)
        self.cell, self.jitter, self.thickness, self.marks = cell, jitter, thickness, marks
        self.drop = (drop_text, drop_trajectory, drop_both)
        self.modality = modality
        self.instruction_override = instruction_override or {}

    def _mode(self, rng: np.random.Generator | None, has_traj: bool) -> str:
        if self.modality is not None:
            mode = self.modality
        elif rng is None:
            mode = "both"
        else:
            u = rng.random()
            dt, dj, db = self.drop
            mode = "trajectory" if u < dt else "text" if u < dt + dj else "none" if u < dt + dj + db else "both"
        if not has_traj:
            mode = {"both": "text", "trajectory": "none"}.get(mode, mode)
        return mode

    def __getitem__(self, key) -> dict[str, Any]:
        from frameplan_core.trajectory import draw_trajectory, time_marked_frames

        pos, seed = _split_key(key)
        i, s = self.sample(pos)
        rng = np.random.default_rng(seed) if seed is not None else None
        frames = [fit(f, self.cell) for f in grid.split(s.output)]
        if rng is not None:
            frames = color_jitter(frames, rng, self.jitter)
        traj = trajectory_from_meta(s.meta, self.cell)
        mode = self._mode(rng, traj is not None)
        first = plain = frames[0]
        source = None
        if mode in ("both", "trajectory"):
            first = draw_trajectory(first, traj, thickness=self.thickness)
            if self.marks:  # as GridPlanner._source lays it out for a planner with trajectory_marks
                source = grid.compose(time_marked_frames(first, traj, self.thickness))
        source = grid.source_grid(first) if source is None else source
        text = self.instruction_override.get(i, s.edit) if mode in ("both", "text") else ""
        return _with_seed({"source": to_tensor(source), "observation": to_tensor(grid.source_grid(plain)),
                           "target": to_tensor(grid.compose(frames)),
                           "text": text, "mode": mode, "index": i, "task": str(s.meta.get("task", "")),
                           "has_trajectory": traj is not None}, seed)


def grid_example(ds: GridSampleDataset, pos: int) -> dict[str, Any]:
    """Unaugmented pieces of a grid sample for sampling/evaluation: ``first`` cell, the nine ``frames``,
    ``trajectory`` ((N, 2) in cell pixels or None), ``text`` and ``task``."""
    i, s = ds.sample(pos)
    frames = [fit(f, ds.cell) for f in grid.split(s.output)]
    return {"first": frames[0], "frames": frames, "trajectory": trajectory_from_meta(s.meta, ds.cell),
            "text": ds.instruction_override.get(i, s.edit), "task": str(s.meta.get("task", "")), "index": i}
