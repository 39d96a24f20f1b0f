"""RoboTwin 1.0 pickles and 2.0 hdf5: layout, exact round trips, lazy reading, discovery, instruction templates."""
import json
import multiprocessing
import pickle
import re

import cv2
import h5py
import numpy as np
import pytest

from frameplan_core.data import instructions, robotwin, robotwin2
from frameplan_core.data.episode import find_episode_paths, find_episodes, open_episode
from frameplan_core.errors import DataError
from frameplan_core.sim.task_config import TASK_NAMES

H, W = 24, 32


def make_frame(t: int, episode: int = 0, cameras=robotwin.CAMERAS, pointcloud: bool = True) -> dict:
    """A RoboTwin frame whose content encodes (episode, t, camera): red 2t, green 40*camera + column, blue 20*ep."""
    obs = {}
    for c, cam in enumerate(cameras):
        rgb = np.zeros((H, W, 3), np.uint8)
        rgb[..., 0] = (2 * t) % 256
        rgb[..., 1] = (40 * c + np.arange(W)) % 256
        rgb[..., 2] = (20 * episode) % 256
        obs[cam] = {
            "rgb": rgb,
            "depth": np.full((H, W), 1000.0 + t + 0.25 * c, np.float64),
            "intrinsic_cv": np.array([[358.6, 0, W / 2], [0, 358.6, H / 2], [0, 0, 1.0]]) + c,
            "extrinsic_cv": np.arange(12, dtype=np.float64).reshape(3, 4) + t,
            "cam2world_gl": np.eye(4) * (c + 1),
        }
    pc = np.arange(16 * 6, dtype=np.float64).reshape(16, 6) + t if pointcloud else []
    return {"observation": obs, "pointcloud": pc, "joint_action": np.arange(14, dtype=np.float64) + t,
            "endpose": np.linspace(0, 1, 14) + t}


def assert_frames_equal(a: dict, b: dict) -> None:
    assert sorted(a["observation"]) == sorted(b["observation"])
    for cam in a["observation"]:
        for key, val in a["observation"][cam].items():
            other = b["observation"][cam][key]
            assert other.dtype == val.dtype, (cam, key)
            assert np.array_equal(other, val), (cam, key)
    for key in ("joint_action", "endpose"):
        assert np.array_equal(np.asarray(a[key]), np.asarray(b[key])), key
    assert np.array_equal(np.asarray(a["pointcloud"]), np.asarray(b["pointcloud"]))


def write_pkl_episode(root, task="block_hammer_beat", ct="D435", index=0, n=5, **kw):
    frames = [make_frame(t, index, **kw) for t in range(n)]
    with robotwin.EpisodeWriter(root, task, ct, index) as ep:
        for f in frames:
            ep.add_frame(f)
    return robotwin.episode_dir(root, task, ct, index), frames


# ----------------------------------------------------------------------------------------------- 1.0

def test_pkl_layout_and_exact_round_trip(tmp_path):
    frames = [make_frame(t) for t in range(6)]
    instr = instructions.for_episode("block_hammer_beat", 3)
    with robotwin.EpisodeWriter(tmp_path, "block_hammer_beat", "D435", 7) as ep:
        for f in frames:
            ep.add_frame(f)
        ep.instructions = instr
        ep.scene_info = {"seed": 3, "hammer_xy": [0.1, -0.2]}
    d = tmp_path / "block_hammer_beat_D435_pkl" / "episode7"
    assert sorted(p.name for p in d.iterdir()) == [f"{i}.pkl" for i in range(6)]
    # plain pickle (what RoboTwin's own tools use) reads our files
    with open(d / "3.pkl", "rb") as fh:
        raw = pickle.load(fh)
    assert set(raw) == {"observation", "pointcloud", "joint_action", "endpose"}
    assert set(raw["observation"]["head_camera"]) == {"rgb", "depth", "intrinsic_cv", "extrinsic_cv", "cam2world_gl"}

    ep = open_episode(d)
    assert isinstance(ep, robotwin.RoboTwinEpisode)
    assert (ep.task, ep.camera_type, ep.index, len(ep)) == ("block_hammer_beat", "D435", 7, 6)
    for t, f in enumerate(frames):
        assert_frames_equal(f, ep.frame(t))
    assert np.array_equal(ep.rgb(4, "left_camera"), frames[4]["observation"]["left_camera"]["rgb"])
    assert ep.depth(2).dtype == np.float64 and ep.depth(2)[0, 0] == 1002.0
    assert ep.instructions == instr
    assert ep.scene_info == {"seed": 3, "hammer_xy": [0.1, -0.2]}
    assert json.loads((tmp_path / "block_hammer_beat_D435_pkl" / "instructions" / "episode7.json").read_text()) == instr
    assert ep.frame(-1)["joint_action"][0] == 5
    with pytest.raises(IndexError):
        ep.frame(6)


