"""`frameplan convert --to grid` stores the end-effector track in pixels of the stored cells, and the training
datasets read it back unchanged."""
import json
import logging

import numpy as np
from frameplan_training.datasets import GridSampleDataset, trajectory_from_meta

from frameplan_core import grid
from frameplan_cli.main import main
from frameplan_core.data import robotwin
from frameplan_core.data.grid_samples import GridDataset

FX, FY = 50.0, 45.0
# world -> camera: rotate 10 degrees about the camera x axis, then translate (z forward, metres)
_A = np.deg2rad(10.0)
R = np.array([[1, 0, 0], [0, np.cos(_A), -np.sin(_A)], [0, np.sin(_A), np.cos(_A)]])
T = np.array([0.05, -0.02, 1.0])
REST = np.array([0.4, 0.3, 0.2])  # the idle arm's position


def camera(h, w):
    K = np.array([[FX, 0, (w - 1) / 2], [0, FY, (h - 1) / 2], [0, 0, 1]])
    return K, np.hstack([R, T[:, None]])


def hand_project(p, h, w):
    """Pinhole projection written out by hand: X_c = R p + T, u = fx X/Z + cx, v = fy Y/Z + cy."""
    K, _ = camera(h, w)
    x, y, z = R @ p + T
    return np.array([FX * x / z + K[0, 2], FY * y / z + K[1, 2]])


def line(t, n):
    """The moving arm goes along a straight world line from a to b."""
    a, b = np.array([-0.15, -0.08, 0.1]), np.array([0.12, 0.1, -0.05])
    return a + (b - a) * t / (n - 1)


def write_episode(root, task, index, n, h, w, moving="left", matrices=True, dot=False):
    K, E = camera(h, w)
    with robotwin.EpisodeWriter(root, task, "D435", index) as ep:
        for t in range(n):
            rgb = np.full((h, w, 3), 60, np.uint8)
            p = line(t, n)
            if dot:  # a 4x4 white square centred on the projected tool point
                u, v = hand_project(p, h, w)
                y0, x0 = int(np.rint(v - 1.5)), int(np.rint(u - 1.5))
                rgb[y0:y0 + 4, x0:x0 + 4] = 255
            cam = {"rgb": rgb}
            if matrices:
                cam.update(intrinsic_cv=K, extrinsic_cv=E)
            endpose = np.zeros(14)
            endpose[0:3], endpose[7:10] = (p, REST) if moving == "left" else (REST, p)
            ep.add_frame({"observation": {"head_camera": cam}, "pointcloud": [], "joint_action": np.zeros(14),
                          "endpose": endpose})


def test_grid_trajectory_equals_hand_projection_after_crop(tmp_path):
    h, w, n, size = 32, 48, 100, 16
    root = tmp_path / "src"
    write_episode(root, "block_hammer_beat", 0, n, h, w, moving="left")
    write_episode(root, "block_handover", 0, n, h, w, moving="right")
    dst = tmp_path / "grid"
    assert main(["convert", "robotwin", str(root), "--to", "grid", str(dst), "--size", str(size),
                 "--val-fraction", "0"]) == 0
    ds = GridDataset(dst)
    frames = np.unique(np.rint(np.linspace(0, n - 1, 64)).astype(int))
    # centre crop 32x48 -> 32x32 (x0 = 8), then scale 16/32; pixel centres map onto pixel centres
    x0, s = (w - h) // 2, size / h
    want = np.array([hand_project(line(t, n), h, w) for t in frames])
    want = np.stack([(want[:, 0] - x0 + 0.5) * s - 0.5, (want[:, 1] + 0.5) * s - 0.5], axis=1)
    arms = set()
    for i in range(len(ds)):
        tr = ds[i].meta["trajectory"]
        assert tr["image_hw"] == [size, size] and len(tr["points"]) == len(frames) == 64
        assert np.allclose(tr["points"], want, atol=1e-9)
        arms.add(tr["arm"])
        # the training side reads the same points (the cell size equals the stored size)
        assert np.allclose(trajectory_from_meta(ds[i].meta, size), want, atol=1e-9)
        assert np.allclose(trajectory_from_meta(ds[i].meta, 2 * size), (want + 0.5) * 2 - 0.5, atol=1e-9)
    assert arms == {"left", "right"}  # the arm that moves is the one kept
    train = GridSampleDataset(dst, "train", cell=size)
    assert all(train[k]["has_trajectory"] and train[k]["mode"] == "both" for k in range(len(train)))
    # with trajectory marks the data builds exactly the conditioning grid the planner builds at inference
    from frameplan_training.datasets import grid_example

    from frameplan_core.planner import GridPlanner, PlannerConfig

    pl = GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=size, condition="channel",
                                                      trajectory_marks=True), seed=0)
    marked = GridSampleDataset(dst, "train", cell=size, thickness=pl.config.thickness, marks=True)
    for k in range(len(marked)):
        ex = grid_example(marked, k)
        want = pl.conditioning_grid(ex["first"], ex["trajectory"])
        got = ((marked[k]["source"].permute(1, 2, 0).numpy() + 1) * 127.5).round().astype(np.uint8)
        assert (got == want).all()
        assert not (got == ((train[k]["source"].permute(1, 2, 0).numpy() + 1) * 127.5).round()).all()


def test_grid_trajectory_points_land_on_the_tool_in_the_cells(tmp_path):
    """A white square drawn at the projected tool point: its centroid in each stored cell is the stored point."""
    h, w, n, size = 64, 96, 57, 32  # n <= 64: every frame is kept, point i is frame i
    root = tmp_path / "src"
    write_episode(root, "block_hammer_beat", 0, n, h, w, dot=True)
    dst = tmp_path / "grid"
    assert main(["convert", "robotwin", str(root), "--to", "grid", str(dst), "--size", str(size),
                 "--val-fraction", "0"]) == 0
    s = GridDataset(dst)[0]
    pts = np.asarray(s.meta["trajectory"]["points"])
    assert len(pts) == n
    for k, (t, cell) in enumerate(zip(s.meta["frames"], grid.split(s.output))):
        wgt = np.clip(cell[..., 0].astype(float) - 60, 0, None)
        ys, xs = np.mgrid[:size, :size]
        centroid = np.array([(wgt * xs).sum(), (wgt * ys).sum()]) / wgt.sum()
        assert np.abs(centroid - pts[t]).max() < 0.6, (k, t, centroid, pts[t])


def test_episode_without_camera_matrices_gets_no_trajectory(tmp_path, caplog):
    h, w, n = 24, 24, 20
    root = tmp_path / "src"
    for e in range(2):
        write_episode(root, "block_hammer_beat", e, n, h, w, matrices=False)
    dst = tmp_path / "grid"
    with caplog.at_level(logging.WARNING, logger="frameplan_core.data.convert"):
        assert main(["convert", "robotwin", str(root), "--to", "grid", str(dst), "--val-fraction", "0"]) == 0
    ds = GridDataset(dst)
    assert len(ds) == 2 and all("trajectory" not in ds[i].meta for i in range(2))
    summary = json.loads((dst / "frameplan_dataset.json").read_text())["summary"]
    assert len(summary["no_trajectory"]) == 2 and "extrinsic_cv" in summary["no_trajectory"][0]["reason"]
    warnings = [r for r in caplog.records if "no end-effector track" in r.getMessage()]
    assert len(warnings) == 1 and "2 of 2" in warnings[0].getMessage()
    assert not GridSampleDataset(dst, "train", cell=h)[0]["has_trajectory"]
