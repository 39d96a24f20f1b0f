"""InstructPix2Pix training of the frameplan_core ``FramePredictor`` itself (no copy of the architecture): only
the UNet trains; VAE and text encoder stay frozen.

Loss: eps-prediction MSE on the noisy target latent (VAE sample x scaling factor; minus the scaled input latent
for a ``residual``-target model) with the *unscaled* mode latent
of the input frame concatenated on the channel axis; conditioning dropout of the paper (text only / image only /
both); plus the motion-constraint weighting (config ``motion_loss_weight``): latent cells that change between
input and target frame weigh ``1 + lambda x changed_fraction`` in a normalised weighted mean."""
from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from frameplan_training.base_module import FrameplanModule, per_sample, replace_vae
from frameplan_core.errors import ConfigError
from frameplan_training.config import PredictorTrainConfig
from torch import nn

log = logging.getLogger(__name__)
TRAIN_TEXT_CACHE = 4096  # distinct instructions kept while training (each 77 x D floats)


def load_predictor(cfg: PredictorTrainConfig, device: str = "cpu"):
    """The FramePredictor a run starts from: a preset (random UNet/VAE, seeded) or a saved folder, with the VAE
    optionally replaced by the one of ``cfg.vae_from``; its resolution becomes ``cfg.crop_res``."""
    from frameplan_core.predictor import FramePredictor, PredictorConfig
    from frameplan_core.predictor.config import PRESET_NAMES

    if cfg.model in PRESET_NAMES and not Path(cfg.model).exists():
        pcfg = PredictorConfig.preset(cfg.model)
        pcfg.resolution = cfg.crop_res
        p = FramePredictor.from_config(pcfg.validate(), seed=cfg.seed, device=device, dtype="float32")
    else:
        p = FramePredictor.from_pretrained(cfg.model, device=device, dtype="float32")
        if p.config.resolution != cfg.crop_res:
            log.info("model resolution %d -> %d (crop_res)", p.config.resolution, cfg.crop_res)
            p.config.resolution = cfg.crop_res
            p.config.validate()
    if cfg.crop and cfg.crop != p.config.crop:
        log.info("crop policy %s -> %s (config crop)", p.config.crop, cfg.crop)
        p.config.crop = cfg.crop
        p.config.validate()
    if cfg.target and cfg.target != p.config.target:
        log.info("diffusion target %s -> %s (config target)", p.config.target, cfg.target)
        p.config.target = cfg.target
        p.config.validate()
    if cfg.text_pooling and p.unet.config.addition_embed_type != "text":
        from frameplan_core.predictor.model import add_text_pooling

        log.info("adding the pooled-text pathway to the UNet (config text_pooling)")
        add_text_pooling(p.unet)
    if cfg.full_resolution_attention:
        from frameplan_core.predictor.model import add_full_resolution_attention

        unet = add_full_resolution_attention(p.unet)
        if unet is not p.unet:
            log.info("adding cross-attention at the UNet's highest-resolution level (config full_resolution_attention)")
            p.unet = unet
    if cfg.vae_from:
        replace_vae(p, cfg.vae_from)
    return p


def motion_weights(x_in: torch.Tensor, x_tgt: torch.Tensor, latent_hw: tuple[int, int], lam: float,
                   threshold: int) -> torch.Tensor:
    """(B, 1, h, w) weights 1 + lam * m; m = fraction of pixels of each latent cell whose largest channel
    difference exceeds ``threshold`` (0..255), dilated by one latent cell (max over 3x3)."""
    diff = (x_in.float() - x_tgt.float()).abs().amax(dim=1, keepdim=True) * 127.5
    changed = (diff > threshold).float()
    m = F.adaptive_avg_pool2d(changed, latent_hw)
    m = F.max_pool2d(m, 3, stride=1, padding=1)
    return 1.0 + lam * m


def timestep_weights(alphas_cumprod: torch.Tensor, cap: float) -> torch.Tensor:
    """(T,) per-timestep weights min(1/alpha_bar_t, cap) over their mean: an eps error at t costs what the
    v-prediction loss charges for it (capped), and the mean weight over uniformly drawn t stays 1."""
    w = (1.0 / alphas_cumprod.double()).clamp(max=cap)
    return (w / w.mean()).float()


