"""SimEnv, the rollout API for any controller: determinism per seed, the expert through the same stepping function
as the collector, held/interpolated commands, rendering only when asked, success/done without the expert, and
clear errors for bad commands."""
from __future__ import annotations

import numpy as np
import pytest
from sim_episodes import TINY, TINY_H, TINY_W
from sim_episodes import camera_config as _camera_config

from frameplan_core.errors import ConfigError, InputError, SimError

pytest.importorskip("sapien")
pytest.importorskip("mplib")

pytestmark = pytest.mark.sim

REST = np.array([0.0, -0.25, 0.0, -2.3, 0.0, 2.05, np.pi / 4, 1.0] * 2)


def _env(tmp_path, **kw):
    from frameplan_core.sim.env import SimEnv

    kw.setdefault("cameras", ("head_camera",))
    return SimEnv(camera_type=TINY, overrides=[f"camera_config={_camera_config(tmp_path)}", "shadows=false"], **kw)


def _commands(n: int) -> list[np.ndarray]:
    """A small two-arm motion away from rest, the right gripper closing."""
    out = []
    for k in range(1, n + 1):
        c = REST.copy()
        c[[1, 3, 9, 11]] += 0.05 * k * np.array([1, -1, -1, 1])
        c[6] -= 0.1 * k  # joint 7: the wrist roll RoboTwin's 14-d joint_action leaves out
        c[15] = max(0.0, 1.0 - 0.25 * k)
        out.append(c)
    return out


def test_same_seed_same_commands_same_states_and_images(tmp_path):
    runs = []
    for seed in (5, 5, 6):
        with _env(tmp_path, render_every=2) as env:
            obs = [env.reset("blocks_stack_easy", seed)]
            cmds = _commands(4)
            obs += [env.step(c) for c in cmds[:3]] + [env.step(cmds[3], ticks=150)]  # the last held until reached
            runs.append((obs, env.object_poses()))
    (a, poses_a), (b, poses_b), (_, poses_c) = runs
    assert [o.rendered for o in a] == [True, False, True, False, True]
    for oa, ob in zip(a, b):
        assert oa.tick == ob.tick
        assert np.array_equal(oa.joint_state, ob.joint_state) and np.array_equal(oa.endpose, ob.endpose)
        if oa.rendered:
            assert np.array_equal(oa.rgb(), ob.rgb())
    assert poses_a == poses_b and poses_a != poses_c  # the seed places the objects
    last = a[-1]
    assert last.tick == 3 * 15 + 150 and last.sim_time == pytest.approx(0.78)
    assert last.rgb().shape == (TINY_H, TINY_W, 3) and "depth" not in last.images["head_camera"]
    # the arms reached the held command, joint 7 included (the 14-d RoboTwin vector has no room for it)
    assert np.abs(last.joint_state[:7] - last.command[:7]).max() < 0.01
    assert np.abs(last.joint_state[8:15] - last.command[8:15]).max() < 0.01
    assert last.joint_state[15] < 0.1  # the right gripper closed
    assert last.joint_action.shape == (14,) and last.endpose.shape == (14,)
    assert isinstance(last.instruction, str) and last.instruction and last.segment is None


def test_expert_through_env_matches_the_collectors_stream_and_succeeds(tmp_path):
    """The scripted expert's commands sent through SimEnv.step give the very states the collector records, and
    success() holds without the expert's stream having run (any controller)."""
    from frameplan_core.sim import make_task

    task = make_task("blocks_stack_easy", seed=0, cameras=())
    frames = [(f.joint_state_full, f.joint_command_full) for f in task.stream(save_freq=50)]
    assert task.success()
    task.close()
    with _env(tmp_path, cameras=(), render_every=0) as env:
        env.reset("blocks_stack_easy", 0)
        assert not env.success() and not env.done
        got, segments = [], set()
        cmds = env.expert()
        for cmd in cmds:
            if env.tick % 50 == 0:
                got.append((env.observe(render=False).joint_state, cmd.targets))
            obs = env.step(cmd, ticks=1)
            segments.add(obs.segment)
        assert env.task.expert_done and env.success() and env.done and not env.truncated
        final_frame = env.tick % 50 == 0  # the collector saves one more frame after the expert in that case
    assert len(got) == len(frames) - final_frame > 20
    for (sa, ca), (sb, cb) in zip(frames, got):
        assert np.array_equal(sa, sb) and np.array_equal(ca, cb)
    assert "grasp the black block" in segments


def test_hold_and_interpolate_send_the_expected_ticks(tmp_path):
    from frameplan_core.sim.scene import TIMESTEP

    with _env(tmp_path, cameras=(), render_every=0, ticks_per_step=4) as env:
        env.reset("block_handover", 0)
        sent = []
        real_tick = env.task.tick

        def recording_tick(targets=None, velocity=None):
            sent.append((None if targets is None else targets.copy(), None if velocity is None else velocity.copy()))
            real_tick(targets, velocity)

        env.task.tick = recording_tick
        a, b = _commands(2)
        obs = env.step(a)  # held (the default)
        assert [t is None for t, _ in sent] == [False, True, True, True] and np.array_equal(sent[0][0], a)
        assert sent[0][1] is None and np.array_equal(obs.command, a) and obs.tick == 4
        assert np.array_equal(env.task.arms["left"].arm_target, a[:7])
        assert env.task.arms["right"].gripper_opening == a[15]
        sent.clear()
        env.step(b, interpolate=True)
        d = b - a
        for k, (t, v) in enumerate(sent, start=1):
            assert np.allclose(t, a + d * k / 4, atol=1e-15)
            assert np.allclose(v, np.r_[d[0:7], d[8:15]] / (4 * TIMESTEP))  # the ramp's velocity as feed-forward
        assert np.array_equal(sent[-1][0], b)  # the step ends exactly on its target
        sent.clear()
        env.feedforward = False
        env.step(a, ticks=2, interpolate=True)
        assert len(sent) == 2 and all(v is None for _, v in sent)


