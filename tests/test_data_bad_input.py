"""Bad input: every broken episode gives a DataError naming the file and the problem; `convert --skip-bad` skips,
counts and lists them; an interrupted conversion leaves nothing a reader would accept."""
import json
import os
import pickle
import signal
import subprocess
import sys
import time

import h5py
import numpy as np
import pytest

from frameplan_cli.main import main
from frameplan_core.data import ip2p, robotwin, robotwin2
from frameplan_core.data.episode import find_episode_paths, open_episode
from frameplan_core.errors import DataError

H, W = 16, 20


def frame(t: int) -> dict:
    rgb = np.full((H, W, 3), (2 * t, 100, 50), np.uint8)
    return {"observation": {"head_camera": {"rgb": rgb, "depth": np.zeros((H, W)), "intrinsic_cv": np.eye(3)}},
            "pointcloud": [], "joint_action": np.zeros(14), "endpose": np.zeros(14)}


def pkl_episode(root, index, n=12, task="block_hammer_beat"):
    with robotwin.EpisodeWriter(root, task, "D435", index) as w:
        for t in range(n):
            w.add_frame(frame(t))
    return robotwin.episode_dir(root, task, "D435", index)


def _rewrite(d, i, mutate):
    with open(d / f"{i}.pkl", "rb") as fh:
        fr = pickle.load(fh)
    mutate(fr)
    with open(d / f"{i}.pkl", "wb") as fh:
        pickle.dump(fr, fh)


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo pwned > evil.txt",))


