"""Goal-conditioned policy without the simulator: network shapes, the frame cache and hindsight samples built from
episodes written with the real RoboTwin writer, `frameplan train policy` for a few steps, save/load, bad input
(goal size, joint count, broken folders), plan following and the rollout bookkeeping (Wilson intervals, results,
resume checks). The closed loop in SAPIEN is tests/test_rollout.py."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from frameplan_core.errors import ConfigError, DataError, InputError, ModelError

TASK = "blocks_stack_easy"
H, W = 48, 64  # small camera frames (4:3 like the D435)


def _frame(t: int, n: int, rng: np.random.Generator, command_full: bool = True) -> dict:
    """A frame whose image encodes the arm position (a bright square moving right) and whose joints ramp."""
    img = np.full((H, W, 3), 120, np.uint8)
    x = int(4 + (W - 12) * t / max(1, n - 1))
    img[20:28, x : x + 8] = 250
    img += rng.integers(0, 3, img.shape, dtype=np.uint8)
    state = np.zeros(16)
    state[:7] = 0.01 * t
    state[7] = 1.0 if t < n // 2 else 0.0
    state[15] = 1.0
    command = state.copy()
    command[:7] += 0.005  # the command leads the measured joints a little
    frame = {"observation": {"head_camera": {"rgb": img}}, "joint_action": np.zeros(14), "endpose": np.zeros(14),
             "joint_state_full": state}
    if command_full:
        frame["joint_command_full"] = command
    return frame


def write_episode(root: Path, index: int, n: int = 30, command_full: bool = True, listed: bool = True) -> Path:
    from frameplan_core.data.robotwin import EpisodeWriter

    rng = np.random.default_rng(index)
    with EpisodeWriter(root, TASK, "Tiny", index) as ep:
        for t in range(n):
            ep.add_frame(_frame(t, n, rng, command_full))
        ep.instructions = {"seen": ["stack the blocks"], "unseen": ["pile them up"]}
        if listed:
            ep.scene_info = {"task": TASK, "seed": 1000 * index, "save_freq": 15, "frames": n,
                             "segments": [{"step": 0, "instruction": "reach", "start_frame": 0, "end_frame": 10},
                                          {"step": 150, "instruction": "grasp", "start_frame": 10, "end_frame": n - 1}]}
    return ep.path


@pytest.fixture(scope="module")
def episodes(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("episodes")
    for i in range(4):
        write_episode(root, i)
    return root


@pytest.fixture(scope="module")
def cache(episodes, tmp_path_factory) -> Path:
    from frameplan_core.policy.data import build_cache

    out = tmp_path_factory.mktemp("cache") / "policy"
    build_cache(episodes, out, image_size=32, val_fraction=0.25)
    return out


def _config(**kw):
    from frameplan_core.policy import PolicyConfig

    base = {"image_size": 32, "channels": [8, 16, 16, 16], "hidden": 32, "state_hidden": 8}
    base.update(kw)
    return PolicyConfig(**base)


# ------------------------------------------------------------------------------------------------ network

@pytest.mark.parametrize("goal", [True, False])
def test_network_shapes_and_size(goal):
    from frameplan_core.policy import PolicyConfig
    from frameplan_core.policy.model import PolicyNet

    cfg = PolicyConfig(goal=goal)  # the shipped defaults
    net = PolicyNet(cfg)
    out = net(torch.zeros(2, cfg.in_channels, cfg.image_size, cfg.image_size), torch.zeros(2, 16))
    assert out.shape == (2, cfg.chunk, 16)
    assert net.parameter_count() < 3_000_000
    assert cfg.in_channels == (6 if goal else 3)


def test_config_refuses_bad_values():
    from frameplan_core.policy import PolicyConfig

    with pytest.raises(ConfigError, match="joint_dim=14"):
        PolicyConfig(joint_dim=14)
    with pytest.raises(ConfigError, match="image_size=100"):
        PolicyConfig(image_size=100)
    with pytest.raises(ConfigError, match="action_std"):
        PolicyConfig(stats={"state_mean": [0] * 16, "state_std": [1] * 16, "action_mean": np.zeros((8, 16)).tolist(),
                            "action_std": np.zeros((8, 16)).tolist()})
    with pytest.raises(ConfigError, match="preset"):
        PolicyConfig.preset("huge")


# ------------------------------------------------------------------------------------------------ data

def test_cache_holds_every_frame_and_splits_by_episode(cache):
    from frameplan_core.data import splits
    from frameplan_core.policy.data import load_index, open_arrays

    index = load_index(cache)
    arrays = open_arrays(cache)
    assert index["frames"] == 120 and len(index["episodes"]) == 4
    assert arrays["frames"].shape == (120, 32, 32, 3) and arrays["frames"].dtype == np.uint8
    assert arrays["state"].shape == arrays["command"].shape == (120, 16)
    sp = splits.load(cache)
    assert len(sp["episodes"]["val"]) == 1 and len(sp["episodes"]["train"]) == 3
    ep = index["episodes"][1]
    assert ep["start"] == 30 and ep["segments"][0][:2] == [0, 10] and ep["instruction"] == "stack the blocks"


def test_samples_targets_goals_and_stats(cache):
    from frameplan_core.policy.data import PolicySamples, open_arrays

    s = PolicySamples(cache, None, chunk=4, interval=5, segment_prob=0.0)
    arr = open_arrays(cache)
    i = 3  # frame 3 of the first episode
    x = s.get(i)
    assert x.t == 3 and x.goal_t == 8  # validation goal: exactly interval ahead
    np.testing.assert_array_equal(x.goal, arr["frames"][8])
    expected = arr["command"][4:8].astype(np.float64)
    expected[:, :7] -= arr["state"][3, :7]
    expected[:, 8:15] -= arr["state"][3, 8:15]
    np.testing.assert_allclose(x.action, expected, atol=1e-6)  # joints relative to the measured state
    assert x.action[0, 7] == arr["command"][4, 7]  # gripper commands stay absolute
    last = s.get(29)  # the last frame: targets repeat the last command, the goal is the frame itself
    assert last.goal_t == 29
    np.testing.assert_allclose(last.action[:, 0], np.full(4, arr["command"][29, 0] - arr["state"][29, 0]), atol=1e-6)
    rng = np.random.default_rng(0)
    offsets = [s.goal_at(10, rng) - 10 for _ in range(200)]
    assert min(offsets) >= 1 and max(offsets) <= 5 and len(set(offsets)) == 5  # uniform in 1..interval
    seg = PolicySamples(cache, None, chunk=4, interval=5, segment_prob=1.0)
    assert seg.goal_at(3, rng) == 10 and seg.goal_at(10, rng) == 29  # the end of the current step's segment
    st = s.stats()
    assert np.asarray(st["action_std"]).shape == (4, 16) and min(np.ravel(st["action_std"])) >= 1e-3
    assert s.task_frames() == {TASK: 30.0}


def test_cache_refresh_reuses_episodes_and_keeps_splits(episodes, tmp_path, caplog):
    import shutil

    from frameplan_core.data import splits
    from frameplan_core.policy.data import build_cache

    src = tmp_path / "src"
    shutil.copytree(episodes, src)
    out = tmp_path / "cache"
    build_cache(src, out, image_size=32, val_fraction=0.25)
    before = splits.episode_splits(splits.load(out))
    write_episode(src, 7)
    write_episode(src, 8, command_full=False)  # an older episode without the commands: skipped, named
    write_episode(src, 9, listed=False)  # not in scene_info.json yet (being written): left out
    with caplog.at_level(logging.INFO):
        index = build_cache(src, out, image_size=32, val_fraction=0.25)
    after = splits.episode_splits(splits.load(out))
    assert all(after[k] == v for k, v in before.items())  # no episode changes split as the data grows
    keys = [e["key"] for e in index["episodes"]]
    assert f"{TASK}/Tiny/episode7" in keys and f"{TASK}/Tiny/episode8" not in keys and f"{TASK}/Tiny/episode9" not in keys
    assert any("episode8" in m and "joint_command_full" in m for m in index["skipped"])
    assert "4 reused" in caplog.text
    with pytest.raises(DataError, match="episode8.*joint_command_full"):
        build_cache(src, tmp_path / "strict", image_size=32, skip_bad=False)


def test_cache_geometry_is_checked_not_resized(cache):
    from frameplan_core.policy.data import check_geometry

    assert check_geometry(cache, 32, "resize", "head_camera", "x", remedy="y")["image_size"] == 32
    with pytest.raises(DataError, match=r"holds 32 px resize head_camera frames but the policy reads 96 px resize "
                                        r"head_camera; rebuild"):
        check_geometry(cache, 96, "resize", "head_camera", "the policy reads", remedy="rebuild")
    with pytest.raises(ConfigError, match="front_camera"):
        check_geometry(cache, 32, "resize", "front_camera", "the config asks for", remedy="r", error=ConfigError)


def test_cache_errors_are_named(tmp_path):
    from frameplan_core.policy.data import build_cache, load_index

    with pytest.raises(DataError, match="no such folder"):
        build_cache(tmp_path / "missing", tmp_path / "c")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no usable episodes"):
        build_cache(tmp_path / "empty", tmp_path / "c")
    with pytest.raises(DataError, match="not a policy frame cache"):
        load_index(tmp_path / "empty")


# ------------------------------------------------------------------------------------------------ GoalPolicy

@pytest.fixture()
def trained_like(cache):
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.data import PolicySamples

    cfg = _config(chunk=4, stats=PolicySamples(cache, "train", 4, 5).stats())
    return GoalPolicy.from_config(cfg, seed=0)


def test_act_returns_absolute_commands_and_round_trips(trained_like, tmp_path):
    from frameplan_core.policy import GoalPolicy

    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    goal = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    state = np.linspace(-1, 1, 16)
    state[[7, 15]] = [1.0, 0.0]
    chunk = trained_like.act(image, state, goal)
    assert chunk.shape == (4, 16) and np.isfinite(chunk).all()
    assert ((chunk[:, [7, 15]] >= 0) & (chunk[:, [7, 15]] <= 1)).all()
    folder = trained_like.save_pretrained(tmp_path / "p")
    loaded = GoalPolicy.from_pretrained(folder)
    np.testing.assert_allclose(loaded.act(image, state, goal), chunk, atol=1e-6)
    assert loaded.config == trained_like.config
    # a goal of the same aspect ratio at another size is resized like the frame
    small_goal = goal[::2, ::2].copy()
    assert loaded.act(image, state, small_goal).shape == (4, 16)


def test_bad_goal_state_and_missing_goal_are_clear(trained_like):
    image = np.zeros((240, 320, 3), np.uint8)
    with pytest.raises(InputError, match=r"goal image is 128x128 but the camera frame is 320x240"):
        trained_like.act(image, np.zeros(16), np.zeros((128, 128, 3), np.uint8))
    with pytest.raises(InputError, match="pass a goal frame"):
        trained_like.act(image, np.zeros(16))
    with pytest.raises(InputError, match="expected 16 numbers.*shape \\(14,\\)"):
        trained_like.act(image, np.zeros(14), image)
    with pytest.raises(InputError, match="not finite"):
        trained_like.act(image, np.full(16, np.nan), image)
    with pytest.raises(InputError, match="uint8"):
        trained_like.act(image.astype(np.float32), np.zeros(16), image)


def test_no_goal_policy_ignores_goal(cache):
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.data import PolicySamples

    p = GoalPolicy.from_config(_config(goal=False, chunk=4, stats=PolicySamples(cache, None, 4, 5).stats()))
    image = np.zeros((240, 320, 3), np.uint8)
    np.testing.assert_array_equal(p.act(image, np.zeros(16)), p.act(image, np.zeros(16), np.ones((9, 9, 3), np.uint8)))


def test_goal_dropout_token_and_action_guidance(cache, tmp_path):
    """A policy trained with goal_dropout acts without a goal (the grey no-goal token); guidance blends its goal and
    no-goal outputs linearly (0: the no-goal output, 1: the goal output); both refused where they make no sense."""
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.data import PolicySamples

    stats = PolicySamples(cache, "train", 4, 5).stats()
    p = GoalPolicy.from_config(_config(chunk=4, stats=stats, goal_dropout=0.3), seed=3)
    rng = np.random.default_rng(2)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    goal = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    state = np.linspace(-0.5, 0.5, 16)
    with_goal, no_goal = p.act(image, state, goal), p.act(image, state)
    assert not np.allclose(with_goal, no_goal)  # the token is not the goal
    np.testing.assert_allclose(p.act(image, state, np.full_like(goal, 128)), no_goal, atol=1e-6)
    np.testing.assert_allclose(p.act(image, state, goal, guidance=1.0), with_goal, atol=1e-6)
    np.testing.assert_allclose(p.act(image, state, goal, guidance=0.0), no_goal, atol=1e-5)
    joints = [i for i in range(16) if i not in (7, 15)]
    twice = p.act(image, state, goal, guidance=2.0)[:, joints]  # joint outputs are linear in the network output
    np.testing.assert_allclose(twice, 2 * with_goal[:, joints] - no_goal[:, joints], atol=1e-5)
    p.config.guidance = 0.0  # the config's guidance is the default; it is saved and loaded with the policy
    np.testing.assert_allclose(p.act(image, state, goal), no_goal, atol=1e-5)
    assert GoalPolicy.from_pretrained(p.save_pretrained(tmp_path / "g")).config.guidance == 0.0
    with pytest.raises(ConfigError, match="guidance=11"):
        p.act(image, state, goal, guidance=11)
    plain = GoalPolicy.from_config(_config(chunk=4, stats=stats), seed=3)
    with pytest.raises(ConfigError, match="trained with goal_dropout > 0"):
        plain.act(image, state, goal, guidance=0.5)
    with pytest.raises(ConfigError, match="goal_dropout=1.0"):
        _config(goal_dropout=1.0)


def test_segment_onsets_are_oversampled_in_training_only(cache):
    from frameplan_training.config import PolicyTrainConfig
    from frameplan_training.policy_module import PolicyDataset

    from frameplan_core.policy.data import PolicySamples

    s = PolicySamples(cache, None, chunk=4, interval=5)
    onsets = s.onsets(3)
    assert sorted(np.flatnonzero(onsets[:30])) == [0, 1, 2, 10, 11, 12]  # the episode start and the step at frame 10
    assert onsets.sum() == 6 * len(s.episodes) and not s.onsets(0).any()
    cfg = PolicyTrainConfig(image_size=32, crop_res=32, chunk=4, interval=5, onset_frames=3, onset_repeat=4)
    train = PolicyDataset(cache, "train", cfg, augment=True)
    assert len(train) == len(train.samples) + 3 * 6 * len(train.samples.episodes)
    drawn = np.bincount(train.order, minlength=len(train.samples))
    assert drawn[0] == 4 and drawn[5] == 1 and drawn[11] == 4
    assert {train[(k, k)]["t"] for k in range(len(train)) if train.order[k] == 11} == {11}
    val = PolicyDataset(cache, "val", cfg, augment=False)
    assert len(val) == len(val.samples)  # validation sees every frame once
    with pytest.raises(ConfigError, match="onset_repeat=0"):
        PolicyTrainConfig(onset_repeat=0)


def test_goal_dropout_in_training_items(cache):
    from frameplan_training.config import PolicyTrainConfig
    from frameplan_training.policy_module import PolicyDataset

    def goals(dropout):
        cfg = PolicyTrainConfig(image_size=32, crop_res=32, chunk=4, interval=5, goal_dropout=dropout)
        ds = PolicyDataset(cache, "train", cfg, augment=True)
        return [ds[(i, 100 + i)]["images"][3:] for i in range(40)]

    tokens = [bool((g == 128).all()) for g in goals(0.5)]
    assert 5 < sum(tokens) < 35  # about half the goals are the exact token, after colour jitter and shifts
    assert not any((g == 128).all() for g in goals(0.0))
    cfg = PolicyTrainConfig(image_size=32, crop_res=32, chunk=4, interval=5, goal_dropout=0.5)
    assert not any((PolicyDataset(cache, "val", cfg, augment=False)[i]["images"][3:] == 128).all() for i in range(10))
    with pytest.raises(ConfigError, match="goal_dropout needs goal: true"):
        PolicyTrainConfig(goal=False, goal_dropout=0.2)


def test_broken_policy_folders_are_named(trained_like, tmp_path):
    from frameplan_core.policy import GoalPolicy

    folder = trained_like.save_pretrained(tmp_path / "p")
    meta = json.loads((folder / "policy.json").read_text())
    meta["config"]["joint_dim"] = 14
    bad = tmp_path / "arm14"
    bad.mkdir()
    (bad / "policy.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match=r"arm14: the policy commands 14 joints but this robot has 16"):
        GoalPolicy.from_pretrained(bad)
    with pytest.raises(ModelError, match="policy folder not found"):
        GoalPolicy.from_pretrained(tmp_path / "nothing")
    meta["config"]["joint_dim"] = 16
    meta["config"]["hidden"] = 64  # weights of hidden=32
    (bad / "policy.json").write_text(json.dumps(meta))
    (bad / "model.safetensors").write_bytes((folder / "model.safetensors").read_bytes())
    with pytest.raises(ModelError, match="weights do not fit the config.*shape mismatch"):
        GoalPolicy.from_pretrained(bad)
    (bad / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="cannot read the weights"):
        GoalPolicy.from_pretrained(bad)


# ------------------------------------------------------------------------------------------------ training

def test_frameplan_train_policy_from_episodes(episodes, tmp_path):
    """A few steps of `frameplan train policy` on RoboTwin episodes: the cache is built in OUT/data, the exported
    model carries the measured normalisation, a resume continues, and the baseline reuses the same cache."""
    from frameplan_cli.main import main
    from frameplan_core.policy import GoalPolicy

    small = ["--set", "image_size=32", "--set", "crop_res=32", "--set", "batch_size=4", "--set", "max_steps=3",
             "--set", "val_every_n_steps=3", "--set", "limit_val_batches=1", "--set", "sample_every_n_steps=3",
             "--set", "checkpoint_every_n_steps=3", "--set", "num_workers=0", "--set", "warmup_steps=1",
             "--set", "chunk=4", "--set", "interval=5", "--set", "val_fraction=0.25"]
    out = tmp_path / "run"
    assert main(["train", "policy", "--data", str(episodes), "--out", str(out), *small,
                 "--set", "goal_dropout=0.25"]) == 0
    model = GoalPolicy.from_pretrained(out / "model")
    assert model.config.goal and model.config.chunk == 4 and model.config.stats
    assert model.config.goal_dropout == 0.25 and model.act(np.zeros((24, 32, 3), np.uint8), np.zeros(16)).shape == (4, 16)
    assert model.config.task_frames == {TASK: 30.0}
    assert (out / "data" / "policy_cache.json").is_file() and list((out / "samples").glob("*.png"))
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["global_step"] == 3 and np.isfinite(summary["metrics"]["val/loss"])
    more = [a if a != "max_steps=3" else "max_steps=5" for a in small]
    assert main(["train", "policy", "--data", str(episodes), "--out", str(out), *more, "--set", "goal_dropout=0.25",
                 "--resume", "auto"]) == 0
    assert json.loads((out / "train_summary.json").read_text())["global_step"] == 5
    base = tmp_path / "baseline"
    assert main(["train", "policy", "--data", str(out / "data"), "--out", str(base), *small, "--set", "goal=false"]) == 0
    assert not GoalPolicy.from_pretrained(base / "model").config.goal
    assert main(["export", "policy", "--checkpoint", str(next((out / "checkpoints").glob("*.ckpt"))),
                 "--out", str(tmp_path / "exported")]) == 0
    exported = GoalPolicy.from_pretrained(tmp_path / "exported").config
    assert exported.stats == model.config.stats and exported.goal_dropout == 0.25


def test_train_policy_config_errors(cache, tmp_path, capsys):
    from frameplan_cli.main import main

    assert main(["train", "policy", "--data", str(cache), "--out", str(tmp_path / "r"), "--set", "crop_res=64"]) == 1
    assert "crop_res=64" in capsys.readouterr().err
    # a cache of another geometry is named, not silently resized
    assert main(["train", "policy", "--data", str(cache), "--out", str(tmp_path / "r"), "--set", "image_size=64",
                 "--set", "crop_res=64"]) == 1
    assert "holds 32 px resize head_camera frames" in capsys.readouterr().err


def test_training_lowers_the_loss(cache):
    """The module's loss on a fixed batch falls when it trains on it (the network can fit the targets)."""
    from frameplan_training.config import PolicyTrainConfig
    from frameplan_training.policy_module import PolicyDataset, PolicyModule, load_policy

    cfg = PolicyTrainConfig(image_size=32, crop_res=32, chunk=4, interval=5, batch_size=8)
    module = PolicyModule(cfg, load_policy(cfg))
    ds = PolicyDataset(cache, "train", cfg, augment=False)
    module.set_stats(ds.samples.stats())
    batch = torch.utils.data.default_collate([ds[i] for i in range(0, 80, 10)])
    opt = torch.optim.Adam(module.net.parameters(), lr=1e-3)
    first = None
    for _ in range(30):
        loss, _ = module.compute_loss(batch, None, train=True)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    module.net.eval()
    with torch.no_grad():
        assert module.compute_loss(batch, None, train=False)[0].item() < 0.5 * first


