"""Does the uncertainty map know where the prediction is wrong? Measures for one prediction and summaries over many
(pure numpy/scipy; the evaluation loop lives in training/evaluation.py, the maps in uncertainty.py).

Per prediction, on the pixels that have an estimate (finite uncertainty):
- ``error``: per-pixel RMS over the three channels of prediction − ground truth, in grey levels (the quantity the
  uncertainty map estimates).
- ``spearman``: rank correlation of uncertainty and error over the pixels (1 = same order; 0 = unrelated).
- **Sparsification curve** (Ilg et al. 2018): trust only the most confident ``1 - f`` of the pixels (drop the
  fraction ``f`` with the highest uncertainty) and take the RMS error of what is left, for f = 0, 0.05, ... 0.95,
  divided by the RMS error of all pixels (so curves of different frames average; 1 at f = 0). ``auc``: its mean
  over those fractions (lower = the dropped pixels were the bad ones). The **oracle** orders pixels by their true
  error (the best any map can do); a **uniform** map orders them at random (its expected curve is flat at 1: ties
  are broken by averaging over every order, so no random numbers are drawn). ``ause`` = auc − oracle auc (0 = as
  good as the oracle), ``aurg`` = 1 − auc (gain over random order; > 0 is better than uniform).
- Trivial maps scored the same way as baselines: ``uniform``; ``edges`` (|input − blurred input|: errors of
  a blurry model concentrate on edges); ``changed_mask`` (the binary changed-pixel mask of the input's
  neighbourhood: prediction vs input differing by more than 25/255, dilated 3 px, as metrics.changed_mask);
  ``predicted_change`` (the same difference as a magnitude, largest channel, grey-dilated by 3 px: the strongest
  cheap motion prior, what a consumer could compute from the frame alone without the samples).
- ``error_to_spread``: RMS error ÷ RMS uncertainty: the scale check. If the truth were one more draw from the
  model's distribution, the mean of K samples would err by sqrt(1 + 1/K) sigma and the K samples' population
  spread would be sqrt((K - 1)/K) sigma, so a calibrated model gives sqrt((K + 1)/(K - 1)) (1.29 for K = 4);
  larger = overconfident.

Across predictions, ``confidence_ranking``: Spearman correlation between −confidence and the frame's RMS error
(1 = the confidence orders predictions exactly by their real error), beside the same for the trivial scalar
``mean predicted change`` (how much the prediction differs from the input)."""
from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import cv2
import numpy as np

from frameplan_core import metrics
from frameplan_core.errors import InputError
from frameplan_core.uncertainty import rms_difference

FRACTIONS = np.round(np.arange(0.0, 0.951, 0.05), 2)
BASELINES = ("uniform", "edges", "changed_mask", "predicted_change")
EDGE_SIGMA = 2.0
CHANGE_DILATE = 3


def _rgb(a: np.ndarray, where: str) -> np.ndarray:
    if not isinstance(a, np.ndarray) or a.ndim != 3 or a.shape[2] != 3 or 0 in a.shape:
        raise InputError(f"{where}: expected an (H, W, 3) image, got {getattr(a, 'shape', type(a).__name__)}")
    return a


