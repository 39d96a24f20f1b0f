"""Image-quality metrics for predicted frames: SSIM (Wang et al. 2004 settings), PSNR (MAX 255), and the same
two restricted to the *changed region* — the pixels where the scene actually moves between input and target —
and the *sharpness ratio* there (is the prediction as crisp as the real frame, or a blur that buys PSNR).

Why the changed region: on a static-camera robot scene most pixels are unchanged background, so whole-frame
SSIM/PSNR of *any* output that copies the input already look excellent (this is how a 60 dB whole-frame PSNR can
be reported). Scores over the changed region measure whether the model predicted the motion.

Definitions (all inputs HxWx3 uint8 RGB of the same size):
- ``changed_mask(input, target)``: per pixel, the largest absolute channel difference between input and target;
  pixels above ``threshold`` (default 25 of 255, well above JPEG noise) are changed; the mask is then dilated by
  a ``(2*dilate+1)`` square (default ``dilate=3`` px) so that the borders of moving objects are included.
- ``ssim_changed``: the SSIM map (per pixel, averaged over the three channels, computed exactly as for the whole
  frame) averaged over the mask pixels that lie in the same interior region the whole-frame SSIM averages over
  (scikit-image drops a ``(win_size-1)//2`` = 5 px border; so do we).
- ``psnr_changed``: 10 log10(255² / MSE) with the MSE taken over the mask pixels (all three channels).
- PSNR of identical images is ``inf``; ``summarize`` caps each value at ``PSNR_CAP`` dB before averaging so that
  means and JSON stay finite, and counts how many were capped.
- ``sharpness(image, mask)``: the mean Sobel gradient magnitude over the mask pixels — ``cv2.Sobel`` (ksize 3,
  float64, OpenCV's default reflected border) of the grayscale image (``cv2.COLOR_RGB2GRAY``, uint8), magnitude
  sqrt(gx² + gy²).
- ``sharpness_changed`` (``sharpness_ratio``): the prediction's sharpness in the changed region ÷ the ground
  truth's in the same region, per sample. 1 = as much edge energy as the real frame; a blurred (e.g. averaged)
  prediction scores below 1, added noise or ghost edges above. PSNR rewards blur (the mean of several plausible
  futures has a lower MSE than any one of them), so this is reported beside it. Summaries take the mean of the
  per-sample ratios.
- An empty mask (nothing changed) makes the changed-region metrics ``nan`` (so does a ground truth without any
  gradient in the region, for the sharpness ratio); ``summarize`` skips nans and reports how many samples
  contributed.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import cv2
import numpy as np

from frameplan_core.errors import InputError
from frameplan_core.image import ensure_rgb_uint8

PSNR_CAP = 100.0
DEFAULT_THRESHOLD = 25
DEFAULT_DILATE = 3
_SSIM_KW = {"gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False, "data_range": 255, "channel_axis": -1}
# scikit-image's gaussian window: truncate=3.5, radius int(3.5*sigma + 0.5) = 5 -> win_size 11, border 5 px.
_SSIM_PAD = 5


def _pair(a: np.ndarray, b: np.ndarray, where: str) -> tuple[np.ndarray, np.ndarray]:
    a = ensure_rgb_uint8(a, f"{where} (prediction)")
    b = ensure_rgb_uint8(b, f"{where} (reference)")
    if a.shape != b.shape:
        raise InputError(f"{where}: image sizes differ: {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < 2 * _SSIM_PAD + 1:
        raise InputError(f"{where}: image {a.shape[:2]} is smaller than the 11x11 SSIM window")
    return a, b


def ssim_map(a: np.ndarray, b: np.ndarray, where: str = "ssim") -> tuple[float, np.ndarray]:
    """(whole-frame SSIM, per-pixel SSIM map averaged over channels) with Wang et al. settings."""
    from skimage.metrics import structural_similarity

    a, b = _pair(a, b, where)
    mssim, full = structural_similarity(a, b, full=True, **_SSIM_KW)
    return float(mssim), full.mean(axis=-1)


def ssim(a: np.ndarray, b: np.ndarray, where: str = "ssim") -> float:
    """Whole-frame SSIM (Wang et al.: 11x11 gaussian window sigma 1.5, population covariance, data range 255)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(a, b, where)
    return float(structural_similarity(a, b, **_SSIM_KW))


def _psnr_from_mse(mse: float) -> float:
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def psnr(a: np.ndarray, b: np.ndarray, where: str = "psnr") -> float:
    """PSNR in dB with MAX 255 over all pixels and channels; ``inf`` when the images are identical."""
    a, b = _pair(a, b, where)
    return _psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def changed_mask(input_image: np.ndarray, target: np.ndarray, threshold: int = DEFAULT_THRESHOLD,
                 dilate: int = DEFAULT_DILATE) -> np.ndarray:
    """Boolean (H, W) mask of pixels whose input->target difference exceeds ``threshold`` (max over channels,
    0..255), dilated by ``dilate`` pixels (square structuring element)."""
    a, b = _pair(input_image, target, "changed_mask")
    if not 0 <= threshold < 255:
        raise InputError(f"changed_mask: threshold {threshold} outside 0..254")
    if dilate < 0:
        raise InputError(f"changed_mask: dilate {dilate} must be >= 0")
    diff = cv2.absdiff(a, b).max(axis=-1)
    mask = (diff > threshold).astype(np.uint8)
    if dilate:
        mask = cv2.dilate(mask, np.ones((2 * dilate + 1, 2 * dilate + 1), np.uint8))
    return mask.astype(bool)