# ------------------------------------------------------------------------------------------------ following

def test_plan_follower_advances_on_closeness_or_budget():
    from frameplan_core.policy.follow import PlanFollower, frame_distance

    subgoals = [np.full((24, 32, 3), v, np.uint8) for v in (50, 100, 150)]
    f = PlanFollower(subgoals, budget=3, threshold=5.0)
    far = np.full((24, 32, 3), 0, np.uint8)
    assert frame_distance(far, subgoals[0]) == pytest.approx(50 * 0.587 + 50 * 0.299 + 50 * 0.114, abs=1)
    assert f.update(far, 1) is subgoals[0] and f.index == 0
    assert f.update(far, 2) is subgoals[1]  # budget of 3 steps spent
    assert f.update(np.full((24, 32, 3), 101, np.uint8), 1) is subgoals[2]  # subgoal 2 reached: move on
    assert f.advanced == [(3, "budget"), (4, "reached")]
    assert not f.exhausted
    f.update(far, 3)
    assert f.last and f.exhausted


def test_plan_frames_are_mapped_onto_the_camera_geometry():
    from frameplan_core.policy.follow import PlanFollower

    camera = np.zeros((240, 320, 3), np.uint8)
    frames = [np.full((64, 64, 3), 200, np.uint8)] * 9
    f = PlanFollower.from_plan(frames, camera, "center", budget=5)
    assert len(f.subgoals) == 8 and f.goal.shape == (240, 320, 3)
    assert f.goal[120, 160, 0] == 200 and f.goal[120, 5, 0] == 0  # the crop's borders come from the camera frame
    with pytest.raises(InputError, match="no subgoal"):
        PlanFollower.from_plan(frames[:1], camera, "center", budget=5)
    with pytest.raises(InputError, match="budget"):
        PlanFollower(frames, budget=0)


