"""3x3 serpentine grids (seed 004): nine frames in time order sit at rows 1 2 3 / 6 5 4 / 7 8 9.

``SERPENTINE[k]`` is the raster cell (row-major index) holding the k-th frame in time order; the permutation is
its own inverse, so the same table also maps a raster cell back to its time index."""
from __future__ import annotations

from typing import Sequence

import numpy as np

from frameplan_core.errors import InputError

ROWS = COLS = 3
N_FRAMES = ROWS * COLS
SERPENTINE: tuple[int, ...] = (0, 1, 2, 5, 4, 3, 6, 7, 8)


def cell_of(k: int) -> tuple[int, int]:
    """(row, col) of the k-th frame (0-based, time order)."""
    if not 0 <= k < N_FRAMES:
        raise InputError(f"frame index {k} outside 0..{N_FRAMES - 1}")
    return divmod(SERPENTINE[k], COLS)


def frame_indices(num_frames: int, n: int = N_FRAMES) -> list[int]:
    """Nine frames evenly spaced over an episode of ``num_frames``: round(i*(T-1)/8)."""
    if num_frames < 1:
        raise InputError(f"episode has {num_frames} frames; need at least 1")
    return [int(round(i * (num_frames - 1) / (n - 1))) for i in range(n)]


def _check_frames(frames: Sequence[np.ndarray]) -> tuple[int, int]:
    if len(frames) != N_FRAMES:
        raise InputError(f"a grid needs exactly {N_FRAMES} frames, got {len(frames)}")
    h, w = frames[0].shape[:2]
    for i, f in enumerate(frames):
        if f.shape != frames[0].shape or f.dtype != frames[0].dtype:
            raise InputError(f"frame {i}: shape/dtype {f.shape}/{f.dtype} differs from frame 0 "
                             f"{frames[0].shape}/{frames[0].dtype}")
    return h, w


def compose(frames: Sequence[np.ndarray]) -> np.ndarray:
    """Nine equally sized (H, W, C) frames in time order -> (3H, 3W, C) mosaic in serpentine order."""
    h, w = _check_frames(frames)
    grid = np.zeros((ROWS * h, COLS * w) + frames[0].shape[2:], frames[0].dtype)
    for k, f in enumerate(frames):
        r, c = cell_of(k)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = f
    return grid


def split(grid: np.ndarray) -> list[np.ndarray]:
    """(3H, 3W, C) mosaic -> nine frames in time order (inverse of ``compose``)."""
    if grid.ndim < 2 or grid.shape[0] % ROWS or grid.shape[1] % COLS or grid.shape[0] == 0:
        raise InputError(f"grid of shape {grid.shape} cannot be split into {ROWS}x{COLS} equal cells")
    h, w = grid.shape[0] // ROWS, grid.shape[1] // COLS
    out = []
    for k in range(N_FRAMES):
        r, c = cell_of(k)
        out.append(np.ascontiguousarray(grid[r * h : (r + 1) * h, c * w : (c + 1) * w]))
    return out


LAYOUTS = ("first_cell", "tiled")


def source_grid(first: np.ndarray, layout: str = "first_cell") -> np.ndarray:
    """The conditioning image: frame 1 in the top-left cell, exact black (0) elsewhere (``first_cell``, the seed's
    layout), or frame 1 in every cell (``tiled``: each target cell then finds the observation at its own RoPE
    position, so carrying the static scene over is a zero-offset copy instead of a cell-dependent shift)."""
    if layout not in LAYOUTS:
        raise InputError(f"source grid layout {layout!r}: expected one of {list(LAYOUTS)}")
    h, w = first.shape[:2]
    if layout == "tiled":
        return np.ascontiguousarray(np.tile(first, (ROWS, COLS) + (1,) * (first.ndim - 2)))
    grid = np.zeros((ROWS * h, COLS * w) + first.shape[2:], first.dtype)
    grid[:h, :w] = first
    return grid