def error_map(pred: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(H, W) float32: per-pixel RMS over channels of ``pred - truth`` in grey levels."""
    pred, truth = _rgb(pred, "calibration prediction"), _rgb(truth, "calibration ground truth")
    if pred.shape != truth.shape:
        raise InputError(f"calibration: prediction {pred.shape} and ground truth {truth.shape} differ in size")
    return rms_difference(pred, truth)


def _pairs(u: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    u, e = np.asarray(u, np.float64), np.asarray(e, np.float64)
    if u.shape != e.shape:
        raise InputError(f"calibration: uncertainty {u.shape} and error {e.shape} differ in size")
    keep = np.isfinite(u) & np.isfinite(e)
    return u[keep].ravel(), e[keep].ravel()


def spearman(u: np.ndarray, e: np.ndarray) -> float:
    """Spearman rank correlation over the pixels where both are finite; nan when either is constant."""
    from scipy.stats import rankdata

    a, b = _pairs(u, e)
    if a.size < 2:
        return math.nan
    ra, rb = rankdata(a), rankdata(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else math.nan


def sparsification(u: np.ndarray, e: np.ndarray, fractions: Sequence[float] = FRACTIONS) -> np.ndarray:
    """RMS error of the pixels left after dropping the fraction f most uncertain ones, ÷ the RMS error of all
    pixels, for each f (tied uncertainties: the expectation over their orders). nan when the error is all 0."""
    a, b = _pairs(u, e)
    n = a.size
    if n == 0:
        raise InputError("sparsification: no pixel with both an uncertainty and an error")
    sq = b * b
    total = sq.sum()
    if total <= 0:
        return np.full(len(fractions), math.nan)
    order = np.argsort(-a, kind="stable")
    a_s, sq_s = a[order], sq[order]
    starts = np.flatnonzero(np.r_[True, a_s[1:] != a_s[:-1]])  # tie groups: replace by their mean
    sums = np.add.reduceat(sq_s, starts)
    sizes = np.diff(np.r_[starts, n])
    sq_s = np.repeat(sums / sizes, sizes)
    removed = np.r_[0.0, np.cumsum(sq_s)]
    out = []
    for f in fractions:
        k = min(int(round(float(f) * n)), n - 1)
        out.append(math.sqrt(max(total - removed[k], 0.0) / (n - k)) / math.sqrt(total / n))  # rounding
    return np.asarray(out)


def baseline_maps(input_image: np.ndarray, pred: np.ndarray) -> dict[str, np.ndarray]:
    """The trivial maps a model's uncertainty must beat (module docstring), at the prediction's size."""
    inp, pred = _rgb(input_image, "calibration input"), _rgb(pred, "calibration prediction")
    blur = cv2.GaussianBlur(inp, (0, 0), EDGE_SIGMA)
    edges = cv2.absdiff(inp, blur).max(axis=-1).astype(np.float32)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * CHANGE_DILATE + 1, 2 * CHANGE_DILATE + 1))
    prior = cv2.dilate(cv2.absdiff(pred, inp).max(axis=-1), k).astype(np.float32)
    mask = metrics.changed_mask(inp, pred, metrics.DEFAULT_THRESHOLD, metrics.DEFAULT_DILATE).astype(np.float32)
    return {"uniform": np.zeros(inp.shape[:2], np.float32), "edges": edges, "changed_mask": mask,
            "predicted_change": prior}


def score(u: np.ndarray, pred: np.ndarray, truth: np.ndarray, input_image: np.ndarray,
          fractions: Sequence[float] = FRACTIONS) -> dict:
    """Every per-prediction measure of the module docstring for the map ``u``, the oracle and the baselines."""
    e = error_map(pred, truth)
    if u.shape != e.shape:
        raise InputError(f"calibration: uncertainty {u.shape} and prediction {e.shape[:2]} differ in size")
    valid = np.isfinite(u)
    if not valid.any():
        raise InputError("calibration: the uncertainty map has no finite value")
    oracle = sparsification(np.where(valid, e, np.nan), e, fractions)  # over the same pixels as the map
    rmse = float(np.sqrt(np.mean(e[valid].astype(np.float64) ** 2)))
    spread = float(np.sqrt(np.mean(u[valid].astype(np.float64) ** 2)))
    maps = {"model": u, **{k: np.where(valid, m, np.nan) for k, m in baseline_maps(input_image, pred).items()}}
    out: dict = {"rmse": rmse, "rms_uncertainty": spread, "error_to_spread": rmse / spread if spread > 0 else math.nan,
                 "valid_fraction": float(valid.mean()),
                 "mean_predicted_change": float(np.abs(pred.astype(np.float32) - input_image.astype(np.float32))
                                                [valid].mean()),
                 "oracle_auc": float(np.mean(oracle)), "curves": {"oracle": oracle.tolist()}}
    for name, m in maps.items():
        curve = sparsification(m, e, fractions)
        auc = float(np.mean(curve))
        out[name] = {"spearman": spearman(m, e), "auc": auc, "ause": auc - out["oracle_auc"], "aurg": 1.0 - auc}
        out["curves"][name] = curve.tolist()
    return out


def rank_correlation(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman correlation of two sequences (nan pairs dropped; nan when fewer than 3 remain)."""
    a, b = np.asarray(x, np.float64), np.asarray(y, np.float64)
    keep = np.isfinite(a) & np.isfinite(b)
    return spearman(a[keep], b[keep]) if keep.sum() >= 3 else math.nan


def summarize(rows: Iterable[Mapping]) -> dict:
    """Means over predictions of each map's measures, the mean curves, and the across-prediction rankings
    (``rows``: ``score`` results, each with a ``confidence``)."""
    rows = list(rows)
    if not rows:
        return {"n": 0}

    def mean(vals: Iterable[float]) -> float:
        v = [x for x in vals if x is not None and math.isfinite(x)]
        return float(np.mean(v)) if v else math.nan

    out: dict = {"n": len(rows)}
    for name in ("model", *BASELINES):
        out[name] = {k: mean(r[name][k] for r in rows) for k in ("spearman", "auc", "ause", "aurg")}
    out["oracle_auc"] = mean(r["oracle_auc"] for r in rows)
    for k in ("rmse", "rms_uncertainty", "error_to_spread", "valid_fraction"):
        out[k] = mean(r[k] for r in rows)
    out["curves"] = {name: np.nanmean([r["curves"][name] for r in rows], axis=0).tolist()
                     for name in ("model", "oracle", *BASELINES)}
    rmse = [r["rmse"] for r in rows]
    out["confidence_ranking"] = rank_correlation([-(r.get("confidence") or math.nan) for r in rows], rmse)
    out["predicted_change_ranking"] = rank_correlation([r["mean_predicted_change"] for r in rows], rmse)
    return out


__all__ = ["BASELINES", "FRACTIONS", "baseline_maps", "error_map", "rank_correlation", "score", "sparsification",
           "spearman", "summarize"]