def test_oracle_matches_the_expert_timeline():
    from frameplan_core.policy.follow import OracleGoals

    expert = [np.full((24, 32, 3), 5 * i, np.uint8) for i in range(40)]
    o = OracleGoals(expert, horizon=10, window=20)
    assert o.goal(expert[7], step=0) is expert[17]  # matched frame 7, goal 10 ahead
    assert o.goal(expert[3], step=5) is expert[17]  # never matches backwards
    assert o.goal(expert[39], step=99) is expert[37]  # the match moves at most `window` frames ahead per call
    assert o.goal(expert[39], step=99) is expert[39]  # capped at the expert's last frame
    timed = OracleGoals(expert, horizon=10, sync="time")
    assert timed.goal(expert[0], step=4) is expert[14]


# ------------------------------------------------------------------------------------------------ rollout books

def test_wilson_interval():
    from frameplan_core.policy.rollout import wilson

    lo, hi = wilson(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.490, 0.943)  # the textbook value for 8/10
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0 and wilson(0, 0) == (0.0, 1.0)


def test_rollout_config_refuses_unknown_task_and_mode():
    from frameplan_core.policy.rollout import RolloutConfig, goal_text_scale

    with pytest.raises(ConfigError, match="unknown task.*block_juggle"):
        RolloutConfig(tasks=["block_juggle"]).validate()
    with pytest.raises(ConfigError, match="unknown mode.*telepathy"):
        RolloutConfig(modes=["telepathy"]).validate()
    assert RolloutConfig(modes=["none", "expert", "oracle"]).validate().modes == ["expert", "oracle", "none"]
    for bad in (11, -0.5, float("nan"), True):  # the policy's own range check, shared
        with pytest.raises(ConfigError, match=r"rollout guidance=.*must be a number in \[0, 10\]"):
            RolloutConfig(guidance=bad).validate()
    assert RolloutConfig(guidance=2).validate().guidance == 2
    for bad in (11, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"rollout ensemble=.*must be a number in \[-10, 10\]"):
            RolloutConfig(ensemble=bad).validate()
    assert RolloutConfig(ensemble=-0.5).validate().ensemble == -0.5
    with pytest.raises(ConfigError, match="rollout negative='other-hand': expected one of none, other-arm"):
        RolloutConfig(negative="other-hand").validate()
    for bad in (-1, 101, float("nan"), True, "7"):
        with pytest.raises(ConfigError, match=r"rollout text_scale=.*expected a number in \[0, 100\]"):
            RolloutConfig(text_scale=bad).validate()
    assert RolloutConfig(text_scale=25, negative="other-arm").validate().text_scale == 25
    for bad in (-1, float("nan"), "7"):
        with pytest.raises(ConfigError, match=r"rollout text_scale_after=.*expected a number in \[0, 100\]"):
            RolloutConfig(text_scale_after=bad).validate()
    cfg = RolloutConfig(text_scale=25, text_scale_after=3).validate()
    assert [goal_text_scale(cfg, k) for k in range(3)] == [25, 3, 3]
    assert [goal_text_scale(RolloutConfig(text_scale=25), k) for k in range(2)] == [25, 25]
    assert goal_text_scale(RolloutConfig(), 1) is None  # the model's own