def test_reader_is_lazy(tmp_path):
    d, frames = write_pkl_episode(tmp_path, n=4)
    ep = robotwin.RoboTwinEpisode(d)
    (d / "3.pkl").write_bytes(b"garbage")  # only reading frame 3 may fail
    assert np.array_equal(ep.rgb(1), frames[1]["observation"]["head_camera"]["rgb"])
    it = iter(ep)
    assert next(it)["joint_action"][0] == 0
    with pytest.raises(DataError, match="3.pkl"):
        ep.validate()


def test_writer_is_atomic_and_refuses_overwrite(tmp_path):
    with pytest.raises(RuntimeError):
        with robotwin.EpisodeWriter(tmp_path, "block_handover", "D435", 0) as ep:
            ep.add_frame(make_frame(0))
            raise RuntimeError("collector crashed")
    td = tmp_path / "block_handover_D435_pkl"
    assert not td.exists() or list(td.iterdir()) == []
    d, _ = write_pkl_episode(tmp_path, "block_handover", n=2)
    with pytest.raises(DataError, match="already exists"):
        with robotwin.EpisodeWriter(tmp_path, "block_handover", "D435", 0):
            pass
    with robotwin.EpisodeWriter(tmp_path, "block_handover", "D435", 0, overwrite=True) as ep:
        for t in range(3):
            ep.add_frame(make_frame(t))
    assert len(open_episode(d)) == 3
    assert [p.name for p in td.iterdir()] == ["episode0"]
    with pytest.raises(DataError, match="empty episode"):
        with robotwin.EpisodeWriter(tmp_path, "block_handover", "D435", 1):
            pass
    assert not (td / "episode1").exists()


def _write_parallel(args):
    root, index = args
    with robotwin.EpisodeWriter(root, "blocks_stack_easy", "D435", index) as ep:
        ep.add_frame(make_frame(0, index, cameras=("head_camera",)))
        ep.scene_info = {"worker": index}


def test_scene_info_from_parallel_workers(tmp_path):
    with multiprocessing.get_context("fork").Pool(4) as pool:
        pool.map(_write_parallel, [(tmp_path, i) for i in range(8)])
    info = json.loads((tmp_path / "blocks_stack_easy_D435_pkl" / "scene_info.json").read_text())
    assert info == {f"episode_{i}": {"worker": i} for i in range(8)}
    assert [e.index for e in find_episodes(tmp_path)] == list(range(8))


# ----------------------------------------------------------------------------------------------- 2.0

def test_hdf5_round_trip_and_no_channel_swap(tmp_path):
    frames = [make_frame(t, cameras=("head_camera", "left_camera")) for t in range(5)]
    red = np.zeros((H, W, 3), np.uint8)
    red[..., 0] = 255
    frames[2]["observation"]["head_camera"]["rgb"] = red
    instr = instructions.for_episode("block_handover", 1)
    path = robotwin2.write_episode(tmp_path, "block_handover", "demo_clean", 4, frames, instructions=instr)
    assert path == tmp_path / "block_handover" / "demo_clean" / "data" / "episode4.hdf5"
    with h5py.File(path, "r") as f:
        raw = f["observation/head_camera/rgb"]
        assert raw.dtype.kind == "S" and raw.shape == (5,)
        decoded = cv2.imdecode(np.frombuffer(raw[2], np.uint8), cv2.IMREAD_COLOR)
        assert decoded[..., 0].min() > 240 and decoded[..., 2].max() < 15  # stored from RGB: red stays in channel 0
        assert np.array_equal(f["joint_action/vector"][:], np.stack([fr["joint_action"] for fr in frames]))
        assert f["joint_action/left_arm"].shape == (5, 6) and f["joint_action/right_gripper"].shape == (5,)
    ep = open_episode(path)
    assert isinstance(ep, robotwin2.RoboTwin2Episode)
    assert (ep.task, ep.camera_type, ep.index, len(ep)) == ("block_handover", "demo_clean", 4, 5)
    assert ep.instructions == instr
    assert np.array_equal(ep.rgb(2), decoded)
    for t, f in enumerate(frames):
        got = ep.frame(t)
        for cam in ("head_camera", "left_camera"):
            a, b = f["observation"][cam], got["observation"][cam]
            assert np.abs(a["rgb"].astype(int) - b["rgb"].astype(int)).max() <= 3  # JPEG, smooth image
            for key in ("depth", "intrinsic_cv", "extrinsic_cv", "cam2world_gl"):
                assert np.array_equal(a[key], b[key]), key
        assert np.array_equal(got["joint_action"], f["joint_action"])
        assert np.array_equal(got["endpose"], f["endpose"])
        assert np.array_equal(got["pointcloud"], f["pointcloud"])


