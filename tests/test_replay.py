"""Recorded actions replay: the readers give the 16-d commands (and report their absence in older episodes), and
`frameplan replay-actions` rebuilds each task's scene from scene_info and reaches the goal open loop."""
from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from frameplan_core.errors import DataError
from frameplan_core.sim.task_config import TASK_NAMES


def _frame(t: int, commands: bool = True) -> dict:
    rgb = np.full((8, 8, 3), t % 255, np.uint8)
    f = {"observation": {"head_camera": {"rgb": rgb}}, "pointcloud": [],
         "joint_action": np.full(14, 0.1 * t), "endpose": np.zeros(14)}
    if commands:
        f["joint_state_full"] = np.full(16, 0.01 * t)
        f["joint_command_full"] = np.full(16, 0.02 * t)
    return f


def _write(root: Path, task: str, index: int, n: int, commands: bool = True, scene_info: dict | None = None) -> Path:
    from frameplan_core.data.robotwin import EpisodeWriter

    with EpisodeWriter(root, task, "D435", index) as ep:
        for t in range(n):
            ep.add_frame(_frame(t, commands))
        ep.scene_info = scene_info
    return ep.path


# ----------------------------------------------------------------------------------------------- readers

def test_readers_give_commands_and_report_their_absence(tmp_path):
    from frameplan_core.data import robotwin2
    from frameplan_core.data.episode import open_episode, validate_frame
    from frameplan_core.data.robotwin import RoboTwinEpisode

    new = RoboTwinEpisode(_write(tmp_path, "block_handover", 0, 5))
    assert new.has_joint_commands()
    c = new.joint_command(3)
    assert c.shape == (16,) and c.dtype == np.float64 and np.allclose(c, 0.06)
    assert np.allclose(new.joint_state_full(2), 0.02)
    full = new.full_vectors()
    assert full["joint_command_full"].shape == (5, 16) and np.allclose(full["joint_state_full"][4], 0.04)
    assert np.array_equal(new.joint_commands(), full["joint_command_full"])

    old = RoboTwinEpisode(_write(tmp_path, "block_handover", 1, 4, commands=False))
    old.validate()  # older episodes still load
    assert old.frame(0)["joint_action"].shape == (14,) and not old.has_joint_commands()
    with pytest.raises(DataError, match=r"episode1: frame 2 has no 'joint_command_full'.*collect it again"):
        old.joint_command(2)
    with pytest.raises(DataError, match=r"episode1: frame 0 has no 'joint_command_full'"):
        old.joint_commands()
    assert old.full_vectors() == {}

    with pytest.raises(DataError, match=r"here: joint_command_full: expected shape \(16,\)"):
        validate_frame({**_frame(0), "joint_command_full": np.zeros(14)}, "here")

    # RoboTwin 2.0 hdf5: top-level (N, 16) datasets, read whole
    frames = [_frame(t) for t in range(6)]
    path = robotwin2.write_episode(tmp_path / "v2", "block_handover", "demo_clean", 0, frames)
    ep2 = open_episode(path)
    assert ep2.has_joint_commands() and np.allclose(ep2.joint_commands()[5], 0.1)
    assert np.allclose(ep2.frame(4)["joint_state_full"], 0.04) and np.allclose(ep2.joint_command(1), 0.02)
    bare = robotwin2.write_episode(tmp_path / "v2", "block_handover", "demo_clean", 1,
                                   [_frame(t, commands=False) for t in range(3)])
    ep2b = open_episode(bare)
    assert not ep2b.has_joint_commands() and ep2b.frame(0)["joint_action"].shape == (14,)
    with pytest.raises(DataError, match=r"episode1.hdf5: no 'joint_command_full' dataset"):
        ep2b.joint_commands()


def test_inspect_says_whether_an_episode_replays(tmp_path):
    from frameplan_cli.verbs.inspect import describe

    new = _write(tmp_path, "blocks_stack_easy", 0, 3)
    old = _write(tmp_path, "blocks_stack_easy", 1, 3, commands=False)
    assert describe(new, samples=2)[0]["joint_command_full"] is True
    assert describe(old, samples=2)[0]["joint_command_full"] is False