def test_rollout_refuses_a_negative_arm_where_no_arm_is_named():
    """``--negative other-arm`` needs instructed episodes: refused before any episode, not as a wrong goal later."""
    from frameplan_core.policy.rollout import RolloutConfig, check_negative

    cfg = RolloutConfig(tasks=["blocks_stack_easy"], modes=["predictor"], negative="other-arm").validate()
    with pytest.raises(ConfigError, match="blocks_stack_easy episodes name no arm.*expert_strategy=instructed"):
        check_negative(cfg, [])
    check_negative(cfg, ["expert_strategy=instructed"])
    check_negative(RolloutConfig(tasks=["blocks_stack_easy"], modes=["none"], negative="other-arm").validate(), [])


def test_chunk_ensemble_averages_the_predictions_for_each_step():
    from frameplan_core.policy.ensemble import ChunkEnsemble

    a = np.arange(4, dtype=float)[:, None] * np.ones((4, 2))          # predicted at step 0: commands for steps 0..3
    b = 10 + np.arange(4, dtype=float)[:, None] * np.ones((4, 2))     # predicted at step 2: steps 2..5
    e = ChunkEnsemble(0.0)
    e.add(0, a)
    np.testing.assert_allclose(e.command(0), a[0])
    np.testing.assert_allclose(e.command(1), a[1])
    e.add(2, b)
    np.testing.assert_allclose(e.command(2), (a[2] + b[0]) / 2)       # two chunks cover step 2
    np.testing.assert_allclose(e.command(4), b[2])                    # only the newer one covers step 4
    k = 0.5
    w = ChunkEnsemble(k)
    w.add(0, a)
    w.add(2, b)
    np.testing.assert_allclose(w.command(3), (a[3] + np.exp(-k) * b[1]) / (1 + np.exp(-k)))   # the oldest weighs 1
    newest = ChunkEnsemble(-20.0)
    newest.add(0, a)
    newest.add(2, b)
    np.testing.assert_allclose(newest.command(3), b[1], atol=1e-6)
    e.add(6, b)                                                       # step 6: the first two chunks are dropped
    assert len(e._chunks) == 1
    with pytest.raises(ValueError, match="no chunk covers step 12"):
        e.command(12)
    with pytest.raises(ValueError, match="after one for step 6"):
        e.add(5, a)
    with pytest.raises(ValueError, match="finite"):
        ChunkEnsemble(float("nan"))