def test_render_only_when_asked(tmp_path):
    with _env(tmp_path, render_every=0) as env:
        obs = env.reset("block_hammer_beat", 1)
        assert not obs.rendered
        with pytest.raises(InputError, match="did not render"):
            obs.rgb()
        assert not env.step(REST).rendered
        assert env.step(REST, render=True).rendered
        assert env.observe().rgb().shape == (TINY_H, TINY_W, 3)
    with _env(tmp_path, render_every=1, depth=True) as env:
        obs = env.reset("block_hammer_beat", 1)
        assert obs.rendered and obs.images["head_camera"]["depth"].shape == (TINY_H, TINY_W)
        assert not env.step(REST, render=False).rendered
    with _env(tmp_path, cameras=()) as env:
        assert not env.reset("block_hammer_beat", 1).rendered  # nothing to render: render_every is ignored
        with pytest.raises(ConfigError, match="no cameras"):
            env.step(REST, render=True)


def test_bad_commands_and_calls_are_clear_errors(tmp_path):
    from frameplan_core.sim.env import SimEnv
    from frameplan_core.sim.task_config import load_task_config

    env = _env(tmp_path, cameras=(), render_every=0, max_ticks=30)
    with pytest.raises(SimError, match="reset"):
        env.step(REST)
    with pytest.raises(ConfigError, match="choose one of"):
        env.reset("juggling", 0)
    env.reset("blocks_stack_easy", 0)
    with pytest.raises(InputError, match="16 numbers.*shape \\(14,\\)"):
        env.step(np.zeros(14))
    bad = REST.copy()
    bad[3] = np.nan
    with pytest.raises(InputError, match=r"\[3\] are not finite"):
        env.step(bad)
    with pytest.raises(InputError, match="ticks"):
        env.step(REST, ticks=0)
    wide = REST.copy()
    wide[7], wide[15] = 1.7, -0.2
    obs = env.step(list(wide))  # any sequence of 16 numbers; grippers clipped to [0, 1]
    assert obs.command[7] == 1.0 and obs.command[15] == 0.0 and wide[7] == 1.7
    assert not env.done
    env.step(REST)
    assert env.truncated and env.done and not env.success()  # 30 ticks, the budget
    env.close()
    with pytest.raises(ConfigError, match="blocks_stack_easy"):
        SimEnv(config=load_task_config("blocks_stack_easy"), cameras=()).reset("block_handover", 0)
    with pytest.raises(ConfigError, match="ticks_per_step"):
        SimEnv(ticks_per_step=0)


def test_bench_times_simenv_beside_the_direct_path(tmp_path, capsys):
    """`frameplan bench sim --api-only`: both paths replay the same commands to success in the same process, and
    the table quotes both with their ratio."""
    import json

    from frameplan_cli.main import main

    out = tmp_path / "bench.json"
    assert main(["bench", "sim", "--api-only", "--task", "blocks_stack_easy", "--api-tasks", "blocks_stack_easy",
                 "--api-reps", "1", "--api-render-ticks", "30", "--json", str(out)]) == 0
    api = json.loads(out.read_text())["rollout_api"]
    runs = api["per_task"]["blocks_stack_easy"]
    assert set(runs) == {"expert_direct", "expert_env", "replay_direct", "replay_env"}
    assert all(r["success"] and r["median_s"] > 0 for r in runs.values()), runs
    ticks = runs["expert_direct"]["ticks"]
    assert runs["expert_env"]["ticks"] == ticks and ticks - 15 < runs["replay_env"]["ticks"] <= ticks
    rates = api["steps_per_s"]
    assert len(rates) == 4 and all(r["median_steps_per_s"] > 0 for r in rates.values())
    text = capsys.readouterr().out
    assert f"| blocks_stack_easy | {ticks} |" in text and "SimEnv / direct" in text


def test_recorded_augmentation_record_rebuilds_the_same_look(tmp_path):
    """A replay applies scene_info's augmentation record instead of drawing one: with augmentation switched off in
    the config, the record alone reproduces the augmented episode's images exactly."""
    from frameplan_core.sim import make_task
    from sim_episodes import config

    cams = _camera_config(tmp_path)
    aug = make_task("block_handover", seed=3, camera_type=TINY,
                    config=config("block_handover", cams, **{"augmentation.enabled": "true"}))
    record = aug.scene_info["augmentation"]
    assert {"light", "table_texture", "block_colors", "head_camera_jitter"} <= set(record)
    want = aug.cameras.capture(("head_camera",), depth=False)["head_camera"]
    aug.close()
    with _env(tmp_path, render_every=1) as env:
        plain = env.reset("block_handover", 3)
        assert np.abs(plain.rgb().astype(int) - want["rgb"]).mean() > 5  # augmentation changes the look
        again = env.reset("block_handover", 3, augment=record)
        assert env.task.scene_info["augmentation"] == record
        assert np.array_equal(again.rgb(), want["rgb"])
        assert np.array_equal(again.images["head_camera"]["extrinsic_cv"], want["extrinsic_cv"])  # camera jitter
