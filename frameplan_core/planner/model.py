"""Build, save and load the planner's modules (transformer, VAE, text conditioner, scheduler).

Checkpoint folder written by ``save_components``: ``frameplan.json`` (kind + PlannerConfig + adapters), ``transformer/`` and
``vae/`` (diffusers), ``scheduler/``; ``adapters/<name>/`` (diffusers LoRA format); for ``clip+t5`` also the text
encoders and tokenizers in FLUX's folder layout. ``load_components`` also accepts a FLUX.1-dev diffusers folder
(``model_index.json`` naming FluxPipeline)."""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from frameplan_core import atomic
from frameplan_core.device import resolve_device, resolve_dtype
from frameplan_core.errors import ModelError
from frameplan_core.jsonfile import read_json
from frameplan_core.planner import lora
from frameplan_core.planner.config import PlannerConfig
from frameplan_core.vae import build_vae, tiny_vae_config, vae_config

log = logging.getLogger(__name__)

KIND = "frameplan-planner"
WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
PRESET_DIRS = {"tiny": WEIGHTS_DIR / "planner-tiny"}


@dataclass
class Components:
    transformer: Any
    vae: Any
    text: Any
    scheduler: Any
    adapters: dict[str, str] = field(default_factory=dict)  # name -> path it was loaded from
    source: str = "random init"


def _check_layout(cfg: PlannerConfig, transformer, vae, text) -> None:
    lc = int(vae.config.latent_channels)
    want = (8 if cfg.channel_condition else 4) * lc
    if int(transformer.config.in_channels) != want:
        raise ModelError(f"transformer in_channels={transformer.config.in_channels} does not match the VAE's "
                         f"{lc} latent channels packed 2x2{' for target + condition' if cfg.channel_condition else ''}"
                         f" with condition={cfg.condition!r} (expected {want})")
    out = int(transformer.config.out_channels or transformer.config.in_channels)
    if out != 4 * lc:
        raise ModelError(f"transformer out_channels={out}: expected {4 * lc} (the VAE's {lc} latent channels x 4)")
    if text is not None:
        if int(transformer.config.joint_attention_dim) != text.dim:
            raise ModelError(f"transformer joint_attention_dim={transformer.config.joint_attention_dim} != text "
                             f"encoder width {text.dim} ({cfg.text_encoder})")
        if int(transformer.config.pooled_projection_dim) != text.pooled_dim:
            raise ModelError(f"transformer pooled_projection_dim={transformer.config.pooled_projection_dim} != pooled "
                             f"text width {text.pooled_dim} ({cfg.text_encoder})")


def build_components(cfg: PlannerConfig, seed: int = 0, device: str | torch.device = "cpu", dtype: Any = "auto",
          text: Any = None) -> tuple[Components, PlannerConfig]:
    """Random-init transformer and VAE from ``cfg`` (seeded); the text conditioner is loaded frozen."""
    from diffusers import FluxTransformer2DModel

    from frameplan_core.planner.encoders import build_conditioner
    from frameplan_core.planner.sampling import make_scheduler

    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    torch.manual_seed(seed)
    vae = build_vae(cfg.vae or tiny_vae_config(), seed=None)  # the one tiny VAE definition, shared with the predictor
    tcfg = dict(cfg.transformer)
    lc = int(vae.config.latent_channels)
    tcfg["in_channels"] = (8 if cfg.channel_condition else 4) * lc
    tcfg["out_channels"] = 4 * lc
    tcfg["axes_dims_rope"] = tuple(tcfg.get("axes_dims_rope", (16, 56, 56)))
    transformer = FluxTransformer2DModel(**tcfg)
    if text is None:
        if cfg.text_encoder == "clip+t5":
            raise ModelError("flux-dev (clip+t5) cannot be random-initialised here: load a FLUX.1-dev folder "
                             "with GridPlanner.from_pretrained(path)")
        text = build_conditioner(cfg.text_encoder, max_length=cfg.max_text_tokens)
    _check_layout(cfg, transformer, vae, text)
    cfg_used = replace(cfg, vae=vae_config(vae), transformer=_clean_config(tcfg))
    mods = Components(_to(transformer, dev, dt).eval(), _to(vae, dev, dt).eval().requires_grad_(False), text.to(dev),
                   make_scheduler(cfg.scheduler), source=f"random init (seed {seed})")
    mods.transformer.requires_grad_(False)
    return mods, cfg_used


