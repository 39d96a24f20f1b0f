"""Pre/post-processing between camera frames (any size, uint8 RGB) and model tensors ([-1, 1], model resolution).

Accepted: (H, W, 3) uint8 RGB; gray (H, W)/(H, W, 1) and RGBA (alpha dropped) uint8 are converted. Refused with
InputError: float/other dtypes (NaN included), empty images, non-arrays. Odd sizes are fine: the crop policy
(``center`` crop, plain ``resize`` or ``pad``) maps any aspect ratio onto the square model input."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from frameplan_core import pixels
from frameplan_core.errors import InputError
from frameplan_core.image import CropPolicy, fit, to_rgb, unfit


def check_image(image: object, where: str = "image") -> np.ndarray:
    if isinstance(image, np.ndarray) and image.dtype.kind == "f" and image.size and not np.isfinite(image).all():
        raise InputError(f"{where}: float image with NaN/inf values; expected uint8 RGB in [0, 255]")
    if isinstance(image, np.ndarray) and image.ndim >= 2 and 0 in image.shape[:2]:
        raise InputError(f"{where}: empty image of shape {image.shape}")
    if isinstance(image, np.ndarray) and image.ndim not in (2, 3):
        raise InputError(f"{where}: expected (H, W, 3) uint8 RGB, got shape {image.shape}")
    if isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] not in (1, 3, 4):
        raise InputError(f"{where}: expected 1, 3 or 4 channels, got shape {image.shape}")
    return to_rgb(image, where)


def to_model(images: Sequence[np.ndarray], resolution: int, policy: CropPolicy, device, dtype) -> torch.Tensor:
    """Fit each RGB uint8 image to resolution² and stack as a (B, 3, R, R) tensor in [-1, 1]."""
    return pixels.to_tensor(np.stack([fit(im, resolution, policy) for im in images])).to(device=device, dtype=dtype)


def to_uint8(x: torch.Tensor) -> list[np.ndarray]:
    """(B, 3, H, W) in [-1, 1] -> list of (H, W, 3) uint8."""
    return list(pixels.to_uint8(x))


def mask_to_input(mask: np.ndarray, original_hw: tuple[int, int], policy: CropPolicy) -> np.ndarray:
    """A model-resolution float mask in [0, 1] mapped onto the input geometry like the prediction (0 = keep the
    input, which is what the centre crop's cut-away borders show)."""
    m8 = np.repeat(np.rint(mask * 255.0).astype(np.uint8)[..., None], 3, axis=2)
    return unfit(m8, original_hw, policy)[..., 0].astype(np.float32) / 255.0


def back_to_input(pred: np.ndarray, original: np.ndarray, policy: CropPolicy) -> np.ndarray:
    """Map a model-resolution prediction onto the input geometry (cropped borders come from the input frame)."""
    return unfit(pred, original.shape[:2], policy, background=original if policy == "center" else None)
