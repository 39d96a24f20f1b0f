"""Hostile and unlucky input to the foresight node (issue 17): instructions holding control characters, megabyte
strings echoed into /diagnostics, parameters that fit the declared range but not the loaded model, `model` paths
outside `model_roots`, the two latencies of on_instruction mode, and SIGINT/SIGTERM while an inference outlives
`shutdown_timeout` (a real node process). Real tiny models with random weights, real DDS on loopback."""
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import String

from frameplan_core.errors import ConfigError
from frameplan_ros import convert
from frameplan_ros import params as paramlib
from frameplan_ros.diagnostics import ERROR, MAX_MESSAGE_CHARS, status_message
from frameplan_ros.foresight_node import ForesightNode
from frameplan_ros.foresight_params import model_refusal, resolve_model_roots, user_model_dir
from frameplan_ros.testing import NodeProcess, Probe, config_path, diagnostic_values
from ros_support import spin_until, wait_for

MISSING_MODEL = "/nonexistent/frameplan_checkpoint"
IMAGE_TOPIC = "/camera/camera/color/image_raw"
INSTRUCTION_TOPIC = "/frameplan/instruction"
LOAD_TIMEOUT = 180.0  # import torch + load the model on a busy 2-core CI machine


@pytest.fixture(scope="module", autouse=True)
def tiny_predictor(tmp_path_factory):
    """A real predictor (random weights, 64 px so CPU inference is quick) saved under its own model root. Built
    first (autouse): diffusers' lazy imports are not thread-safe, and the worker threads of the in-process nodes
    below import it too."""
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    root = tmp_path_factory.mktemp("model_root")
    cfg = PredictorConfig.preset("tiny")
    cfg.resolution = 64
    FramePredictor.from_config(cfg, seed=0, device="cpu").save_pretrained(root / "predictor")
    return root / "predictor"


def _node(ctx, **params):
    base = {"model": MISSING_MODEL, "device": "cpu", "warmup": False, "use_camera_info": False,
            "shutdown_timeout": 2.0}
    return ForesightNode(context=ctx, parameter_overrides=paramlib.overrides({**base, **params}))


def _set(node, **values):
    return [r for r in node.set_parameters([Parameter(k, value=v) for k, v in values.items()])]


# ---------------------------------------------------------------- instructions
def test_control_character_instruction_is_refused_and_the_good_one_kept(ctx):
    """Over DDS: the bad instruction is counted under its own kind and never replaces the last good one."""
    node = _node(ctx, trigger="continuous")
    pub_node = rclpy.create_node("instruction_pub", context=ctx)
    pub = pub_node.create_publisher(String, INSTRUCTION_TOPIC, 10)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    executor.add_node(pub_node)
    try:
        assert spin_until(executor, lambda: pub.get_subscription_count() > 0, 10)
        pub.publish(String(data="hand the block over"))
        assert spin_until(executor, lambda: node._instruction == "hand the block over", 10)
        pub.publish(String(data="hand\x1b[2J the block over"))
        assert spin_until(executor, lambda: "instruction_invalid" in node.health.errors, 10), node.health.errors
        assert node._instruction == "hand the block over"
        message = node.health.errors["instruction_invalid"].message
        assert INSTRUCTION_TOPIC in message and "control" in message and "\x1b" not in message
        assert "no_instruction" not in node.health.errors
        pub.publish(String(data="  stack   the blocks "))  # accepted, normalised as the model will see it
        assert spin_until(executor, lambda: node._instruction == "stack the blocks", 10)
    finally:
        executor.shutdown(timeout_sec=1.0)
        pub_node.destroy_node()
        node.destroy_node()


def test_error_kinds_come_from_the_error_not_its_wording(ctx):
    """Every input error carries its kind (InputError.kind, set where it is raised); the node counts what the error
    says, never guessing from the message: an invalid instruction is not a missing one, and a message that reads
    like another kind is counted as its own."""
    from frameplan_core.errors import InputError
    from frameplan_core.text import validate_instruction
    from frameplan_core.trajectory import project
    from frameplan_ros import compressed
    from frameplan_ros.policy_runner import JointStateBuffer

    def kind(fn, *args):
        with pytest.raises(InputError) as info:
            fn(*args)
        return info.value.kind

    assert kind(validate_instruction, "hand\x1b[2J over", "instruction[0]") == "instruction_invalid"
    assert kind(validate_instruction, "   ", "instruction[0]") == "instruction_invalid"
    yuv = convert.numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    yuv.encoding = "yuv422"
    assert kind(convert.check_color_image, yuv, "/cam") == "bad_encoding"
    assert kind(convert.check_color_image, convert.numpy_to_image(np.zeros((4, 4), np.uint16), "16UC1")) == \
        "bad_encoding"
    short = convert.numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8")
    short.step = 3
    assert kind(convert.check_image, short, "/cam") == "bad_size"
    assert kind(compressed.check, CompressedImage(), "/cam/compressed") == "bad_compressed"
    assert kind(JointStateBuffer().match, 1.0, 0.01, "/joint_states", 0.0) == "joint_state"
    assert kind(project, np.zeros((2, 3)), np.eye(3), "/frameplan/trajectory") == "trajectory"
    assert InputError("no instruction yet, empty, step, encoding").kind == "bad_input"
    node = _node(ctx)
    try:
        node._job_failed(InputError("predictor: no instruction yet (publish one)", kind="no_instruction"), None)
        node._job_failed(InputError("instruction[0]: empty instruction, encoding step"), None)
        assert {"no_instruction", "bad_input"} <= set(node.health.errors)
        assert not {"instruction_invalid", "empty_image", "bad_encoding", "bad_size"} & set(node.health.errors)
    finally:
        node.destroy_node()


