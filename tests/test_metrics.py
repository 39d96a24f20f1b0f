"""SSIM/PSNR and the changed-region metrics on synthetic images with a known changed box."""
import math

import numpy as np
import pytest

from frameplan_core import metrics
from frameplan_core.errors import InputError


def _scene(seed=0, size=64):
    rng = np.random.default_rng(seed)
    # smooth textured background so SSIM is meaningful
    y, x = np.mgrid[0:size, 0:size]
    base = (80 + 40 * np.sin(x / 5.0) + 30 * np.cos(y / 7.0))[..., None] + rng.integers(-5, 6, (size, size, 3))
    return np.clip(base, 0, 255).astype(np.uint8)


def test_ssim_psnr_wang_settings_and_identity():
    from skimage.metrics import structural_similarity

    a = _scene(0)
    b = np.clip(a.astype(int) + np.random.default_rng(1).integers(-20, 21, a.shape), 0, 255).astype(np.uint8)
    ref = structural_similarity(a, b, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                data_range=255, channel_axis=-1)
    assert metrics.ssim(a, b) == pytest.approx(ref, abs=1e-12)
    assert metrics.ssim(a, a) == pytest.approx(1.0)
    mse = np.mean((a.astype(float) - b.astype(float)) ** 2)
    assert metrics.psnr(a, b) == pytest.approx(10 * math.log10(255**2 / mse))
    assert metrics.psnr(a, a) == math.inf
    # the masked SSIM over the whole frame is the whole-frame SSIM (same interior, same map)
    full = np.ones(a.shape[:2], bool)
    assert metrics.masked_ssim(a, b, full) == pytest.approx(ref, abs=1e-9)
    assert metrics.masked_psnr(a, b, full) == pytest.approx(metrics.psnr(a, b))


def test_changed_region_known_box():
    inp = _scene(0)
    tgt = inp.copy()
    tgt[20:30, 30:44] = [250, 10, 10]  # the object moved here
    mask = metrics.changed_mask(inp, tgt, threshold=25, dilate=0)
    expected = np.zeros(inp.shape[:2], bool)
    expected[20:30, 30:44] = True
    assert np.array_equal(mask, expected)
    dil = metrics.changed_mask(inp, tgt, threshold=25, dilate=2)
    expected_dil = np.zeros_like(expected)
    expected_dil[18:32, 28:46] = True
    assert np.array_equal(dil, expected_dil)

    # copy-the-input baseline: perfect outside the box, so whole-frame scores look good but the box is bad
    base = metrics.frame_metrics(inp, tgt, inp, threshold=25, dilate=2)
    assert base["changed_fraction"] == pytest.approx(expected_dil.mean())
    assert base["psnr"] > base["psnr_changed"] + 10
    assert base["ssim"] > base["ssim_changed"]
    # the changed-region PSNR is the PSNR of the masked pixels only
    d = inp[dil].astype(float) - tgt[dil].astype(float)
    assert base["psnr_changed"] == pytest.approx(10 * math.log10(255**2 / np.mean(d**2)))
    # a perfect prediction is perfect everywhere
    perfect = metrics.frame_metrics(tgt, tgt, inp, threshold=25, dilate=2)
    assert perfect["psnr_changed"] == math.inf and perfect["ssim_changed"] == pytest.approx(1.0)
    # a prediction that gets only the box right scores high in the box even if the background is noisy
    noisy = np.clip(tgt.astype(int) + np.random.default_rng(2).integers(-30, 31, tgt.shape), 0, 255).astype(np.uint8)
    noisy[dil] = tgt[dil]
    m = metrics.frame_metrics(noisy, tgt, inp, threshold=25, dilate=2)
    assert m["psnr_changed"] == math.inf
    assert m["psnr"] < 30 and m["ssim"] < 0.9  # the background noise still counts in the whole frame


def test_small_differences_below_threshold_and_empty_mask():
    inp = _scene(3)
    tgt = np.clip(inp.astype(int) + 10, 0, 255).astype(np.uint8)  # global shift below threshold
    assert not metrics.changed_mask(inp, tgt).any()
    m = metrics.frame_metrics(inp, tgt, inp)
    assert math.isnan(m["psnr_changed"]) and math.isnan(m["ssim_changed"])
    s = metrics.summarize([m, {"psnr": math.inf, "ssim": 1.0, "psnr_changed": 30.0, "ssim_changed": 0.5}])
    assert s["psnr_changed"] == 30.0 and s["psnr_changed_n"] == 1
    assert s["psnr"] == pytest.approx((m["psnr"] + metrics.PSNR_CAP) / 2) and s["psnr_capped"] == 1


