"""What every frameplan LightningModule shares: AdamW with linear warmup then constant lr (optionally a linear
cooldown to 0 before max_steps), EMA of the trainable
weights, per-batch random generators derived from (seed, epoch, batch) so a resumed run draws exactly the same
noise, and checkpoints that hold only the trainable weights (the frozen VAE / text encoder are rebuilt from the
model the run started from, so a checkpoint stays small)."""
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

_STAGES = {"train": 0, "val": 1, "sample": 2}


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

    def compute_loss(self, batch: dict, generator: torch.Generator, train: bool) -> tuple[torch.Tensor, dict]:
        raise NotImplementedError

    # ------------------------------------------------------------ helpers
    def generator(self, stage: str, *keys: int) -> torch.Generator:
        """A CPU generator seeded by (seed, stage, keys): identical draws on resume and on any device."""
        import numpy as np

        seed = int(np.random.SeedSequence([self.cfg.seed, _STAGES[stage], *map(int, keys)]).generate_state(1)[0])
        return torch.Generator("cpu").manual_seed(seed)

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

    def training_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        gen = self.generator("train", self.current_epoch, batch_idx, self.global_rank)
        loss, logs = self.compute_loss(batch, gen, train=True)
        bs = len(batch.get("text", batch.get("index", [])))
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        for k, v in logs.items():
            self.log(f"train/{k}", v, batch_size=bs)
        self.log("train/lr", self.trainer.optimizers[0].param_groups[0]["lr"], batch_size=bs)
        return loss

    def optimizer_step(self, *args, **kwargs) -> None:
        # EMA right after each optimizer step, i.e. before on_train_batch_end where step checkpoints are written
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update()

    # ------------------------------------------------------------ validation (EMA weights when enabled)
    def on_validation_epoch_start(self) -> None:
        self._ema_ctx = self.ema_applied()
        self._ema_ctx.__enter__()

    def on_validation_epoch_end(self) -> None:
        ctx, self._ema_ctx = getattr(self, "_ema_ctx", None), None
        if ctx is not None:
            ctx.__exit__(None, None, None)

    def validation_step(self, batch: dict, batch_idx: int) -> torch.Tensor:
        gen = self.generator("val", batch_idx, self.global_rank)
        loss, logs = self.compute_loss(batch, gen, train=False)
        bs = len(batch.get("text", batch.get("index", [])))
        self.log("val/loss", loss, prog_bar=True, batch_size=bs, sync_dist=True)
        for k, v in logs.items():
            self.log(f"val/{k}", v, batch_size=bs, sync_dist=True)
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
