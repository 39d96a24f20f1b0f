"""InstructPix2Pix dual classifier-free guidance, batched as one UNet forward.

    eps = eps(∅,∅) + s_T·(eps(I,T) − eps(I,∅)) + s_I·(eps(I,∅) − eps(∅,∅))
        = s_T·eps(I,T) + (s_I − s_T)·eps(I,∅) + (1 − s_I)·eps(∅,∅)

The second form shows which passes a setting makes useless: s_I = 1 drops the unconditional pass,
s_I = s_T drops the image-only pass, s_T = s_I = 1 leaves only the conditional pass. (s_T = 1 alone still needs
all three: eps = eps(I,T) + (s_I − 1)·(eps(I,∅) − eps(∅,∅)).) Passes with a zero weight are not evaluated."""
from __future__ import annotations

from dataclasses import dataclass

import torch

PASSES = ("cond", "image_only", "uncond")  # (I,T), (I,∅), (∅,∅)


@dataclass(frozen=True)
class GuidancePlan:
    """Which passes run, in batch order, with their weights."""

    passes: tuple[str, ...]
    weights: tuple[float, ...]


def plan(text_scale: float, image_scale: float) -> GuidancePlan:
    coeffs = {"cond": float(text_scale), "image_only": float(image_scale) - float(text_scale),
              "uncond": 1.0 - float(image_scale)}
    used = tuple(p for p in PASSES if coeffs[p] != 0.0)
    if not used:  # s_T = 0 and s_I = 1: the formula is eps(I,∅) with weight 1
        used = ("image_only",)
        coeffs["image_only"] = 1.0
    return GuidancePlan(used, tuple(coeffs[p] for p in used))


def model_inputs(gp: GuidancePlan, latents: torch.Tensor, image_latents: torch.Tensor,
                 text_emb: torch.Tensor, uncond_emb: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stack the passes along the batch: UNet input (k·B, 2C, h, w) = scaled noisy latent ⊕ image latent
    (zeros when the image is dropped) and the matching text context (k·B, L, D)."""
    b = latents.shape[0]
    uncond_emb = uncond_emb.expand(b, -1, -1) if uncond_emb.shape[0] == 1 else uncond_emb
    zeros = torch.zeros_like(image_latents)
    img = {"cond": image_latents, "image_only": image_latents, "uncond": zeros}
    ctx = {"cond": text_emb, "image_only": uncond_emb, "uncond": uncond_emb}
    k = len(gp.passes)
    sample = torch.cat([latents.repeat(k, 1, 1, 1), torch.cat([img[p] for p in gp.passes])], dim=1)
    context = torch.cat([ctx[p] for p in gp.passes])
    return sample, context


def combine(gp: GuidancePlan, eps: torch.Tensor) -> torch.Tensor:
    """Weighted sum of the per-pass predictions (eps is (k·B, C, h, w) in ``gp.passes`` order), in float32: the
    weights (e.g. 7.5 and −6) cancel, and summing bf16/fp16 products loses most of the guidance signal."""
    chunks = eps.float().chunk(len(gp.passes))
    out = chunks[0] * gp.weights[0]
    for w, c in zip(gp.weights[1:], chunks[1:]):
        out = out + w * c
    return out


def guided_eps(unet, gp: GuidancePlan, latents: torch.Tensor, t, image_latents: torch.Tensor,
               text_emb: torch.Tensor, uncond_emb: torch.Tensor) -> torch.Tensor:
    """One batched UNet forward of all needed passes, combined."""
    sample, context = model_inputs(gp, latents, image_latents, text_emb, uncond_emb)
    eps = unet(sample, t, encoder_hidden_states=context, return_dict=False)[0]
    return combine(gp, eps)