def test_bad_inputs():
    a = _scene(0)
    with pytest.raises(InputError, match="sizes differ"):
        metrics.psnr(a, a[:32])
    with pytest.raises(InputError, match="uint8"):
        metrics.ssim(a.astype(np.float32), a)
    with pytest.raises(InputError, match="mask shape"):
        metrics.masked_psnr(a, a, np.ones((3, 3), bool))


def _gray(values: np.ndarray) -> np.ndarray:
    """RGB image whose grayscale is exactly ``values`` (R = G = B)."""
    return np.repeat(values.astype(np.uint8)[..., None], 3, axis=2)


def test_sharpness_known_answers():
    import cv2

    # a vertical step edge 0 -> 100 between columns 15 and 16: Sobel gx is 4 * 100 = 400 on both columns, gy 0
    step = np.zeros((32, 32), np.uint8)
    step[:, 16:] = 100
    edge = np.zeros((32, 32), bool)
    edge[:, 15:17] = True
    assert metrics.sharpness(_gray(step), edge) == pytest.approx(400.0)
    flat = np.zeros_like(edge)
    flat[:, 2:6] = True
    assert metrics.sharpness(_gray(step), flat) == 0.0
    # half the contrast: half the gradient, exactly
    assert metrics.sharpness_ratio(_gray(step // 2), _gray(step), edge) == pytest.approx(0.5)
    # identical = 1; a blurred copy is softer (< 1); empty region and a region without gradient in the truth: nan
    img = _scene(4)
    mask = metrics.changed_mask(img, np.zeros_like(img), threshold=25, dilate=0)
    assert metrics.sharpness_ratio(img, img, mask) == pytest.approx(1.0)
    assert metrics.sharpness_ratio(cv2.GaussianBlur(img, (0, 0), 2.0), img, mask) < 0.95
    assert metrics.sharpness_ratio(_gray(cv2.GaussianBlur(step, (0, 0), 2.0)), _gray(step), edge) < 0.6
    assert math.isnan(metrics.sharpness_ratio(img, img, np.zeros_like(mask)))
    assert math.isnan(metrics.sharpness_ratio(_gray(step), _gray(step), flat))
    # the magnitude is sqrt(gx^2 + gy^2) of the grayscale image
    gray = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)
    gx, gy = cv2.Sobel(gray, cv2.CV_64F, 1, 0, ksize=3), cv2.Sobel(gray, cv2.CV_64F, 0, 1, ksize=3)
    assert metrics.sharpness(img, mask) == pytest.approx(np.hypot(gx, gy)[mask].mean())


def test_frame_metrics_sharpness_changed_and_mean_of_ratios():
    import cv2

    inp = _scene(0)
    tgt = inp.copy()
    tgt[20:30, 30:44] = [250, 10, 10]
    m = metrics.frame_metrics(tgt, tgt, inp, threshold=25, dilate=2)
    assert m["sharpness_changed"] == pytest.approx(1.0)
    blurred = cv2.GaussianBlur(tgt, (0, 0), 1.5)
    mb = metrics.frame_metrics(blurred, tgt, inp, threshold=25, dilate=2)
    mask = metrics.changed_mask(inp, tgt, threshold=25, dilate=2)
    assert mb["sharpness_changed"] == pytest.approx(metrics.sharpness_ratio(blurred, tgt, mask))
    assert mb["sharpness_changed"] < 0.9
    # nothing changed: nan, skipped by summarize; the summary is the mean of per-sample ratios
    still = metrics.frame_metrics(inp, inp, inp)
    assert math.isnan(still["sharpness_changed"])
    s = metrics.summarize([m, mb, still])
    assert s["sharpness_changed_n"] == 2
    assert s["sharpness_changed"] == pytest.approx((1.0 + mb["sharpness_changed"]) / 2)
    with pytest.raises(InputError, match="mask shape"):
        metrics.sharpness(inp, np.ones((3, 3), bool))
    with pytest.raises(InputError, match="sizes differ"):
        metrics.sharpness_ratio(inp, inp[:32], mask)
