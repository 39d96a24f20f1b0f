"""`frameplan eval` on tiny generated data: held-out split only, model and copy-the-input baseline side by side,
changed-region columns and sharpness, published geometry (the stored camera frame) and model resolution,
interval/segment pairs, seen/unseen instructions, per-frame planner metrics, figure."""
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
    from frameplan_cli.main import main
    from frameplan_core.image import read_image

    ip2p, _ = data
    out = tmp_path / "eval"
    rc = main(["eval", "predictor", "--model", str(tiny_predictor), "--data", str(ip2p), "--out", str(out),
               "--steps", "1", "--device", "cpu"])
    assert rc == 0, capsys.readouterr().err
    assert "copy-input" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    for needle in ("PSNR copy", "SSIM copy", "PSNR chg ↑", "PSNR chg copy", "Δ PSNR chg", "held-out split **val**",
                   "block_hammer_beat", "block_handover", "blocks_stack_easy", "all tasks", "unseen", "sharpness copy"):
        assert needle in report, needle
    m = json.loads((out / "metrics.json").read_text())
    assert m["split"] == "val" and m["num_samples"] == 6  # the val episodes only (2 pairs x 3 tasks)
    held_out = json.loads((ip2p / "splits.json").read_text())["samples"]["val"]
    assert sorted(r["id"] for r in m["samples"]) == sorted(held_out)
    for geometry in ("published", "model_res"):
        allt = m["per_task"][geometry]["all tasks"]
        for series in ("model", "baseline", "unseen"):
            for k in ("ssim", "psnr", "ssim_changed", "psnr_changed", "sharpness_changed"):
                assert allt[series][k] is not None and math.isfinite(allt[series][k]), (geometry, series, k)
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
    for g in ("published", "model_res"):
        a, b = one["per_task"][g]["all tasks"], two["per_task"][g]["all tasks"]
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
    # sharpness of the plan frames (cells: the planner's published geometry) beside the copy's
    assert allt["both"]["sharpness_changed"] > 0 and allt["baseline"]["sharpness_changed"] > 0
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "PSNR copy" in report and "Per frame index" in report and "Motion-centroid error" in report
    assert "sharpness copy" in report and "32 px cells, so its published geometry and its model resolution" in report
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


@pytest.fixture(scope="module")
def camera_data(tmp_path_factory):
    """Pairs stored at the D435's full 320x240 frame (as `frameplan convert` without --size keeps them)."""
    return write_ip2p(tmp_path_factory.mktemp("camera") / "ip2p", episodes_per_task=2, pairs_per_episode=1,
                      hw=(240, 320))


def _close(a: dict, b: dict) -> None:
    assert set(a) == set(b)
    for k in a:
        assert (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-12), k


def test_eval_predictor_scores_the_published_geometry(camera_data, tiny_predictor, tmp_path):
    """Published scores are those of predict(output_size="input") on the stored 320x240 frames; model-resolution
    scores those of the 32x32 prediction against the fitted frames; the copy baseline beside both."""
    from frameplan_training.evaluation import evaluate_predictor

    from frameplan_core import metrics
    from frameplan_core.data.ip2p import IP2PDataset
    from frameplan_core.image import fit, read_image
    from frameplan_core.predictor import FramePredictor

    p = FramePredictor.from_pretrained(tiny_predictor, device="cpu")
    r = evaluate_predictor(tiny_predictor, camera_data, tmp_path / "eval", steps=1, samples=1, predictor=p,
                           batch_size=1)
    assert r["num_samples"] == 3 and r["geometry"]["published"]["sizes"] == {"320x240": 3}
    assert r["geometry"]["model_res"]["sizes"] == ["32x32"]
    assert "checked identical" in r["geometry"]["published"]["from"]  # later batches derived from one sampling
    by_id = {s.id: s for s in IP2PDataset(camera_data, split="val")}
    for row in r["samples"]:
        s = by_id[row["id"]]
        assert s.input.shape == (240, 320, 3) and row["published_hw"] == [240, 320] and row["model_hw"] == [32, 32]
        published = p.predict(s.input, s.edit, steps=1, samples=1, seed=0, output_size="input")
        at_model = p.predict(s.input, s.edit, steps=1, samples=1, seed=0)
        mi, mt = fit(s.input, 32, "center"), fit(s.output, 32, "center")
        _close(row["published"]["model"], metrics.frame_metrics(published, s.output, s.input))
        _close(row["published"]["baseline"], metrics.frame_metrics(s.input, s.output, s.input))
        _close(row["model_res"]["model"], metrics.frame_metrics(at_model, mt, mi))
        _close(row["model_res"]["baseline"], metrics.frame_metrics(mi, mt, mi))
        assert not math.isnan(row["published"]["baseline"]["sharpness_changed"])
    # the two geometries really differ (the published frame keeps the camera's borders outside the crop)
    pub, mod = r["per_task"]["published"]["all tasks"], r["per_task"]["model_res"]["all tasks"]
    assert pub["baseline"]["changed_fraction"] != mod["baseline"]["changed_fraction"]
    report = (tmp_path / "eval" / "report.md").read_text()
    assert report.index("## Published geometry") < report.index("## Model resolution (32²")
    assert "320x240 (3 samples)" in report and "Note:" not in report
    assert read_image(tmp_path / "eval" / "comparison.png").shape[1] >= 3 * 320  # published frames in the figure