def test_replay_actions_errors_are_one_line(tmp_path, capsys):
    from frameplan_cli.main import main

    info = {"task": "blocks_stack_easy", "seed": 0, "save_freq": 15, "frames": 3, "sim_steps": 30}
    cases = [
        (tmp_path / "nothing_here", "no such episode or folder"),
        (tmp_path / "empty", "not an episode and holds no episodes"),
        (_write(tmp_path / "a", "blocks_stack_easy", 0, 3, commands=False, scene_info=info),
         "episode0: frame 0 has no 'joint_command_full'"),
        (_write(tmp_path / "b", "blocks_stack_easy", 0, 3), "no scene_info.json entry 'episode_0'"),
        (_write(tmp_path / "c", "blocks_stack_easy", 0, 3, scene_info={"task": "blocks_stack_easy", "seed": 0}),
         "scene_info has no save_freq"),
        (_write(tmp_path / "d", "cooking", 0, 3, scene_info={**info, "task": "cooking"}),
         "task 'cooking' is not one of the simulated tasks"),
        (_write(tmp_path / "e", "blocks_stack_easy", 0, 3, scene_info={**info, "sim_steps": 90}),
         "sim_steps 90 does not fit 3 frames saved every 15 ticks"),
        (_write(tmp_path / "g", "blocks_stack_easy", 0, 3, scene_info={**info, "seed": "seven"}),
         "scene_info seed must be an integer, got 'seven'"),
        (_write(tmp_path / "h", "blocks_stack_easy", 0, 3, scene_info={**info, "objects": {"red": {"final": [1, 2]}}}),
         "scene_info objects/red/initial must be [x, y, z, qw, qx, qy, qz]"),
    ]
    (tmp_path / "empty").mkdir()
    not_episode = tmp_path / "f" / "episode0"
    not_episode.mkdir(parents=True)
    cases.append((not_episode, "empty episode"))
    for path, message in cases:
        capsys.readouterr()
        assert main(["replay-actions", str(path)]) == 1, path
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1 and "Traceback" not in err, err


# ----------------------------------------------------------------------------------------------- replays

@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    pytest.importorskip("sapien")
    pytest.importorskip("mplib")
    import sim_episodes

    return sim_episodes.collected(tmp_path_factory)


def _episode_path(out: Path, task: str) -> Path:
    from sim_episodes import TINY

    from frameplan_core.data.robotwin import episode_dir

    return episode_dir(out, task, TINY, 0)


@pytest.mark.sim
@pytest.mark.parametrize("task", TASK_NAMES)
def test_recorded_commands_replay_to_success(collected, task):
    """Open loop, nothing rendered: the rebuilt scene starts where the recording did, the goal is reached (hammer:
    hit detected without the expert), objects end within millimetres of the recorded final poses."""
    from frameplan_core.data.robotwin import RoboTwinEpisode
    from frameplan_core.sim.replay import replay_episode

    out, _, _ = collected
    path = _episode_path(out, task)
    info = RoboTwinEpisode(path).scene_info
    r = replay_episode(path)
    assert r.success, r.summary()
    assert r.layout_ok and all(o["initial_error_m"] == 0.0 for o in r.objects.values())
    assert r.ticks == info["sim_steps"] and r.frames == info["frames"] and r.seed == info["seed"]
    assert r.first_success_tick is not None and r.first_success_tick <= r.ticks
    assert set(r.objects) == set(info["objects"])
    assert r.max_position_error_m < 0.005, r.summary()  # measured 0.2-1.6 mm at save_freq 50
    assert r.joint_error_max_rad < 0.02, r.summary()  # measured ~0.004 rad (one tick ahead of the expert)


@pytest.mark.sim
def test_replay_actions_cli_reports_and_detects_a_failed_replay(collected, tmp_path, capsys):
    """The verb prints one line per episode (or JSON); an episode whose right gripper command never closes -- the
    measured-opening mistake the issue found -- does not reach the goal and exits 3."""
    from frameplan_cli.main import main
    from frameplan_core.data.robotwin import RoboTwinEpisode, episode_dir, merge_scene_info

    out, _, _ = collected
    path = _episode_path(out, "blocks_stack_easy")
    capsys.readouterr()
    assert main(["replay-actions", str(path)]) == 0
    line = capsys.readouterr().out
    assert line.count("\n") == 1 and "SUCCESS" in line and "black" in line and "mm" in line

    src = RoboTwinEpisode(_episode_path(out, "block_handover"))
    broken = episode_dir(tmp_path, "block_handover", "Tiny", 0)
    shutil.copytree(src.path, broken)
    for p in broken.glob("*.pkl"):
        frame = pickle.loads(p.read_bytes())
        frame["joint_command_full"][15] = 1.0  # the right gripper stays open
        p.write_bytes(pickle.dumps(frame))
    merge_scene_info(broken.parent, 0, src.scene_info)
    capsys.readouterr()
    assert main(["replay-actions", str(tmp_path), "--json"]) == 3
    result = json.loads(capsys.readouterr().out)
    assert result["replayed"] == 1 and result["succeeded"] == 0 and result["errors"] == []
    ep = result["episodes"][0]
    assert ep["success"] is False and ep["layout_ok"] is True and ep["objects"]["block"]["position_error_m"] > 0.05
