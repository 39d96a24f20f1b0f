"""LightningDataModule over a dataset folder: the ``train`` split with a resumable, rank-sharded order and
augmentation, the ``val`` split (no augmentation, sharded over ranks too) for the validation loss and the sample
images.

Which dataset class is used depends on the model family: pairs (predictor), grids (planner), frames (VAE)."""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import lightning as L
from frameplan_training.sampler import ResumableLoader, ResumableSampler
from torch.utils.data import DataLoader, Dataset, Subset

from frameplan_core.data import splits as splits_mod
from frameplan_core.errors import DataError

log = logging.getLogger(__name__)

DatasetFactory = Callable[[str, bool], Dataset]  # (split, augment) -> dataset


def available_splits(root: str | Path) -> dict[str, int]:
    """Number of samples per split recorded in the dataset's splits.json (DataError when there is none)."""
    data = splits_mod.load(root)
    if data is None:
        raise DataError(f"{root}: no splits.json; convert the data with `frameplan convert` so that held-out "
                        "episodes are recorded")
    return {k: len(v) for k, v in data["samples"].items()}


class FolderDataModule(L.LightningDataModule):
    """``factory(split, augment)`` builds the dataset of a split; ``batch_size``/``num_workers``/``seed`` from the
    training config; ``val_batches``: validate on the first ``val_batches`` x ``val_batch_size`` x world size val
    samples (None: all), which is what Lightning's ``limit_val_batches`` means per rank."""

    def __init__(self, root: str | Path, factory: DatasetFactory, batch_size: int, seed: int,
                 num_workers: int = 0, val_batch_size: int | None = None, val_batches: int | None = None) -> None:
        super().__init__()
        self.root = Path(root)
        self.factory = factory
        self.batch_size, self.seed, self.num_workers = batch_size, seed, num_workers
        self.val_batch_size = val_batch_size or batch_size
        self.val_batches = val_batches
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        counts = available_splits(self.root)
        if counts.get("train", 0) == 0:
            raise DataError(f"{self.root}: the train split is empty (splits.json: {counts})")
        self.train_set = self.factory("train", True)
        if counts.get("val", 0):
            self.val_set = self.factory("val", False)
        else:
            log.warning("%s: no val split; validation loss and sample images use the first train samples", self.root)
            self.val_set = self.factory("train", False)
        log.info("data %s: %d train, %d val samples", self.root, len(self.train_set), len(self.val_set))

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> ResumableLoader:
        trainer = self.trainer
        rank, world = self._rank_world()
        sampler = ResumableSampler(len(self.train_set), self.seed, shuffle=True, rank=rank, world_size=world)
        loader = ResumableLoader(self.train_set, sampler, self.batch_size, num_workers=self.num_workers,
                                 persistent_workers=self.num_workers > 0)
        if trainer is not None:
            sampler.set_epoch(trainer.current_epoch)
            progress = trainer.fit_loop.epoch_loop.batch_progress
            loader.batches_done = lambda: progress.current.processed
        return loader

    def val_dataloader(self) -> DataLoader:
        """This rank's share of the first ``val_batches`` global batches: positions rank, rank + W, ... (W = world
        size), so the ranks together validate each of those samples once and the batch-weighted mean that
        ``sync_dist`` takes over ranks is the loss of the same samples as one process with the same global batch
        (with the modules' per-sample noise: the same value, to float rounding). With fewer samples than ranks
        every rank validates them all: a rank without a batch would leave the others waiting in the all-reduce."""
        rank, world = self._rank_world()
        n = len(self.val_set)
        if self.val_batches is not None:
            n = min(n, self.val_batches * self.val_batch_size * world)
        positions = list(range(rank, n, world)) if n >= world else list(range(n))
        return DataLoader(Subset(self.val_set, positions), batch_size=self.val_batch_size, shuffle=False,
                          num_workers=self.num_workers)