def test_eval_published_frame_sampled_when_not_a_mapped_model_output(camera_data, tiny_predictor, tmp_path):
    """A model whose published frame is not back_to_input(model output) (e.g. composed at the camera's geometry) is
    scored on what it publishes: every batch is sampled at both output sizes."""
    from frameplan_training.evaluation import evaluate_predictor

    from frameplan_core.predictor import FramePredictor

    class PublishesDarker(FramePredictor):
        def predict_batch(self, images, instructions, *args, output_size="model", **kw):
            out = super().predict_batch(images, instructions, *args, output_size=output_size, **kw)
            return [o // 2 for o in out] if output_size == "input" else out

    plain = FramePredictor.from_pretrained(tiny_predictor, device="cpu")
    darker = PublishesDarker.from_pretrained(tiny_predictor, device="cpu")
    kw = {"steps": 1, "samples": 1, "batch_size": 1}
    a = evaluate_predictor(tiny_predictor, camera_data, tmp_path / "a", predictor=plain, **kw)
    b = evaluate_predictor(tiny_predictor, camera_data, tmp_path / "b", predictor=darker, **kw)
    assert "every batch" in b["geometry"]["published"]["from"]
    for ra, rb in zip(a["samples"], b["samples"]):
        assert ra["model_res"] == rb["model_res"] and ra["published"]["baseline"] == rb["published"]["baseline"]
        assert rb["published"]["model"]["psnr"] != ra["published"]["model"]["psnr"]  # every sample, not only the first


def test_eval_segment_pairs_by_kind_with_step_paraphrases(tiny_predictor, tmp_path):
    """A dataset converted with --pairing both: each sample predicted with its own text (step text for segment
    pairs), reported by pair kind; unseen paraphrases of the step for segment pairs; a stored crop is flagged."""
    from frameplan_training.evaluation import evaluate_predictor
    from frameplan_training.synthetic import episode_frames

    from frameplan_cli.main import main
    from frameplan_core.data import robotwin
    from frameplan_core.data.instructions import STEP_PARAPHRASES, TEMPLATES
    from frameplan_core.predictor import FramePredictor

    src = tmp_path / "src"
    steps = ["reach for the black block", "grasp the black block", "lift the black block"]
    for e in range(2):
        frames, _ = episode_frames("blocks_stack_easy", e, length=24)
        with robotwin.EpisodeWriter(src, "blocks_stack_easy", "D435", e) as w:
            for f in frames:
                w.add_frame({"observation": {"head_camera": {"rgb": f}}, "pointcloud": [],
                             "joint_action": np.zeros(14), "endpose": np.zeros(14)})
            w.scene_info = {"save_freq": 15, "segments": [{"step": s, "instruction": t}
                                                          for s, t in zip((0, 120, 180), steps)]}
    data = tmp_path / "both"
    assert main(["convert", "robotwin", str(src), "--to", "ip2p", str(data), "--pairing", "both", "--interval", "8",
                 "--val-fraction", "0.5", "--size", "40"]) == 0
    p = FramePredictor.from_pretrained(tiny_predictor, device="cpu")
    r = evaluate_predictor(tiny_predictor, data, tmp_path / "eval", steps=1, predictor=p)
    # per val episode: 2 interval pairs (0->8, 8->16) and 3 segments (0->8, 8->12, 12->23)
    assert r["pairings"] == {"interval": 2, "segment": 3} and r["dataset_pairing"]["pairing"] == "both"
    assert r["per_pairing"]["published"]["segment"]["all tasks"]["model"]["n"] == 3
    assert r["per_pairing"]["model_res"]["interval"]["all tasks"]["baseline"]["n"] == 2
    for row in r["samples"]:
        if row["pairing"] == "segment":
            step = next(t for t in steps if row["instruction"] in STEP_PARAPHRASES[t]["seen"])
            assert row["unseen_instruction"] in STEP_PARAPHRASES[step]["unseen"]
        else:
            assert row["unseen_instruction"] in TEMPLATES["blocks_stack_easy"]["unseen"]
    assert r["geometry"]["published"]["sizes"] == {"40x40": 5} and r["geometry"]["published"]["stored_size"] == 40
    report = (tmp_path / "eval" / "report.md").read_text()
    assert "## By pairing kind" in report and "segment pairs (motion segment start → end" in report
    assert "stores 40x40 centre crops" in report and "`--pairing both`" in report
