"""Paired augmentation ("conditional augmentation" on top of the simulator's randomisation): the same random
resized crop, horizontal flip and colour jitter are applied to every image of a sample, so the input->target
change stays consistent. Randomness comes only from the ``rng`` passed in (exact resume, worker-independent)."""
from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

from frameplan_core.image import CropPolicy, fit


def _resize(image: np.ndarray, size: int) -> np.ndarray:
    if image.shape[:2] == (size, size):
        return image
    interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_CUBIC
    return cv2.resize(image, (size, size), interpolation=interp)


def color_jitter(images: Sequence[np.ndarray], rng: np.random.Generator, strength: float) -> list[np.ndarray]:
    """Brightness, contrast and saturation factors in [1 - s, 1 + s], identical for all images; the contrast
    pivot is the first image's mean grey level."""
    if strength <= 0:
        return [np.ascontiguousarray(im) for im in images]
    b, c, s = rng.uniform(1 - strength, 1 + strength, size=3)
    ref = images[0].astype(np.float32)
    pivot = float((ref @ np.array([0.299, 0.587, 0.114], np.float32)).mean())
    out = []
    for im in images:
        x = im.astype(np.float32) * b
        x = (x - pivot * b) * c + pivot * b
        grey = (x @ np.array([0.299, 0.587, 0.114], np.float32))[..., None]
        x = grey + (x - grey) * s
        out.append(np.clip(np.rint(x), 0, 255).astype(np.uint8))
    return out


def paired_augment(images: Sequence[np.ndarray], rng: np.random.Generator | None, image_size: int, crop_res: int,
                   crop_min_scale: float = 1.0, flip_prob: float = 0.0, jitter: float = 0.0,
                   policy: CropPolicy = "center") -> list[np.ndarray]:
    """Fit every image to ``image_size`` (the model's crop ``policy``: centre crop, resize or pad), then (when
    ``rng`` is given) one random square crop of side in [crop_min_scale, 1] x image_size, resized to ``crop_res``;
    flip with ``flip_prob``; colour jitter. Without ``rng`` (validation, evaluation) the images are only fitted to
    ``crop_res``."""
    if rng is None:
        return [fit(im, crop_res, policy) for im in images]
    fitted = [fit(im, image_size, policy) for im in images]
    side = image_size
    if crop_min_scale < 1.0:
        side = round(rng.uniform(crop_min_scale, 1.0) * image_size)
        side = max(1, min(image_size, side))
    y0 = int(rng.integers(0, image_size - side + 1))
    x0 = int(rng.integers(0, image_size - side + 1))
    out = [_resize(im[y0 : y0 + side, x0 : x0 + side], crop_res) for im in fitted]
    if flip_prob > 0 and rng.random() < flip_prob:
        out = [np.ascontiguousarray(im[:, ::-1]) for im in out]
    return color_jitter(out, rng, jitter)
