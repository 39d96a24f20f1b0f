"""The managed foresight node (`lifecycle: true`) driven through its lifecycle services (lifecycle_msgs ChangeState /
GetState, what `ros2 lifecycle set/get` call): unconfigured and inactive nodes publish nothing, configure loads the
model (or fails with the reason), activate/deactivate start and stop the outputs, cleanup frees the model,
shutdown ends the process with exit code 0. In this process: cleanup really drops the model (a weak reference
dies), and on a GPU the CUDA memory goes back."""
import threading
import time
import weakref

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

from diagnostic_msgs.msg import DiagnosticArray
from lifecycle_msgs.msg import Transition
from lifecycle_msgs.srv import ChangeState, GetState
from rcl_interfaces.srv import SetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from sensor_msgs.msg import Image

from frameplan_ros import convert
from frameplan_ros import params as paramlib
from frameplan_ros.testing import NodeProcess, Probe, config_path, diagnostic_values

NODE = "/foresight_node"


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    root = tmp_path_factory.mktemp("lifecycle_models")
    cfg = PredictorConfig.preset("tiny")
    cfg.resolution = 64
    FramePredictor.from_config(cfg, seed=0, device="cpu").save_pretrained(root / "predictor")
    (root / "empty").mkdir()  # under model_roots, but not a model: configure must fail on it
    return root


def _call(probe, client, request, timeout=120.0, resend_every=None):
    """The service's answer. ``resend_every`` (idempotent requests only): ask again when no answer came in that many
    seconds -- wait_for_service is true once the server sees the client's requests, but the server's reply can still
    be lost while DDS matches the reply path (CI saw a first get_state go unanswered for 120 s); ``ros2 lifecycle get``
    users simply ask again."""
    assert client.wait_for_service(timeout_sec=60), f"{client.srv_name} not available"
    deadline = time.monotonic() + timeout
    futures = [client.call_async(request)]
    sent = time.monotonic()
    while not any(f.done() for f in futures) and time.monotonic() < deadline:
        if resend_every and time.monotonic() - sent > resend_every:
            futures.append(client.call_async(request))
            sent = time.monotonic()
        time.sleep(0.02)
    done = [f for f in futures if f.done()]
    assert done, f"{client.srv_name}: no answer in {timeout} s ({len(futures)} request(s))"
    return done[0].result()


def _state(probe, get):
    return _call(probe, get, GetState.Request(), resend_every=10.0).current_state.label


def _change(probe, change, transition_id):
    return _call(probe, change, ChangeState.Request(transition=Transition(id=transition_id))).success


def _diag(probe):
    for arr in reversed(probe.messages("/diagnostics")):
        vals = diagnostic_values(arr, "foresight")
        if vals:
            return vals[0]
    return None