def widen_input(transformer, in_channels: int):
    """Give the transformer's input projection ``in_channels`` inputs (twice as many for channel conditioning): old
    weights kept for the first channels, the new ones zero, so the transformer computes what it did before until
    the condition's weights are trained (the predictor's ``widen_input`` does the same to the UNet's conv_in)."""
    lin = transformer.x_embedder
    n_in = lin.in_features
    if n_in == in_channels:
        return transformer
    if n_in > in_channels:
        raise ModelError(f"cannot narrow the transformer's input from {n_in} to {in_channels} channels")
    wide = torch.nn.Linear(in_channels, lin.out_features, device=lin.weight.device, dtype=lin.weight.dtype)
    with torch.no_grad():
        wide.weight.zero_()
        wide.weight[:, :n_in] = lin.weight
        wide.bias.copy_(lin.bias)
    wide.weight.requires_grad_(lin.weight.requires_grad)
    wide.bias.requires_grad_(lin.bias.requires_grad)
    transformer.x_embedder = wide
    transformer.register_to_config(in_channels=in_channels, out_channels=int(transformer.out_channels))
    return transformer


def transformer_config(transformer) -> dict[str, Any]:
    return _clean_config(transformer.config)


def _to(module, device: torch.device, dtype: torch.dtype):
    """Move a freshly built module; casting only when needed (diffusers warns on every ``.to(dtype)``)."""
    module = module.to(device)
    return module if dtype == torch.float32 else module.to(dtype)


def _clean_config(config: Any) -> dict[str, Any]:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")}


def _base_state_dict(transformer) -> dict[str, torch.Tensor]:
    """Transformer weights without LoRA layers (peft's ``base_layer`` names mapped back)."""
    out = {}
    for k, v in transformer.state_dict().items():
        if ".lora_" in k:
            continue
        out[k.replace(".base_layer.", ".")] = v.detach().to("cpu").contiguous()
    return out


