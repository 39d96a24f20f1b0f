"""The small ÷8 AutoencoderKL shared by the tiny predictor and the tiny planner presets.

It downsamples by 8 with 4 levels like SD's VAE, so a 256² image gives a 32² latent; a shallower VAE makes a
large latent whose attention dominates CPU time (ENVIRONMENT.md)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from frameplan_core.errors import ConfigError, ModelError
from frameplan_core.jsonfile import read_json

PRESETS = Path(__file__).resolve().parent / "presets"
TINY_VAE_JSON = PRESETS / "vae-tiny.json"


def load_json_config(path: str | Path) -> dict[str, Any]:
    """A diffusers-style JSON config as a dict (keys starting with '_' kept; diffusers ignores them)."""
    return read_json(path, ConfigError, missing="config file not found")


def tiny_vae_config() -> dict[str, Any]:
    """Architecture of the tiny ÷8 VAE (``presets/vae-tiny.json``)."""
    return load_json_config(TINY_VAE_JSON)


def build_vae(config: dict[str, Any] | None = None, seed: int | None = 0):
    """A frozen-style ``AutoencoderKL`` from a config dict (default: the tiny ÷8 one), randomly initialised
    with ``seed``, in eval mode."""
    import torch
    from diffusers import AutoencoderKL

    cfg = {k: v for k, v in (config or tiny_vae_config()).items() if not k.startswith("_")}
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            vae = AutoencoderKL(**cfg)
    else:
        vae = AutoencoderKL(**cfg)
    return vae.eval()


def downsample_factor(config: dict[str, Any]) -> int:
    """Spatial factor between image and latent: 2 per level after the first."""
    return 2 ** (len(config["block_out_channels"]) - 1)


def vae_config(vae) -> dict[str, Any]:
    """A built VAE's architecture as a plain JSON-able dict (diffusers' private '_' keys dropped), the form the
    predictor and planner configs store so that save/load rebuilds the same VAE."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(vae.config).items() if not k.startswith("_")}


def load_vae(source: str | Path):
    """A saved (e.g. trained) ``AutoencoderKL`` from ``source/vae/`` (a predictor/planner/VAE-run folder) or from
    ``source`` itself when it is a diffusers VAE folder; local files only."""
    from diffusers import AutoencoderKL

    source = Path(source)
    folder = source / "vae" if (source / "vae" / "config.json").is_file() else source
    if not (folder / "config.json").is_file():
        raise ModelError(f"{source}: no vae/config.json (nor config.json) there: expected a folder written by "
                         "`frameplan train vae`, FramePredictor.save_pretrained or GridPlanner.save_pretrained")
    try:
        return AutoencoderKL.from_pretrained(folder, local_files_only=True).eval()
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelError(f"{folder}: not a loadable AutoencoderKL folder: {str(exc)[:300]}") from None


def check_replacement(vae, latent_channels: int, where: str) -> None:
    """A VAE swapped into a model must produce the latent channels the denoiser was built for."""
    from diffusers import AutoencoderKL

    if not isinstance(vae, AutoencoderKL):
        raise ModelError(f"{where}: expected a diffusers AutoencoderKL, got {type(vae).__name__}")
    lc = int(vae.config.latent_channels)
    if lc != int(latent_channels):
        raise ModelError(f"{where}: the VAE has {lc} latent channels, the model needs {latent_channels}")
