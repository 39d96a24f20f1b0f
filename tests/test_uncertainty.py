"""Uncertainty maps and confidences (frameplan_core/uncertainty.py), their calibration measures
(frameplan_core/calibration.py), and the predictor, planner, CLI and eval paths that return or write them."""
import json
import math

import numpy as np
import pytest
import torch

from frameplan_core import calibration, uncertainty
from frameplan_cli.main import main
from frameplan_core.errors import InputError
from frameplan_core.image import fit, read_image, unfit, unfit_map, write_image
from frameplan_core.planner import GridPlanner, PlannerConfig
from frameplan_core.predictor import FramePredictor, PredictorConfig
from frameplan_core.types import Plan, Prediction

RNG = np.random.default_rng(0)
FRAME = RNG.integers(0, 256, (240, 320, 3), dtype=np.uint8)
TEXT = "strike the block with the hammer"
KW = {"steps": 2, "seed": 3, "sampler": "euler_a"}


@pytest.fixture(scope="module")
def pred():
    cfg = PredictorConfig.preset("tiny-clip")
    cfg.resolution = 64
    return FramePredictor.from_config(cfg.validate(), seed=0, device="cpu")


@pytest.fixture(scope="module")
def planner():
    return GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32, steps=2), seed=0)


# ---------------------------------------------------------------- uncertainty.py
def test_sample_spread_is_the_population_std_and_the_rms_distance_from_a_published_value():
    s = RNG.random((4, 2, 3, 5, 6)).astype(np.float32) * 255
    u = uncertainty.sample_spread(s)
    assert u.shape == (2, 5, 6) and u.dtype == np.float32
    np.testing.assert_allclose(u, np.sqrt(s.var(axis=0).mean(axis=1)), rtol=1e-5)
    p = np.zeros((2, 3, 5, 6), np.float32)
    np.testing.assert_allclose(uncertainty.sample_spread(s, p), np.sqrt((s ** 2).mean(axis=(0, 2))), rtol=1e-5)
    with pytest.raises(InputError, match="S >= 2"):
        uncertainty.sample_spread(s[:1])


def test_confidence_formula_and_bounds():
    assert uncertainty.confidence(np.zeros((4, 4), np.float32)) == 1.0
    u = np.full((4, 4), 16.0, np.float32)
    assert uncertainty.confidence(u) == pytest.approx(math.exp(-1))
    u[0, 0] = np.nan  # no estimate: left out, not counted as certain
    assert uncertainty.confidence(u) == pytest.approx(math.exp(-1))
    assert uncertainty.confidence(np.full((2, 2), np.nan, np.float32)) is None and uncertainty.confidence(None) is None
    assert 0 < uncertainty.confidence(np.full((2, 2), 255.0, np.float32)) < uncertainty.confidence(u) < 1
    with pytest.raises(InputError, match=">= 0"):
        uncertainty.confidence(np.full((2, 2), -1.0, np.float32))


def test_heatmap_legend_and_overlay():
    u = np.array([[0.0, 16.0], [64.0, np.nan]], np.float32)
    h = uncertainty.heatmap(u)
    assert h.shape == (2, 2, 3) and h.dtype == np.uint8
    assert h[0, 0].sum() < h[0, 1].sum() < h[1, 0].sum() and tuple(h[1, 1]) == uncertainty.NAN_COLOUR
    leg = uncertainty.with_legend(uncertainty.heatmap(np.zeros((120, 160), np.float32)), confidence_value=0.5)
    assert leg.shape[0] == 120 and leg.shape[1] > 160
    img = np.full((2, 2, 3), 200, np.uint8)
    o = uncertainty.overlay(img, u)
    assert np.array_equal(o[0, 0], img[0, 0]) and not np.array_equal(o[1, 0], img[1, 0])
    stack = np.load(__import__("io").BytesIO(uncertainty.npy_bytes(np.stack([u, u]))))
    assert stack.shape == (2, 2, 2) and np.isnan(stack[0, 1, 1]) and stack[1, 1, 0] == 64.0