def _truncate(d):
    data = (d / "3.pkl").read_bytes()
    (d / "3.pkl").write_bytes(data[: len(data) // 2])


PKL_CASES = {
    "truncated": (_truncate, r"3\.pkl: corrupt or truncated pickle"),
    "garbage": (lambda d: (d / "3.pkl").write_bytes(b"\x00not a pickle at all"), r"3\.pkl: corrupt"),
    "zero_bytes": (lambda d: (d / "3.pkl").write_bytes(b""), r"3\.pkl: empty file"),
    "code_in_pickle": (lambda d: (d / "3.pkl").write_bytes(pickle.dumps({"x": _Evil()})),
                       r"refusing to load posix\.system"),
    "missing_key": (lambda d: _rewrite(d, 3, lambda f: f.pop("joint_action")), r"3\.pkl: missing key 'joint_action'"),
    "missing_rgb": (lambda d: _rewrite(d, 3, lambda f: f["observation"]["head_camera"].pop("rgb")),
                    r"3\.pkl: observation/head_camera: missing key 'rgb'"),
    "rgb_float": (lambda d: _rewrite(d, 3, lambda f: f["observation"]["head_camera"].update(rgb=np.zeros((H, W, 3)))),
                  r"3\.pkl: observation/head_camera/rgb: dtype float64 not allowed"),
    "rgb_rgba": (lambda d: _rewrite(d, 3, lambda f: f["observation"]["head_camera"].update(
        rgb=np.zeros((H, W, 4), np.uint8))), r"rgb: expected \(H, W, 3\) uint8, got \(16, 20, 4\)"),
    "depth_shape": (lambda d: _rewrite(d, 3, lambda f: f["observation"]["head_camera"].update(depth=np.zeros((H, 3)))),
                    r"depth: expected shape \(16, 20\)"),
    "joint_shape": (lambda d: _rewrite(d, 3, lambda f: f.update(joint_action=np.zeros(13))),
                    r"joint_action: expected shape \(14,\), got \(13,\)"),
    "intrinsic_shape": (lambda d: _rewrite(d, 3, lambda f: f["observation"]["head_camera"].update(
        intrinsic_cv=np.eye(4))), r"intrinsic_cv: expected shape \(3, 3\)"),
    "not_a_dict": (lambda d: (d / "3.pkl").write_bytes(pickle.dumps([1, 2, 3])), r"3\.pkl: expected a dict frame"),
}


@pytest.mark.parametrize("case", sorted(PKL_CASES))
def test_bad_pickle_frame_named(tmp_path, case, monkeypatch):
    monkeypatch.chdir(tmp_path)
    d = pkl_episode(tmp_path / "src", 0)
    mutate, pattern = PKL_CASES[case]
    mutate(d)
    ep = open_episode(d)
    with pytest.raises(DataError, match=pattern) as err:
        ep.frame(3)
    assert str(d / "3.pkl") in str(err.value)
    assert not (tmp_path / "evil.txt").exists()
    ep.frame(2)  # the other frames stay readable


def test_episode_level_problems(tmp_path):
    d = pkl_episode(tmp_path, 0, n=5)
    (d / "3.pkl").unlink()
    with pytest.raises(DataError, match=r"episode0: gap in frame numbering, missing 3\.pkl"):
        open_episode(d)
    (tmp_path / "block_hammer_beat_D435_pkl" / "episode1").mkdir()
    with pytest.raises(DataError, match=r"episode1: empty episode"):
        open_episode(tmp_path / "block_hammer_beat_D435_pkl" / "episode1")
    with pytest.raises(DataError, match="no such episode"):
        open_episode(tmp_path / "nope")
    instr = tmp_path / "block_hammer_beat_D435_pkl" / "instructions"
    d2 = pkl_episode(tmp_path, 2, n=3)
    instr.mkdir(exist_ok=True)
    (instr / "episode2.json").write_bytes('{"seen": ["caf\u00e9"]}'.encode("latin-1"))
    with pytest.raises(DataError, match=r"episode2\.json: instruction file is not UTF-8"):
        _ = open_episode(d2).instructions
    (instr / "episode2.json").write_text('{"seen": []}')
    with pytest.raises(DataError, match=r"episode2\.json: 'seen' is missing or empty"):
        _ = open_episode(d2).instructions


def test_writer_names_the_problem(tmp_path):
    pattern = r"episode0/0\.pkl: observation/head_camera/rgb: expected 3 dimensions, got shape \(16, 20\)"
    with pytest.raises(DataError, match=pattern):
        with robotwin.EpisodeWriter(tmp_path, "t", "D435", 0) as w:
            bad = frame(0)
            bad["observation"]["head_camera"]["rgb"] = np.zeros((H, W), np.uint8)
            w.add_frame(bad)
    with pytest.raises(DataError, match=r"episode0/1\.pkl: cameras/array shapes .* differ from frame 0"):
        with robotwin.EpisodeWriter(tmp_path, "t", "D435", 0) as w:
            w.add_frame(frame(0))
            other = frame(1)
            other["observation"]["head_camera"]["rgb"] = np.zeros((H + 1, W, 3), np.uint8)
            other["observation"]["head_camera"]["depth"] = np.zeros((H + 1, W))
            w.add_frame(other)
    with pytest.raises(DataError, match="'seen' is missing or empty"):
        with robotwin.EpisodeWriter(tmp_path, "t", "D435", 0) as w:
            w.add_frame(frame(0))
            w.instructions = {"unseen": ["x"]}
    assert not (tmp_path / "t_D435_pkl").exists() or not any((tmp_path / "t_D435_pkl").iterdir())


def _hdf5(root, n=12):
    return robotwin2.write_episode(root, "block_handover", "demo_clean", 0, [frame(t) for t in range(n)])


def _corrupt_jpeg(p):
    with h5py.File(p, "r+") as f:
        ds = f["observation/head_camera/rgb"]
        ds[3] = b"\xff\xd8 not really a jpeg"


def _drop(p, name):
    with h5py.File(p, "r+") as f:
        del f[name]


def _short_dataset(p):
    with h5py.File(p, "r+") as f:
        del f["joint_action/vector"]
        f.create_dataset("joint_action/vector", data=np.zeros((5, 14)))


H5_CASES = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 3]), r"cannot open as HDF5"),
    "not_hdf5": (lambda p: p.write_bytes(b"plain text, not hdf5"), r"cannot open as HDF5"),
    "no_observation": (lambda p: _drop(p, "observation"), r"missing group 'observation'"),
    "no_joint_action": (lambda p: _drop(p, "joint_action"), r"missing 'joint_action'"),
    "length_mismatch": (_short_dataset, r"dataset joint_action/vector has 5 entries, expected 12"),
}


@pytest.mark.parametrize("case", sorted(H5_CASES))
def test_bad_hdf5_named(tmp_path, case):
    p = _hdf5(tmp_path)
    mutate, pattern = H5_CASES[case]
    mutate(p)
    with pytest.raises(DataError, match=pattern) as err:
        open_episode(p)
    assert str(p) in str(err.value)


