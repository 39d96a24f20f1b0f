"""What every frameplan LightningModule shares: AdamW with linear warmup then constant lr (optionally a linear
cooldown to 0 before max_steps), EMA of the trainable
weights, per-sample random generators seeded by the sample's own key (its augmentation seed, keyed by (seed, epoch,
position in the epoch's order); in validation its dataset index) so a resumed run draws exactly the same noise and
N DDP processes draw what one process with the same global batch draws, and checkpoints that hold only the
trainable weights (the frozen VAE / text encoder are rebuilt from the model the run started from, so a checkpoint
stays small)."""
from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import lightning as L
import torch
from frameplan_training.config import TrainConfig
from frameplan_training.ema import EMA
from torch import nn

from frameplan_core.errors import ModelError

log = logging.getLogger(__name__)

_STAGES = {"train": 0, "val": 1, "sample": 2, "global": 3}


def per_sample(generator: torch.Generator | list[torch.Generator], n: int) -> list[torch.Generator]:
    """One generator per sample of a batch of ``n``: a list is checked and kept (the trainer's per-sample
    generators); a single generator serves every sample in turn (tests, ad-hoc loss evaluation)."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != n:
            raise ModelError(f"{len(generator)} generators for a batch of {n} samples")
        return list(generator)
    return [generator] * n


def warmup_constant(warmup_steps: int, decay_steps: int = 0, max_steps: int = -1):
    """lr multiplier for optimizer step s: (s + 1) / warmup during warmup, then 1; with ``decay_steps`` it then
    falls linearly to 0 at ``max_steps`` (the step count alone decides, so a resumed run gets the same lr)."""
    def factor(step: int) -> float:
        f = 1.0 if warmup_steps <= 0 else min(1.0, (step + 1) / warmup_steps)
        if decay_steps > 0 and max_steps > 0:
            f = min(f, max(0.0, (max_steps - step) / decay_steps))
        return f
    return factor


class FrameplanModule(L.LightningModule):
    """Subclasses register the core model's parts as submodules and implement ``trainable_named_parameters``,
    ``compute_loss(batch, generator, train) -> (loss, logs)``, ``frozen_modules`` and ``export(folder)``."""

    def __init__(self, cfg: TrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.ema: EMA | None = None
        self._ema_state: dict | None = None
        self.strict_loading = False  # checkpoints hold only the trainable weights (checked in on_load_checkpoint)

    # ------------------------------------------------------------ to implement
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        raise NotImplementedError

    def frozen_modules(self) -> list[nn.Module]:
        return []

    def compute_loss(self, batch: dict, generator: torch.Generator | list[torch.Generator],
                     train: bool) -> tuple[torch.Tensor, dict]:
        """``generator``: one per sample (see ``sample_generators``) or one for the whole batch."""
        raise NotImplementedError

    # ------------------------------------------------------------ helpers
    def generator(self, stage: str, *keys: int) -> torch.Generator:
        """A CPU generator seeded by (seed, stage, keys): identical draws on resume and on any device."""
        import numpy as np

        seed = int(np.random.SeedSequence([self.cfg.seed, _STAGES[stage], *map(int, keys)]).generate_state(1)[0])
        return torch.Generator("cpu").manual_seed(seed)

    def sample_generators(self, stage: str, batch: dict) -> list[torch.Generator]:
        """One generator per sample, seeded by the sample itself: its augmentation seed when it has one (training:
        unique per (seed, epoch, global position), see sampler.py), else its dataset index (validation). The
        noise a sample gets thus depends neither on its batch nor on its rank: every rank draws different noise
        (its samples differ), and N processes reproduce one process with the same global batch."""
        keys = batch["seed"] if "seed" in batch else batch["index"]
        return [self.generator(stage, int(k)) for k in keys]

    def train(self, mode: bool = True):
        super().train(mode)
        for m in self.frozen_modules():  # frozen parts never leave eval mode (dropout, batch statistics)
            m.eval()
        return self

    def _trainable_names(self) -> set[str]:
        ids = {id(p) for _, p in self.trainable_named_parameters()}
        return {n for n, p in self.named_parameters() if id(p) in ids}

    def ema_applied(self):
        """Context manager: EMA weights loaded while inside (no-op without EMA)."""
        import contextlib

        return self.ema.applied() if self.ema is not None else contextlib.nullcontext()

    # ------------------------------------------------------------ optimisation
    def configure_optimizers(self) -> dict[str, Any]:
        c = self.cfg
        params = [p for _, p in self.trainable_named_parameters()]
        if not params:
            raise ModelError("nothing to train: no trainable parameters")
        opt = torch.optim.AdamW(params, lr=c.lr, betas=(c.adam_beta1, c.adam_beta2), eps=c.adam_eps,
                                weight_decay=c.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_constant(c.warmup_steps, c.lr_decay_steps, c.max_steps))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step", "frequency": 1}}

    def global_rng_seed(self, batch: dict, batch_idx: int) -> int:
        """Seed of torch's global RNG for one training batch (what nn.Dropout draws from): keyed by the batch's
        first sample (resume-exact, and different on every rank, whose samples differ) and the rank; without
        per-sample seeds by (step, batch, rank)."""
        import numpy as np

        key = [int(batch["seed"][0])] if "seed" in batch else [self.global_step, batch_idx]
        return int(np.random.SeedSequence([self.cfg.seed, _STAGES["global"], *key, self.global_rank])
                   .generate_state(1)[0])

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        # Layers that draw from torch's global RNG (dropout) get a stream seeded by the batch: seed_everything gives
        # every DDP rank the same seed (identical masks on all ranks) and a resume starts that stream afresh
        # (other masks than the uninterrupted run); the stream outside the step is left as it was.
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.global_rng_seed(batch, batch_idx))
            loss, logs = self.compute_loss(batch, self.sample_generators("train", batch), train=True)
        bs = len(batch.get("text", batch.get("index", [])))
        # sync_dist: the logged loss is the mean over all ranks (the loss of the global batch), not rank 0's
        self.log("train/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=bs, sync_dist=True)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        # EMA right after each optimizer step, i.e. before on_train_batch_end where step checkpoints are written
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    # ------------------------------------------------------------ validation (EMA weights when enabled)
    # The val metrics are sample-weighted means over every rank's share of the val samples (datamodule.py), summed
    # here rather than by Lightning's sync_dist: Lightning 2.6 mean-reduces its integer batch-size counter and
    # floors it, which inflates the value whenever the ranks validate different numbers of samples
    # (Lightning-AI/pytorch-lightning#21859), e.g. 3 val samples on 2 ranks: x 1.5.
    def on_validation_epoch_start(self) -> None:
        self._val_sums: dict[str, torch.Tensor] = {}
        self._val_count = 0
        self._ema_ctx = self.ema_applied()
        self._ema_ctx.__enter__()

    def on_validation_epoch_end(self) -> None:
        ctx, self._ema_ctx = getattr(self, "_ema_ctx", None), None
        if ctx is not None:
            ctx.__exit__(None, None, None)
        names = sorted(self._val_sums)  # the same on every rank: each validates at least one batch
        if not names:
            return
        count = torch.tensor(float(self._val_count), device=self.device)
        totals = self.trainer.strategy.reduce(torch.stack([self._val_sums[k] for k in names] + [count]),
                                              reduce_op="sum")  # an all-reduce on DDP, a no-op on one process
        for k, total in zip(names, totals[:-1]):
            # already equal on every rank; sync_dist (a mean of equal values) keeps Lightning's bookkeeping quiet
            self.log(f"val/{k}", total / totals[-1], prog_bar=k == "loss", sync_dist=True)

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss, logs = self.compute_loss(batch, self.sample_generators("val", batch), train=False)
        bs = len(batch.get("text", batch.get("index", [])))
        for k, v in {"loss": loss, **logs}.items():
            self._val_sums[k] = self._val_sums.get(k, 0.0) + v.detach().float() * bs
        self._val_count += bs
        return loss

    # ------------------------------------------------------------ EMA lifecycle and checkpoints
    def on_fit_start(self) -> None:
        if self.cfg.ema_decay > 0 and self.ema is None:
            self.ema = EMA(self.trainable_named_parameters(), self.cfg.ema_decay)

    def on_train_start(self) -> None:
        if self._ema_state is not None:
            if self.ema is None:
                raise ModelError("checkpoint has EMA weights but ema_decay is 0 in this config")
            self.ema.load_state_dict(self._ema_state)
            self._ema_state = None

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        keep = self._trainable_names()
        checkpoint["state_dict"] = {k: v for k, v in checkpoint["state_dict"].items() if k in keep}
        if self.ema is not None:
            checkpoint["ema"] = self.ema.state_dict()
        checkpoint["frameplan_config"] = asdict(self.cfg)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        missing = sorted(self._trainable_names() - set(checkpoint.get("state_dict", {})))
        if missing:
            raise ModelError(f"checkpoint lacks {len(missing)} trainable weight(s) of this model, e.g. {missing[:3]}; "
                             "was it written for another model family or config (LoRA rank, train_base)?")
        self._ema_state = checkpoint.get("ema")

    def named_trainable_state(self) -> Iterator[tuple[str, torch.Tensor]]:
        for n, p in self.trainable_named_parameters():
            yield n, p.detach()


def replace_vae(model, source) -> None:
    """Use the trained VAE saved in ``source``'s ``vae/`` folder (``frameplan train vae``) in a predictor or planner."""
    from pathlib import Path

    from frameplan_core.errors import ModelError
    from frameplan_core.vae import load_vae

    try:
        model.set_vae(load_vae(source))
    except ModelError as exc:
        raise ModelError(f"vae_from={source}: {exc}") from None
    logging.getLogger(__name__).info("VAE replaced by %s (scaling factor %.5f)", Path(source) / "vae",
                                     model.vae.config.scaling_factor)