def draw_timestep(g: torch.Generator, n_t: int, high_prob: float, high_min: int) -> torch.Tensor:
    """One training timestep: uniform over [0, n_t), or with ``high_prob`` uniform over [high_min, n_t). With
    ``high_prob`` 0 the draws are exactly the plain ones (one randint, no extra random number). ``high_min`` is
    checked against ``n_t`` once, by PredictorModule's constructor."""
    if high_prob <= 0:
        return torch.randint(0, n_t, (1,), generator=g)
    high = bool(torch.rand(1, generator=g) < high_prob)
    return torch.randint(high_min if high else 0, n_t, (1,), generator=g)


def noisy_text(text: torch.Tensor, scale: float, gens: list[torch.Generator]) -> torch.Tensor:
    """(B, L, D) text states plus Gaussian noise of ``scale`` times each sample's RMS over its tokens, drawn from
    that sample's own generator (conditioning augmentation: a wording near a trained one should act like it).
    Padding positions (all-zero states, as the encoder masks them) stay zero, as they are at inference."""
    tokens = (text != 0).any(dim=-1, keepdim=True).to(text)  # (B, L, 1)
    n = (tokens.sum(dim=(1, 2), keepdim=True) * text.shape[-1]).clamp(min=1)
    rms = (text.pow(2).sum(dim=(1, 2), keepdim=True) / n).sqrt()
    eps = torch.stack([torch.randn(text.shape[1:], generator=g) for g in gens]).to(text)
    return text + scale * rms * eps * tokens