def test_results_summary_report_and_resume_checks(tmp_path):
    from frameplan_core.policy.rollout import EpisodeResult, Media, RolloutConfig, RolloutRun, load_previous

    cfg = RolloutConfig(tasks=[TASK], modes=["expert", "none"], episodes=2).validate()
    run = RolloutRun(tmp_path, cfg, "frameplan rollout ...", {})
    media = Media()
    for t in range(3):
        media.add(np.full((240, 320, 3), 60 * t, np.uint8), np.zeros((240, 320, 3), np.uint8), 0.24 * t)
    run.add(EpisodeResult(TASK, "none", 0, 2_000_000, True, 40, 600, 2.4, 3.0), media)
    run.add(EpisodeResult(TASK, "none", 1, 2_000_001, False, 90, 1350, 5.4, 5.0))
    res = json.loads((tmp_path / "results.json").read_text())
    v = res["summary"]["per_task"][TASK]["none"]
    assert (v["n"], v["successes"], v["rate"], v["mean_time_s"], v["mean_success_time_s"]) == (2, 1, 0.5, 3.9, 2.4)
    assert res["interrupted"] is False and res["seeds"]["base"] == 2_000_000
    assert "| blocks_stack_easy | none | 50 % (1/2) |" in (tmp_path / "report.md").read_text()
    assert (tmp_path / TASK / "none" / "rollout.gif").stat().st_size > 0
    assert (tmp_path / TASK / "none" / "contact_sheet.png").is_file()
    assert not [p for p in tmp_path.rglob(".*") if p.name.endswith(".tmp")]
    assert run.done(TASK, "none", 1) and not run.done(TASK, "expert", 0)
    assert len(load_previous(tmp_path, cfg)["episodes"]) == 2
    other = RolloutConfig(tasks=[TASK], modes=["expert", "none"], episodes=2, period=3).validate()
    with pytest.raises(ConfigError, match="other settings.*period: 10 -> 3"):
        load_previous(tmp_path, other)