def test_bad_jpeg_in_hdf5(tmp_path):
    p = _hdf5(tmp_path)
    _corrupt_jpeg(p)
    ep = open_episode(p)
    with pytest.raises(DataError, match=r"episode0\.hdf5: observation/head_camera/rgb\[3\] is not a decodable JPEG"):
        ep.rgb(3)
    ep.rgb(4)


@pytest.fixture
def mixed_source(tmp_path):
    """Three good episodes and one of each kind of bad one."""
    src = tmp_path / "src"
    for i in range(3):
        pkl_episode(src, i, n=12)
    bad = {}
    d = pkl_episode(src, 3, n=12)
    (d / "10.pkl").write_bytes(b"\x80\x04trunc")  # frame 10 is the target of the 0 -> 10 pair
    bad[d] = "corrupt or truncated pickle"
    d = pkl_episode(src, 4, n=12)
    (d / "5.pkl").unlink()
    bad[d] = "gap in frame numbering"
    bad[pkl_episode(src, 5, n=6)] = "shorter than the interval"
    d = pkl_episode(src, 6, n=12)
    (d.parent / "instructions").mkdir(exist_ok=True)
    (d.parent / "instructions" / "episode6.json").write_bytes(b'{"seen": ["\xff\xfe"]}')
    bad[d] = "not UTF-8"
    (src / "block_hammer_beat_D435_pkl" / "episode7").mkdir()
    (src / "block_hammer_beat_D435_pkl" / "episode7" / "notes.txt").write_text("no frames")
    bad[src / "block_hammer_beat_D435_pkl" / "episode7"] = "empty episode"
    p = _hdf5(src)
    p.write_bytes(p.read_bytes()[:100])
    bad[p] = "cannot open as HDF5"
    return src, bad


def test_convert_fails_on_bad_episode_and_writes_nothing(mixed_source, tmp_path, capsys):
    src, bad = mixed_source
    dst = tmp_path / "out" / "ip2p"
    assert main(["convert", "robotwin", str(src), "--to", "ip2p", str(dst), "--interval", "10"]) == 1
    err = capsys.readouterr().err
    assert "--skip-bad" in err and any(str(p) in err for p in bad), err
    assert not dst.exists()
    assert [p for p in (tmp_path / "out").iterdir()] == []  # no half-written dataset, not even a hidden one
    with pytest.raises(DataError, match="no InstructPix2Pix|not an InstructPix2Pix"):
        ip2p.IP2PDataset(dst)


