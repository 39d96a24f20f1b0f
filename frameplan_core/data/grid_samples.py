"""3x3 grid samples (seed 004): nine frames of an episode at round(i*(T-1)/8) composed in serpentine order into
the target image, and the source image (frame 1 in the top-left cell, black elsewhere), with the instruction.

Stored with the InstructPix2Pix folder conventions (ip2p.py) as ``format: grid``: ``<id>_0`` is the source grid,
``<id>_1`` the target grid, ``prompt.json`` ``edit`` the instruction. Grids are PNG by default so that the black
cells of the source stay exactly 0 and the frames are not smeared across cell borders by JPEG."""
from __future__ import annotations

import numpy as np

from frameplan_core import grid
from frameplan_core.data.ip2p import FolderDataset
from frameplan_core.data.episode import EpisodeReader
from frameplan_core.errors import DataError
from frameplan_core.image import fit

MIN_FRAMES = grid.N_FRAMES


def grid_frames(episode: EpisodeReader, camera: str = "head_camera",
                size: int | None = None) -> tuple[list[int], list[np.ndarray]]:
    """The nine frame indices and the frames (optionally centre-cropped and resized to ``size`` x ``size``)."""
    n = len(episode)
    if n < MIN_FRAMES:
        raise DataError(f"{episode.path}: {n} frames, a grid needs at least {MIN_FRAMES} distinct frames")
    idx = grid.frame_indices(n)
    frames = [episode.rgb(i, camera) for i in idx]
    if size:
        frames = [fit(f, int(size), "center") for f in frames]
    shapes = {f.shape for f in frames}
    if len(shapes) != 1:
        raise DataError(f"{episode.path}: camera {camera!r} frames have different sizes {sorted(shapes)}")
    return idx, frames


def make_grid_sample(episode: EpisodeReader, camera: str = "head_camera", size: int | None = None) -> dict:
    """{"source", "target", "frames", "indices"} for one episode."""
    idx, frames = grid_frames(episode, camera, size)
    return {"source": grid.source_grid(frames[0]), "target": grid.compose(frames), "frames": frames, "indices": idx}


class GridDataset(FolderDataset):
    """Reader of a grid dataset: ``sample.input`` is the source grid, ``sample.output`` the target grid."""

    expected_format = "grid"

    def frames(self, i: int) -> list[np.ndarray]:
        """The nine target frames of sample ``i`` in time order."""
        return grid.split(self[i].output)
