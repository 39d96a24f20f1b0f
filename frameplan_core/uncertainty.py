"""How sure a mean-of-samples prediction is: a per-pixel uncertainty map and one scalar confidence per frame.

The predictor and the planner already draw ``samples`` futures per call and publish their per-pixel mean; their
spread is what this module turns into numbers, from those same samples (no extra sampling).

**Uncertainty map** (float32, grey levels 0..255, the published frame's geometry), an estimate of the RMS error of
each published pixel (over its three channels):

- *spread*: the root mean square distance of the samples from the published value, ``sqrt(mean_k mean_c (s_kc -
  p_c)^2)``. Where the published value is the samples' mean this is their (population) standard deviation. With
  change-mask composition (predictor ``compose``) the published pixel is ``m * mean + (1 - m) * camera``; the
  camera's pixel is compared in the model's own terms (the VAE reconstruction of the input, so the autoencoder's
  blur does not count as doubt): ``spread^2 = std^2 + (1 - m)^2 (mean - recon)^2``, i.e. a kept pixel is uncertain
  only as far as the samples disagree with "nothing changes here".
- *reconstruction floor* (predictor only): ``|decode(encode(input)) - input|`` at the published geometry, the
  detail the model's autoencoder and resize lose on the current frame, which a generated pixel loses too however
  sure the samples are; ``u^2 = spread^2 + m * floor^2`` (m = 1 without composition; a kept camera pixel loses
  nothing). It costs one VAE decode of the input (no sampling; free with composition, which decodes it anyway).
  Measured on held-out pairs it improves the predictor's pixel ranking; for the planner (published at its cell
  size, no resize) it made the ranking worse, so the planner's map is the spread alone (docs/eval/uncertainty.md).

Pixels the model never saw (the centre crop's cut-away borders at the camera's geometry, filled with the camera's
own pixels) are NaN: no estimate, not "certain". With one sample there is no spread: maps and confidences are None
with a note.

**Confidence** (one number in (0, 1], higher = more trustworthy): ``exp(-rms(u) / CONFIDENCE_SCALE)`` where
``rms(u)`` is the root mean square of the finite map values (the expected RMS error of the frame in grey levels),
so it ranks predictions by expected whole-frame error; 1 means no expected error at all. docs/eval/uncertainty.md
measures how well both track the real error."""
from __future__ import annotations

import math
from typing import Any

import cv2
import numpy as np

from frameplan_core.errors import InputError

CONFIDENCE_SCALE = 16.0  # grey levels of RMS spread at which the confidence is 1/e
HEATMAP_MAX = 32.0  # grey levels shown as the hottest colour (fixed, so heat maps of different frames compare)
NAN_COLOUR = (128, 128, 128)  # pixels without an estimate in heat maps
ONE_SAMPLE = "one sample: no spread to measure an uncertainty from (use samples >= 2)"


def sample_spread(samples: Any, published: Any = None) -> np.ndarray:
    """(S, B, C, H, W) samples in grey levels (torch or numpy) -> (B, H, W) float32 RMS distance of the samples
    from ``published`` ((B, C, H, W); their mean when None), over samples and channels."""
    import torch

    x = torch.as_tensor(samples).float()
    if x.ndim != 5 or x.shape[0] < 2:
        raise InputError(f"sample_spread: expected (S >= 2, B, C, H, W) samples, got {tuple(x.shape)}")
    p = x.mean(0) if published is None else torch.as_tensor(published).to(x)
    if p.shape != x.shape[1:]:
        raise InputError(f"sample_spread: published values {tuple(p.shape)} do not match samples {tuple(x.shape)}")
    return ((x - p) ** 2).mean(dim=(0, 2)).sqrt().cpu().numpy().astype(np.float32)


