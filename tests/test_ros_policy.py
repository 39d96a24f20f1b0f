"""Policy mode of the foresight node and the closed loop over ROS 2: the node's decisions are `frameplan rollout`'s
(the runner fed a rollout's frames gives the rollout's goals and commands), the node turns camera frames + joint
states + an instruction into JointTrajectory commands at `policy_period` and goal frames at `goal_period`, joint
states are paired by stamp, a run-time `policy` outside model_roots is refused, and `frameplan sim --mode policy`
runs one closed-loop episode in which the commands move the simulated robot. Models: small random ones, saved to
tmp by the tests (trained weights are not needed for any of this)."""
import json
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String
from trajectory_msgs.msg import JointTrajectory

from frameplan_ros import convert
from frameplan_ros import params as paramlib
from frameplan_ros.robot_model import JOINT_NAMES
from frameplan_ros.testing import Probe
from ros_support import wait_for

REST = np.array([0.0, -0.25, 0.0, -2.3, 0.0, 2.05, np.pi / 4, 1.0] * 2)
STEP = 0.06  # one policy step: 15 ticks of 4 ms


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A random goal-conditioned policy (small actions: joint offsets of about 0.1 rad) and a 64 px predictor."""
    from frameplan_core.policy import GoalPolicy, PolicyConfig
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    root = tmp_path_factory.mktemp("policy_models")
    stats = {"state_mean": REST.tolist(), "state_std": [1.0] * 16, "action_mean": np.zeros((8, 16)).tolist(),
             "action_std": np.full((8, 16), 0.2).tolist()}
    cfg = PolicyConfig.preset("tiny", image_size=64, channels=[8, 16, 16, 16], hidden=64, state_hidden=16, stats=stats)
    GoalPolicy.from_config(cfg, seed=0).save_pretrained(root / "policy")
    pc = PredictorConfig.preset("tiny")
    pc.resolution = 64
    FramePredictor.from_config(pc, seed=0, device="cpu").save_pretrained(root / "predictor")
    return {"policy": root / "policy", "predictor": root / "predictor", "root": root}


def test_policy_presets_match_the_core():
    from frameplan_core.policy.config import EMBEDDED
    from frameplan_ros.policy_runner import POLICY_PRESETS

    assert POLICY_PRESETS == EMBEDDED


# ---------------------------------------------------------------- the runner is the rollout's loop
@pytest.mark.sim
@pytest.mark.parametrize("goal_source", ["predictor", "planner"])
def test_runner_fed_a_rollouts_frames_gives_its_goals_and_commands(models, goal_source):
    from frameplan_core.errors import SimError
    from frameplan_core.planner import GridPlanner, PlannerConfig
    from frameplan_core.policy import GoalPolicy
    from frameplan_core.policy.rollout import Models, RolloutConfig, make_env, run_policy
    from frameplan_core.predictor import FramePredictor
    from frameplan_core.models import PolicyModels
    from frameplan_ros.policy_runner import PolicyRunner

    calls = []

    class Recording(GoalPolicy):  # the real policy; each call's inputs and output are kept
        def act(self, image, joint_state, goal=None):
            out = super().act(image, joint_state, goal)
            calls.append((image.copy(), np.array(joint_state), None if goal is None else goal.copy(), out.copy()))
            return out

    base = GoalPolicy.from_pretrained(models["policy"], device="cpu")
    policy = Recording(base.config, base.net, "cpu")
    goal_model = FramePredictor.from_pretrained(models["predictor"], device="cpu") if goal_source == "predictor" \
        else GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32), seed=0, device="cpu")
    cfg = RolloutConfig(execute=3, period=5, max_steps=11, subgoal_steps=2, predictor_samples=1, planner_samples=1,
                        media=False)
    env = make_env("head_camera", 15)
    try:
        try:
            run_policy(env, goal_source, Models(policy=policy, predictor=goal_model, planner=goal_model),
                       "blocks_stack_easy", 0, 7, cfg)
        except (SimError, ImportError) as exc:
            pytest.skip(f"SAPIEN cannot run here: {exc}")
        instruction = env.instruction
    finally:
        env.close()
    assert len(calls) == 4  # steps 0, 3, 6, 9
    runner = PolicyRunner(PolicyModels(base, goal_model, goal_source), cfg, seed=7)
    for k, (image, state, goal, chunk) in enumerate(calls):
        t = 100.0 + k * cfg.execute * STEP  # camera stamps: one frame per policy step
        if k:
            assert not runner.due(t - STEP)  # a step earlier, no new chunk is due yet
        d = runner.step(image, state, instruction, t)
        np.testing.assert_array_equal(d.goal, goal)
        expected = chunk.copy()
        expected[:, [7, 15]] = (expected[:, [7, 15]] >= 0.5)  # the rollout binarises the grippers it sends
        np.testing.assert_allclose(d.commands, expected, atol=1e-6)
        assert d.steps == k * cfg.execute


def test_a_goal_free_policy_runs_without_goal_model_or_instruction(models):
    from frameplan_core.policy import GoalPolicy, PolicyConfig
    from frameplan_core.policy.rollout import RolloutConfig
    from frameplan_core.models import PolicyModels
    from frameplan_ros.policy_runner import PolicyRunner

    base = GoalPolicy.from_pretrained(models["policy"], device="cpu")
    cfg = PolicyConfig.from_dict({**base.config.to_dict(), "goal": False, "name": "tiny-nogoal"})
    runner = PolicyRunner(PolicyModels(GoalPolicy.from_config(cfg, seed=1), None, "predictor"),
                          RolloutConfig(execute=2, gripper="continuous"))
    image = np.zeros((120, 160, 3), np.uint8)
    d = runner.step(image, REST, None, 5.0)
    assert d.goal is None and not d.new_goal and d.commands.shape == (8, 16)
    assert not set(d.commands[:, 7]) <= {0.0, 1.0}  # continuous grippers are sent as predicted
    assert runner.step(image, REST, None, 5.0 + STEP) is None  # 1 step later: not due (execute 2)
    assert runner.step(image, REST, None, 5.0 + 2 * STEP).steps == 2


# ---------------------------------------------------------------- the node, in this process
def _node(ctx, models, **params):
    from frameplan_ros.foresight_node import ForesightNode

    base = {"mode": "policy", "policy": str(models["policy"]), "model": str(models["predictor"]), "device": "cpu",
            "steps": 1, "samples": 1, "use_camera_info": False, "camera_qos": "reliable",
            "warmup": False, "model_roots": str(models["root"]), "diagnostics_period": 0.2, "shutdown_timeout": 5.0}
    return ForesightNode(context=ctx, parameter_overrides=paramlib.overrides({**base, **params}))


class _Spinner:
    def __init__(self, ctx, node):
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(node)
        self.thread = threading.Thread(target=self._spin, daemon=True)
        self.thread.start()

    def _spin(self):
        try:
            self.executor.spin()
        except Exception:  # noqa: BLE001 - shut down by the test
            pass

    def stop(self):
        self.executor.shutdown(timeout_sec=1.0)
        self.thread.join(5)


def _frame_msg(k, seed=0):
    img = np.random.default_rng(seed + k).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    return convert.numpy_to_image(img, "rgb8", stamp=convert.seconds_to_time(50.0 + k * STEP), frame_id="cam")


def test_node_publishes_commands_at_the_policy_period_and_goals_at_the_goal_period(ctx, models):
    node = _node(ctx, models)  # policy_period 0.24 s = 4 steps, goal_period 0.6 s = 10 steps
    spinner = _Spinner(ctx, node)
    probe = Probe("policy_probe")
    try:
        probe.listen(JointTrajectory, "/frameplan/joint_trajectory")
        probe.listen(Image, "/frameplan/predicted_image")
        probe.listen(Image, "/frameplan/comparison")
        pubs = [probe.publisher(Image, "/camera/camera/color/image_raw"),
                probe.publisher(JointState, "/joint_states"), probe.publisher(String, "/frameplan/instruction")]
        assert wait_for(lambda: node.model is not None, 120), node.health.errors
        assert probe.wait_matched(pubs)
        pubs[2].publish(String(data="stack the green block on the red one"))
        time.sleep(0.3)
        states = {}
        for k in range(13):
            msg = _frame_msg(k)
            q = REST + 0.01 * k
            states[k] = q
            pubs[1].publish(convert.joint_state_msg(q, JOINT_NAMES, msg.header.stamp))
            pubs[0].publish(msg)
            n = node.worker.processed  # one frame at a time: none is replaced before the worker took it
            assert wait_for(lambda n=n: node.worker.processed > n, 60), node.health.errors
        assert probe.wait_for(lambda: len(probe.messages("/frameplan/joint_trajectory")) >= 4, 10)
        trajs = probe.messages("/frameplan/joint_trajectory")
        stamps = [round(t.header.stamp.sec + t.header.stamp.nanosec * 1e-9 - 50.0, 6) for t in trajs]
        assert stamps == [0.0, 0.24, 0.48, 0.72]  # frames 0, 4, 8, 12
        t0 = trajs[0]
        assert list(t0.joint_names) == list(JOINT_NAMES) and len(t0.points) == 8
        assert [round(p.time_from_start.nanosec * 1e-9, 6) for p in t0.points] == [round((k + 1) * STEP, 6)
                                                                                    for k in range(8)]
        first = np.array(t0.points[0].positions)
        assert np.abs(first[:7] - states[0][:7]).max() < 1.0  # delta actions, around the paired joint state
        assert set(np.array([p.positions for p in t0.points])[:, [7, 15]].ravel()) <= {0.0, 1.0}  # binary grippers
        # goals: step 0 and step 12 (10 steps after the first); each with input | goal on comparison
        assert probe.wait_for(lambda: len(probe.messages("/frameplan/comparison")) >= 2, 10)
        goals = probe.messages("/frameplan/predicted_image")
        assert [g.header.stamp.nanosec for g in goals] == [0, 720_000_000] and goals[0].width == 160
        _, _, values = node.diagnostics_values()
        assert values["trajectories_published"] == 4 and values["goals_published"] == 2
        assert values["policy_execute_steps"] == 4 and values["goal_period_steps"] == 10
    finally:
        probe.close()
        spinner.stop()
        node.destroy_node()


def test_frames_without_a_paired_joint_state_are_refused_and_counted(ctx, models):
    node = _node(ctx, models, default_instruction="stack the blocks", joint_state_tolerance=0.01)
    spinner = _Spinner(ctx, node)
    probe = Probe("policy_probe2")
    try:
        probe.listen(JointTrajectory, "/frameplan/joint_trajectory")
        img, js = probe.publisher(Image, "/camera/camera/color/image_raw"), probe.publisher(JointState, "/joint_states")
        assert wait_for(lambda: node.model is not None, 120), node.health.errors
        assert probe.wait_matched([img, js])
        img.publish(_frame_msg(0))  # no joint state at all
        assert wait_for(lambda: "joint_state" in node.health.errors, 30), node.health.errors
        assert "no joint state received yet" in node.health.errors["joint_state"].message
        bad = convert.joint_state_msg(REST[:8], JOINT_NAMES[:8], _frame_msg(1).header.stamp)  # one arm only
        js.publish(bad)
        assert wait_for(lambda: "right_panda_joint1" in node.health.errors["joint_state"].message, 10)
        js.publish(convert.joint_state_msg(REST, JOINT_NAMES, convert.seconds_to_time(10.0)))  # far from the frame
        time.sleep(0.3)
        img.publish(_frame_msg(2))
        assert wait_for(lambda: "within 0.01 s" in node.health.errors["joint_state"].message, 30)
        assert node.health.errors["joint_state"].count == 3 and not probe.messages("/frameplan/joint_trajectory")
        # a policy folder outside model_roots is refused at run time on its path alone; a preset is accepted
        res = node.set_parameters([Parameter("policy", value="/etc")])[0]
        assert not res.successful and "outside model_roots" in res.reason
        assert node.set_parameters([Parameter("policy", value="tiny-nogoal")])[0].successful
    finally:
        probe.close()
        spinner.stop()
        node.destroy_node()


# ---------------------------------------------------------------- the closed loop over DDS
def test_frameplan_sim_policy_without_a_policy_fails_in_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "frameplan_cli", "sim", "--mode", "policy", "--policy",
                        str(tmp_path / "no_policy"), "--device", "cpu", "--duration", "60", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 1 and "no_policy" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]
    r = subprocess.run([sys.executable, "-m", "frameplan_cli", "sim", "--max-steps", "5", "--out",
                        str(tmp_path / "o")], capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode != 0 and "need --mode policy" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.sim
@pytest.mark.slow
def test_frameplan_sim_policy_runs_one_closed_loop_episode_that_moves_the_robot(models, tmp_path):
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "frameplan_cli", "sim", "--mode", "policy",
                        "--policy", str(models["policy"]), "--model", str(models["predictor"]), "--device", "cpu",
                        "--steps", "1", "--set", "foresight.samples=1", "--set", "foresight.publish_uncertainty=false",
                        "--task", "blocks_stack_easy", "--seed", "3", "--max-steps", "24", "--rate", "5",
                        "--duration", "240", "--out", str(out)],
                       capture_output=True, text=True, timeout=400, check=False)
    if r.returncode != 0 and ("Vulkan" in r.stderr or "rendering device" in r.stderr):
        pytest.skip(f"SAPIEN cannot render here: {r.stderr[-300:]}")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    loop = json.loads((out / "summary.json").read_text())["closed_loop"]
    assert loop["stopped_by"] in ("max_steps", "success") and loop["steps"] == 24
    assert isinstance(loop["success"], bool)
    c = loop["commands"]
    assert c["published"] >= 1 and c["accepted"] >= 1 and c["refused"] == 0
    assert loop["joint_motion_rad"] > 0.01  # the commands moved the arms (with no command they hold still)
    assert loop["latency_ms"]["policy_p50"] is not None and loop["goals"] >= 1
    assert (out / "predicted_image_0000.png").is_file() and "closed loop:" in r.stdout