@pytest.mark.parametrize("policy", ["center", "resize", "pad"])
def test_unfit_map_has_the_frames_geometry(policy):
    """A map goes where unfit puts the frame; with the centre crop the cut-away borders have no estimate."""
    small = np.full((64, 64), 7.0, np.float32)
    m = unfit_map(small, (240, 320), policy)
    frame = unfit(np.full((64, 64, 3), 255, np.uint8), (240, 320), policy)
    assert m.shape == (240, 320)
    assert np.array_equal(np.isfinite(m), frame[..., 0] > 0)
    np.testing.assert_allclose(m[np.isfinite(m)], 7.0, rtol=1e-6)


# ---------------------------------------------------------------- predictor
def test_predict_full_returns_the_frame_with_map_and_confidence(pred):
    for size in ("model", "input"):
        frame = pred.predict(FRAME, TEXT, samples=3, output_size=size, **KW)
        full = pred.predict_full(FRAME, TEXT, samples=3, output_size=size, **KW)
        assert isinstance(full, Prediction) and np.array_equal(full.image, frame)  # same samples, same frame
        u = full.uncertainty
        assert u.shape == frame.shape[:2] and u.dtype == np.float32 and (u[np.isfinite(u)] >= 0).all()
        assert u[np.isfinite(u)].max() > 0 and full.uncertainty_note is None
        assert full.confidence == pytest.approx(math.exp(-uncertainty.rms(u) / uncertainty.CONFIDENCE_SCALE))
        assert full.inputs["samples"] == 3 and full.inputs["output_size"] == size and full.instruction == TEXT
    # the camera's geometry, centre crop: no estimate outside the 240x240 window the model saw
    assert np.isnan(u[:, :40]).all() and np.isnan(u[:, 280:]).all() and np.isfinite(u[:, 40:280]).all()
    # the plain API is unchanged
    plain = pred.predict_batch([FRAME, FRAME[::-1]], [TEXT, TEXT], samples=2, **KW)
    assert all(isinstance(p, np.ndarray) for p in plain)
    both = pred.predict_batch([FRAME, FRAME[::-1]], [TEXT, TEXT], samples=2, return_uncertainty=True, **KW)
    assert [b.image.tobytes() for b in both] == [p.tobytes() for p in plain]
    assert not np.array_equal(both[0].uncertainty, both[1].uncertainty)  # each image its own map


