"""Change-mask composition: keep the camera's own pixels wherever the model predicts no change.

A predicted frame is decoded from a small latent at model resolution and, for the published frame, resized to the
camera's geometry; static background painted by the model is blurrier and noisier than the real pixels it
replaces. Action-conditioned video-prediction models therefore compose their output from the input and the
generated pixels with a mask of where the scene moves. Here the mask comes from the prediction itself: pixels
where the predicted frame differs from the VAE's reconstruction of the input (the same frame passed through the
same lossy autoencoder, so reconstruction error does not count as change) by more than ``threshold`` of 255,
dilated and feathered so the seam is invisible."""
from __future__ import annotations

import cv2
import numpy as np


def change_mask(pred: np.ndarray, reference: np.ndarray, threshold: int, dilate: int = 2,
                feather: int = 2) -> np.ndarray:
    """(H, W) float32 mask in [0, 1] at the prediction's resolution: 1 where ``pred`` differs from ``reference``
    (largest channel difference > ``threshold``), grown by ``dilate`` px and softened by a ``feather`` px blur."""
    diff = cv2.absdiff(pred, reference).max(axis=-1)
    mask = (diff > threshold).astype(np.uint8)
    if dilate > 0:
        mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate + 1, 2 * dilate + 1)))
    mask = mask.astype(np.float32)
    if feather > 0:
        mask = cv2.GaussianBlur(mask, (0, 0), sigmaX=float(feather))
    return np.clip(mask, 0.0, 1.0)


def compose(generated: np.ndarray, original: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``mask * generated + (1 - mask) * original`` in uint8; the mask is resized to the images' size."""
    h, w = original.shape[:2]
    if mask.shape != (h, w):
        mask = cv2.resize(mask, (w, h), interpolation=cv2.INTER_LINEAR)
    m = mask[..., None]
    out = m * generated.astype(np.float32) + (1.0 - m) * original.astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


__all__ = ["change_mask", "compose"]