def test_rollout_cli_bad_input_is_one_line(tmp_path, capsys):
    from frameplan_cli.main import main

    assert main(["rollout", "--task", "block_juggle", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "unknown --task 'block_juggle'" in err and err.count("\n") == 1
    assert main(["rollout", "--mode", "telepathy", "--out", str(tmp_path / "r")]) == 1
    assert "unknown --mode 'telepathy'" in capsys.readouterr().err
    assert main(["rollout", "--mode", "none", "--baseline", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 1
    assert "policy folder not found" in capsys.readouterr().err
    assert main(["rollout", "--mode", "oracle", "--guidance", "20", "--out", str(tmp_path / "r")]) == 1
    assert "guidance=20" in capsys.readouterr().err
    # the embedded goal policy was trained without goal_dropout: it cannot blend, nor stand in for the baseline
    assert main(["rollout", "--mode", "oracle", "--guidance", "0.5", "--out", str(tmp_path / "r")]) == 1
    assert "trained with goal_dropout > 0" in capsys.readouterr().err
    assert main(["rollout", "--mode", "none", "--baseline", "tiny", "--out", str(tmp_path / "r")]) == 1
    assert "this one needs goals" in capsys.readouterr().err
    # the embedded block_handover specialists act on that task only: any other is refused before anything is written
    assert main(["rollout", "--task", "all", "--mode", "oracle", "--mode", "none", "--policy", "handover",
                 "--baseline", "handover-nogoal", "--out", str(tmp_path / "r")]) == 1
    err = capsys.readouterr().err
    assert "trained on block_handover only, not on block_hammer_beat, blocks_stack_easy" in err and err.count("\n") == 1
    assert not (tmp_path / "r" / "results.json").exists()


def test_embedded_specialists_load_and_know_their_task_only():
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.config import EMBEDDED, SPECIALISTS
    from frameplan_core.sim.task_config import TASK_NAMES

    assert set(SPECIALISTS) == set(TASK_NAMES)
    for task, name in SPECIALISTS.items():
        goal, nogoal = GoalPolicy.from_pretrained(name), GoalPolicy.from_pretrained(f"{name}-nogoal")
        assert goal.config.goal and not nogoal.config.goal and {name, f"{name}-nogoal"} <= set(EMBEDDED)
        assert list(goal.config.task_frames) == list(nogoal.config.task_frames) == [task]
    assert set(GoalPolicy.from_pretrained("tiny").config.task_frames) == set(TASK_NAMES)


def test_fast_color_jitter_matches_the_shared_one():
    """The policy's OpenCV jitter draws the same factors as training/augment.color_jitter and gives the same
    images up to rounding (it exists only because the float version cost as much as a network step)."""
    from frameplan_training.augment import color_jitter
    from frameplan_training.policy_module import fast_color_jitter

    rng = np.random.default_rng(3)
    # mid-range values: the shared version clips once at the end, this one after brightness/contrast too
    images = [rng.integers(70, 180, (32, 32, 3), dtype=np.uint8) for _ in range(2)]
    fast = fast_color_jitter(images, np.random.default_rng(7), 0.3)
    slow = color_jitter(images, np.random.default_rng(7), 0.3)
    for a, b in zip(fast, slow):
        assert np.abs(a.astype(int) - b.astype(int)).max() <= 3
    assert not np.array_equal(fast[0], images[0])


# ------------------------------------------------------------------------------------------------ goal probe

def test_goal_probe_scores_true_and_wrong_goals(cache):
    """The probe's numbers are the policy's own errors with the goals it names: with a stride covering only the
    first sample, each mean equals that sample's error computed by hand."""
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.config import JOINTS
    from frameplan_core.policy.data import PolicySamples, commands_from_actions
    from frameplan_core.policy.probe import ALL, first_arm_probe, goal_probe, moving_arm

    samples = PolicySamples(cache, None, 4, 5)
    stats = samples.stats()
    policy = GoalPolicy.from_config(_config(chunk=4, interval=5, stats=stats), seed=0)
    base = GoalPolicy.from_config(_config(chunk=4, interval=5, goal=False, stats=stats), seed=1)
    r = goal_probe(policy, samples, baseline=base, stride=3)
    assert set(r["per_task"]) == {TASK, ALL}
    d = r["per_task"][ALL]
    assert d["n"] == len(range(0, len(samples), 3))
    assert all(np.isfinite(d[k]) and d[k] > 0 for k in ("true", "current", "other_episode", "far", "baseline"))

    one = goal_probe(policy, samples, baseline=base, stride=len(samples))["per_task"][TASK]
    smp = samples.get(0)
    target = commands_from_actions(smp.action, smp.state, "delta")[:, list(JOINTS)]

    def err(cmd):
        return np.abs(cmd[:, list(JOINTS)] - target).mean()

    assert one["n"] == 1
    assert one["true"] == pytest.approx(err(policy.act(smp.frame, smp.state, smp.goal)), rel=1e-6)
    assert one["current"] == pytest.approx(err(policy.act(smp.frame, smp.state, smp.frame)), rel=1e-6)
    assert one["baseline"] == pytest.approx(err(base.act(smp.frame, smp.state)), rel=1e-6)
    assert one["true"] != pytest.approx(one["current"], rel=1e-9)  # the goal reaches the network
    assert "no_goal" not in r["goals"]
    # a goal-dropout policy is also scored with its no-goal token, and the report keeps it apart from wrong goals
    gd = GoalPolicy.from_config(_config(chunk=4, interval=5, stats=stats, goal_dropout=0.3), seed=0)
    r2 = goal_probe(gd, samples, stride=len(samples))
    assert r2["goals"][-1] == "no_goal"
    assert r2["per_task"][TASK]["no_goal"] == pytest.approx(err(gd.act(smp.frame, smp.state)), rel=1e-6)
    from frameplan_training.evaluation import _policy_report

    r2.update(model="gd", baseline_model=None, data="d", split="val", episodes=2, stride=1, interval=5)
    # which arm moves first: each episode's first frame, the expert's arm from its recorded commands
    arms = first_arm_probe(gd, samples, baseline=base)
    assert arms["goals"] == ["true", "no_goal", "baseline"]
    a = arms["per_task"][ALL]
    firsts = [samples.get(samples.first_sample(k)) for k in range(len(samples.episodes))]
    wants = [moving_arm(commands_from_actions(f.action, f.state, "delta"), f.state) for f in firsts]
    gots = [moving_arm(gd.act(f.frame, f.state, f.goal), f.state) for f in firsts]
    assert all(f.t == 0 for f in firsts) and samples.first_sample(1) == samples.episodes[0]["length"]
    assert a["n"] == len(samples.episodes) and a["expert_left"] == wants.count("left")
    assert a["true"] == pytest.approx(np.mean([g == w for g, w in zip(gots, wants)]))
    state = np.zeros(16)
    left, right = np.zeros((4, 16)), np.zeros((4, 16))
    left[:, 2], right[:, 9] = 0.3, 0.3
    assert moving_arm(left, state) == "left" and moving_arm(right, state) == "right"
    r2["first_arm"] = arms
    report = _policy_report(r2, ALL)
    assert "| no_goal |" in report and "the same network without a goal (its no-goal token)" in report
    assert "## Which arm moves first?" in report and "| expert: left arm |" in report

    with pytest.raises(ConfigError, match="goal: false policy has no goal to probe"):
        goal_probe(base, samples)
    with pytest.raises(ConfigError, match="goal: false policy has no goal to probe"):
        first_arm_probe(base, samples)
    with pytest.raises(ConfigError, match="baseline must be a goal: false policy"):
        goal_probe(policy, samples, baseline=policy)


def test_frameplan_eval_policy(episodes, trained_like, cache, tmp_path, capsys):
    from frameplan_cli.main import main
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.data import PolicySamples

    model = trained_like.save_pretrained(tmp_path / "policy")
    base = GoalPolicy.from_config(_config(goal=False, chunk=4, stats=PolicySamples(cache, None, 4, 5).stats()))
    base_dir = base.save_pretrained(tmp_path / "baseline")
    out = tmp_path / "eval"
    assert main(["eval", "policy", "--data", str(episodes), "--model", str(model), "--baseline", str(base_dir),
                 "--stride", "7", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "policy goal probe on" in printed and "first frame of 4 episodes, share moving the expert's arm" in printed
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["episodes"] == 4 and metrics["split"] == "all episodes" and metrics["baseline"]
    report = (out / "report.md").read_text()
    assert f"| {TASK} |" in report and "baseline" in report
    assert metrics["first_arm"]["per_task"][TASK]["n"] == 4 and "## Which arm moves first?" in report
    # a frame cache: its held-out split by default
    assert main(["eval", "policy", "--data", str(cache), "--model", str(model), "--baseline", "none",
                 "--out", str(tmp_path / "eval_cache")]) == 0
    assert json.loads((tmp_path / "eval_cache" / "metrics.json").read_text())["split"] == "val"
    # bad input: one line each
    assert main(["eval", "policy", "--data", str(episodes), "--model", str(base_dir), "--out", str(tmp_path / "x")]) == 1
    err = capsys.readouterr().err
    assert "goal: false policy has no goal to probe" in err and err.count("\n") == 1
    assert main(["eval", "policy", "--data", str(episodes), "--model", str(model), "--split", "test",
                 "--baseline", "none", "--out", str(tmp_path / "y")]) == 1
    assert "an episodes folder has no splits" in capsys.readouterr().err