def _recon(pred) -> np.ndarray:
    """The input's VAE reconstruction at model resolution, computed here independently of the predictor."""
    x = torch.from_numpy(fit(FRAME, 64, "center")).permute(2, 0, 1)[None].float() / 127.5 - 1
    r = pred.decode_latents(pred.encode_image_latents(x) * pred.vae.config.scaling_factor)[0]
    return ((r.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.uint8)


def test_spread_part_is_the_std_of_the_samples_drawn_one_by_one(pred):
    """The map's spread is the standard deviation of the very samples averaged into the frame: the same draws
    come from a batch of copies with samples=1 (see test_predictor); with the reconstruction floor added."""
    singles = np.stack(pred.predict_batch([FRAME] * 3, [TEXT] * 3, samples=1, **KW)).astype(np.float64)
    full = pred.predict_full(FRAME, TEXT, samples=3, **KW)
    std = np.sqrt(np.var(singles, axis=0).mean(axis=-1))
    floor = uncertainty.rms_difference(_recon(pred), fit(FRAME, 64, "center")).astype(np.float64)
    assert np.abs(full.uncertainty - np.sqrt(std ** 2 + floor ** 2)).mean() < 0.5  # the singles are rounded
    assert np.abs(full.uncertainty - std).mean() > 1.0  # the floor is there


def test_one_sample_gives_no_map_and_says_why(pred):
    full = pred.predict_full(FRAME, TEXT, samples=1, **KW)
    assert full.uncertainty is None and full.confidence is None and "one sample" in full.uncertainty_note
    assert np.array_equal(full.image, pred.predict(FRAME, TEXT, samples=1, **KW))


def test_composition_kept_pixels_count_only_the_samples_disagreement(pred):
    """compose=254 keeps every camera pixel: no reconstruction floor there, only the samples' RMS distance from
    'nothing changes' (the input's VAE reconstruction, the camera pixel in the model's terms)."""
    kept = pred.predict_full(FRAME, TEXT, samples=3, compose=254, **KW)
    assert np.array_equal(kept.image, fit(FRAME, 64, "center"))
    singles = np.stack(pred.predict_batch([FRAME] * 3, [TEXT] * 3, samples=1, **KW)).astype(np.float64)
    expect = np.sqrt(((singles - _recon(pred)) ** 2).mean(axis=(0, 3)))
    assert np.abs(kept.uncertainty - expect).mean() < 0.5
    published = pred.predict_full(FRAME, TEXT, samples=3, compose=254, output_size="input", **KW)
    assert np.array_equal(published.image, FRAME) and np.isnan(published.uncertainty[:, :40]).all()


# ---------------------------------------------------------------- planner
def test_plan_carries_per_frame_maps_and_confidences(planner):
    image = FRAME[:100, :150]
    one = planner.plan(image, "stack the blocks", seed=1)
    assert one.uncertainty is None and one.confidence is None and one.frame_confidence is None
    assert "one sample" in one.uncertainty_note and one.grid_uncertainty is None
    p = planner.plan(image, "stack the blocks", seed=1, samples=3)
    assert isinstance(p, Plan) and len(p.uncertainty) == 9 and len(p.frame_confidence) == 9
    assert all(m.shape == (32, 32) and m.dtype == np.float32 for m in p.uncertainty)
    assert p.grid_uncertainty.shape == p.grid.shape[:2]
    assert not p.uncertainty[0].any() and p.frame_confidence[0] == 1.0  # frame 1 is the observed input
    assert all(m.max() > 0 for m in p.uncertainty[1:]) and all(0 < c < 1 for c in p.frame_confidence[1:])
    assert p.confidence == pytest.approx(uncertainty.confidence_of(p.uncertainty[1:]))
    from frameplan_core.grid import split

    assert all(np.array_equal(a, b) for a, b in zip(split(p.grid_uncertainty), p.uncertainty))
    # the frames are those of a plain call with the same seed
    assert all(np.array_equal(a, b) for a, b in zip(p.frames, planner.plan(image, "stack the blocks", seed=1,
                                                                           samples=3).frames))
    chained = planner.plan(image, "stack the blocks", seed=1, samples=2, chain=2)
    assert len(chained.uncertainty) == len(chained.frames) == 17 and not chained.uncertainty[0].any()


def test_plan_spread_is_the_std_of_the_plans_drawn_one_by_one(planner):
    from frameplan_core.grid import source_grid

    _, drawn, _ = planner.prepare_frame(FRAME)
    cond = source_grid(drawn, planner.config.layout)
    gen = torch.Generator().manual_seed(7)
    singles = [planner._generate(cond, "stack the blocks", 2, 3.5, gen).astype(np.float64) for _ in range(3)]
    grid, u = planner._generate_full(cond, "stack the blocks", 2, 3.5, torch.Generator().manual_seed(7), samples=3)
    expect = np.sqrt(np.var(np.stack(singles), axis=0).mean(axis=-1))
    assert u.shape == grid.shape[:2] and np.abs(u - expect).mean() < 0.5


# ---------------------------------------------------------------- calibration.py
def test_calibration_known_answers():
    e = RNG.random((40, 50)).astype(np.float32) * 40
    truth = np.zeros((40, 50, 3), np.uint8)
    pred = np.repeat(np.rint(e)[..., None], 3, axis=2).astype(np.uint8)  # per-pixel error = rint(e)
    err = calibration.error_map(pred, truth)
    np.testing.assert_allclose(err, np.rint(e))
    # uncertainty = error: Spearman 1, the oracle's curve, AUSE 0
    r = calibration.score(err, pred, truth, truth)
    assert r["model"]["spearman"] == pytest.approx(1.0) and r["model"]["ause"] == pytest.approx(0.0, abs=1e-12)
    assert r["curves"]["model"] == pytest.approx(r["curves"]["oracle"])
    # reversed order: Spearman -1, worse than random
    rev = calibration.score(err.max() - err, pred, truth, truth)["model"]
    assert rev["spearman"] == pytest.approx(-1.0) and rev["auc"] > 1.0 and rev["aurg"] < 0
    # uniform map = random order: the flat curve at 1, exactly (ties averaged, no random draw)
    uni = calibration.score(np.full_like(err, 3.0), pred, truth, truth)
    assert uni["curves"]["model"] == pytest.approx([1.0] * len(calibration.FRACTIONS))
    assert uni["model"]["auc"] == pytest.approx(1.0) and uni["uniform"]["auc"] == pytest.approx(1.0)
    assert math.isnan(uni["model"]["spearman"])
    # NaN pixels (no estimate) are left out; the error/spread scale check
    half = err.copy()
    half[:, :25] = np.nan
    h = calibration.score(half, pred, truth, truth)
    assert h["valid_fraction"] == 0.5 and h["model"]["ause"] == pytest.approx(0.0, abs=1e-12)
    assert calibration.score(err * 2, pred, truth, truth)["error_to_spread"] == pytest.approx(0.5)


def test_sparsification_by_hand():
    u = np.array([4.0, 3.0, 2.0, 1.0])
    e = np.array([4.0, 0.0, 0.0, 0.0])
    curve = calibration.sparsification(u, e, [0.0, 0.25, 0.5])
    assert curve[0] == 1.0 and curve[1] == 0.0 and curve[2] == 0.0
    # a tie between the bad pixel and a good one: dropping one of the two removes half the bad one on average
    tie = calibration.sparsification(np.array([1.0, 1.0, 0.0, 0.0]), e, [0.25])
    assert tie[0] == pytest.approx(math.sqrt((16 - 8) / 3) / math.sqrt(16 / 4))
    with pytest.raises(InputError, match="differ in size"):
        calibration.sparsification(u, e[:3])


def test_summary_ranks_predictions_by_confidence():
    rows = []
    for k in range(5):  # prediction k errs by k+1 grey levels everywhere; its confidence falls with it
        err = np.full((16, 16), float(k + 1), np.float32)
        pred = np.full((16, 16, 3), k + 1, np.uint8)
        r = calibration.score(err + RNG.random((16, 16)).astype(np.float32), pred, np.zeros_like(pred),
                              np.zeros_like(pred))
        r["confidence"] = uncertainty.confidence(err)
        r["task"] = "t"
        rows.append(r)
    s = calibration.summarize(rows)
    assert s["n"] == 5 and s["confidence_ranking"] == pytest.approx(1.0)
    rows[0]["confidence"], rows[4]["confidence"] = rows[4]["confidence"], rows[0]["confidence"]
    assert calibration.summarize(rows)["confidence_ranking"] < 1.0
    assert set(calibration.BASELINES) <= set(s) and len(s["curves"]["model"]) == len(calibration.FRACTIONS)


# ---------------------------------------------------------------- CLI and eval
@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    root = tmp_path_factory.mktemp("unc")
    cfg = PredictorConfig.preset("tiny-clip")
    cfg.resolution = 64
    cfg.sampling.samples = 2
    FramePredictor.from_config(cfg.validate(), seed=0).save_pretrained(root / "pred")
    GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32, steps=2, samples=2),
                            seed=0).save_pretrained(root / "plan")
    write_image(root / "in.png", FRAME)
    return root