def test_hdf5_native_robotwin2_layout(tmp_path):
    """A file shaped like RoboTwin 2.0's own pkl2hdf5 output: joint_action parts without 'vector', 7-d end poses,
    empty point clouds, padded JPEG strings of different lengths."""
    path = tmp_path / "beat_block_hammer" / "demo_randomized" / "data" / "episode0.hdf5"
    path.parent.mkdir(parents=True)
    imgs = [np.full((H, W, 3), (10 * t, 100, 200), np.uint8) for t in range(3)]
    imgs[1][:, : W // 2] = 0  # a longer JPEG
    enc = [cv2.imencode(".jpg", im)[1].tobytes() for im in imgs]
    width = max(map(len, enc))
    with h5py.File(path, "w") as f:
        f.create_dataset("observation/head_camera/rgb", data=[e.ljust(width, b"\0") for e in enc], dtype=f"S{width}")
        f.create_dataset("observation/head_camera/intrinsic_cv", data=np.stack([np.eye(3)] * 3))
        f.create_dataset("joint_action/left_arm", data=np.ones((3, 6)))
        f.create_dataset("joint_action/left_gripper", data=np.zeros(3))
        f.create_dataset("joint_action/right_arm", data=2 * np.ones((3, 6)))
        f.create_dataset("joint_action/right_gripper", data=np.ones(3))
        for side in ("left", "right"):
            f.create_dataset(f"endpose/{side}_endpose", data=np.ones((3, 7)))
            f.create_dataset(f"endpose/{side}_gripper", data=np.zeros(3))
        f.create_dataset("pointcloud", data=np.zeros((3, 0)))
    ep = open_episode(path)
    assert ep.task == "beat_block_hammer" and len(ep) == 3
    fr = ep.frame(1)
    assert fr["joint_action"].tolist() == [1] * 6 + [0] + [2] * 6 + [1]
    assert fr["endpose"].shape == (16,)
    assert isinstance(fr["pointcloud"], list) and fr["pointcloud"] == []
    assert np.abs(fr["observation"]["head_camera"]["rgb"].astype(int) - imgs[1]).mean() < 2
    assert ep.instructions is None


# ----------------------------------------------------------------------------------------------- discovery

def test_find_episodes_sorted_and_skips_hidden(tmp_path):
    for i in (10, 2):
        write_pkl_episode(tmp_path, "block_hammer_beat", "Large_D435", i, n=2, cameras=("head_camera",))
    write_pkl_episode(tmp_path, "block_handover", "L515", 0, n=2, cameras=("head_camera",))
    robotwin2.write_episode(tmp_path / "v2", "blocks_stack_easy", "demo_clean", 1,
                            [make_frame(t, cameras=("head_camera",)) for t in range(2)])
    (tmp_path / "block_handover_L515_pkl" / ".episode5.abc.partial").mkdir()
    (tmp_path / "block_handover_L515_pkl" / ".episode5.abc.partial" / "0.pkl").write_bytes(b"x")
    (tmp_path / ".cache" / "episode3").mkdir(parents=True)
    (tmp_path / "notes").mkdir()
    found = find_episode_paths(tmp_path)
    assert [(t, i) for t, i, _ in found] == [("block_hammer_beat", 2), ("block_hammer_beat", 10),
                                            ("block_handover", 0), ("blocks_stack_easy", 1)]
    eps = find_episodes(tmp_path, tasks=["block_hammer_beat"])
    assert [(e.camera_type, e.index) for e in eps] == [("Large_D435", 2), ("Large_D435", 10)]
    single = find_episodes(tmp_path / "block_handover_L515_pkl" / "episode0")
    assert len(single) == 1 and single[0].task == "block_handover"
    assert robotwin.parse_task_dir("blocks_stack_easy_D435_pkl") == ("blocks_stack_easy", "D435")
    assert robotwin.parse_task_dir("notes") is None


# ----------------------------------------------------------------------------------------------- instructions

def test_instruction_templates_and_deterministic_pick():
    for task in TASK_NAMES:
        t = instructions.templates(task)
        assert len(t["seen"]) >= 10 and len(t["unseen"]) >= 5
        assert len(set(t["seen"])) == len(t["seen"]) and not set(t["seen"]) & set(t["unseen"])
    assert instructions.templates("hammer") == instructions.templates("block_hammer_beat")
    assert instructions.templates("beat_block_hammer") == instructions.templates("block_hammer_beat")  # 2.0 name
    cands = instructions.templates("block_handover")["seen"]
    picks = [instructions.pick(cands, 0, f"ep{i}") for i in range(40)]
    assert picks == [instructions.pick(cands, 0, f"ep{i}") for i in range(40)]
    assert len(set(picks)) > 5
    assert picks != [instructions.pick(cands, 1, f"ep{i}") for i in range(40)]
    assert instructions.for_episode("block_handover", 2) == instructions.for_episode("block_handover", 2)
    own = {"seen": ["only this"], "unseen": []}
    assert instructions.choose("block_handover", 0, "k", "seen", own) == ("only this", "episode")
    assert instructions.choose("block_handover", 0, "k")[1] == "templates"
    assert instructions.choose("open_drawer", 0, "k") == ("open drawer", "task_name")
    with pytest.raises(DataError, match="known tasks"):
        instructions.templates("open_drawer")


def test_handover_giver_is_named_by_a_suffix_like_the_arm_of_other_tasks():
    """Instructed block_handover: every template that tells the direction has a direction-free form, and every
    sentence then ends in a giver phrase with the one side word (as the arm phrase of the other two tasks); a
    foreign sentence that tells the direction is turned around instead."""
    t = instructions.templates("block_handover")
    assert set(instructions.NEUTRAL_SENTENCES) <= set(t["seen"]) | set(t["unseen"])
    side_words = re.compile(r"\b(left|right)\b")
    for text in t["seen"] + t["unseen"]:
        if side_words.search(text):
            assert text in instructions.NEUTRAL_SENTENCES, text  # no direction template without its neutral form
    for neutral in instructions.NEUTRAL_SENTENCES.values():
        assert not side_words.search(neutral), neutral
    for side in ("left", "right"):
        named = instructions.naming_arm(t, side, 3, "block_handover")
        for split in ("seen", "unseen"):
            phrases = [p.format(side=side) for p in instructions.GIVER_PHRASES[split]]
            for text in named[split]:
                assert side_words.findall(text) == [side], text  # one side word, the giver's
                assert any(text.endswith(", " + p) for p in phrases), text
    own = {"seen": ["hand it from the left arm to the right arm", "hand it over"], "unseen": []}
    named = instructions.naming_arm(own, "right", 0, "handover")
    assert named["seen"][0] == "hand it from the right arm to the left arm"
    assert named["seen"][1].startswith("hand it over, ") and "right" in named["seen"][1]
    assert instructions.naming_arm({"seen": ["hand the block over from the left arm to the right arm"]}, "right", 0,
                                   "block_handover")["seen"][0].startswith("hand the block over from one arm to the "
                                                                           "other, ")


def test_writer_puts_side_files_in_place_before_the_episode(tmp_path):
    """An episode a reader (or a resumed collection) can see always has its instructions and scene info: when
    writing them fails, the episode is not left behind without them."""
    with pytest.raises(TypeError):
        with robotwin.EpisodeWriter(tmp_path, "block_handover", "D435", 0) as ep:
            ep.add_frame(make_frame(0))
            ep.instructions = instructions.for_episode("block_handover", 0)
            ep.scene_info = {"seed": object()}  # not JSON: writing scene_info.json fails
    td = tmp_path / "block_handover_D435_pkl"
    assert find_episode_paths(tmp_path) == []
    assert not (td / "episode0").exists() and not any(p.name.endswith(".partial") for p in td.iterdir())
    with robotwin.EpisodeWriter(tmp_path, "block_handover", "D435", 0) as ep:
        ep.add_frame(make_frame(0))
        ep.scene_info = {"seed": 3}
    assert open_episode(td / "episode0").scene_info == {"seed": 3}
