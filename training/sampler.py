"""Data order that survives a resume: the order of epoch ``e`` is a pure function of (seed, e), each item carries
the seed of its augmentation, and the loader remembers how many batches of the current epoch were trained.

Lightning saves and restores any train DataLoader that has ``state_dict``/``load_state_dict`` (its ``_Stateful``
protocol); ``ResumableLoader`` provides them. The number of trained batches is read from Lightning's own progress
counter at save time (not from how many batches the loader handed out, which runs ahead by the prefetch)."""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import numpy as np
from torch.utils.data import DataLoader, Dataset, Sampler

log = logging.getLogger(__name__)


class ResumableSampler(Sampler):
    """Yields ``(index, augmentation_seed)`` pairs: a seeded permutation per epoch, sharded over ranks.

    Rank r gets global positions r, r + W, r + 2W, ... of the epoch's order (W = world size), so the ranks' items
    are disjoint (the order is padded by wrapping to a multiple of W, as torch's DistributedSampler does) and
    rank r's k-th batch holds the global positions of the one-process run's k-th batch of W x batch_size. The
    augmentation seed is keyed by (seed, epoch, global position), not by the rank: a sample is augmented and
    noised (the modules seed its noise from it) identically whatever the number of processes, which is what lets
    N processes reproduce a one-process run with the same global batch.

    ``skip`` samples at the start of ``resume_epoch`` are left out once (they were trained before the resume)."""

    def __init__(self, n: int, seed: int, shuffle: bool = True, rank: int = 0, world_size: int = 1) -> None:
        if n < 1:
            raise ValueError("ResumableSampler: empty dataset")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size = rank, world_size
        self.epoch = 0
        self._skip = 0
        self._skip_epoch = -1

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def resume_at(self, epoch: int, skip: int) -> None:
        self.epoch, self._skip, self._skip_epoch = int(epoch), int(skip), int(epoch)

    def _order(self) -> np.ndarray:
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(self.n)
        else:
            order = np.arange(self.n)
        per_rank = len(self)
        if per_rank * self.world_size > self.n:  # pad by wrapping so every rank gets as many items
            order = np.concatenate([order, order[: per_rank * self.world_size - self.n]])
        return order[self.rank :: self.world_size]

    def __len__(self) -> int:
        return (self.n + self.world_size - 1) // self.world_size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        order = self._order()
        start = 0
        if self._skip and self._skip_epoch == self.epoch:
            start, self._skip = min(self._skip, len(order)), 0
        for pos in range(start, len(order)):
            yield int(order[pos]), self.item_seed(pos * self.world_size + self.rank)

    def item_seed(self, global_pos: int) -> int:
        """Augmentation (and noise) seed of the item at ``global_pos`` of this epoch's order: unique per
        (seed, epoch, position), independent of the rank, the world size and worker processes."""
        return int(np.random.default_rng([self.seed, self.epoch, global_pos]).integers(0, 2**62))


class ResumableLoader(DataLoader):
    """A DataLoader over a ``ResumableSampler`` with Lightning's state_dict/load_state_dict protocol.

    ``batches_done`` is a callable giving the number of batches trained in the current epoch (set by the
    datamodule to Lightning's progress counter)."""

    def __init__(self, dataset: Dataset, sampler: ResumableSampler, batch_size: int, **kwargs) -> None:
        super().__init__(dataset, batch_size=batch_size, sampler=sampler, **kwargs)
        self.resumable_sampler = sampler
        self.batches_done: Callable[[], int] = lambda: 0

    def state_dict(self) -> dict:
        return {"epoch": self.resumable_sampler.epoch, "batches_done": int(self.batches_done()),
                "seed": self.resumable_sampler.seed, "n": self.resumable_sampler.n,
                "world_size": self.resumable_sampler.world_size}

    def load_state_dict(self, state: dict) -> None:
        s = self.resumable_sampler
        if int(state.get("n", s.n)) != s.n or int(state.get("seed", s.seed)) != s.seed:
            # adding data and resuming is legitimate, but the order (and so the weights) then differ from an
            # uninterrupted run: say so rather than let "exact resume" be silently untrue
            log.warning("resume: the checkpoint's data order was for %s train samples with seed %s, now %d with "
                        "seed %d; training continues, but not in the uninterrupted run's order",
                        state.get("n"), state.get("seed"), s.n, s.seed)
        if int(state.get("world_size", s.world_size)) != s.world_size:
            # the position in the epoch is counted in per-rank batches: on another number of processes the
            # remaining samples of the interrupted epoch are not the ones the first run had left
            log.warning("resume: the checkpoint was written by a run of %s processes, this run has %d; training "
                        "continues, but not in the uninterrupted run's order", state.get("world_size"), s.world_size)
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self):  # the checkpoint was taken on the last batch of its epoch
            s.resume_at(epoch + 1, 0)
        else:
            s.resume_at(epoch, done * self.batch_size)
