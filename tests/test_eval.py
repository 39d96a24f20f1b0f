"""`frameplan eval` on tiny generated data: held-out split only, model and copy-the-input baseline side by side,
changed-region columns, seen/unseen instructions, per-frame planner metrics, figure."""
import json
import math
import warnings

import numpy as np
import pytest
from frameplan_training.synthetic import write_grid, write_ip2p

from frameplan_core.errors import DataError

warnings.filterwarnings("ignore", module="lightning")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("evaldata")
    return write_ip2p(root / "ip2p"), write_grid(root / "grid")


@pytest.fixture(scope="module")
def tiny_predictor(tmp_path_factory):
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    cfg = PredictorConfig.preset("tiny")
    cfg.resolution = 32
    folder = tmp_path_factory.mktemp("models") / "predictor"
    FramePredictor.from_config(cfg.validate(), seed=0, device="cpu").save_pretrained(folder)
    return folder


def test_eval_predictor_report_has_baseline_and_changed_region(data, tiny_predictor, tmp_path, capsys):
    from frameplan_core.cli import main
    from frameplan_core.image import read_image

    ip2p, _ = data
    out = tmp_path / "eval"
    rc = main(["eval", "predictor", "--model", str(tiny_predictor), "--data", str(ip2p), "--out", str(out),
               "--steps", "1", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert "copy-input" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    for needle in ("PSNR copy", "SSIM copy", "PSNR chg ↑", "PSNR chg copy", "Δ PSNR chg", "held-out split **val**",
                   "block_hammer_beat", "block_handover", "blocks_stack_easy", "all tasks", "unseen"):
        assert needle in report, needle
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "val" and m["num_samples"] == 6  # the val episodes only (2 pairs x 3 tasks)
    held_out = json.loads((ip2p / "splits.json").read_text())["samples"]["val"]
    assert sorted(r["id"] for r in m["samples"]) == sorted(held_out)
    allt = m["per_task"]["all tasks"]
    for series in ("model", "baseline", "unseen"):
        for k in ("ssim", "psnr", "ssim_changed", "psnr_changed"):
            assert allt[series][k] is not None and math.isfinite(allt[series][k]), (series, k)
    # the baseline row is really the copy of the input: perfect outside the changed region
    assert allt["baseline"]["psnr"] > allt["baseline"]["psnr_changed"]
    row = m["samples"][0]
    assert row["unseen_instruction"] != row["instruction"]
    fig = read_image(out / "comparison.png")
    assert fig.shape[0] > 3 * 128 and fig.shape[1] > 3 * 128  # 3 task rows x (input, generated, ground truth)


def test_eval_predictor_mean_of_samples(data, tiny_predictor, tmp_path):
    from frameplan_training.evaluation import evaluate_predictor

    from frameplan_core.predictor import FramePredictor

    ip2p, _ = data
    p = FramePredictor.from_pretrained(tiny_predictor, device="cpu")
    one = evaluate_predictor(tiny_predictor, ip2p, tmp_path / "one", steps=1, predictor=p, max_samples=3)
    two = evaluate_predictor(tiny_predictor, ip2p, tmp_path / "two", steps=1, samples=2, predictor=p, max_samples=3)
    assert one["settings"]["samples"] == 1 and two["settings"]["samples"] == 2
    assert "per-pixel mean of 2 samples" in (tmp_path / "two" / "report.md").read_text()
    assert "one sample" in (tmp_path / "one" / "report.md").read_text()
    # the same baseline, another prediction
    a, b = one["per_task"]["all tasks"], two["per_task"]["all tasks"]
    assert a["baseline"] == b["baseline"] and a["model"]["psnr"] != b["model"]["psnr"]


def test_eval_planner_per_frame_and_trajectory(data, tmp_path):
    from frameplan_training.evaluation import evaluate_planner

    from frameplan_core.planner import GridPlanner, PlannerConfig

    _, grid = data
    g = GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32), seed=0, device="cpu")
    r = evaluate_planner("tiny-random", grid, tmp_path / "eval", steps=1, planner=g)
    assert r["modes"] == ["text", "trajectory", "both", "unseen"]
    assert set(r["per_frame"]) == {"copy", "text", "trajectory", "both", "unseen"}
    assert all(len(v) == 9 for v in r["per_frame"].values())
    # frame 1 is the observed input in both the plan and the copy baseline
    assert r["per_frame"]["copy"][0]["psnr"] == 100.0 and r["per_frame"]["text"][0]["ssim"] == pytest.approx(1.0)
    allt = r["per_task"]["all tasks"]
    assert "both_centroid_error_px" in allt and allt["both_centroid_error_px"] >= 0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "PSNR copy" in report and "Per frame index" in report and "Motion-centroid error" in report
    assert (tmp_path / "eval" / "comparison.png").is_file()
    r2 = evaluate_planner("tiny-random", grid, tmp_path / "eval2", steps=1, planner=g, samples=2, max_samples=1)
    assert r2["settings"]["samples"] == 2 and "mean of 2 samples" in (tmp_path / "eval2" / "report.md").read_text()


def test_eval_only_on_held_out_episodes(data, tmp_path):
    from frameplan_training.evaluation import held_out_split
    from frameplan_training.synthetic import write_ip2p as w

    ip2p, _ = data
    assert held_out_split(ip2p) == "val"
    with pytest.raises(DataError, match="held-out"):
        held_out_split(ip2p, "train")
    no_val = w(tmp_path / "noval", episodes_per_task=2, held_out=0)
    with pytest.raises(DataError, match="no held-out episodes"):
        held_out_split(no_val)


def test_motion_centroid():
    from frameplan_training.evaluation import motion_centroid

    a = np.zeros((20, 30, 3), np.uint8)
    b = a.copy()
    b[4:8, 10:20] = 200
    assert motion_centroid(b, a, 25).tolist() == [14.5, 5.5]
    assert motion_centroid(a, a, 25) is None