def test_convert_skip_bad_counts_and_lists(mixed_source, tmp_path, capsys):
    src, bad = mixed_source
    dst = tmp_path / "ip2p"
    assert main(["convert", "robotwin", str(src), "--to", "ip2p", str(dst), "--interval", "10", "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert f"{len(bad)} skipped" in out
    for path, reason in bad.items():
        line = next((ln for ln in out.splitlines() if str(path) + ":" in ln), None)
        assert line is not None and reason in line, (path, reason, out)
    ds = ip2p.IP2PDataset(dst)
    assert len(ds) == 3  # one pair (0 -> 10) from each good 12-frame episode
    summary = json.loads((dst / "frameplan_dataset.json").read_text())["summary"]
    assert summary["episodes_converted"] == 3 and len(summary["skipped"]) == len(bad)
    # grid conversion of the same folder: 6-frame episode is too short for nine distinct frames
    gdst = tmp_path / "grid"
    assert main(["convert", "robotwin", str(src), "--to", "grid", str(gdst), "--skip-bad"]) == 0
    out = capsys.readouterr().out
    assert "a grid needs at least 9 distinct frames" in out


def test_convert_with_only_bad_episodes_creates_nothing(tmp_path, capsys):
    pkl_episode(tmp_path / "src", 0, n=4)
    assert main(["convert", "robotwin", str(tmp_path / "src"), "--to", "ip2p", str(tmp_path / "d"), "--skip-bad"]) == 1
    assert "no samples written" in capsys.readouterr().err and not (tmp_path / "d").exists()
    assert main(["convert", "robotwin", str(tmp_path / "nothing_here"), "--to", "ip2p", str(tmp_path / "d")]) == 1
    assert "no such folder" in capsys.readouterr().err


def _start_blocked_conversion(tmp_path):
    """A conversion that writes three samples, then blocks reading frame 10 of episode3 (a FIFO nobody writes)."""
    for i in range(4):
        pkl_episode(tmp_path / "src", i, n=12)
    fifo = robotwin.episode_dir(tmp_path / "src", "block_hammer_beat", "D435", 3) / "10.pkl"
    fifo.unlink()
    os.mkfifo(fifo)
    proc = subprocess.Popen([sys.executable, "-m", "frameplan_cli", "convert", "robotwin", str(tmp_path / "src"),
                             "--to", "ip2p", str(tmp_path / "d"), "--interval", "10"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        partial = [p for p in tmp_path.glob(".d.*.partial") if len([q for q in p.iterdir() if q.is_dir()]) >= 3]
        if partial:
            time.sleep(0.2)
            return proc, partial[0]
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"conversion did not reach the blocking frame: {proc.communicate()}")


def test_interrupted_conversion_cleans_up(tmp_path):
    """Ctrl-C half way: the destination does not exist and no temporary folder is left behind."""
    proc, _ = _start_blocked_conversion(tmp_path)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["src"]


def test_killed_conversion_leaves_nothing_readable(tmp_path):
    """SIGKILL half way (no cleanup possible): only a hidden .partial folder remains, which readers ignore."""
    proc, partial = _start_blocked_conversion(tmp_path)
    proc.kill()
    proc.communicate(timeout=60)
    assert not (tmp_path / "d").exists() and partial.exists()
    with pytest.raises(DataError, match="not an InstructPix2Pix"):
        ip2p.IP2PDataset(tmp_path / "d")
    assert not (partial / "seeds.json").exists()  # the dataset index is only written at the very end
    assert find_episode_paths(tmp_path) == find_episode_paths(tmp_path / "src")


def test_bad_dataset_files(tmp_path):
    (tmp_path / "seeds.json").write_bytes(b"\xff\xfe[")
    with pytest.raises(DataError, match=r"seeds\.json: not UTF-8"):
        ip2p.IP2PDataset(tmp_path)
    (tmp_path / "seeds.json").write_text('[["a", []]]')
    with pytest.raises(DataError, match=r"entry 0 is not \[dir, \[seeds\.\.\.\]\]"):
        ip2p.IP2PDataset(tmp_path)
    (tmp_path / "seeds.json").write_text('[["a", [1]]]')
    ds = ip2p.IP2PDataset(tmp_path)
    with pytest.raises(DataError, match=r"a/prompt\.json: missing prompt\.json"):
        ds[0]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "prompt.json").write_text('{"edit": "x"}')
    with pytest.raises(DataError, match=r"a/1_0\.jpg: image file not found"):
        ds[0]


def test_malformed_dataset_json_named(tmp_path):
    img = np.zeros((8, 10, 3), np.uint8)
    with ip2p.FolderDatasetWriter(tmp_path / "ds", params={"seed": 0}) as w:
        w.add(img, img, "x", episode="e0")
    ds = tmp_path / "ds"
    splits_json = (ds / "splits.json").read_text()
    (ds / "frameplan_dataset.json").write_text("[1, 2]")
    with pytest.raises(DataError, match=r"frameplan_dataset\.json: expected a JSON object"):
        ip2p.IP2PDataset(ds)
    with pytest.raises(DataError, match=r"frameplan_dataset\.json: expected a JSON object"):
        ip2p.detect_format(ds)
    (ds / "frameplan_dataset.json").write_text('{"format": "ip2p"}')
    (ds / "splits.json").write_text('{"episodes": ["e0"], "samples": {"train": ["000000"]}}')
    with pytest.raises(DataError, match=r"splits\.json: 'episodes' must be an object"):
        ip2p.IP2PDataset(ds)
    # a string is not a list of ids: it used to select nothing silently
    (ds / "splits.json").write_text('{"samples": {"train": "000000"}}')
    with pytest.raises(DataError, match=r"splits\.json: samples/train must be a list of strings"):
        ip2p.IP2PDataset(ds, split="train")
    (ds / "splits.json").write_text(splits_json)
    assert len(ip2p.IP2PDataset(ds, split="train")) == 1


def test_hdf5_pointcloud_group_is_not_a_crash(tmp_path):
    p = _hdf5(tmp_path)
    with h5py.File(p, "r+") as f:
        del f["pointcloud"]
        f.create_group("pointcloud")
    fr = open_episode(p).frame(2)
    assert fr["pointcloud"] == [] and fr["observation"]["head_camera"]["rgb"].shape == (H, W, 3)
