"""`frameplan plan` with a tiny checkpoint: text, trajectory, and both; outputs and error messages."""
import json

import numpy as np
import pytest
import torch

from frameplan_cli.main import main
from frameplan_core.grid import split
from frameplan_core.image import read_image, write_image
from frameplan_core.planner import GridPlanner, PlannerConfig


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("plancli")
    GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32, steps=3), seed=0).save_pretrained(root / "ckpt")
    write_image(root / "in.png", (np.random.default_rng(0).random((60, 80, 3)) * 255).astype(np.uint8))
    (root / "traj.json").write_text(json.dumps([[5, 5], [40, 30], [75, 55]]))
    K = [[100.0, 0, 40], [0, 100.0, 30], [0, 0, 1]]
    (root / "traj3d.json").write_text(json.dumps({"points_3d": [[0, 0, 1], [0.2, 0.1, 1]], "K": K}))
    return root


@pytest.mark.parametrize("goal", ["text", "trajectory", "both", "3d"])
def test_plan_cli_writes_grid_frames_gif_and_conditioning(setup, goal, capsys):
    out = setup / f"out_{goal}"
    args = ["plan", "--image", str(setup / "in.png"), "--checkpoint", str(setup / "ckpt"), "--out", str(out),
            "--seed", "1"]
    if goal in ("text", "both"):
        args += ["--instruction", "pick up the block"]
    if goal in ("trajectory", "both"):
        args += ["--trajectory", str(setup / "traj.json")]
    if goal == "3d":
        args += ["--trajectory", str(setup / "traj3d.json"), "--chain", "2", "--samples", "2"]
    assert main(args) == 0
    assert "plan:" in capsys.readouterr().out
    meta = json.loads((out / "plan.json").read_text())
    grid = read_image(out / "grid.png")
    assert grid.shape == (96, 96, 3)
    n = 17 if goal == "3d" else 9
    frames = [read_image(out / "frames" / f"frame_{k:02d}.png") for k in range(1, n + 1)]
    assert meta["frames"] == n and not (out / "frames" / f"frame_{n + 1:02d}.png").exists()
    assert all(np.array_equal(a, b) for a, b in zip(split(grid), frames[-9:]))
    cond = read_image(out / "conditioning.png")
    assert cond.shape == (96, 96, 3) and cond[32:].max() == 0 and cond[:, 32:].max() == 0
    import imageio.v3 as iio

    gif = iio.imread(out / "plan.gif", index=None)
    assert gif.shape[0] == n
    expected = {"text": ["text"], "trajectory": ["trajectory"], "both": ["text", "trajectory"],
                "3d": ["trajectory"]}[goal]
    assert meta["inputs"]["modalities"] == expected
    assert meta["inputs"]["samples"] == (2 if goal == "3d" else 1)


def test_plan_cli_errors(setup, capsys):
    base = ["plan", "--image", str(setup / "in.png"), "--checkpoint", str(setup / "ckpt")]
    assert main(base + ["--out", str(setup / "e1")]) == 1
    assert "--instruction, --trajectory, or both" in capsys.readouterr().err
    (setup / "bad.json").write_text("[[1, 2]]")
    assert main(base + ["--out", str(setup / "e2"), "--trajectory", str(setup / "bad.json")]) == 1
    assert "bad.json" in (err := capsys.readouterr().err) and "at least 2 points" in err
    assert main(base + ["--out", str(setup / "e3"), "--trajectory", str(setup / "nope.json")]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(base + ["--out", str(setup / "e4"), "--instruction", "x", "--adapter", "ghost"]) == 1
    assert "unknown adapter 'ghost'" in capsys.readouterr().err
    (setup / "exists").mkdir()
    assert main(base + ["--out", str(setup / "exists"), "--instruction", "x"]) == 1
    assert "--overwrite" in capsys.readouterr().err
    assert not (setup / "e4").exists()


def test_bench_planner_runs_and_writes_json(setup, capsys):
    n = torch.get_num_threads()
    try:
        assert main(["bench", "planner", "--checkpoint", str(setup / "ckpt"), "--cell-size", "32", "--steps", "2",
                     "--repeats", "2", "--warmup", "0", "--threads", "1", "--samples", "3",
                     "--json", str(setup / "bench.json")]) == 0
    finally:
        torch.set_num_threads(n)
    out = capsys.readouterr().out
    assert "| tiny | cpu float32 | 96x96 | 2 |" in out and "mean of 3 plans" in out
    rows = json.loads((setup / "bench.json").read_text())["rows"]
    assert len(rows) == 2 and [r["samples"] for r in rows] == [1, 3]
    assert len(rows[0]["runs_s"]) == 2 and rows[0]["median_s"] > 0 and rows[0]["peak_mib"] > 10