def test_default_instruction_follows_the_same_rules(ctx):
    node = _node(ctx, default_instruction="stack the blocks")
    try:
        refused = _set(node, default_instruction="hand\x1b[2J the block over")[0]
        assert not refused.successful and "control" in refused.reason and "\x1b" not in refused.reason
        assert node.p.default_instruction == "stack the blocks"
        assert _set(node, default_instruction="")[0].successful  # empty = wait for one
    finally:
        node.destroy_node()
    with pytest.raises(ConfigError, match="default_instruction"):
        _node(ctx, default_instruction="tab\tand\x07bell")


# ---------------------------------------------------------------- bounded diagnostics
def test_a_megabyte_encoding_string_does_not_grow_diagnostics_or_logs(ctx):
    node = _node(ctx)
    try:
        msg = convert.numpy_to_image(np.zeros((4, 4, 3), np.uint8), "rgb8", frame_id="cam")
        msg.encoding = "x" * 1_000_000
        node._on_image(msg)  # the subscription callback itself, with the message DDS would deliver
        frame_id = "\n".join(["cam"] * 200_000)
        traj_error = f"/frameplan/trajectory: path is in frame {frame_id!r}"
        node.health.error("trajectory", traj_error)
        rec = node.health.errors["bad_encoding"]
        assert len(rec.message) <= MAX_MESSAGE_CHARS + 40 and "\n" not in node.health.errors["trajectory"].message
        assert "1000000" in rec.message or "characters in all" in rec.message
        level, message, values = node.diagnostics_values()
        st = status_message("foresight", "cpu", level, message, values)
        size = len(st.message) + sum(len(kv.key) + len(kv.value) for kv in st.values)
        assert size < 20_000, size  # was 2 MB
    finally:
        node.destroy_node()


# ---------------------------------------------------------------- model_roots
def test_model_outside_model_roots_is_refused_without_looking(ctx, tmp_path):
    root = tmp_path / "models"
    (root / "mine").mkdir(parents=True)
    (root / "escape").symlink_to("/etc")
    launched = tmp_path / "launched"  # outside the roots: what the operator started the node with is trusted
    launched.mkdir()
    node = _node(ctx, model=str(launched), model_roots=str(root))
    try:
        assert node.get_parameter("model_roots").value == str(root)
        read_only = _set(node, model_roots="/")[0]
        assert not read_only.successful
        reasons = {}
        for value in ("/etc/shadow", "/etc", "/no/such/dir", str(root / "escape" / "shadow"),
                      str(root / ".." / "outside"), "../../etc"):
            res = _set(node, model=value)[0]
            assert not res.successful and "outside model_roots" in res.reason, (value, res.reason)
            reasons[value] = res.reason.replace(repr(value), "<value>")
        # the same answer whether the path exists or not, is a file or a folder: nothing to learn remotely
        assert len(set(reasons.values())) == 1, reasons
        assert node.p.model == str(launched)  # nothing changed, so nothing was loaded from there
        assert "shadow" not in str(node.health.snapshot())
        # inside a root: the usual checks; presets and the launch-time model stay allowed
        res = _set(node, model=str(root / "missing"))[0]
        assert not res.successful and "no such checkpoint folder" in res.reason
        assert model_refusal("tiny", node._model_roots, str(launched)) is None
        assert model_refusal("flux-dev", node._model_roots, str(launched)) is None
        for ok in (str(root / "mine"), str(launched)):
            assert _set(node, model=ok)[0].successful, ok
    finally:
        node.destroy_node()


def test_preset_names_are_the_cores():
    from frameplan_core.planner.config import PRESETS
    from frameplan_core.predictor.config import PRESET_NAMES
    from frameplan_ros.foresight_params import PRESET_MODELS

    assert set(PRESET_MODELS) == {*PRESET_NAMES, *PRESETS}


