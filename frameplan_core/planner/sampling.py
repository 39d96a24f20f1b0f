"""Rectified-flow sampling and the matching training loss for the grid planner (FLUX layout).

Latents of the whole 3x3 grid are packed 2x2 into tokens; the VAE-encoded *source grid* (frame 1 top-left, black
elsewhere) is packed the same way and concatenated after the noisy target tokens along the sequence axis, with
cloned position ids, so joint attention sees both and each condition token shares its target token's RoPE
position. Only the target half of the transformer's output is used (velocity = noise - data)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from frameplan_core import pixels
from frameplan_core.errors import InputError


def pack(latents: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w) -> (B, h/2 * w/2, 4C): each 2x2 latent patch becomes one token."""
    b, c, h, w = latents.shape
    if h % 2 or w % 2:
        raise InputError(f"latent of size {h}x{w} cannot be packed 2x2 into tokens (the grid side must be a multiple of 16 px)")
    x = latents.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5)
    return x.reshape(b, (h // 2) * (w // 2), c * 4)


def unpack(tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Inverse of ``pack`` for a latent of size (h, w)."""
    b, n, d = tokens.shape
    if n != (h // 2) * (w // 2):
        raise InputError(f"{n} tokens do not form a {h}x{w} latent")
    x = tokens.reshape(b, h // 2, w // 2, d // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return x.reshape(b, d // 4, h, w)


def image_ids(h: int, w: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """RoPE position ids (h/2 * w/2, 3) of the packed tokens: (0, row, col)."""
    ids = torch.zeros(h // 2, w // 2, 3, device=device, dtype=dtype)
    ids[..., 1] = torch.arange(h // 2, device=device, dtype=dtype)[:, None]
    ids[..., 2] = torch.arange(w // 2, device=device, dtype=dtype)[None, :]
    return ids.reshape(-1, 3)


def to_pixels(images: Any, device, dtype) -> torch.Tensor:
    """uint8 (B, H, W, 3) numpy/tensor -> float (B, 3, H, W) in [-1, 1]; float tensors (B, 3, H, W) pass through."""
    if isinstance(images, np.ndarray):
        images = torch.from_numpy(np.ascontiguousarray(images))
    if not isinstance(images, torch.Tensor):
        raise InputError(f"expected a batch of images (numpy or torch), got {type(images).__name__}")
    if images.dtype == torch.uint8:
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] != 3:
            raise InputError(f"expected uint8 images (B, H, W, 3), got {tuple(images.shape)}")
        images = pixels.to_tensor(images)
    elif images.ndim != 4 or images.shape[1] != 3:
        raise InputError(f"expected float images (B, 3, H, W) in [-1, 1], got {tuple(images.shape)}")
    return images.to(device=device, dtype=dtype)


def _vae_factors(vae) -> tuple[float, float]:
    return float(vae.config.scaling_factor), float(getattr(vae.config, "shift_factor", None) or 0.0)


@torch.no_grad()
def encode(vae, images: Any) -> torch.Tensor:
    """Images -> normalised latents ((z - shift) * scale), distribution mode (deterministic)."""
    p = next(vae.parameters())
    x = to_pixels(images, p.device, p.dtype)
    z = vae.encode(x).latent_dist.mode()
    scale, shift = _vae_factors(vae)
    return (z - shift) * scale


@torch.no_grad()
def decode_levels(vae, latents: torch.Tensor) -> torch.Tensor:
    """Normalised latents -> float32 (B, 3, H, W) pixels in grey levels [0, 255], not rounded (a mean of samples
    and their spread are taken from these)."""
    scale, shift = _vae_factors(vae)
    p = next(vae.parameters())
    x = vae.decode((latents / scale + shift).to(p.dtype)).sample
    return (x.float().clamp(-1, 1) + 1) * 127.5


@torch.no_grad()
def decode(vae, latents: torch.Tensor, mean: bool = False) -> np.ndarray:
    """Normalised latents -> uint8 (B, H, W, 3); ``mean``: their per-pixel mean (1, H, W, 3), averaged before the
    one rounding to uint8."""
    x = decode_levels(vae, latents)
    if mean:
        x = x.mean(0, keepdim=True)
    return x.round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()


def make_scheduler(config: dict[str, Any]):
    from diffusers import FlowMatchEulerDiscreteScheduler

    return FlowMatchEulerDiscreteScheduler.from_config(dict(config))


def shift_mu(seq_len: int, config: dict[str, Any]) -> float:
    """FLUX's resolution-dependent shift: linear in the number of image tokens."""
    x0, x1 = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
    y0, y1 = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
    return y0 + (y1 - y0) * (seq_len - x0) / (x1 - x0)


def velocity(transformer, noisy: torch.Tensor, cond: torch.Tensor, ids: torch.Tensor, text: torch.Tensor,
             pooled: torch.Tensor, t: torch.Tensor, guidance: torch.Tensor | None) -> torch.Tensor:
    """One transformer pass on [noisy target tokens | condition tokens] along the sequence (or, for a transformer
    whose input takes both, along the channels: FLUX.1-Fill's layout); returns the target tokens' velocity."""
    n = noisy.shape[1]
    txt_ids = torch.zeros(text.shape[1], 3, device=noisy.device, dtype=ids.dtype)
    channel = int(transformer.config.in_channels) == noisy.shape[-1] + cond.shape[-1]
    out = transformer(
        hidden_states=torch.cat([noisy, cond], dim=-1 if channel else 1),
        encoder_hidden_states=text,
        pooled_projections=pooled,
        timestep=t,
        # sequence: cloned ids, so condition token i sits at target token i's RoPE position
        img_ids=ids if channel else torch.cat([ids, ids], dim=0),
        txt_ids=txt_ids,
        guidance=guidance if transformer.config.guidance_embeds else None,
        return_dict=False,
    )[0]
    return out[:, :n]


@torch.no_grad()
def sample(transformer, scheduler, cond: torch.Tensor, latent_hw: tuple[int, int], text: torch.Tensor,
           pooled: torch.Tensor, steps: int, guidance: float, generator: torch.Generator,
           progress=None) -> torch.Tensor:
    """Euler integration of the flow from noise (sigma 1) to data; returns packed target tokens."""
    h, w = latent_hw
    b, n, d = cond.shape
    dtype, device = cond.dtype, cond.device
    noise = torch.randn((b, d // 4, h, w), generator=generator, device=generator.device, dtype=torch.float32)
    x = pack(noise).to(device=device, dtype=dtype)
    ids = image_ids(h, w, device=device, dtype=dtype)
    sigmas = np.linspace(1.0, 1.0 / steps, steps)
    kwargs = {"mu": shift_mu(n, scheduler.config)} if scheduler.config.get("use_dynamic_shifting") else {}
    scheduler.set_timesteps(sigmas=sigmas, device=device, **kwargs)
    g = torch.full((b,), float(guidance), device=device, dtype=dtype)
    text, pooled = text.to(device=device, dtype=dtype), pooled.to(device=device, dtype=dtype)
    for i, t in enumerate(scheduler.timesteps):
        v = velocity(transformer, x, cond, ids, text, pooled, (t / 1000).expand(b).to(dtype), g)
        x = scheduler.step(v, t, x, return_dict=False)[0]
        if progress is not None:
            progress(i + 1, steps)
    return x


Generators = torch.Generator | list[torch.Generator] | None


def _draw(fn, shape: tuple[int, ...], generator: Generators) -> torch.Tensor:
    """``fn`` (torch.randn / torch.rand) of ``shape`` in float32 from one generator, or from a list of one generator
    per sample (row i from generator i): a trainer seeds each sample's noise by the sample itself, so a sample
    draws the same noise in whichever batch and on whichever process it lands."""
    if isinstance(generator, (list, tuple)):
        if len(generator) != shape[0]:
            raise InputError(f"{len(generator)} generators for a batch of {shape[0]}")
        return torch.cat([fn((1, *shape[1:]), generator=g, device=g.device, dtype=torch.float32) for g in generator])
    return fn(shape, generator=generator, device=generator.device if generator else "cpu", dtype=torch.float32)


def sample_sigmas(n: int, mode: str, generator: Generators, device) -> torch.Tensor:
    """Training noise levels: logit-normal (SD3 / FLUX fine-tuning default) or uniform in (0, 1)."""
    if mode == "logit_normal":
        u = torch.sigmoid(_draw(torch.randn, (n,), generator))
    elif mode == "uniform":
        u = _draw(torch.rand, (n,), generator)
    else:
        raise InputError(f"timestep sampling {mode!r}: expected logit_normal or uniform")
    return u.to(device)


def flow_matching_loss(transformer, target: torch.Tensor, cond: torch.Tensor, latent_hw: tuple[int, int],
                       text: torch.Tensor, pooled: torch.Tensor, guidance: float, sigmas: torch.Tensor,
                       generator: Generators = None) -> torch.Tensor:
    """MSE between predicted and true velocity (noise - x0) at x_sigma = (1 - sigma) x0 + sigma noise."""
    b = target.shape[0]
    noise = _draw(torch.randn, tuple(target.shape), generator).to(target.device, target.dtype)
    s = sigmas.to(target.device, target.dtype).view(b, 1, 1)
    noisy = (1 - s) * target + s * noise
    ids = image_ids(*latent_hw, device=target.device, dtype=target.dtype)
    g = torch.full((b,), float(guidance), device=target.device, dtype=target.dtype)
    v = velocity(transformer, noisy, cond, ids, text.to(target.dtype), pooled.to(target.dtype),
                 sigmas.to(target.device, target.dtype), g)
    return torch.nn.functional.mse_loss(v.float(), (noise - target).float())
