"""The policy network: a small conv encoder over the current frame (with the goal frame stacked on its channels
when ``goal`` is on), spatial-softmax keypoints plus a coarse spatial map, the normalised joint state, and an MLP
that outputs a chunk of future commands. About 1.5 M parameters at the defaults: trainable on a CPU.

Why early fusion (goal on the input channels) rather than two encoders: reaching a goal frame is mostly about
*where things differ* between now and then, which the first convolutions see directly; it also makes the
no-foresight baseline exactly this network with three input channels."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from frameplan_core.policy.config import PolicyConfig


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c // 4), c)


class _Stage(nn.Module):
    """Stride-2 conv, then (optionally) a residual 3x3 conv; GroupNorm + SiLU (batch-size independent)."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, residual: bool = True) -> None:
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(cin, cout, kernel, 2, kernel // 2, bias=False), _norm(cout), nn.SiLU())
        self.res = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), _norm(cout), nn.SiLU()) if residual \
            else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.down(x)
        return x + self.res(x) if self.res is not None else x


class SpatialSoftmax(nn.Module):
    """(B, C, H, W) -> (B, 2C): the expected x, y of each channel's softmax over the image (in [-1, 1])."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        attn = F.softmax(x.flatten(2).float(), dim=-1).view(b, c, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device)
        xs = torch.linspace(-1, 1, w, device=x.device)
        ex = (attn.sum(2) * xs).sum(-1)
        ey = (attn.sum(3) * ys).sum(-1)
        return torch.cat([ex, ey], dim=1).to(x.dtype)


class PolicyNet(nn.Module):
    """images (B, 3 or 6, S, S) in [-1, 1], state (B, 16) normalised -> (B, chunk, 16) normalised actions
    (joint entries) and gripper logits (gripper entries)."""

    KEYPOINTS = 64
    MAP_CHANNELS = 16

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        c1, c2, c3, c4 = config.channels
        self.stages = nn.ModuleList([
            _Stage(config.in_channels, c1, kernel=5, residual=False),
            _Stage(c1, c2, residual=False),
            _Stage(c2, c3),
            _Stage(c3, c4),
        ])
        self.keypoints = nn.Conv2d(c3, self.KEYPOINTS, 1)
        self.softmax = SpatialSoftmax()
        self.coarse = nn.Sequential(nn.Conv2d(c4, self.MAP_CHANNELS, 1), nn.SiLU())
        side = config.image_size // 16
        self.state = nn.Sequential(nn.Linear(config.joint_dim, config.state_hidden), nn.SiLU())
        feat = 2 * self.KEYPOINTS + self.MAP_CHANNELS * side * side + config.state_hidden
        h = config.hidden
        self.head = nn.Sequential(nn.Linear(feat, h), nn.LayerNorm(h), nn.SiLU(), nn.Dropout(0.1),
                                  nn.Linear(h, h), nn.SiLU(), nn.Linear(h, config.chunk * config.joint_dim))

    def forward(self, images: torch.Tensor, state: torch.Tensor) -> torch.Tensor:
        x = images
        feats = []
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == 2:
                feats.append(self.softmax(self.keypoints(x)))
        feats.append(self.coarse(x).flatten(1))
        feats.append(self.state(state))
        out = self.head(torch.cat(feats, dim=1))
        return out.view(-1, self.config.chunk, self.config.joint_dim)

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


__all__ = ["PolicyNet", "SpatialSoftmax"]