def test_default_model_roots_are_the_embedded_and_user_folders(monkeypatch, tmp_path):
    import frameplan_core

    monkeypatch.setenv("FRAMEPLAN_MODEL_DIR", str(tmp_path / "mine"))
    assert user_model_dir() == tmp_path / "mine"
    roots = resolve_model_roots("")
    assert roots == [Path(frameplan_core.__file__).resolve().parent / "weights", (tmp_path / "mine").resolve()]
    monkeypatch.delenv("FRAMEPLAN_MODEL_DIR")
    monkeypatch.setenv("FRAMEPLAN_CACHE", str(tmp_path / "cache"))
    assert user_model_dir() == tmp_path / "cache" / "models"
    assert resolve_model_roots(f"{tmp_path}/a{os.pathsep}{tmp_path}/b") == [tmp_path / "a", tmp_path / "b"]


# ---------------------------------------------------------------- model-dependent ranges, latencies
def _loaded(node, timeout=LOAD_TIMEOUT):
    return wait_for(lambda: node.model is not None, timeout)


def test_steps_the_model_cannot_run_are_refused_when_set_or_loaded(ctx, tiny_predictor):
    # steps=1000 is inside the declared range (0..1000) but DPM-Solver++ cannot run it on this schedule
    node = _node(ctx, model=str(tiny_predictor), steps=1000)
    try:
        assert wait_for(lambda: "model_load" in node.health.errors, LOAD_TIMEOUT), node.health.errors
        level, message, _ = node.diagnostics_values()
        assert level == ERROR and "steps=1000" in message and "fewer steps" in message, message
        assert node.model is None
        assert _set(node, steps=8)[0].successful  # no model yet: checked at the reload this triggers
        assert _loaded(node), node.health.errors
        refused = _set(node, steps=1000)[0]
        assert not refused.successful and "steps=1000" in refused.reason and "fewer steps" in refused.reason
        assert node.p.steps == 8
        assert _set(node, steps=20)[0].successful and node.p.steps == 20
    finally:
        node.destroy_node()


def test_on_instruction_reports_latency_and_frame_age_separately(ctx, tiny_predictor):
    node = _node(ctx, model=str(tiny_predictor), steps=1, samples=1, trigger="on_instruction")
    try:
        assert _loaded(node), node.health.errors
        node._on_image(convert.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", frame_id="cam"))
        time.sleep(2.0)  # the frame waits before an instruction comes
        node._on_instruction(String(data="stack the blocks"))
        assert wait_for(lambda: node.health.counters["outputs"] >= 1, 120), node.health.errors
        snap = node.health.snapshot()
        assert snap["last_frame_age_ms"] >= 2000.0
        assert snap["last_latency_ms"] < snap["last_frame_age_ms"] - 1500.0  # the work, not the wait
        assert snap["last_latency_ms"] >= snap["last_inference_ms"]
        _, _, values = node.diagnostics_values()
        assert {"latency_p50_ms", "frame_age_p50_ms", "last_frame_age_ms"} <= set(values)
    finally:
        node.destroy_node()


# ---------------------------------------------------------------- shutdown while an inference runs
@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_during_an_inference_longer_than_shutdown_timeout_exits_0(tiny_predictor, tmp_path, sig):
    node = NodeProcess("frameplan_ros.foresight_node", config_path("foresight.yaml"),
                       {"model": str(tiny_predictor), "device": "cpu", "steps": 500, "samples": 64,
                        "shutdown_timeout": 1.0, "diagnostics_period": 0.2, "warmup": False},
                       log_path=tmp_path / "node.log")
    probe = Probe(f"shutdown_probe_{sig.name}")
    try:
        probe.listen(DiagnosticArray, "/diagnostics")
        image = probe.publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        instruction = probe.publisher(String, INSTRUCTION_TOPIC)

        def values():
            for arr in reversed(probe.messages("/diagnostics")):
                for _, _, v in diagnostic_values(arr, "foresight"):
                    return v
            return {}
        assert probe.wait_for(lambda: values().get("model", "not loaded") != "not loaded" or not node.alive(),
                              LOAD_TIMEOUT), node.log_text()[-3000:]
        assert probe.wait_matched([image, instruction])
        frame = convert.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", frame_id="cam")

        def busy():  # frames are best effort: send again until the worker is busy
            image.publish(frame)
            instruction.publish(String(data="stack the blocks"))
            return values().get("worker_busy") == "True"
        assert probe.wait_for(busy, 60), node.log_text()[-3000:]
        time.sleep(0.5)
        node.proc.send_signal(sig)
        rc = node.proc.wait(60)
        log = node.log_text()
        assert rc == 0, log[-3000:]  # was -6 (SIGABRT, "exit 134" in a shell)
        assert "terminate called" not in log and "Traceback" not in log, log[-3000:]
        assert "its inference is abandoned" in log
    finally:
        probe.close()
        node.kill()
