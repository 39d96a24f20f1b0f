"""``FramePredictor``: current RGB frame + instruction -> predicted future frame (InstructPix2Pix for robots).

The one object the CLI, the ROS node, the benchmark and the trainer use, so model logic lives in one place."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from frameplan_core import atomic, uncertainty
from frameplan_core.device import resolve_device, resolve_dtype
from frameplan_core.errors import InputError, ModelError
from frameplan_core.image import fit, unfit_map
from frameplan_core.predictor import compose as composition
from frameplan_core.predictor import preprocess, sampling
from frameplan_core.predictor.config import (
    PRESET_NAMES,
    PredictorConfig,
    SamplingConfig,
)
from frameplan_core.predictor.model import (
    Components,
    build_components,
    count_parameters,
    load_components,
    save_components,
)
from frameplan_core.seeds import check_seed, cpu_generator
from frameplan_core.text import TextCache, normalize_instruction, validate_instruction
from frameplan_core.types import Prediction

log = logging.getLogger(__name__)

TINY_WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "predictor-tiny"
TEXT_CACHE_SIZE = 64


class FramePredictor:
    """UNet (8-channel input) + frozen VAE + frozen text encoder + noise scheduler, with dual-CFG sampling."""

    def __init__(self, components: Components, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto"):
        self.config: PredictorConfig = components.config
        self.unet = components.unet
        self.vae = components.vae
        self.text_encoder = components.text_encoder
        self.scheduler = components.scheduler  # training noise scheduler (DDPM, scaled-linear betas)
        self.source = components.source
        self._schedulers: dict[str, object] = {}
        self._uncond: torch.Tensor | None = None
        self.text_cache = TextCache(lambda texts: self.text_encoder.encode(texts), TEXT_CACHE_SIZE)
        self.last_timings: dict[str, float] = {}
        self.to(device, dtype)

    # ------------------------------------------------------------ construction / persistence
    @classmethod
    def from_config(cls, config: PredictorConfig, seed: int = 0, device: str = "cpu", dtype: str = "auto"):
        """Random UNet/VAE (seeded) with the config's text encoder: for tests and as the training start."""
        return cls(build_components(config.copy(), seed), device, dtype)

    @classmethod
    def from_pretrained(cls, path_or_preset: str | Path, device: str = "auto", dtype: str = "auto",
                        config: PredictorConfig | None = None) -> FramePredictor:
        """Load our folder, a diffusers InstructPix2Pix/SD-1.x folder, a single SD-1.x file (``config`` gives its
        architecture, default sd15) or the embedded preset ``tiny``. Never reaches a model hub."""
        name = str(path_or_preset)
        if name in PRESET_NAMES and not Path(name).exists():
            if name != "tiny":
                raise ModelError(f"no weights ship for preset {name!r}: pass an InstructPix2Pix diffusers folder or an "
                                 f"SD-1.5 .ckpt/.safetensors, or use FramePredictor.from_config(PredictorConfig.preset"
                                 f"({name!r})) for random weights")
            if not (TINY_WEIGHTS / "frameplan.json").is_file():
                raise ModelError(f"the embedded tiny predictor {TINY_WEIGHTS} does not exist yet: train the 'tiny' "
                                 "preset with `frameplan train` (training issue) and save it there with "
                                 "FramePredictor.save_pretrained, or pass --model PATH to a checkpoint")
            path_or_preset = TINY_WEIGHTS
        p = cls(load_components(path_or_preset, config), device, dtype)
        log.info("%s", p.describe())
        return p

    def save_pretrained(self, folder: str | Path, overwrite: bool = True) -> Path:
        """Write atomically: diffusers layout + frameplan.json (weights as safetensors, in fp32)."""
        folder = Path(folder)
        dtype, device = self.dtype, self.device
        self.to("cpu", torch.float32)
        try:
            with atomic.atomic_dir(folder, overwrite=overwrite) as tmp:
                save_components(Components(self.unet, self.vae, self.text_encoder, self.scheduler, self.config,
                                           self.source), tmp)
        finally:
            self.to(device, dtype)
        return folder

    @property
    def device(self) -> torch.device:
        """Where the UNet's weights are: read from them, so it stays right when a trainer moves the parts."""
        return next(self.unet.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.unet.parameters()).dtype

    def to(self, device: str | torch.device = "auto", dtype: str | torch.dtype = "auto") -> FramePredictor:
        dev = resolve_device(device)
        dt = resolve_dtype(dtype, dev)
        for m in (self.unet, self.vae, self.text_encoder):
            m.to(dev)
            if next(m.parameters()).dtype != dt:  # only cast when needed (diffusers warns on every cast)
                m.to(dtype=dt)
        if dev.type == "cuda":
            self.unet.to(memory_format=torch.channels_last)
        self._uncond = None
        self.text_cache.clear()
        return self

    def set_vae(self, vae) -> FramePredictor:
        """Swap in another (e.g. trained) ``AutoencoderKL`` with the same latent channels: it moves to the
        model's device/dtype, frozen, and ``config.vae`` records it so save_pretrained/from_pretrained keep it."""
        from frameplan_core.predictor.model import _plain
        from frameplan_core.vae import check_replacement

        check_replacement(vae, int(self.vae.config.latent_channels), "FramePredictor.set_vae")
        dev, dt = self.device, self.dtype
        vae = vae.to(dev)
        if next(vae.parameters()).dtype != dt:
            vae = vae.to(dtype=dt)
        self.vae = vae.eval().requires_grad_(False)
        self.config.vae = _plain(vae.config)
        self.config.validate()
        return self

    def compile(self, mode: str = "max-autotune-no-cudagraphs") -> FramePredictor:
        """torch.compile the UNet and VAE decoder (GPU speed; first call is slow)."""
        self.unet = torch.compile(self.unet, mode=mode, fullgraph=False)
        self.vae.decoder = torch.compile(self.vae.decoder, mode=mode, fullgraph=False)
        return self

    # ------------------------------------------------------------ model pieces the trainer reuses
    @torch.no_grad()
    def encode_image_latents(self, images: torch.Tensor) -> torch.Tensor:
        """Conditioning latent: VAE distribution mode, **unscaled** (InstructPix2Pix convention)."""
        return self.vae.encode(images.to(self.device, self.dtype)).latent_dist.mode()

    @torch.no_grad()
    def encode_target_latents(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Target latent: a VAE posterior sample × scaling_factor (what the UNet learns to denoise)."""
        dist = self.vae.encode(images.to(self.device, self.dtype)).latent_dist
        return dist.sample(generator) * self.vae.config.scaling_factor

    def diffusion_target(self, target_latents: torch.Tensor, image_latents: torch.Tensor) -> torch.Tensor:
        """What the UNet learns to denoise, from a scaled target latent and the unscaled input latent."""
        if self.config.target == "residual":
            return target_latents - image_latents * self.vae.config.scaling_factor
        return target_latents

    def frame_latents(self, sampled: torch.Tensor, image_latents: torch.Tensor) -> torch.Tensor:
        """Inverse of ``diffusion_target``: the sampler's output -> the predicted frame's scaled latent."""
        if self.config.target == "residual":
            return sampled + image_latents.to(sampled.dtype) * self.vae.config.scaling_factor
        return sampled

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents -> images in [-1, 1]."""
        return self.vae.decode(latents.to(self.dtype) / self.vae.config.scaling_factor).sample

    def encode_text(self, instructions: Sequence[str]) -> torch.Tensor:
        """(B, L, D) text states of instructions, normalised here (training's dataset text comes this way;
        ``predict`` validates and normalises at its boundary and skips this). Cached in ``text_cache`` (the
        encoder is frozen; the cache is dropped when the model moves, also when a trainer moves its parts)."""
        return self._embed([normalize_instruction(t) for t in instructions])

    def _embed(self, texts: Sequence[str]) -> torch.Tensor:
        """``encode_text`` for texts already normalised."""
        return self.text_cache.get(texts, (self.device, self.dtype))[0].to(self.device, self.dtype)

    def uncond_embedding(self) -> torch.Tensor:
        u = self._uncond
        if u is None or u.device != self.device or u.dtype != self.dtype:  # moved behind our back (Lightning)
            self._uncond = self._embed([""])
        return self._uncond

    def inference_scheduler(self, name: str):
        if name not in self._schedulers:
            self._schedulers[name] = sampling.make_scheduler(name, dict(self.scheduler.config))
        return self._schedulers[name]

    # ------------------------------------------------------------ prediction
    def predict(self, image: np.ndarray, instruction: str, steps: int | None = None, text_scale: float | None = None,
                image_scale: float | None = None, seed: int | None = None, sampler: str | None = None,
                output_size: Literal["model", "input"] = "model", samples: int | None = None,
                compose: int | None = None, negative_instruction: str | None = None) -> np.ndarray:
        """Predicted future frame (uint8 RGB) at model resolution, or mapped onto the input's geometry."""
        neg = None if negative_instruction is None else [negative_instruction]
        return self.predict_batch([image], [instruction], steps, text_scale, image_scale, seed, sampler,
                                  output_size, samples, compose, negative_instructions=neg)[0]

    def predict_full(self, image: np.ndarray, instruction: str, steps: int | None = None,
                     text_scale: float | None = None, image_scale: float | None = None, seed: int | None = None,
                     sampler: str | None = None, output_size: Literal["model", "input"] = "model",
                     samples: int | None = None, compose: int | None = None,
                     negative_instruction: str | None = None) -> Prediction:
        """``predict`` plus its per-pixel uncertainty and confidence (frameplan_core/uncertainty.py), from the same
        samples as the frame: a Prediction whose ``image`` equals what ``predict`` returns."""
        neg = None if negative_instruction is None else [negative_instruction]
        return self.predict_batch([image], [instruction], steps, text_scale, image_scale, seed, sampler,
                                  output_size, samples, compose, return_uncertainty=True,
                                  negative_instructions=neg)[0]

    @torch.no_grad()
    def predict_batch(self, images: Sequence[np.ndarray], instructions: Sequence[str], steps: int | None = None,
                      text_scale: float | None = None, image_scale: float | None = None, seed: int | None = None,
                      sampler: str | None = None, output_size: Literal["model", "input"] = "model",
                      samples: int | None = None, compose: int | None = None,
                      return_uncertainty: bool = False,
                      negative_instructions: Sequence[str] | None = None) -> list[np.ndarray] | list[Prediction]:
        """Batched prediction: one UNet forward per step for all images, guidance passes and ``samples`` (averaged
        per image, SamplingConfig). ``seed=None`` means seed 0, so repeated calls are reproducible (seeds.py, the
        same for the planner).
        ``return_uncertainty``: Predictions (frame + uncertainty map at the frame's geometry + confidence, from
        the same samples) instead of bare frames; with one sample their maps are None, with a note.
        ``negative_instructions`` (one per image; diffusers' negative prompt): replace the empty text of the
        text-free guidance passes, so text guidance pushes away from what they say (e.g. the same task done with
        the other arm) rather than from no text at all."""
        t0 = time.perf_counter()
        if isinstance(images, np.ndarray) or isinstance(instructions, str):
            raise InputError("predict_batch: pass lists of images and instructions (use predict for one)")
        if len(images) == 0 or len(images) != len(instructions):
            raise InputError(f"predict_batch: got {len(images)} images and {len(instructions)} instructions; "
                             "need the same non-zero number")
        if output_size not in ("model", "input"):
            raise InputError(f"output_size {output_size!r}: expected 'model' or 'input'")
        d = self.config.sampling
        s = SamplingConfig(sampler=sampler or d.sampler, steps=d.steps if steps is None else steps,
                           text_scale=d.text_scale if text_scale is None else text_scale,
                           image_scale=d.image_scale if image_scale is None else image_scale,
                           samples=d.samples if samples is None else samples,
                           compose=d.compose if compose is None else compose, compose_dilate=d.compose_dilate,
                           compose_feather=d.compose_feather).validate("predict")
        imgs = [preprocess.check_image(im, f"image[{i}]") for i, im in enumerate(images)]
        texts = [validate_instruction(t, f"instruction[{i}]") for i, t in enumerate(instructions)]
        if negative_instructions is not None:
            if isinstance(negative_instructions, str) or len(negative_instructions) != len(texts):
                raise InputError(f"predict_batch: negative_instructions must be a list with one text per image "
                                 f"({len(texts)}), got {type(negative_instructions).__name__}")
            negatives = [validate_instruction(t, f"negative_instruction[{i}]")
                         for i, t in enumerate(negative_instructions)]
        x = preprocess.to_model(imgs, self.config.resolution, self.config.crop, self.device, self.dtype)
        t1 = time.perf_counter()
        image_latents = self.encode_image_latents(x)
        text_emb = self._embed(texts)
        uncond = self.uncond_embedding() if negative_instructions is None else self._embed(negatives)
        t2 = time.perf_counter()
        # seeded noise comes from a CPU generator: the same seed gives the same prediction on CPU and GPU
        seed = check_seed(seed, "predict.seed")
        gen = cpu_generator(seed)
        n = len(imgs)
        if s.samples > 1:  # sample-major copies: rows k*n .. k*n+n-1 are sample k of every image
            image_latents, text_emb = image_latents.repeat(s.samples, 1, 1, 1), text_emb.repeat(s.samples, 1, 1)
            if uncond.shape[0] > 1:
                uncond = uncond.repeat(s.samples, 1, 1)
        latents = sampling.sample(self.unet, self.inference_scheduler(s.sampler), image_latents, text_emb, uncond,
                                  s.steps, s.text_scale, s.image_scale, gen,
                                  latent_channels=self.vae.config.latent_channels)
        latents = self.frame_latents(latents, image_latents)
        t3 = time.perf_counter()
        frames = self.decode_latents(latents).float().clamp(-1, 1).unflatten(0, (s.samples, n))
        out = preprocess.to_uint8(frames.mean(0))
        want_u = return_uncertainty and s.samples > 1
        recon = self._reconstructions(image_latents[:n]) if s.compose or want_u else None
        masks = [composition.change_mask(p, r, s.compose, s.compose_dilate, s.compose_feather)
                 for p, r in zip(out, recon)] if s.compose else None
        spreads = self._spreads(frames, recon, masks) if want_u else None
        if output_size == "input":
            out = [preprocess.back_to_input(o, im, self.config.crop) for o, im in zip(out, imgs)]
        if masks is not None:
            originals = imgs if output_size == "input" else [fit(im, self.config.resolution, self.config.crop)
                                                             for im in imgs]
            out = [composition.compose(o, im, preprocess.mask_to_input(m, im.shape[:2], self.config.crop)
                                   if output_size == "input" else m) for o, im, m in zip(out, originals, masks)]
        if spreads is not None:
            spreads = [self._published_uncertainty(u, r, im, None if masks is None else masks[i], output_size)
                       for i, (u, r, im) in enumerate(zip(spreads, recon, imgs))]
        t4 = time.perf_counter()
        self.last_timings = {"preprocess_s": t1 - t0, "encode_s": t2 - t1, "denoise_s": t3 - t2,
                             "decode_s": t4 - t3, "total_s": t4 - t0}
        if not return_uncertainty:
            return out
        inputs = {"steps": s.steps, "sampler": s.sampler, "text_scale": s.text_scale, "image_scale": s.image_scale,
                  "samples": s.samples, "compose": s.compose, "seed": seed, "output_size": output_size}
        return [Prediction(image=o, instruction=t, timings=dict(self.last_timings),
                           inputs=dict(inputs, negative_instruction=negatives[i]) if negative_instructions is not None
                           else dict(inputs),
                           uncertainty=None if spreads is None else spreads[i],
                           confidence=None if spreads is None else uncertainty.confidence(spreads[i]),
                           uncertainty_note=uncertainty.ONE_SAMPLE if spreads is None else None)
                for i, (o, t) in enumerate(zip(out, texts))]

    def _reconstructions(self, image_latents: torch.Tensor) -> list[np.ndarray]:
        """The VAE's own reconstruction of each input: what composition compares a prediction with (compose.py)."""
        return preprocess.to_uint8(self.decode_latents(image_latents * self.vae.config.scaling_factor).float())

    def _published_uncertainty(self, spread: np.ndarray, recon: np.ndarray, image: np.ndarray,
                               mask: np.ndarray | None, output_size: str) -> np.ndarray:
        """A model-resolution spread map at the published geometry (mapped like the frame; NaN where the model saw
        nothing) with the reconstruction floor added where the pixel is generated (uncertainty.py)."""
        crop = self.config.crop
        if output_size == "input":
            spread = unfit_map(spread, image.shape[:2], crop)
            floor = uncertainty.rms_difference(preprocess.back_to_input(recon, image, crop), image)
            weight = 1.0 if mask is None else preprocess.mask_to_input(mask, image.shape[:2], crop)
        else:
            floor = uncertainty.rms_difference(recon, fit(image, self.config.resolution, crop))
            weight = 1.0 if mask is None else mask
        return uncertainty.combine(spread, floor, weight)

    @staticmethod
    def _spreads(frames: torch.Tensor, recon: list[np.ndarray] | None,
                 masks: list[np.ndarray] | None) -> list[np.ndarray]:
        """Model-resolution spread maps from the (samples, n, 3, H, W) decoded frames in [-1, 1]: the samples' RMS
        distance from the published pixel (their mean; with composition m * mean + (1 - m) * the input's VAE
        reconstruction, uncertainty.py)."""
        levels = (frames + 1.0) * 127.5
        published = None
        if masks is not None and recon is not None:
            m = torch.from_numpy(np.stack(masks)).to(levels)[:, None]
            r = torch.from_numpy(np.stack(recon)).permute(0, 3, 1, 2).to(levels)
            published = m * levels.mean(0) + (1.0 - m) * r
        return list(uncertainty.sample_spread(levels, published))

    # ------------------------------------------------------------ reporting
    def parameter_counts(self) -> dict[str, int]:
        return {"unet": count_parameters(self.unet), "vae": count_parameters(self.vae),
                "text_encoder": count_parameters(self.text_encoder)}

    def describe(self) -> str:
        n = self.parameter_counts()
        s = self.config.sampling
        return (f"FramePredictor preset={self.config.name} from {self.source}: "
                f"UNet {n['unet'] / 1e6:.2f}M, VAE {n['vae'] / 1e6:.2f}M, text encoder {self.text_encoder.kind} "
                f"{n['text_encoder'] / 1e6:.2f}M params; {str(self.dtype).replace('torch.', '')} on {self.device}; "
                f"{self.config.resolution}² ({self.config.crop} crop); default {s.sampler} {s.steps} steps "
                f"s_T={s.text_scale} s_I={s.image_scale}")
