"""SAPIEN simulation: real rendering (lavapipe on CPU), one short low-resolution episode per task, read back with
the RoboTwin reader, checked against the scene geometry, and converted to an InstructPix2Pix dataset."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sim_episodes
from sim_episodes import CAMERAS, TASKS, TINY, TINY_FOVY, TINY_H, TINY_W
from sim_episodes import camera_config as _camera_config
from sim_episodes import config as _config

from frameplan_core.errors import ConfigError, SimError

pytest.importorskip("sapien")
pytest.importorskip("mplib")

pytestmark = pytest.mark.sim

MOVED = {"block_hammer_beat": "hammer", "block_handover": "block", "blocks_stack_easy": "black"}
TABLE_Z = 0.74
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def collected(tmp_path_factory):
    """One episode per task (tiny images; all four cameras for the handover, the head camera for the others),
    written through the collector once per session (test_replay.py replays the same episodes)."""
    return sim_episodes.collected(tmp_path_factory)


def _episode(out: Path, task: str):
    from frameplan_core.data.robotwin import RoboTwinEpisode, episode_dir

    return RoboTwinEpisode(episode_dir(out, task, TINY, 0))


def test_import_does_not_load_sapien():
    code = "import sys, frameplan_core.sim as s; s.TASK_NAMES; assert 'sapien' not in sys.modules, 'sapien imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_lowpoly_simplify_keeps_the_surface():
    from frameplan_core.sim.lowpoly import simplify

    # a finely tessellated unit-ish sphere (non-indexed, like the glb parts): 3 vertices per triangle
    th, ph = np.meshgrid(np.linspace(0, np.pi, 60), np.linspace(0, 2 * np.pi, 120), indexing="ij")
    grid = np.stack([np.sin(th) * np.cos(ph), np.sin(th) * np.sin(ph), np.cos(th)], -1) * 0.05
    quads = [(i * 120 + j, (i + 1) * 120 + j, i * 120 + j + 1) for i in range(59) for j in range(119)]
    pts = grid.reshape(-1, 3)[np.array(quads)].reshape(-1, 3)
    tri = np.arange(len(pts)).reshape(-1, 3)
    v, f, n = simplify(pts.astype(np.float32), tri.astype(np.uint32), (pts / 0.05).astype(np.float32), 0.01)
    assert 50 < len(f) < len(tri) / 4
    assert np.all(np.abs(np.linalg.norm(v, axis=1) - 0.05) < 0.01)  # vertices stay on the surface
    assert np.all((f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]))  # no collapsed triangles
    assert np.allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-4)


def test_config_rejects_unknown_and_unsupported_fields(tmp_path):
    from frameplan_core.sim.task_config import load_task_config

    with pytest.raises(ConfigError, match="colour_of_table"):
        load_task_config("block_handover", None, ["colour_of_table=1"])
    with pytest.raises(ConfigError, match="raw_data"):
        load_task_config("block_handover", None, ["save_type.raw_data=true"])
    with pytest.raises(ConfigError, match="render_freq"):
        load_task_config("block_handover", None, ["render_freq=10"])
    bad = tmp_path / "bad.yaml"
    bad.write_text("task_name: block_handover\nsave_freq: 15\n")
    with pytest.raises(ConfigError, match="block_handover.*blocks_stack_easy|blocks_stack_easy.*block_handover"):
        load_task_config("blocks_stack_easy", bad)


def test_camera_types_from_config():
    from frameplan_core.sim.cameras import camera_type

    d = camera_type("D435")
    assert (d.w, d.h, d.fovy) == (320, 240, 37)
    assert d.fy == pytest.approx(358.64, abs=0.05)
    assert (camera_type("L515").w, camera_type("L515").h) == (320, 180)
    assert (camera_type("Large_D435").w, camera_type("Large_D435").h) == (640, 480)
    with pytest.raises(ConfigError, match="D999"):
        camera_type("D999")


@pytest.mark.parametrize("task", TASKS)
def test_episode_is_robotwin_and_plausible(collected, task):
    out, _, summaries = collected
    s = summaries[task]
    assert s.written == 1 and s.frames > 10, s.to_dict()
    ep = _episode(out, task)
    assert len(ep) == s.frames
    ep.validate()  # every pickle loads through the RoboTwin reader
    first, last = ep.frame(0), ep.frame(len(ep) - 1)
    assert sorted(first["observation"]) == sorted(CAMERAS[task])
    for cam, data in first["observation"].items():
        assert data["rgb"].shape == (TINY_H, TINY_W, 3) and data["rgb"].dtype == np.uint8
        assert data["rgb"].std() > 5, f"{cam} looks blank"
        assert data["depth"].dtype == np.float64 and data["depth"].shape == (TINY_H, TINY_W)
        K = data["intrinsic_cv"]
        fy = TINY_H / 2 / np.tan(np.deg2rad(TINY_FOVY) / 2)
        assert K[1, 1] == pytest.approx(fy, rel=1e-4) and K[0, 0] == pytest.approx(fy, rel=1e-4)
        assert K[0, 2] == pytest.approx(TINY_W / 2, abs=0.51) and K[1, 2] == pytest.approx(TINY_H / 2, abs=0.51)
    assert first["joint_action"].shape == (14,) and first["endpose"].shape == (14,)

    # Depth of the table seen by the head camera equals the ray/plane intersection from the recorded matrices.
    head = first["observation"]["head_camera"]
    E, K = head["extrinsic_cv"], head["intrinsic_cv"]
    R, t = E[:, :3], E[:, 3]
    C = -R.T @ t
    gl = head["cam2world_gl"]
    assert np.allclose(gl[:3, 3], C, atol=1e-4)
    for u in (TINY_W * 0.2, TINY_W * 0.5, TINY_W * 0.8):
        v = TINY_H - 1.5
        d = np.linalg.inv(K) @ np.array([u, v, 1.0])
        s_plane = (TABLE_Z - C[2]) / (R.T @ d)[2]
        expected_mm = 1000.0 * s_plane * d[2]
        measured = head["depth"][int(v), int(u)]
        assert abs(measured - expected_mm) < 20.0, (u, v, measured, expected_mm)
    assert 500 < expected_mm < 1500

    # The task object moved (pose record) and the pictures changed; the success check passed (else not written).
    info = ep.scene_info
    obj = info["objects"][MOVED[task]]
    assert np.linalg.norm(np.subtract(obj["final"][:3], obj["initial"][:3])) > 0.05
    assert np.abs(first["observation"]["head_camera"]["rgb"].astype(int) - last["observation"]["head_camera"]["rgb"]).mean() > 1.0
    assert info["seed"] == 0 and info["frames"] == len(ep)
    assert info["segments"] and info["segments"][0]["step"] == 0
    instr = ep.instructions
    assert len(instr["seen"]) >= 10 and len(instr["unseen"]) >= 5
    # endpose carries the TCP position: it moves, and stays above the table
    ends = np.stack([ep.frame(i)["endpose"] for i in range(len(ep))])
    assert np.all(ends[:, [2, 9]] > TABLE_Z)
    assert np.ptp(ends[:, 0:3], axis=0).max() > 0.05 or np.ptp(ends[:, 7:10], axis=0).max() > 0.05
    grip = np.stack([ep.frame(i)["joint_action"][[6, 13]] for i in range(len(ep))])
    assert grip.min() < 0.9 and grip.max() > 0.9  # a gripper closed on the object and was open at some point


def test_resume_skips_existing_episodes(collected):
    from frameplan_core.sim.collect import collect

    out, cams_yaml, _ = collected
    s = collect(_config("blocks_stack_easy", cams_yaml), out, workers=1, progress=False)
    assert s.written == 0 and s.skipped_existing == 1 and s.attempts == 0


@pytest.mark.slow
def test_parallel_workers(tmp_path, capfd):
    """Two spawned worker processes share the episode list; every episode is written once with its own seed, and
    the workers end without a traceback (a terminate during their shutdown used to print one)."""
    from frameplan_core.data.robotwin import RoboTwinEpisode, episode_dir
    from frameplan_core.sim.collect import collect

    cfg = _config("blocks_stack_easy", _camera_config(tmp_path), episode_num=3, save_freq=100,
                  cameras="[head_camera]")
    s = collect(cfg, tmp_path / "par", workers=2, progress=False)
    assert s.written == 3 and s.frames > 20 and [e["index"] for e in s.episodes] == [0, 1, 2]
    seeds = [RoboTwinEpisode(episode_dir(tmp_path / "par", "blocks_stack_easy", TINY, i)).scene_info["seed"]
             for i in range(3)]
    assert seeds == [e["seed"] for e in s.episodes] and seeds[0] % 1000 == 0 and len(set(seeds)) == 3
    err = capfd.readouterr().err
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]


def test_terminated_worker_leaves_no_partial_episode(tmp_path):
    """When one worker fails, the parent terminates the others mid-episode; the episode each was writing must be
    removed, not left as a hidden .partial folder (~140 MB for a 320x240 episode)."""
    import multiprocessing as mp
    import time

    from frameplan_core.data.robotwin import task_dir
    from frameplan_core.sim.collect import _worker

    cfg = _config("blocks_stack_easy", _camera_config(tmp_path), save_freq=1, cameras="[head_camera]")
    out = tmp_path / "data"
    ctx = mp.get_context("spawn")
    jobs, events = ctx.Queue(), ctx.Queue()
    jobs.put(0)
    jobs.put(None)
    p = ctx.Process(target=_worker, args=(cfg, str(out), jobs, events), daemon=True)
    p.start()
    tdir = task_dir(out, "blocks_stack_easy", TINY)
    deadline = time.monotonic() + 120
    while not (tdir.is_dir() and any(q.name.endswith(".partial") and q.name.startswith(".episode0")
                                     for q in tdir.iterdir())):
        assert p.is_alive() and time.monotonic() < deadline, "the worker never started writing episode 0"
        time.sleep(0.05)
    time.sleep(0.5)  # frames being written
    p.terminate()  # handled when the worker is back from C++ (a motion plan): seconds on a busy CPU
    p.join(timeout=120)
    assert p.exitcode is not None and not p.is_alive()
    assert [q.name for q in tdir.iterdir() if "episode0" in q.name] == []


def test_convert_to_instructpix2pix(collected, tmp_path):
    from frameplan_cli.main import main

    out, _, summaries = collected
    dst = tmp_path / "ip2p"
    assert main(["convert", "robotwin", str(out), str(dst), "--to", "ip2p", "--interval", "10"]) == 0
    seeds = json.loads((dst / "seeds.json").read_text())
    expected = sum(len(range(0, s.frames - 10, 10)) for s in summaries.values())
    n = sum(len(v) for _, v in seeds)
    assert n == expected and n >= 6
    d, ss = seeds[0]
    assert (dst / d / f"{ss[0]}_0.jpg").is_file() and (dst / d / f"{ss[0]}_1.jpg").is_file()


def test_same_seed_identical_frames_and_live_api(tmp_path):
    from frameplan_core.sim import make_task

    cfg = _config("block_hammer_beat", _camera_config(tmp_path))
    runs = []
    for _ in range(2):
        task = make_task("block_hammer_beat", seed=7, camera_type=TINY, cameras=("head_camera",), config=cfg)
        frames = []
        for f in task.stream(save_freq=100):
            frames.append(f)
            if len(frames) == 4:
                break
        task.close()
        runs.append(frames)
    a, b = runs
    assert [f.index for f in a] == list(range(4))
    assert isinstance(a[0].instruction, str) and a[0].instruction
    assert a[0].sim_time == 0.0 and a[1].sim_time == pytest.approx(100 / 250)
    for fa, fb in zip(a, b):
        assert np.array_equal(fa.observation["head_camera"]["rgb"], fb.observation["head_camera"]["rgb"])
        assert np.array_equal(fa.observation["head_camera"]["depth"], fb.observation["head_camera"]["depth"])
        assert np.array_equal(fa.joint_action, fb.joint_action)
    assert not np.array_equal(a[0].observation["head_camera"]["rgb"], a[-1].observation["head_camera"]["rgb"])


def test_augmentation_and_pointcloud(tmp_path):
    from frameplan_core.sim import make_task

    yaml_ = _camera_config(tmp_path)
    plain = make_task("blocks_stack_easy", seed=3, camera_type=TINY, config=_config("blocks_stack_easy", yaml_))
    aug = make_task("blocks_stack_easy", seed=3, camera_type=TINY, config=_config(
        "blocks_stack_easy", yaml_, **{"augmentation.enabled": "true", "data_type.pointcloud": "true",
                                       "pcd_down_sample_num": 128}))
    fp, fa = next(plain.stream()), next(aug.stream())
    # same objects (augmentation draws from its own random stream), different looks, recorded in scene_info
    assert plain.layout == aug.layout
    rec = aug.scene_info["augmentation"]
    assert {"light", "table_color", "wall_color", "head_camera_jitter"} <= set(rec)
    assert "block_colors" not in rec  # red and black define blocks_stack_easy
    assert np.abs(fp.observation["head_camera"]["rgb"].astype(int) - fa.observation["head_camera"]["rgb"]).mean() > 5
    assert not np.allclose(fp.observation["head_camera"]["extrinsic_cv"], fa.observation["head_camera"]["extrinsic_cv"])
    pc = fa.pointcloud
    assert pc.shape == (128, 6) and np.all(pc[:, 2] > TABLE_Z) and np.all((pc[:, 3:] >= 0) & (pc[:, 3:] <= 1))
    assert fp.pointcloud == []
    plain.close()
    aug.close()


def test_unreachable_motion_is_a_planning_error(tmp_path):
    from frameplan_core.sim import make_task
    from frameplan_core.sim.robots import PlanningError, top_down_quat

    task = make_task("block_handover", seed=0, camera_type=TINY, cameras=(),
                     config=_config("block_handover", _camera_config(tmp_path)))
    with pytest.raises(PlanningError, match="left arm"):
        list(task.move("left", [1.5, -1.0, 0.9], top_down_quat(0.0), "far away"))
    assert not task.success()
    task.close()


def test_handover_expert_falls_back_to_a_reachable_hand_over_point(tmp_path):
    """Seed 3,000,005 (a rollout val scene): the left arm cannot bring the block to the preferred hand-over point.
    Without the fallback the expert gives up on a scene a policy solves; with it (the default) it tries nearby points
    and succeeds. move_reachable takes the first reachable candidate and raises the first error when none is."""
    from frameplan_core.sim import make_task
    from frameplan_core.sim.robots import PlanningError, top_down_quat

    yaml_ = _camera_config(tmp_path)
    strict = make_task("block_handover", seed=3000005, camera_type=TINY, cameras=(),
                       config=_config("block_handover", yaml_, plan_fallback="false"))
    with pytest.raises(PlanningError, match="to the middle"):
        _run_expert(strict)
    strict.close()
    task = make_task("block_handover", seed=3000005, camera_type=TINY, cameras=(),
                     config=_config("block_handover", yaml_))
    assert task.cfg.plan_fallback and _run_expert(task)
    task.close()

    arm = make_task("block_handover", seed=0, camera_type=TINY, cameras=(),
                    config=_config("block_handover", yaml_))
    p, q = arm.commanded_tcp("left")
    list(arm.move_reachable("left", [[1.5, -1.0, 0.9], p + [0.0, 0.0, 0.05]], q, "up"))
    assert np.allclose(arm.commanded_tcp("left")[0], p + [0.0, 0.0, 0.05], atol=2e-3)
    with pytest.raises(PlanningError, match="far away"):
        list(arm.move_reachable("left", [[1.5, -1.0, 0.9], [1.6, -1.0, 0.9]], top_down_quat(0.0), "far away"))
    arm.close()


def test_missing_vulkan_driver_is_a_clear_error(tmp_path):
    env = dict(os.environ, VK_ICD_FILENAMES=str(tmp_path / "no_such_icd.json"))
    env.pop("VK_DRIVER_FILES", None)
    code = ("from frameplan_core.sim import make_task\n"
            "from frameplan_core.errors import SimError\n"
            "try:\n    make_task('block_handover', seed=0)\n"
            "except SimError as e:\n    print('SIMERROR', e)\n")
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, cwd=REPO, timeout=120,
                          check=False)
    assert "SIMERROR" in proc.stdout, proc.stdout + proc.stderr
    assert "Vulkan driver" in proc.stdout and "lavapipe" in proc.stdout and "no_such_icd.json" in proc.stdout


def test_assets_fetch_is_idempotent_and_errors_are_clear(tmp_path, monkeypatch):
    from frameplan_core.sim import assets

    proc = subprocess.run([str(REPO / "scripts" / "fetch_assets.sh")], capture_output=True, text=True, timeout=600,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert "present" in proc.stdout or "ready" in proc.stdout
    assert (assets.panda_dir(fetch=False) / assets.URDF_NAME).is_file()
    monkeypatch.setenv("FRAMEPLAN_PANDA_DIR", str(tmp_path))
    with pytest.raises(SimError, match="FRAMEPLAN_PANDA_DIR"):
        assets.panda_dir()


def test_collect_cli_with_preview(tmp_path):
    from frameplan_cli.main import main
    from frameplan_core.image import read_image

    yaml_ = _camera_config(tmp_path)
    out = tmp_path / "cli"
    rc = main(["collect", "--task", "block_handover", "--episodes", "1", "--out", str(out), "--cameras", "head_camera",
               "--camera-type", TINY, "--save-freq", "100", "--set", f"camera_config={yaml_}", "--set", "shadows=false",
               "--preview", "--no-progress", "--summary-json", str(tmp_path / "s.json")])
    assert rc == 0
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["written"] == 1 and summary["failures"] == 0
    png = out / f"block_handover_{TINY}_pkl" / "preview_episode0.png"
    img = read_image(png)
    assert img.shape[0] >= TINY_H and img.shape[1] > 4 * TINY_W
    assert main(["collect", "--task", "block_handover", "--out", str(out), "--set", "bogus=1"]) == 1


def test_varied_expert_strategy_is_hidden_recorded_and_succeeds(tmp_path):
    """``expert_strategy: varied`` (the data where a goal frame carries what the current frame cannot): the same
    scene and first frame as ``fixed``, a recorded per-episode choice, and the far arm really does the stacking."""
    from frameplan_core.sim import make_task
    from frameplan_core.sim.robots import ARM_DOF

    yaml_ = _camera_config(tmp_path)
    fixed_cfg = _config("blocks_stack_easy", yaml_)
    varied_cfg = _config("blocks_stack_easy", yaml_, expert_strategy="varied")
    with pytest.raises(ConfigError, match="expert_strategy"):
        _config("blocks_stack_easy", yaml_, expert_strategy="random")
    chosen, far_seed = [], None
    for seed in range(12):
        task = make_task("blocks_stack_easy", seed=seed, camera_type=TINY, cameras=(), config=varied_cfg)
        arm = task.layout["strategy"]["arm"]
        chosen.append(arm)
        if far_seed is None and arm != task.layout["arm"]:
            far_seed = seed
        task.close()
    assert set(chosen) == {"left", "right"} and far_seed is not None

    fixed = make_task("blocks_stack_easy", seed=far_seed, camera_type=TINY, cameras=("head_camera",), config=fixed_cfg)
    varied = make_task("blocks_stack_easy", seed=far_seed, camera_type=TINY, cameras=("head_camera",),
                       config=varied_cfg)
    assert "strategy" not in fixed.layout and fixed.scene_info["layout"] == fixed.layout
    assert {k: v for k, v in varied.layout.items() if k != "strategy"} == fixed.layout
    first_f, first_v = next(fixed.stream()), next(varied.stream())
    assert np.array_equal(first_f.observation["head_camera"]["rgb"], first_v.observation["head_camera"]["rgb"])
    assert varied.scene_info["layout"]["strategy"] == {"arm": varied.side} and varied.side != fixed.layout["arm"]
    fixed.close()
    varied.close()

    task = make_task("blocks_stack_easy", seed=far_seed, camera_type=TINY, cameras=(), config=varied_cfg)
    start = task.joint_command()
    for cmd in task.expert_commands():
        task.tick(cmd.targets, cmd.velocity)
    assert task.success()
    moved = np.abs(task.joint_command() - start)
    left, right = moved[:ARM_DOF].max(), moved[ARM_DOF + 1:2 * ARM_DOF + 1].max()  # joints, not grippers
    assert (left > 0.2 > right) if task.side == "left" else (right > 0.2 > left)
    task.close()

    hand = make_task("block_handover", seed=far_seed, camera_type=TINY, cameras=(),
                     config=_config("block_handover", yaml_, expert_strategy="varied"))
    x, y, z = hand.layout["strategy"]["handover_xyz"]
    assert -0.06 <= x <= 0.06 and 0.16 <= z - TABLE_Z <= 0.24 and np.allclose(hand.handover, [x, y, z], atol=1e-4)
    hand.close()


def _run_expert(task) -> bool:
    for cmd in task.expert_commands():
        task.tick(cmd.targets, cmd.velocity)
    return task.success()


@pytest.mark.parametrize("name", ["blocks_stack_easy", "block_hammer_beat"])
def test_instructed_strategy_names_the_arm_and_success_asks_for_it(tmp_path, name):
    """``expert_strategy: instructed``: the varied arm choice, named in every paraphrase of the episode's
    instruction, and the task only succeeds when that arm does the work: the expert following the instruction
    succeeds, the same expert with the other arm (a policy that guessed wrong) does not."""
    from frameplan_core.data.instructions import for_episode
    from frameplan_core.sim import make_task

    yaml_ = _camera_config(tmp_path)
    cfg = _config(name, yaml_, expert_strategy="instructed")
    task = make_task(name, seed=4, camera_type=TINY, cameras=(), config=cfg)
    arm = task.named_arm
    assert arm == task.layout["strategy"]["arm"] == task.side
    ins = task.instructions()
    other = task.other_arm(arm)
    assert ins["seen"] and ins["unseen"]
    assert all(arm in t for t in ins["seen"] + ins["unseen"])
    assert not any(other in t for t in ins["seen"] + ins["unseen"])
    assert _run_expert(task)
    task.close()

    wrong = make_task(name, seed=4, camera_type=TINY, cameras=(), config=cfg)
    wrong.side = other  # the expert's motions, with the arm the instruction did not name
    try:
        done = _run_expert(wrong)
    except SimError:  # the far arm's motion may not plan from every scene: then it also does not succeed
        done = False
    assert not done
    wrong.close()

    # arm_choice swapped: the same scene, the other arm named (the drawn episode's counterfactual)
    swapped = make_task(name, seed=4, camera_type=TINY, cameras=(),
                        config=_config(name, yaml_, expert_strategy="instructed", arm_choice="swapped"))
    assert swapped.named_arm == swapped.side == other
    assert all(other in t for t in swapped.instructions()["seen"])
    for key, actor in task.objects.items():
        assert np.allclose(actor.pose.p, swapped.objects[key].pose.p)
    swapped.close()
    with pytest.raises(SimError, match="arm_choice"):
        make_task(name, seed=4, camera_type=TINY, cameras=(), config=_config(name, yaml_, arm_choice="swapped"))

    fixed = make_task(name, seed=4, camera_type=TINY, cameras=(), config=_config(name, yaml_))
    assert fixed.named_arm is None and fixed.instructions() == for_episode(name, 4)
    fixed.close()


def test_instructed_handover_names_the_giver_and_success_asks_for_the_other_mat(tmp_path):
    """block_handover ``instructed``: the block in the middle, a mat on either side; the instruction names the arm
    that picks the block up with one side word per sentence, in a giver phrase at its end (a template that tells the
    direction loses it first: order alone barely moves the text embedding) and the task
    succeeds only with the block on the taker's mat: the expert following the instruction succeeds, the same
    expert with the other giver does not. The default scene is untouched; varied keeps its hand-over point."""
    from frameplan_core.data.instructions import for_episode, swap_sides
    from frameplan_core.sim import make_task

    yaml_ = _camera_config(tmp_path)
    cfg = _config("block_handover", yaml_, expert_strategy="instructed")
    task = make_task("block_handover", seed=0, camera_type=TINY, cameras=(), config=cfg)
    assert task.named_arm == task.side == task.layout["strategy"]["arm"] == "right"
    (lx, _), (rx, _) = task.targets["left"], task.targets["right"]
    assert lx < -0.15 and rx > 0.15 and abs(task.layout["block_xy_yaw"][0]) <= 0.04
    ins, other = task.instructions(), task.instructions(arm="left")
    for split in ("seen", "unseen"):
        assert len(ins[split]) == len(for_episode("block_handover", 0)[split])
        for a, b in zip(ins[split], other[split]):
            assert a != b and swap_sides(a) == b  # only the direction differs
            assert len(re.findall(r"\b(left|right)\b", a)) == 1, a  # one word tells it
    assert any(t.startswith("hand the block over from one arm to the other, ") for t in ins["seen"])
    assert _run_expert(task)
    task.close()

    wrong = make_task("block_handover", seed=0, camera_type=TINY, cameras=(), config=cfg)
    wrong.side = "left"  # the expert handing over in the direction the instruction did not name
    try:
        done = _run_expert(wrong)
    except SimError:
        done = False
    assert not done and np.linalg.norm(wrong.objects["block"].pose.p[:2] - wrong.targets["right"]) < 0.04
    wrong.close()

    fixed = make_task("block_handover", seed=0, camera_type=TINY, cameras=(), config=_config("block_handover", yaml_))
    assert fixed.named_arm is None and "target_left" not in fixed.objects and fixed.layout["block_xy_yaw"][0] < -0.15
    assert fixed.instructions() == for_episode("block_handover", 0)
    fixed.close()
    with pytest.raises(SimError, match="arm_choice"):  # varied moves the hand-over point: no arm to swap
        make_task("block_handover", seed=0, camera_type=TINY, cameras=(),
                  config=_config("block_handover", yaml_, expert_strategy="varied", arm_choice="swapped"))
