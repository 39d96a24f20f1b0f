"""Test helper: exact denoisers of known latent distributions, to check what the predictor samples and what the
trainer regresses without a trained model."""
from __future__ import annotations

import torch


class ZeroChangeOracle(torch.nn.Module):
    """The exact denoiser of a distribution concentrated on the zero latent: eps = x_t / sqrt(1 - alpha_bar_t)."""

    def __init__(self, alphas_cumprod: torch.Tensor, channels: int):
        super().__init__()
        self.register_buffer("abar", alphas_cumprod.float())
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # the sampler reads the UNet's dtype from a parameter
        self.c = channels

    def forward(self, x, t, encoder_hidden_states=None, return_dict=True):
        from types import SimpleNamespace

        eps = x[:, : self.c] / (1 - self.abar[torch.as_tensor(t).long()]).sqrt()
        return SimpleNamespace(sample=eps) if return_dict else (eps,)


class StillFlowOracle(torch.nn.Module):
    """The exact rectified-flow velocity for a distribution concentrated on the zero latent (x0 = 0), in the
    FLUX transformer's calling convention with channel conditioning: v = noise - x0 = x_sigma / sigma."""

    def __init__(self, channels: int):
        from types import SimpleNamespace

        super().__init__()
        self.config = SimpleNamespace(in_channels=2 * channels, out_channels=channels, guidance_embeds=True)
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # the planner reads device/dtype from a parameter
        self.c = channels

    def forward(self, hidden_states, timestep, return_dict=True, **kwargs):
        v = hidden_states[..., : self.c] / timestep.view(-1, 1, 1)
        return (v,)
