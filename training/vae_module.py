"""Reconstruction training of the tiny ÷8 AutoencoderKL (``frameplan train vae``), wrapping the VAE of a
frameplan_core ``FramePredictor`` (no SD VAE exists offline, so the embedded models need their own): L1 + MSE on
pixels plus a small KL term, no perceptual or adversarial loss. Export writes the whole predictor folder with the
trained VAE and sets ``scaling_factor`` to 1 / std of the latents on training frames (how SD chose 0.18215), so
the predictor and planner trainings can start from it with ``vae_from``."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from frameplan_training.base_module import FrameplanModule
from frameplan_training.config import VAETrainConfig

log = logging.getLogger(__name__)


def load_vae_owner(cfg: VAETrainConfig, device: str = "cpu"):
    """The FramePredictor whose VAE is trained (preset or saved folder, as for the predictor)."""
    from frameplan_core.predictor import FramePredictor, PredictorConfig
    from frameplan_core.predictor.config import PRESET_NAMES

    if cfg.model in PRESET_NAMES and not Path(cfg.model).exists():
        return FramePredictor.from_config(PredictorConfig.preset(cfg.model), seed=cfg.seed, device=device,
                                          dtype="float32")
    p = FramePredictor.from_pretrained(cfg.model, device=device, dtype="float32")
    if cfg.vae_from:
        from frameplan_training.base_module import replace_vae

        replace_vae(p, cfg.vae_from)
    if cfg.crop:
        p.config.crop = cfg.crop
    return p


class VAEModule(FrameplanModule):
    def __init__(self, cfg: VAETrainConfig, predictor) -> None:
        super().__init__(cfg)
        self.vae = predictor.vae
        self.predictor = predictor
        self.vae.requires_grad_(True)
        if not cfg.train_encoder:  # decoder only: the latent space the diffusion models learned stays as it is
            self.vae.encoder.requires_grad_(False)
            if self.vae.quant_conv is not None:
                self.vae.quant_conv.requires_grad_(False)
        if cfg.gradient_checkpointing:
            self.vae.enable_gradient_checkpointing()
        self.vae.train()

    def trainable_named_parameters(self):
        return [(f"vae.{n}", p) for n, p in self.vae.named_parameters() if p.requires_grad]

    def compute_loss(self, batch: dict, generator: torch.Generator | list[torch.Generator],
                     train: bool) -> tuple[torch.Tensor, dict]:
        c: VAETrainConfig = self.cfg
        x = batch["image"]
        post = self.vae.encode(x).latent_dist
        z = post.sample(generator) if train else post.mode()
        rec = self.vae.decode(z).sample.float()
        l1 = F.l1_loss(rec, x.float())
        mse = F.mse_loss(rec, x.float())
        kl = post.kl().mean()
        loss = l1 + c.mse_weight * mse + c.kl_weight * kl
        psnr = 10 * torch.log10(4.0 / mse.detach().clamp_min(1e-10))  # range [-1, 1] -> peak-to-peak 2
        return loss, {"l1": l1.detach(), "mse": mse.detach(), "kl": kl.detach(), "psnr": psnr}

    @torch.no_grad()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        was = self.vae.training
        self.vae.eval()
        try:
            with self.ema_applied():
                return self.vae.decode(self.vae.encode(x.to(self.device)).latent_dist.mode()).sample
        finally:
            self.vae.train(was)

    def sample_rows(self, n: int) -> list[tuple]:
        from frameplan_core.pixels import to_uint8

        ds = self.trainer.datamodule.val_set
        items = [ds[i]["image"] for i in range(min(n, len(ds)))]
        if not items:
            return []
        x = torch.stack(items)
        rec = self.reconstruct(x)
        return [(to_uint8(a), to_uint8(b)) for a, b in zip(x, rec)]

    @torch.no_grad()
    def latent_std(self, max_images: int = 64) -> float:
        """Std of the latent posterior means over up to ``max_images`` training frames (no augmentation)."""
        ds = self.trainer.datamodule.train_set
        xs = [ds[i]["image"] for i in range(min(max_images, len(ds)))]
        zs = []
        for k in range(0, len(xs), 16):
            zs.append(self.vae.encode(torch.stack(xs[k : k + 16]).to(self.device)).latent_dist.mode().float())
        return float(torch.cat(zs).std())

    def export(self, folder: str | Path) -> Path:
        from frameplan_training.export import to_fp16_where_safe

        self.vae.eval()
        with self.ema_applied():
            if self.cfg.train_encoder:
                std = self.latent_std()
                scale = 1.0 / max(std, 1e-6)
                self.vae.register_to_config(scaling_factor=scale)
                log.info("VAE latent std %.4f -> scaling_factor %.5f", std, scale)
            self.predictor.config.vae = dict(self.vae.config)
            out = self.predictor.save_pretrained(folder)
        if self.cfg.export_fp16:
            to_fp16_where_safe(out)
        return Path(out)

