"""Temporal ensembling of action chunks (ACT, Zhao et al. 2023): the policy is asked at every step, and the command
sent at step t is the weighted mean of every chunk's prediction for step t, weights ``exp(-k * i)`` with i = 0 for
the oldest prediction.

Why: executing several commands of one chunk open loop lets a small error carry on for those steps, and switching
to a fresh chunk every few steps makes the arm jerk where consecutive chunks disagree. Averaging the overlapping
predictions smooths the motion without giving up reacting to every new frame. ``k`` = 0 weighs all predictions
equally (ACT uses 0.01); a larger ``k`` holds on to older predictions, a negative one follows the newest."""
from __future__ import annotations

from collections import deque

import numpy as np


class ChunkEnsemble:
    """Chunks predicted at steps s (commands for steps s .. s + chunk - 1) -> the command for step t."""

    def __init__(self, k: float) -> None:
        if not (isinstance(k, (int, float)) and np.isfinite(k)):
            raise ValueError(f"ensemble weight k={k!r}: must be a finite number")
        self.k = float(k)
        self._chunks: deque[tuple[int, np.ndarray]] = deque()

    def add(self, step: int, chunk: np.ndarray) -> None:
        """Record the chunk predicted at ``step`` (its first command is for ``step``). Steps must not go back."""
        chunk = np.asarray(chunk, dtype=np.float64)
        if chunk.ndim != 2 or not len(chunk):
            raise ValueError(f"chunk: expected (commands, joints), got shape {chunk.shape}")
        if self._chunks and step < self._chunks[-1][0]:
            raise ValueError(f"chunk for step {step} after one for step {self._chunks[-1][0]}")
        self._chunks.append((int(step), chunk))
        while self._chunks and self._chunks[0][0] + len(self._chunks[0][1]) <= step:
            self._chunks.popleft()  # no longer covers any step from now on

    def command(self, step: int) -> np.ndarray:
        """The weighted mean, over the chunks that cover ``step`` (oldest first), of their command for it."""
        preds = [c[step - s] for s, c in self._chunks if s <= step < s + len(c)]
        if not preds:
            raise ValueError(f"no chunk covers step {step}: add one first")
        w = np.exp(-self.k * np.arange(len(preds)))
        return (w[:, None] * np.stack(preds)).sum(0) / w.sum()


__all__ = ["ChunkEnsemble"]