def test_lifecycle_services_drive_the_node_from_unconfigured_to_shutdown(predictor, tmp_path):
    node = NodeProcess("frameplan_ros.foresight_node", config_path("foresight.yaml"),
                       {"lifecycle": True, "model": str(predictor / "predictor"), "model_roots": str(predictor),
                        "device": "cpu", "steps": 1, "samples": 1, "trigger": "continuous",
                        "default_instruction": "stack the blocks", "use_camera_info": False,
                        "diagnostics_period": 0.2, "camera_qos": "reliable", "publish_uncertainty": False},
                       log_path=tmp_path / "node.log")
    probe = Probe("lifecycle_probe")
    stop = threading.Event()
    try:
        probe.listen(DiagnosticArray, "/diagnostics")
        probe.listen(Image, "/frameplan/predicted_image")
        image = probe.publisher(Image, "/camera/camera/color/image_raw")
        get = probe.node.create_client(GetState, f"{NODE}/get_state")
        change = probe.node.create_client(ChangeState, f"{NODE}/change_state")
        frame = convert.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8", frame_id="cam")

        def camera():  # a 10 Hz camera all along
            while not stop.is_set():
                image.publish(frame)
                time.sleep(0.1)

        threading.Thread(target=camera, daemon=True).start()
        assert _state(probe, get) == "unconfigured", node.log_text()[-2000:]
        assert probe.wait_for(lambda: _diag(probe) is not None and int(_diag(probe)[2].get("inactive_dropped", 0)) > 3,
                              60), node.log_text()[-2000:]
        level, message, values = _diag(probe)
        assert values["lifecycle_state"] == "unconfigured" and values["model"] == "not loaded"
        assert level == 0 and "unconfigured" in message  # waiting for a manager is not an error

        assert _change(probe, change, Transition.TRANSITION_CONFIGURE)  # loads the model, blocking
        assert _state(probe, get) == "inactive"
        assert probe.wait_for(lambda: _diag(probe)[2]["model"] != "not loaded", 10)
        time.sleep(1.0)
        assert not probe.messages("/frameplan/predicted_image")  # configured but inactive: no output

        assert _change(probe, change, Transition.TRANSITION_ACTIVATE)
        assert _state(probe, get) == "active"
        assert probe.wait_for(lambda: len(probe.messages("/frameplan/predicted_image")) >= 2, 60), node.log_text()[-2000:]

        assert _change(probe, change, Transition.TRANSITION_DEACTIVATE)
        time.sleep(1.5)  # an inference running at deactivate finishes unpublished
        n = len(probe.messages("/frameplan/predicted_image"))
        time.sleep(1.5)
        assert len(probe.messages("/frameplan/predicted_image")) == n and _state(probe, get) == "inactive"

        assert _change(probe, change, Transition.TRANSITION_CLEANUP)
        assert _state(probe, get) == "unconfigured"
        assert probe.wait_for(lambda: _diag(probe)[2]["model"] == "not loaded", 10)

        # configure with a folder that holds no model: the transition fails with the reason on /diagnostics
        params = probe.node.create_client(SetParameters, f"{NODE}/set_parameters")
        res = _call(probe, params, SetParameters.Request(
            parameters=[Parameter("model", value=str(predictor / "empty")).to_parameter_msg()]))
        assert res.results[0].successful, res.results[0].reason
        assert not _change(probe, change, Transition.TRANSITION_CONFIGURE)
        assert _state(probe, get) == "unconfigured"
        assert probe.wait_for(lambda: "empty" in _diag(probe)[2].get("error.model_load", ""), 10)

        assert _change(probe, change, Transition.TRANSITION_UNCONFIGURED_SHUTDOWN)
        assert node.proc.wait(30) == 0  # shutdown leaves spin: the process exits by itself, cleanly
        assert "Traceback" not in node.log_text()
    finally:
        stop.set()
        probe.close()
        node.kill()


def _managed(ctx, predictor, device="cpu"):
    from frameplan_ros.foresight_node import ForesightNode

    return ForesightNode(context=ctx, parameter_overrides=paramlib.overrides(
        {"lifecycle": True, "model": str(predictor / "predictor"), "device": device, "warmup": False,
         "use_camera_info": False, "shutdown_timeout": 5.0}))


def test_cleanup_drops_the_model_and_shutdown_completes_the_spin(ctx, predictor):
    node = _managed(ctx, predictor)
    try:
        assert node.model is None and node.lifecycle_state == "unconfigured"
        time.sleep(0.6)  # the worker's housekeeping ran: it must not load while unconfigured
        assert node.model is None
        node.trigger_configure()
        assert node.lifecycle_state == "inactive" and node.model is not None
        ref = weakref.ref(node.model)
        node.trigger_cleanup()
        assert node.model is None and node.model_info == "not loaded"
        assert ref() is None  # nothing holds the model any more: its memory is free
        node.trigger_configure()
        node.trigger_activate()
        assert node.active
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        done = threading.Event()
        threading.Thread(target=lambda: (executor.spin_until_future_complete(node.shutdown_future, 30),
                                         done.set()), daemon=True).start()
        node.trigger_shutdown()
        assert done.wait(10) and node.lifecycle_state == "finalized" and node.model is None
        assert not node.worker.alive
        executor.shutdown(timeout_sec=1.0)
    finally:
        node.destroy_node()


@pytest.mark.cuda
def test_cleanup_returns_the_cuda_memory(ctx, predictor):
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU")
    torch.cuda.empty_cache()
    allocated, reserved = torch.cuda.memory_allocated(), torch.cuda.memory_reserved()
    node = _managed(ctx, predictor, device="cuda")
    try:
        node.trigger_configure()
        assert node.model is not None and torch.cuda.memory_allocated() > allocated
        node.trigger_cleanup()
        assert torch.cuda.memory_allocated() == allocated  # the model's tensors are gone
        assert torch.cuda.memory_reserved() <= reserved  # and empty_cache gave their cached blocks back
    finally:
        node.destroy_node()