def masked_ssim(a: np.ndarray, b: np.ndarray, mask: np.ndarray, where: str = "masked_ssim") -> float:
    """Mean of the SSIM map over ``mask`` (restricted to the interior the whole-frame SSIM uses); nan if empty."""
    _, smap = ssim_map(a, b, where)
    if mask.shape != smap.shape:
        raise InputError(f"{where}: mask shape {mask.shape} differs from image {smap.shape}")
    inner = np.zeros_like(mask, dtype=bool)
    p = _SSIM_PAD
    inner[p:-p, p:-p] = mask[p:-p, p:-p]
    return float(smap[inner].mean()) if inner.any() else math.nan


def masked_psnr(a: np.ndarray, b: np.ndarray, mask: np.ndarray, where: str = "masked_psnr") -> float:
    """PSNR over the pixels of ``mask`` (all channels); ``inf`` if identical there, nan if the mask is empty."""
    a, b = _pair(a, b, where)
    if mask.shape != a.shape[:2]:
        raise InputError(f"{where}: mask shape {mask.shape} differs from image {a.shape[:2]}")
    if not mask.any():
        return math.nan
    d = a[mask].astype(np.float64) - b[mask].astype(np.float64)
    return _psnr_from_mse(float(np.mean(d**2)))


def sharpness(image: np.ndarray, mask: np.ndarray, where: str = "sharpness") -> float:
    """Mean Sobel gradient magnitude (grayscale, ksize 3) over the ``mask`` pixels; nan if the mask is empty."""
    img = ensure_rgb_uint8(image, where)
    mask = np.asarray(mask, dtype=bool)
    if mask.shape != img.shape[:2]:
        raise InputError(f"{where}: mask shape {mask.shape} differs from image {img.shape[:2]}")
    if not mask.any():
        return math.nan
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    gx = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3)
    gy = cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)
    return float(np.sqrt(gx**2 + gy**2)[mask].mean())


def sharpness_ratio(pred: np.ndarray, target: np.ndarray, mask: np.ndarray,
                    where: str = "sharpness_ratio") -> float:
    """``sharpness(pred) / sharpness(target)`` over ``mask``: below 1 = blurrier than the real frame there; nan
    when the mask is empty or the target has no gradient in it."""
    pred = ensure_rgb_uint8(pred, f"{where} (prediction)")
    target = ensure_rgb_uint8(target, f"{where} (reference)")
    if pred.shape != target.shape:
        raise InputError(f"{where}: image sizes differ: {pred.shape} vs {target.shape}")
    ref = sharpness(target, mask, where)
    if math.isnan(ref) or ref == 0.0:
        return math.nan
    return sharpness(pred, mask, where) / ref


def frame_metrics(pred: np.ndarray, target: np.ndarray, input_image: np.ndarray,
                  threshold: int = DEFAULT_THRESHOLD, dilate: int = DEFAULT_DILATE) -> dict[str, float]:
    """All scores of one prediction against its target; the changed region comes from input vs target."""
    mask = changed_mask(input_image, target, threshold, dilate)
    whole, smap = ssim_map(pred, target, "frame_metrics")
    p = _SSIM_PAD
    inner = np.zeros_like(mask)
    inner[p:-p, p:-p] = mask[p:-p, p:-p]
    return {
        "ssim": whole,
        "psnr": psnr(pred, target, "frame_metrics"),
        "ssim_changed": float(smap[inner].mean()) if inner.any() else math.nan,
        "psnr_changed": masked_psnr(pred, target, mask, "frame_metrics"),
        "sharpness_changed": sharpness_ratio(pred, target, mask, "frame_metrics"),
        "changed_fraction": float(mask.mean()),
    }


def summarize(rows: Iterable[Mapping[str, float]]) -> dict[str, float | int]:
    """Mean of each metric over samples: PSNR values capped at ``PSNR_CAP``; nans (empty masks) skipped.

    Returns ``{name: mean, name + "_n": count, "psnr_capped": k}`` for every key present."""
    rows = list(rows)
    out: dict[str, float | int] = {"n": len(rows)}
    keys = sorted({k for r in rows for k in r})
    capped = 0
    for k in keys:
        vals = []
        for r in rows:
            v = r.get(k)
            if v is None or (isinstance(v, float) and math.isnan(v)):
                continue
            if k.startswith("psnr") and v > PSNR_CAP:
                v, capped = PSNR_CAP, capped + 1
            vals.append(float(v))
        out[k] = float(np.mean(vals)) if vals else math.nan
        out[f"{k}_n"] = len(vals)
    out["psnr_capped"] = capped
    return out