def save_components(mods: Components, cfg: PlannerConfig, folder: str | Path) -> Path:
    """Write the checkpoint atomically (the folder appears complete or not at all)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    active = lora.active_adapter(mods.transformer)
    was_merged = lora.is_merged(mods.transformer)
    if was_merged:
        lora.unmerge(mods.transformer)
    try:
        with atomic.atomic_dir(folder, overwrite=True) as tmp:
            (tmp / "transformer").mkdir()
            mods.transformer.save_config(tmp / "transformer")
            save_file(_base_state_dict(mods.transformer), str(tmp / "transformer" / "diffusion_pytorch_model.safetensors"))
            mods.vae.save_pretrained(tmp / "vae")
            mods.scheduler.save_pretrained(tmp / "scheduler")
            names = lora.adapter_names(mods.transformer)
            for name in names:
                lora.save_adapter(mods.transformer, tmp / "adapters" / name, name)
            if cfg.text_encoder == "clip+t5":
                t = mods.text
                t.clip.model.save_pretrained(tmp / "text_encoder")
                t.clip.tokenizer.save_pretrained(tmp / "tokenizer")
                t.t5.save_pretrained(tmp / "text_encoder_2")
                t.t5_tokenizer.save_pretrained(tmp / "tokenizer_2")
            atomic.write_json(tmp / "frameplan.json", {
                "kind": KIND, "config": cfg.to_dict(), "adapters": names, "active_adapter": active,
            })
    finally:
        if was_merged:
            lora.merge(mods.transformer)
    return folder


def _is_flux_folder(path: Path) -> bool:
    idx = path / "model_index.json"
    if not idx.is_file():
        return False
    try:
        return "Flux" in json.loads(idx.read_text()).get("_class_name", "")
    except (ValueError, OSError):
        return False


def load_components(path_or_preset: str | Path, device: Any = "auto", dtype: Any = "auto",
         cell_size: int | None = None) -> tuple[Components, PlannerConfig]:
    """Load a frameplan checkpoint, a preset name (``tiny`` -> frameplan_core/weights/planner-tiny/), or a local
    FLUX.1-dev diffusers folder (-> flux-dev)."""
    from diffusers import AutoencoderKL, FluxTransformer2DModel

    from frameplan_core.planner.encoders import build_conditioner
    from frameplan_core.planner.sampling import make_scheduler

    key = str(path_or_preset)
    if key in PRESET_DIRS:
        path = PRESET_DIRS[key]
        if not (path / "frameplan.json").is_file():
            raise ModelError(f"planner preset 'tiny': no trained weights at {path} yet; train them with "
                             "`frameplan train planner` (training issue) or pass a checkpoint folder")
    elif key == "flux-dev":
        raise ModelError("planner preset 'flux-dev': pass the path of a local FLUX.1-dev diffusers folder "
                         "(transformer/, vae/, text_encoder(_2)/, tokenizer(_2)/, model_index.json); nothing is downloaded")
    else:
        path = Path(path_or_preset)
    if not path.is_dir():
        raise ModelError(f"{path}: planner checkpoint folder not found")
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    try:
        if (path / "frameplan.json").is_file():
            meta = read_json(path / "frameplan.json", ModelError)
            if meta.get("kind") != KIND:
                raise ModelError(f"{path}/frameplan.json: kind {meta.get('kind')!r} is not a grid planner ({KIND})")
            cfg = PlannerConfig.from_dict(meta["config"], f"{path}/frameplan.json:config")
            text = build_conditioner(cfg.text_encoder, path if cfg.text_encoder == "clip+t5" else None,
                                     cfg.max_text_tokens, dtype=dt)
            adapters, active = meta.get("adapters", []), meta.get("active_adapter")
            source = str(path)
        elif _is_flux_folder(path):
            cfg = PlannerConfig.preset("flux-dev")
            text = build_conditioner("clip+t5", path, cfg.max_text_tokens, dtype=dt)
            adapters, active = [], None
            source = f"FLUX folder {path}"
        else:
            raise ModelError(f"{path}: neither a frameplan planner checkpoint (frameplan.json) nor a FLUX diffusers "
                             "folder (model_index.json with FluxPipeline)")
        for sub in ("transformer", "vae"):
            if not (path / sub / "config.json").is_file():
                raise ModelError(f"{path}/{sub}: missing (config.json not found)")
        transformer = FluxTransformer2DModel.from_pretrained(path / "transformer", local_files_only=True, torch_dtype=dt)
        vae = AutoencoderKL.from_pretrained(path / "vae", local_files_only=True, torch_dtype=dt)
        sched_cfg = cfg.scheduler
        if (path / "scheduler" / "scheduler_config.json").is_file():
            sched_cfg = _clean_config(read_json(path / "scheduler" / "scheduler_config.json", ModelError))
    except (OSError, ValueError, KeyError) as exc:
        raise ModelError(f"{path}: cannot load planner: {exc}") from None
    cfg = replace(cfg, transformer=_clean_config(transformer.config), vae=_clean_config(vae.config),
                  scheduler=sched_cfg, **({"cell_size": cell_size} if cell_size else {}))
    _check_layout(cfg, transformer, vae, text)
    mods = Components(transformer.to(dev).eval().requires_grad_(False), vae.to(dev).eval().requires_grad_(False),
                   text.to(dev), make_scheduler(sched_cfg), source=source)
    for name in adapters:
        lora.load_adapter(mods.transformer, path / "adapters" / name, name)
        mods.adapters[name] = str(path / "adapters" / name)
    if adapters:
        lora.set_adapter(mods.transformer, active)
    return mods, cfg