def test_predict_cli_writes_the_heat_map_and_raw_map(ckpts, tmp_path, capsys):
    out = tmp_path / "o.png"
    assert main(["predict", "--image", str(ckpts / "in.png"), "--instruction", TEXT, "--out", str(out),
                 "--model", str(ckpts / "pred"), "--steps", "1", "--output-size", "input"]) == 0
    assert "confidence" in capsys.readouterr().out
    heat, raw = read_image(tmp_path / "o_uncertainty.png"), np.load(tmp_path / "o_uncertainty.npy")
    assert raw.shape == (240, 320) and raw.dtype == np.float32 and np.isnan(raw[:, :40]).all()
    assert heat.shape[0] == 240 and heat.shape[1] > 320  # the map plus its colour bar
    assert main(["predict", "--image", str(ckpts / "in.png"), "--instruction", TEXT, "--out", str(tmp_path / "s.png"),
                 "--model", str(ckpts / "pred"), "--steps", "1", "--samples", "1"]) == 0
    assert "no uncertainty map: one sample" in capsys.readouterr().out
    assert not (tmp_path / "s_uncertainty.png").exists()
    assert main(["predict", "--image", str(ckpts / "in.png"), "--instruction", TEXT, "--out", str(tmp_path / "n.png"),
                 "--model", str(ckpts / "pred"), "--steps", "1", "--no-uncertainty"]) == 0
    assert (tmp_path / "n.png").exists() and not (tmp_path / "n_uncertainty.npy").exists()