class PredictorModule(FrameplanModule):
    def __init__(self, cfg: PredictorTrainConfig, predictor) -> None:
        super().__init__(cfg)
        # the core object is not an nn.Module: its parts are registered here (same objects, so Lightning moves
        # and checkpoints exactly what FramePredictor.predict uses)
        self.unet: nn.Module = predictor.unet
        self.vae: nn.Module = predictor.vae
        self.text_encoder: nn.Module = predictor.text_encoder
        self.predictor = predictor
        self.unet.requires_grad_(True)
        self.vae.requires_grad_(False)
        self.text_encoder.requires_grad_(False)
        if cfg.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.unet.train()
        n_t = predictor.scheduler.config.num_train_timesteps
        if cfg.high_noise_prob > 0 and cfg.high_noise_min_t >= n_t:  # refused at start-up, not at the first step
            raise ConfigError(f"high_noise_min_t={cfg.high_noise_min_t}: must be below the {n_t} training timesteps")
        # the model's own text cache, large enough for a dataset's instructions (it holds 64 for a robot)
        predictor.text_cache.size = max(predictor.text_cache.size, TRAIN_TEXT_CACHE)
        # per-timestep loss weights, computed once (a buffer, so it follows the module's device; not saved)
        self.register_buffer("loss_t_weights", self._loss_t_weights(cfg, predictor.scheduler), persistent=False)

    @staticmethod
    def _loss_t_weights(cfg: PredictorTrainConfig, sched) -> torch.Tensor | None:
        if cfg.loss_weighting != "v":
            return None
        if sched.config.prediction_type == "v_prediction":
            raise ConfigError("loss_weighting=v is for an eps-prediction model; this one predicts v already")
        return timestep_weights(sched.alphas_cumprod, cfg.loss_weight_cap)

    def trainable_named_parameters(self):
        return [(f"unet.{n}", p) for n, p in self.unet.named_parameters()]

    def frozen_modules(self):
        return [self.vae, self.text_encoder]

    def text_embeddings(self, texts: list[str]) -> torch.Tensor:
        """(B, L, D) float32 text states from the model's text cache (frameplan_core.text.TextCache: each distinct
        instruction encoded once and alone, so values never depend on batch composition and resumed runs stay
        bit-exact)."""
        return self.predictor.encode_text(texts).float().to(self.device)

    def compute_loss(self, batch: dict, generator: torch.Generator | list[torch.Generator],
                     train: bool) -> tuple[torch.Tensor, dict]:
        c: PredictorTrainConfig = self.cfg
        p = self.predictor
        x_in, x_tgt = batch["input"], batch["target"]
        b = x_in.shape[0]
        gens = per_sample(generator, b)  # each sample's draws from its own generator, in a fixed order
        with torch.no_grad():
            z_tgt = p.encode_target_latents(x_tgt, generator=gens).float()
            z_img = p.encode_image_latents(x_in).float()
            z_tgt = p.diffusion_target(z_tgt, z_img)  # the frame latent, or its change from the input
            text = self.text_embeddings(list(batch["text"]))
        noise = torch.stack([torch.randn(z_tgt.shape[1:], generator=g) for g in gens]).to(self.device)
        sched = p.scheduler
        n_t = sched.config.num_train_timesteps
        t = torch.cat([draw_timestep(g, n_t, c.high_noise_prob, c.high_noise_min_t) for g in gens]).to(self.device)
        noisy = sched.add_noise(z_tgt, noise, t)
        if train:
            u = torch.cat([torch.rand(1, generator=g) for g in gens]).to(self.device)
            pt, pi, pb = c.drop_text_prob, c.drop_image_prob, c.drop_both_prob
            drop_text = (u < pt) | ((u >= pt + pi) & (u < pt + pi + pb))
            drop_img = (u >= pt) & (u < pt + pi + pb)
            if c.text_noise > 0:  # drawn after the dropout numbers, so text_noise 0 keeps every earlier draw
                text = noisy_text(text, c.text_noise, gens)
            text = torch.where(drop_text[:, None, None], self.text_embeddings([""]).expand_as(text), text)
            z_img = z_img * (~drop_img).float()[:, None, None, None]
        pred = self.unet(torch.cat([noisy, z_img], dim=1), t, encoder_hidden_states=text).sample.float()
        if sched.config.prediction_type == "v_prediction":
            target = sched.get_velocity(z_tgt, noise, t)
        else:
            target = noise
        se = (pred - target) ** 2
        mse = se.mean()
        w = torch.ones_like(se[:, :1])
        if c.motion_loss_weight > 0:
            w = motion_weights(x_in, x_tgt, tuple(se.shape[-2:]), c.motion_loss_weight, c.motion_threshold)
        if self.loss_t_weights is not None:
            se = se * self.loss_t_weights[t][:, None, None, None]
        loss = (se * w).mean() / w.mean()
        return loss, {"mse": mse.detach()}

    @torch.no_grad()
    def sample_images(self, inputs, texts, seed: int = 0):
        """Predictions (uint8 list) for uint8 inputs with the EMA weights, at the config's sampling settings."""
        c: PredictorTrainConfig = self.cfg
        was = self.unet.training
        self.unet.eval()
        try:
            with self.ema_applied():
                return self.predictor.predict_batch(list(inputs), list(texts), steps=c.sample_steps,
                                                    text_scale=c.sample_text_scale, image_scale=c.sample_image_scale,
                                                    seed=seed)
        finally:
            self.unet.train(was)

    def sample_rows(self, n: int) -> list[tuple]:
        """(input, prediction, target) uint8 triples for the first ``n`` validation samples."""
        from frameplan_core.pixels import to_uint8

        ds = self.trainer.datamodule.val_set
        items = [ds[i] for i in range(min(n, len(ds)))]
        inputs = [to_uint8(it["input"]) for it in items]
        preds = self.sample_images(inputs, [it["text"] for it in items])
        return [(a, p, to_uint8(it["target"])) for a, p, it in zip(inputs, preds, items)]

    def export(self, folder: str | Path) -> Path:
        """Save the core FramePredictor with the EMA weights (save_pretrained), then store weights in fp16 where
        that is lossless enough (see export.py)."""
        from frameplan_training.export import to_fp16_where_safe

        self.unet.eval()
        with self.ema_applied():
            out = self.predictor.save_pretrained(folder)
        if self.cfg.export_fp16:
            to_fp16_where_safe(out)
        return Path(out)

