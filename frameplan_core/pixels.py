"""uint8 RGB images <-> float tensors in [-1, 1], the pixel range every model here works in (DESIGN: images are
uint8 at APIs, [-1, 1] inside models). One definition, so the predictor, the planner and training convert alike."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch


def to_tensor(images: Any) -> torch.Tensor:
    """uint8 (..., H, W, 3) numpy array or tensor -> float32 (..., 3, H, W) in [-1, 1] (one image or a batch)."""
    x = torch.from_numpy(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images
    return x.movedim(-1, -3).float().div(127.5).sub(1.0)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float (..., 3, H, W) in [-1, 1] (clamped) -> C-contiguous uint8 (..., H, W, 3) on the CPU, rounded once."""
    levels = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return np.ascontiguousarray(levels.movedim(-3, -1).cpu().numpy())