def test_plan_cli_writes_the_heat_map_and_confidences(ckpts, tmp_path):
    out = tmp_path / "plan"
    assert main(["plan", "--image", str(ckpts / "in.png"), "--instruction", "stack the blocks", "--out", str(out),
                 "--checkpoint", str(ckpts / "plan")]) == 0
    meta = json.loads((out / "plan.json").read_text())
    raw = np.load(out / "uncertainty.npy")
    assert raw.shape == (9, 32, 32) and not raw[0].any() and len(meta["frame_confidence"]) == 9
    assert 0 < meta["confidence"] < 1 and read_image(out / "uncertainty.png").shape[1] > 96
    assert main(["plan", "--image", str(ckpts / "in.png"), "--instruction", "x", "--out", str(tmp_path / "p1"),
                 "--checkpoint", str(ckpts / "plan"), "--samples", "1"]) == 0
    meta = json.loads((tmp_path / "p1" / "plan.json").read_text())
    assert meta["confidence"] is None and "one sample" in meta["uncertainty"]
    assert not (tmp_path / "p1" / "uncertainty.png").exists()


@pytest.fixture(scope="module")
def eval_data(tmp_path_factory):
    from frameplan_training.synthetic import write_grid, write_ip2p

    root = tmp_path_factory.mktemp("uncdata")
    return write_ip2p(root / "ip2p"), write_grid(root / "grid")


def test_eval_uncertainty_reports_model_oracle_and_trivial_maps(ckpts, eval_data, tmp_path, capsys):
    ip2p, grids = eval_data
    out = tmp_path / "pred"
    assert main(["eval", "predictor", "--uncertainty", "--model", str(ckpts / "pred"), "--data", str(ip2p),
                 "--out", str(out), "--steps", "1", "--max-samples", "4", "--device", "cpu"]) == 0
    assert "sparsification AUC" in capsys.readouterr().out
    m = json.loads((out / "uncertainty.json").read_text())
    allt = m["per_task"]["all tasks"]
    assert m["num_samples"] == 4 and m["settings"]["samples"] == 2 and allt["n"] == 4
    for name in ("model", *calibration.BASELINES):
        assert 0 < allt[name]["auc"] < 2 and allt[name]["ause"] >= -1e-9, name
    assert allt["uniform"]["auc"] == pytest.approx(1.0) and allt["oracle_auc"] < allt["model"]["auc"]
    report = (out / "uncertainty.md").read_text()
    for needle in ("ρ model", "AUC oracle", "AUC uniform", "confidence ranking", "Sparsification curve", "all tasks"):
        assert needle in report, needle
    assert read_image(out / "uncertainty.png").shape[1] > 5 * 128
    assert main(["eval", "planner", "--uncertainty", "--model", str(ckpts / "plan"), "--data", str(grids),
                 "--out", str(tmp_path / "plan"), "--max-samples", "1", "--device", "cpu"]) == 0
    m = json.loads((tmp_path / "plan" / "uncertainty.json").read_text())
    assert m["per_task"]["all tasks"]["n"] == 8 and {r["frame"] for r in m["samples"]} == set(range(2, 10))
    # one sample has no spread to score: a one-line error, not a traceback
    assert main(["eval", "predictor", "--uncertainty", "--model", str(ckpts / "pred"), "--data", str(ip2p),
                 "--out", str(tmp_path / "x"), "--samples", "1", "--device", "cpu"]) == 1
    assert "needs --samples >= 2" in capsys.readouterr().err
