"""The closed loop in SAPIEN, kept working in CI: one short blocks_stack_easy episode collected with a small head
camera, the policy's frame cache built from it, a goal-conditioned policy and its no-foresight baseline trained a
few steps through `frameplan train policy`, then `frameplan rollout` for one episode of every mode (few steps;
success is not expected of policies this untrained, the scripted expert must succeed) and a rollout stopped by
SIGTERM that keeps its finished episodes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sapien")
pytest.importorskip("mplib")

pytestmark = pytest.mark.sim

TASK = "blocks_stack_easy"
TINY = "Tiny"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    """One collected episode (96x72 head camera, no shadows) and the --sim-set overrides that match it."""
    from frameplan_core.sim.collect import collect
    from frameplan_core.sim.task_config import load_task_config

    root = tmp_path_factory.mktemp("rollout")
    cams = root / "cameras.yaml"
    cams.write_text(f"{TINY}: {{w: 96, h: 72, fovy: 37.0}}\n")
    overrides = [f"camera_config={cams}", f"head_camera_type={TINY}", "shadows=false"]
    cfg = load_task_config(TASK, None, overrides + ["episode_num=1", "cameras=[head_camera]"])
    summary = collect(cfg, root / "data", workers=1, progress=False)
    assert summary.written == 1
    return root, overrides


@pytest.fixture(scope="module")
def policies(sim):
    """A goal-conditioned policy and the no-foresight baseline, 2 optimizer steps each on the collected episode."""
    from frameplan_cli.main import main

    root, _ = sim
    small = ["--set", "image_size=32", "--set", "crop_res=32", "--set", "batch_size=8", "--set", "max_steps=2",
             "--set", "val_every_n_steps=0", "--set", "val_every_n_epochs=0", "--set", "sample_every_n_steps=0",
             "--set", "num_workers=0", "--set", "warmup_steps=1", "--set", "val_fraction=0"]
    assert main(["train", "policy", "--data", str(root / "data"), "--out", str(root / "goal"), *small]) == 0
    assert main(["train", "policy", "--data", str(root / "goal" / "data"), "--out", str(root / "nogoal"), *small,
                 "--set", "goal=false"]) == 0
    return root / "goal" / "model", root / "nogoal" / "model"


def test_cache_from_a_collected_episode(sim, policies):
    from frameplan_core.data.robotwin import RoboTwinEpisode, episode_dir
    from frameplan_core.policy.data import PolicySamples, load_index, open_arrays

    root, _ = sim
    ep = RoboTwinEpisode(episode_dir(root / "data", TASK, TINY, 0))
    cache = root / "goal" / "data"
    index = load_index(cache)
    assert index["frames"] == len(ep) > 50 and index["episodes"][0]["seed"] == 0
    arrays = open_arrays(cache)
    np.testing.assert_allclose(arrays["command"], ep.joint_commands(), atol=1e-6)
    assert [s[2] for s in index["episodes"][0]["segments"]][:1] == [ep.scene_info["segments"][0]["instruction"]]
    s = PolicySamples(cache, None, 8, 50)
    assert s.get(0).action.shape == (8, 16) and len(s) == len(ep)


class RecordedCommands:
    """A scripted controller with the policy's interface: the chunk the expert actually commanded next (the
    recorded ``joint_command_full`` of frames t+1 .. t+chunk)."""

    def __init__(self, commands: np.ndarray, execute: int) -> None:
        from frameplan_core.policy import PolicyConfig

        self.commands, self.execute, self.t = commands, execute, 0
        self.config = PolicyConfig(goal=False)

    def act(self, image, joint_state, goal=None):
        idx = np.minimum(self.t + np.arange(1, self.config.chunk + 1), len(self.commands) - 1)
        self.t += self.execute
        return self.commands[idx]


@pytest.mark.parametrize("ensemble,calls_every", [(None, 4), (0.01, 1)], ids=["execute-4", "ensemble"])
def test_recorded_commands_succeed_through_the_policy_loop(sim, ensemble, calls_every):
    """The loop's conventions match the data's: sending each predicted chunk the way run_policy does (interpolated
    steps of 15 ticks, binary gripper, re-rendering every ``execute`` steps) with the expert's own recorded commands
    as the "prediction" reproduces the expert's success on its seed. With ``ensemble`` the policy is asked at every
    step and each chunk's command for a step is averaged with the older chunks' commands for the same step:
    recorded commands (every chunk agrees) still succeed."""
    from frameplan_core.data.robotwin import RoboTwinEpisode, episode_dir
    from frameplan_core.policy.rollout import Models, RolloutConfig, make_env, run_policy

    root, overrides = sim
    ep = RoboTwinEpisode(episode_dir(root / "data", TASK, TINY, 0))
    commands = ep.joint_commands()
    cfg = RolloutConfig(tasks=[TASK], modes=["none"], execute=4, ensemble=ensemble,
                        max_steps=len(commands) + 20).validate()
    env = make_env("head_camera", 15, overrides)
    try:
        res = run_policy(env, "none", Models(baseline=RecordedCommands(commands, calls_every)), TASK, 0,
                         ep.scene_info["seed"], cfg)
    finally:
        env.close()
    assert res.success, res
    assert res.steps <= len(commands)


def test_rollout_every_mode_one_short_episode(sim, policies, tmp_path, capsys):
    from frameplan_cli.main import main

    _, overrides = sim
    goal, nogoal = policies
    out = tmp_path / "run"
    sets = [a for o in overrides for a in ("--sim-set", o)]
    args = ["rollout", "--task", TASK, "--mode", "all", "--episodes", "1", "--max-steps", "4", "--period", "2",
            "--execute", "2", "--policy", str(goal), "--baseline", str(nogoal), "--samples", "1", "--out", str(out), *sets]
    rc = main(args)
    assert rc == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    eps = {e["mode"]: e for e in res["episodes"]}
    assert set(eps) == {"expert", "oracle", "predictor", "planner", "none"}
    assert eps["expert"]["success"] and eps["expert"]["seed"] == 2_000_000 and eps["expert"]["error"] is None
    for mode in ("oracle", "predictor", "planner", "none"):
        assert eps[mode]["steps"] == 4 and eps[mode]["ticks"] == 60, eps[mode]
    assert eps["oracle"]["goal_calls"] == 2 and eps["predictor"]["goal_calls"] == 2 and eps["planner"]["goal_calls"] == 1
    assert eps["none"]["goal_calls"] == 0 and res["interrupted"] is False
    assert res["summary"]["per_task"][TASK]["expert"]["rate"] == 1.0
    for mode in eps:
        assert (out / TASK / mode / "rollout.gif").stat().st_size > 0
        assert (out / TASK / mode / "contact_sheet.png").is_file()
    assert "| blocks_stack_easy | expert | 100 % (1/1) |" in (out / "report.md").read_text()
    # --resume with everything done runs nothing and keeps the results
    assert main([*args, "--resume"]) == 0
    assert len(json.loads((out / "results.json").read_text())["episodes"]) == 5


def test_two_workers_give_the_serial_results(sim, policies, tmp_path, capsys):
    """``--workers 2`` runs the scenes on spawned processes (frameplan_core.sim.workers): the same episodes, seeds
    and outcomes as one worker, media sent back through the event queue, no worker left running."""
    from frameplan_cli.main import main

    _, overrides = sim
    goal, nogoal = policies
    sets = [a for o in overrides for a in ("--sim-set", o)]
    runs = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert main(["rollout", "--task", TASK, "--mode", "none", "--episodes", "2", "--max-steps", "3",
                     "--execute", "2", "--policy", str(goal), "--baseline", str(nogoal), "--workers", str(workers),
                     "--out", str(out), *sets]) == 0, capsys.readouterr().err
        eps = json.loads((out / "results.json").read_text())["episodes"]
        runs[workers] = sorted((e["episode"], e["seed"], e["steps"], e["ticks"], e["success"], e["error"]) for e in eps)
        assert (out / TASK / "none" / "rollout.gif").stat().st_size > 0
    assert runs[2] == runs[1] and [r[1] for r in runs[1]] == [2_000_000, 2_000_001]
    import multiprocessing as mp

    assert mp.active_children() == []


def test_negative_arm_only_touches_predictor_goals(sim, policies, tmp_path, capsys):
    """``--negative other-arm`` concerns the predictor's goals alone: without predictor mode it is no reason to
    refuse a task whose episodes name no arm, nor to fail its episodes."""
    from frameplan_cli.main import main

    _, overrides = sim
    goal, nogoal = policies
    sets = [a for o in overrides for a in ("--sim-set", o)]
    out = tmp_path / "run"
    assert main(["rollout", "--task", TASK, "--mode", "none", "--episodes", "1", "--max-steps", "2", "--execute", "2",
                 "--policy", str(goal), "--baseline", str(nogoal), "--negative", "other-arm", "--no-media",
                 "--out", str(out), *sets]) == 0, capsys.readouterr().err
    (ep,) = json.loads((out / "results.json").read_text())["episodes"]
    assert ep["error"] is None and ep["steps"] == 2


def test_goal_dropout_policy_as_its_own_baseline_with_guidance(sim, policies, tmp_path, capsys):
    """A goal policy trained with goal_dropout drives mode none with its no-goal token and the goal modes with action
    guidance; the guidance is recorded with the results."""
    from frameplan_cli.main import main

    root, overrides = sim
    small = ["--set", "image_size=32", "--set", "crop_res=32", "--set", "batch_size=8", "--set", "max_steps=2",
             "--set", "val_every_n_steps=0", "--set", "val_every_n_epochs=0", "--set", "sample_every_n_steps=0",
             "--set", "num_workers=0", "--set", "warmup_steps=1", "--set", "val_fraction=0", "--set", "goal_dropout=0.3"]
    gd = tmp_path / "gd"
    assert main(["train", "policy", "--data", str(root / "goal" / "data"), "--out", str(gd), *small]) == 0
    out = tmp_path / "run"
    sets = [a for o in overrides for a in ("--sim-set", o)]
    assert main(["rollout", "--task", TASK, "--mode", "oracle", "--mode", "none", "--episodes", "1", "--max-steps", "4",
                 "--period", "2", "--execute", "2", "--policy", str(gd / "model"), "--baseline", str(gd / "model"),
                 "--guidance", "0.5", "--ensemble", "0.01", "--no-media", "--out", str(out), *sets]) == 0, \
        capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    eps = {e["mode"]: e for e in res["episodes"]}
    assert eps["none"]["steps"] == 4 and eps["none"]["goal_calls"] == 0 and eps["oracle"]["goal_calls"] == 2
    assert res["settings"]["guidance"] == 0.5 and res["models"]["baseline"] == res["models"]["policy"]
    assert res["settings"]["ensemble"] == 0.01
    report = (out / "report.md").read_text()
    assert "action guidance 0.5" in report and "temporally ensembled (k = 0.01)" in report


def test_specialists_drive_each_task_with_its_own_pair(sim, tmp_path, capsys):
    """--policy/--baseline specialists: each task is run by its own embedded specialist (a pair trained on that task
    alone); the run records which, and a model set loaded for fewer tasks is refused, never silently reused."""
    from frameplan_cli.main import main
    from frameplan_core.errors import ConfigError
    from frameplan_core.policy.rollout import check_tasks, load_models

    _, overrides = sim
    tasks = ["block_handover", TASK]
    models = load_models(["oracle", "none"], "specialists", "specialists", tasks=tasks)
    assert Path(models.policy_for("oracle", "block_handover").source).name == "policy-handover"
    assert Path(models.policy_for("none", TASK).source).name == "policy-stack-nogoal"
    check_tasks(models, tasks)
    with pytest.raises(ConfigError, match="no policy loaded for block_hammer_beat"):
        check_tasks(models, [*tasks, "block_hammer_beat"])
    out = tmp_path / "run"
    sets = [a for o in overrides for a in ("--sim-set", o)]
    assert main(["rollout", *[a for t in tasks for a in ("--task", t)], "--mode", "none", "--episodes", "1",
                 "--max-steps", "2", "--baseline", "specialists", "--no-media", "--out", str(out), *sets]) == 0, \
        capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert sorted(e["task"] for e in res["episodes"]) == sorted(tasks)
    assert all(e["steps"] == 2 for e in res["episodes"])
    assert res["models"]["baseline"] == "specialists (block_handover: handover-nogoal, blocks_stack_easy: stack-nogoal)"


def test_sigterm_keeps_finished_episodes_marked_interrupted(sim, policies, tmp_path):
    _, overrides = sim
    _, nogoal = policies
    out = tmp_path / "run"
    sets = [a for o in overrides for a in ("--sim-set", o)]
    cmd = [sys.executable, "-m", "frameplan_cli", "rollout", "--task", TASK, "--mode", "none", "--episodes", "50",
           "--max-steps", "8", "--baseline", str(nogoal), "--no-media", "--out", str(out), *sets]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if (out / "results.json").is_file() and json.loads((out / "results.json").read_text())["episodes"]:
                break
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err
    assert "terminated" in err and "kept in" in err and "Traceback" not in err
    res = json.loads((out / "results.json").read_text())
    assert res["interrupted"] is True and 1 <= len(res["episodes"]) < 50
    assert "INTERRUPTED" in (out / "report.md").read_text()
    assert not [p.name for p in out.rglob("*") if p.name.startswith(".")]  # no half-written file left


def test_instructed_rollout_records_the_named_arm_and_the_wording(sim, policies, tmp_path, capsys):
    """``--sim-set expert_strategy=instructed``: every episode records the arm its instruction names, the expert
    (which follows it) succeeds, and ``--wording unseen`` hands the foresight models the held-out paraphrase."""
    from frameplan_cli.main import main
    from frameplan_core.policy.rollout import episode_instruction, make_env, other_arm_instruction

    _, overrides = sim
    goal, nogoal = policies
    out = tmp_path / "run"
    sets = [a for o in [*overrides, "expert_strategy=instructed"] for a in ("--sim-set", o)]
    args = ["rollout", "--task", TASK, "--mode", "expert", "--mode", "none", "--mode", "predictor", "--episodes", "1",
            "--max-steps", "2", "--period", "2", "--execute", "2", "--policy", str(goal), "--baseline", str(nogoal),
            "--samples", "1", "--wording", "unseen", "--no-media", "--negative", "other-arm", "--text-scale", "5",
            "--text-scale-after", "2",
            "--out", str(out), *sets]
    assert main(args) == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    assert res["settings"]["wording"] == "unseen"
    assert (res["settings"]["negative"], res["settings"]["text_scale"]) == ("other-arm", 5)
    assert res["settings"]["text_scale_after"] == 2
    assert "predictor text scale 5 (2 after the first goal)" in (out / "report.md").read_text()
    eps = {e["mode"]: e for e in res["episodes"]}
    assert eps["expert"]["success"] and eps["expert"]["arm"] in ("left", "right")
    assert eps["none"]["arm"] == eps["predictor"]["arm"] == eps["expert"]["arm"]

    env = make_env("head_camera", 15, [*overrides, "expert_strategy=instructed"])
    env.reset(TASK, 2_000_000)
    unseen = episode_instruction(env, "unseen")
    assert unseen == env.task.instructions()["unseen"][0] and eps["expert"]["arm"] in unseen
    assert env.instruction == env.task.instructions()["seen"][0] != unseen and eps["expert"]["arm"] in env.instruction
    # the negative instruction of --negative other-arm: the same sentence, only the arm word swapped
    other = env.task.other_arm(eps["expert"]["arm"])
    neg = other_arm_instruction(env, "unseen")
    assert neg != unseen and neg.replace(other, eps["expert"]["arm"]) == unseen
    env.close()
    # the wording decides the foresight's numbers: resuming with another one is refused
    assert main([("seen" if a == "unseen" else a) for a in args] + ["--resume"]) == 1
    assert "wording" in capsys.readouterr().err


def test_summary_counts_how_often_the_named_arm_moved():
    from frameplan_core.errors import ConfigError
    from frameplan_core.policy.rollout import RolloutConfig, summarize

    def ep(mode, arm, moved, ok):
        return {"task": TASK, "mode": mode, "success": ok, "sim_time_s": 1.0, "wall_s": 1.0, "arm": arm, "moved": moved}

    eps = [ep("none", "left", "left", True), ep("none", "left", "right", False), ep("none", "right", None, False),
           ep("oracle", None, "left", True)]
    per = summarize(eps, [TASK], ["oracle", "none"])["per_task"][TASK]
    assert per["none"]["named_arm_moved"] == [1, 2] and "named_arm_moved" not in per["oracle"]
    assert "named_arm_first" not in per["none"]  # results written before first_moved was recorded
    eps[0]["first_moved"], eps[1]["first_moved"] = "right", "left"  # a handover: the giver moves first, not furthest
    per = summarize(eps, [TASK], ["oracle", "none"])["per_task"][TASK]
    assert per["none"]["named_arm_first"] == [1, 2] and per["none"]["named_arm_moved"] == [1, 2]
    with pytest.raises(ConfigError, match="wording"):
        RolloutConfig(wording="random").validate()


class SharedTimeline(RecordedCommands):
    """RecordedCommands whose position in the recording is shared with its twins (so a handoff continues the
    expert's commands where the other controller left them) and which logs the policy steps it was asked at."""

    def __init__(self, commands: np.ndarray, execute: int, clock: list[int], goal: bool) -> None:
        from frameplan_core.policy import PolicyConfig

        super().__init__(commands, execute)
        self.clock, self.asked, self.goals = clock, [], []
        self.config = PolicyConfig(goal=goal)

    def act(self, image, joint_state, goal=None):
        self.asked.append(self.clock[0])
        self.goals.append(goal is not None)
        idx = np.minimum(self.clock[0] + np.arange(1, self.config.chunk + 1), len(self.commands) - 1)
        self.clock[0] += self.execute
        return self.commands[idx]


def test_handoff_gives_the_episode_to_the_baseline_once_an_arm_has_moved(sim):
    """``handoff``: the goal policy acts (with goals) until an arm's joints have gone ``handoff`` rad from the start,
    then the no-foresight baseline acts (without goals, no new goals made) for the rest of the episode; with the
    expert's own commands on both sides the episode still succeeds, and a handoff never reached changes nothing."""
    from frameplan_core.data.robotwin import RoboTwinEpisode, episode_dir
    from frameplan_core.errors import ConfigError
    from frameplan_core.policy.rollout import Models, RolloutConfig, make_env, run_expert, run_policy

    root, overrides = sim
    ep = RoboTwinEpisode(episode_dir(root / "data", TASK, TINY, 0))
    commands, seed = ep.joint_commands(), ep.scene_info["seed"]
    env = make_env("head_camera", 15, overrides)
    try:
        _, frames = run_expert(env, TASK, 0, seed, keep_frames=True)
        results = {}
        for handoff in (0.05, 9.0):
            clock = [0]
            goal, base = SharedTimeline(commands, 4, clock, True), SharedTimeline(commands, 4, clock, False)
            cfg = RolloutConfig(tasks=[TASK], modes=["oracle"], execute=4, period=2, handoff=handoff,
                                max_steps=len(commands) + 20).validate()
            results[handoff] = (run_policy(env, "oracle", Models(policy=goal, baseline=base), TASK, 0, seed, cfg, frames),
                                goal, base)
    finally:
        env.close()
    res, goal, base = results[0.05]
    assert res.success and res.handoff_step is not None and 0 < res.handoff_step < res.steps, res
    assert goal.asked and max(goal.asked) < res.handoff_step and all(goal.goals)
    assert base.asked and min(base.asked) == res.handoff_step and not any(base.goals)
    assert res.goal_calls == len(goal.asked)  # a goal for each of its calls (period 2 < execute 4), none after
    res, goal, base = results[9.0]
    assert res.success and res.handoff_step is None and not base.asked
    for bad in (0, -1.0, float("nan"), 11):
        with pytest.raises(ConfigError, match="handoff"):
            RolloutConfig(handoff=bad).validate()


def test_handoff_from_the_cli_loads_the_baseline_and_reports_it(sim, policies, tmp_path, capsys):
    from frameplan_cli.main import main

    _, overrides = sim
    goal, nogoal = policies
    out = tmp_path / "run"
    sets = [a for o in overrides for a in ("--sim-set", o)]
    assert main(["rollout", "--task", TASK, "--mode", "oracle", "--episodes", "1", "--max-steps", "6", "--period", "2",
                 "--execute", "2", "--policy", str(goal), "--baseline", str(nogoal), "--handoff", "0.001", "--no-media",
                 "--out", str(out), *sets]) == 0, capsys.readouterr().err
    res = json.loads((out / "results.json").read_text())
    (ep,) = [e for e in res["episodes"] if e["mode"] == "oracle"]
    assert res["settings"]["handoff"] == 0.001 and "baseline" in res["models"]  # loaded without mode none
    assert ep["handoff_step"] is not None and ep["steps"] == 6
    assert "hand over to the no-foresight policy once an arm has moved 0.001 rad" in (out / "report.md").read_text()
