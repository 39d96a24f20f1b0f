"""The nodes in this process (own rclpy context, real DDS on loopback): parameter overrides of the wrong numeric
type or out of range, run-time parameter changes that must take effect, the plan frames queue, and what /diagnostics
says when no model could be loaded. No model is loaded here (a missing checkpoint), so each case takes seconds."""
import subprocess
import sys
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from frameplan_core.errors import ConfigError
from frameplan_ros import convert
from frameplan_ros import params as paramlib
from frameplan_ros.diagnostics import ERROR
from frameplan_ros.foresight_node import ForesightNode
from frameplan_ros.foresight_params import ForesightParams
from frameplan_ros.sim_bridge_node import SimBridgeNode
from frameplan_ros.sim_bridge_params import SimBridgeParams
from frameplan_ros.testing import diagnostic_values
from ros_support import spin_until

MISSING_MODEL = "/nonexistent/frameplan_checkpoint"
IMAGE_TOPIC = "/camera/camera/color/image_raw"


def _foresight(ctx, **params):
    base = {"model": MISSING_MODEL, "device": "cpu", "warmup": False, "use_camera_info": False,
            "shutdown_timeout": 2.0}
    return ForesightNode(context=ctx, parameter_overrides=paramlib.overrides({**base, **params}))


def _destroy(executor, *nodes):
    executor.shutdown(timeout_sec=1.0)
    for n in nodes:
        n.destroy_node()


# ---------------------------------------------------------------- parameter overrides
def test_integer_override_of_a_double_parameter_is_taken_as_double(ctx):
    # `rate: 10` in a params file, `-p diagnostics_period:=1`, `--set foresight.diagnostics_period=1`: rclpy
    # refuses an INTEGER for a DOUBLE parameter, although check_yaml_against accepts it.
    for cls, name in ((ForesightParams, "diagnostics_period"), (SimBridgeParams, "rate")):
        node = rclpy.create_node(f"int_override_{name}", context=ctx, parameter_overrides=[Parameter(name, value=2)])
        try:
            p = paramlib.declare(node, cls)
            assert getattr(p, name) == 2.0 and isinstance(getattr(p, name), float)
            assert node.get_parameter(name).type_ == Parameter.Type.DOUBLE
            assert node.describe_parameter(name).floating_point_range  # still declared with its descriptor
        finally:
            node.destroy_node()


@pytest.mark.parametrize("name,value", [("steps", 5000), ("steps", "many"), ("diagnostics_period", 1000)])
def test_bad_override_is_a_config_error_naming_the_parameter(ctx, name, value):
    node = rclpy.create_node("bad_override", context=ctx, parameter_overrides=[Parameter(name, value=value)])
    try:
        with pytest.raises(ConfigError, match=f"parameter {name}"):
            paramlib.declare(node, ForesightParams)
    finally:
        node.destroy_node()


def test_node_with_an_out_of_range_parameter_exits_with_one_line():
    r = subprocess.run([sys.executable, "-m", "frameplan_ros.foresight_node", "--ros-args", "-p", "steps:=5000"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 1, r.stderr[-2000:]
    assert "steps" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]


# ---------------------------------------------------------------- foresight node
def test_diagnostics_without_a_model_give_the_load_error_not_ok(ctx):
    node = _foresight(ctx)
    try:
        deadline = time.monotonic() + 60
        while "model_load" not in node.health.errors and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "model_load" in node.health.errors
        level, message, _ = node.diagnostics_values()
        assert level == ERROR and MISSING_MODEL in message
        node.health.errors["model_load"].when -= 3600  # the load error is no longer "recent"
        level, message, values = node.diagnostics_values()
        assert level == ERROR and message.startswith("[model_load]") and MISSING_MODEL in message, message
        assert values["model"] == "not loaded"
    finally:
        node.destroy_node()


def test_run_time_default_instruction_and_diagnostics_period_take_effect(ctx):
    node = _foresight(ctx, trigger="continuous", default_instruction="", diagnostics_period=1.0)
    pub_node = rclpy.create_node("image_pub", context=ctx)
    pub = pub_node.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(pub_node)
    frame = convert.numpy_to_image(np.zeros((8, 8, 3), np.uint8), "rgb8", frame_id="cam")
    try:
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
        assert spin_until(executor, lambda: pub.publish(frame) or node.health.counters.get(
            "waiting_for_instruction", 0) > 0, 10)
        assert node.worker.slot.put_count == 0  # continuous predictor without an instruction: nothing to run
        results = node.set_parameters([Parameter("default_instruction", value="stack the blocks"),
                                       Parameter("diagnostics_period", value=0.25)])
        assert all(r.successful for r in results)
        # the job reaches the worker (which records its instruction, then reports that no model is loaded)
        assert spin_until(executor, lambda: pub.publish(frame) or node.recent_instructions, 30)
        assert node.recent_instructions[-1][1] == "stack the blocks"
        assert 250_000_000 in [t.timer_period_ns for t in node.timers]
    finally:
        _destroy(executor, pub_node, node)


# ---------------------------------------------------------------- sim bridge
@pytest.fixture
def episode_without_depth(tmp_path):
    from test_ros_sim_bridge import _episode_frames

    from frameplan_core.data.robotwin import EpisodeWriter

    with EpisodeWriter(tmp_path / "data", "blocks_stack_easy", "D435", 0) as ep:
        for f in _episode_frames(n=4, h=24, w=32):
            del f["observation"]["head_camera"]["depth"]
            ep.add_frame(f)
        ep.instructions = {"seen": ["stack the blocks"], "unseen": ["stack"]}
    return ep.path


def test_sim_bridge_applies_loop_at_run_time_and_reports_error_kinds(ctx, episode_without_depth):
    bridge = SimBridgeNode(context=ctx, parameter_overrides=paramlib.overrides(
        {"source": "replay", "episode": str(episode_without_depth), "loop": True, "replay_rate": 200.0,
         "diagnostics_period": 0.1}))
    listener = rclpy.create_node("diag_listener", context=ctx)
    diags = []
    listener.create_subscription(DiagnosticArray, "/diagnostics", diags.append, 10)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(bridge)
    executor.add_node(listener)

    def bridge_values():
        for arr in reversed(diags):
            for _, _, values in diagnostic_values(arr, "sim bridge"):
                return values
        return {}
    try:
        assert spin_until(executor, lambda: bridge.published > 8, 10)  # 4-frame episode: looping
        assert not bridge.finished.is_set()
        assert spin_until(executor, lambda: "error.no_depth" in bridge_values(), 10), bridge_values()
        assert "no depth" in bridge_values()["error.no_depth"]
        assert all(r.successful for r in bridge.set_parameters([Parameter("loop", value=False),
                                                                Parameter("diagnostics_period", value=0.5)]))
        assert spin_until(executor, bridge.finished.is_set, 5), "loop:=false at run time did not stop the replay"
        assert 500_000_000 in [t.timer_period_ns for t in bridge.timers]
    finally:
        _destroy(executor, listener, bridge)


def test_plan_frames_queue_holds_the_longest_plan(ctx):
    """A chained plan's 8k+1 frames go out in one burst on a reliable KEEP_LAST queue: a shorter queue would drop
    the first frames for a subscriber that is a little slow."""
    from frameplan_ros.foresight_params import MAX_CHAIN

    node = _foresight(ctx, output_queue_depth=10, mode="planner")
    try:
        assert node.outputs.pub_frames.qos_profile.depth == 8 * MAX_CHAIN + 1
        assert node.outputs.pub_pred.qos_profile.depth == 10
    finally:
        node.destroy_node()