def rms_difference(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(H, W) float32: per-pixel RMS over channels of ``a - b`` (two (H, W, C) images of the same size)."""
    if a.shape != b.shape or a.ndim != 3:
        raise InputError(f"rms_difference: images of shape {a.shape} and {b.shape}; expected two equal (H, W, C)")
    d = a.astype(np.float32) - b.astype(np.float32)
    return np.sqrt((d * d).mean(axis=-1))


def combine(spread: np.ndarray, floor: np.ndarray, weight: np.ndarray | float = 1.0) -> np.ndarray:
    """``sqrt(spread^2 + weight * floor^2)`` (float32; NaN in ``spread`` stays NaN)."""
    return np.sqrt(spread * spread + np.asarray(weight, np.float32) * floor * floor).astype(np.float32)


def check_map(u: object, where: str = "uncertainty") -> np.ndarray:
    """A (H, W) float map with no negative or infinite values (NaN allowed: no estimate)."""
    if not isinstance(u, np.ndarray) or u.ndim != 2 or 0 in u.shape or u.dtype.kind != "f":
        raise InputError(f"{where}: expected a non-empty (H, W) float array, got "
                         f"{getattr(u, 'shape', type(u).__name__)} {getattr(u, 'dtype', '')}")
    finite = u[np.isfinite(u)]
    if np.isinf(u).any() or (finite < 0).any():
        raise InputError(f"{where}: uncertainty must be >= 0 and finite (NaN = no estimate)")
    return u


def rms(u: np.ndarray) -> float | None:
    """Root mean square of the finite values; None when there are none."""
    v = np.asarray(u, np.float64)
    v = v[np.isfinite(v)]
    return float(np.sqrt(np.mean(v * v))) if v.size else None


def confidence(u: np.ndarray | None, scale: float = CONFIDENCE_SCALE) -> float | None:
    """``exp(-rms(u) / scale)`` in (0, 1]; None without a map or without a finite value."""
    if u is None:
        return None
    r = rms(check_map(u))
    return None if r is None else float(math.exp(-r / scale))


def confidence_of(maps: list[np.ndarray], scale: float = CONFIDENCE_SCALE) -> float | None:
    """One confidence for several maps together (e.g. a plan's predicted frames): their pooled RMS."""
    if not maps:
        return None
    return confidence(np.concatenate([np.asarray(m, np.float32).ravel() for m in maps])[None], scale)


def heatmap(u: np.ndarray, vmax: float = HEATMAP_MAX) -> np.ndarray:
    """(H, W) map -> RGB uint8 heat map (inferno: black = certain, yellow = ``vmax`` grey levels or more; grey =
    no estimate)."""
    u = check_map(u)
    if not vmax > 0:
        raise InputError(f"heat map scale {vmax!r}: must be > 0")
    finite = np.isfinite(u)
    level = np.clip(np.where(finite, u, 0.0) / vmax * 255.0, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(level, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    rgb[~finite] = NAN_COLOUR
    return rgb


def with_legend(heat: np.ndarray, vmax: float = HEATMAP_MAX, confidence_value: float | None = None) -> np.ndarray:
    """A heat map with a colour bar on its right: 0, vmax/2 and >= vmax grey levels (and the confidence)."""
    h = heat.shape[0]
    bar_h = max(h, 96)
    if h < bar_h:  # tiny maps: scale up so the labels stay readable
        heat = cv2.resize(heat, (round(heat.shape[1] * bar_h / h), bar_h), interpolation=cv2.INTER_NEAREST)
        h = bar_h
    ramp = np.linspace(vmax, 0.0, h, dtype=np.float32)[:, None].repeat(12, axis=1)
    panel = np.full((h, 84, 3), 255, np.uint8)
    panel[:, 4:16] = heatmap(ramp, vmax)
    for y, text in ((10, f">={vmax:g}"), (h // 2 + 4, f"{vmax / 2:g}"), (h - 3, "0")):
        cv2.putText(panel, text, (19, y), cv2.FONT_HERSHEY_SIMPLEX, 0.33, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(panel, "grey lvl", (19, h // 4 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.3, (0, 0, 0), 1, cv2.LINE_AA)
    if confidence_value is not None:
        cv2.putText(panel, f"conf {confidence_value:.2f}", (19, 3 * h // 4 + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.3,
                    (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate([heat, panel], axis=1)


def overlay(image: np.ndarray, u: np.ndarray, vmax: float = HEATMAP_MAX, alpha: float = 0.7) -> np.ndarray:
    """The heat map blended over ``image`` in proportion to the uncertainty (certain pixels show the image; pixels
    without an estimate are greyed)."""
    u = check_map(u)
    if image.shape[:2] != u.shape:
        raise InputError(f"overlay: image {image.shape[:2]} and uncertainty {u.shape} differ in size")
    w = np.where(np.isfinite(u), np.clip(np.nan_to_num(u) / vmax, 0.0, 1.0) * alpha, 0.5)[..., None]
    out = (1.0 - w) * image.astype(np.float32) + w * heatmap(u, vmax).astype(np.float32)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def npy_bytes(u: np.ndarray) -> bytes:
    """A raw map (H, W) or a stack of them (N, H, W) as a .npy file (float32 grey levels, NaN = no estimate), for
    an atomic write."""
    import io

    u = np.ascontiguousarray(u, np.float32)
    if u.ndim not in (2, 3):
        raise InputError(f"npy_bytes: expected an (H, W) map or an (N, H, W) stack, got shape {u.shape}")
    for k, m in enumerate(u.reshape(-1, *u.shape[-2:])):
        check_map(m, f"uncertainty map {k}")
    buf = io.BytesIO()
    np.save(buf, u, allow_pickle=False)
    return buf.getvalue()


__all__ = ["CONFIDENCE_SCALE", "HEATMAP_MAX", "ONE_SAMPLE", "check_map", "combine", "confidence", "confidence_of", "heatmap",
           "npy_bytes", "overlay", "rms", "rms_difference", "sample_spread",
           "with_legend"]
