"""Samplers from diffusers schedulers (Euler-ancestral as in the paper, DDIM, DPM-Solver++), any step count,
seeded: the same seed on the same device gives the same latents."""
from __future__ import annotations

from typing import Any

import torch

from frameplan_core.errors import ConfigError
from frameplan_core.predictor import guidance
from frameplan_core.predictor.config import SAMPLERS


def make_scheduler(name: str, train_config: dict[str, Any]):
    """Inference scheduler sharing the training noise schedule (betas, timesteps, prediction type)."""
    from diffusers import (
        DDIMScheduler,
        DPMSolverMultistepScheduler,
        EulerAncestralDiscreteScheduler,
    )

    base = {k: v for k, v in train_config.items() if not k.startswith("_")}
    if name == "euler_a":
        return EulerAncestralDiscreteScheduler.from_config(base)
    if name == "ddim":
        return DDIMScheduler.from_config(base)
    if name == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(base, algorithm_type="dpmsolver++", solver_order=2,
                                                       final_sigmas_type="zero", lower_order_final=True)
    raise ConfigError(f"sampler {name!r}: expected one of {list(SAMPLERS)}")


def set_timesteps(scheduler, steps: int, device) -> None:
    """``scheduler.set_timesteps``, refusing step counts whose schedule leaves the training range: with the
    ``leading`` spacing of SD-1.x, DDIM at 1000 steps and DPM-Solver++ at 999-1000 steps index past the last
    training timestep (an IndexError, or NaN latents) instead of denoising."""
    scheduler.set_timesteps(steps, device=device)
    ts = scheduler.timesteps
    n_train = int(scheduler.config.num_train_timesteps)
    # integer timesteps index the training schedule directly (DDIM, DPM-Solver++); Euler's float ones are
    # interpolated into the sigma table and clamp at its end
    out_of_range = not ts.is_floating_point() and (int(ts.max()) >= n_train or int(ts.min()) < 0)
    if out_of_range or (len(ts) > 1 and not bool((ts[:-1] > ts[1:]).all())):
        raise ConfigError(f"steps={steps}: the {type(scheduler).__name__} schedule for this many steps leaves the "
                          f"{n_train}-step training range (timesteps {int(ts.max())}..{int(ts.min())}); use fewer steps")


@torch.no_grad()
def sample(unet, scheduler, image_latents: torch.Tensor, text_emb: torch.Tensor, uncond_emb: torch.Tensor,
           steps: int, text_scale: float, image_scale: float, generator: torch.Generator,
           latent_channels: int = 4) -> torch.Tensor:
    """Denoise from seeded noise to a (scaled) target latent conditioned on ``image_latents`` (unscaled)."""
    gp = guidance.plan(text_scale, image_scale)
    b, _, h, w = image_latents.shape
    set_timesteps(scheduler, steps, image_latents.device)
    latents = torch.randn((b, latent_channels, h, w), generator=generator, device=generator.device,
                          dtype=torch.float32).to(image_latents.device)
    latents = latents * scheduler.init_noise_sigma
    dtype = next(unet.parameters()).dtype
    img, txt, unc = image_latents.to(dtype), text_emb.to(dtype), uncond_emb.to(dtype)
    for t in scheduler.timesteps:
        x = scheduler.scale_model_input(latents, t)
        eps = guidance.guided_eps(unet, gp, x.to(dtype), t, img, txt, unc)
        latents = scheduler.step(eps.float(), t, latents, generator=generator, return_dict=False)[0]
    return latents
