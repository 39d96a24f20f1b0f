"""The foresight node publishes how sure it is (issue 24): uncertainty maps as 32FC1 with the prediction's header,
confidences on their topic and in /diagnostics, a heat-map panel on comparison, and parameters to switch it off.
The node runs in this process (own rclpy context, real DDS on loopback) with real tiny models saved by the test."""
import math
import time

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="ROS 2 Python (rclpy) not installed: pip install -e .[ros]")
pytestmark = pytest.mark.ros

import rclpy
from rclpy.executors import SingleThreadedExecutor
from rclpy.parameter import Parameter
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, Float32MultiArray, String

from frameplan_core import uncertainty
from frameplan_ros import convert
from frameplan_ros import params as paramlib
from frameplan_ros.foresight_node import ForesightNode

IMAGE_TOPIC = "/camera/camera/color/image_raw"
FRAME_ID = "camera_color_optical_frame"
TIMEOUT = 180.0  # model load + CPU inference on a busy 2-core machine


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    from frameplan_core.planner import GridPlanner, PlannerConfig
    from frameplan_core.predictor import FramePredictor, PredictorConfig

    root = tmp_path_factory.mktemp("unc_models")
    cfg = PredictorConfig.preset("tiny")
    cfg.resolution = 64
    cfg.sampling.samples = 2
    FramePredictor.from_config(cfg.validate(), seed=0, device="cpu").save_pretrained(root / "predictor")
    GridPlanner.from_config(PlannerConfig.preset("tiny", cell_size=32, steps=1, samples=2), seed=0,
                            device="cpu").save_pretrained(root / "planner")
    return root


class Rig:
    """The node, a probe node recording every output, and an executor spinning both."""

    TOPICS = {"/frameplan/predicted_image": Image, "/frameplan/comparison": Image, "/frameplan/uncertainty": Image,
              "/frameplan/confidence": Float32, "/frameplan/plan/grid": Image, "/frameplan/plan/uncertainty": Image,
              "/frameplan/plan/frame_confidence": Float32MultiArray}

    def __init__(self, ctx, models, **params):
        mode = params.get("mode", "predictor")
        base = {"model": str(models / mode), "model_roots": str(models), "device": "cpu", "steps": 1,
                "warmup": False, "use_camera_info": False, "shutdown_timeout": 30.0}
        self.node = ForesightNode(context=ctx, parameter_overrides=paramlib.overrides({**base, **params}))
        self.probe = rclpy.create_node("unc_probe", context=ctx)
        self.got: dict[str, list] = {t: [] for t in self.TOPICS}
        qos = QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE)
        for topic, kind in self.TOPICS.items():
            self.probe.create_subscription(kind, topic, lambda m, t=topic: self.got[t].append(m), qos)
        self.image = self.probe.create_publisher(Image, IMAGE_TOPIC, qos_profile_sensor_data)
        self.text = self.probe.create_publisher(String, "/frameplan/instruction", 10)
        self.executor = SingleThreadedExecutor(context=ctx)
        self.executor.add_node(self.node)
        self.executor.add_node(self.probe)
        assert self.spin_until(lambda: self.image.get_subscription_count() > 0
                               and self.text.get_subscription_count() > 0, 20)

    def spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return False
            self.executor.spin_once(timeout_sec=0.02)
        return True

    def run(self, sec: int, topic: str) -> None:
        """One frame stamped ``sec``, then an instruction (on_instruction trigger); waits for ``topic``."""
        rgb = np.random.default_rng(sec).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        msg = convert.numpy_to_image(rgb, "rgb8", stamp=convert_stamp(sec), frame_id=FRAME_ID)
        assert self.spin_until(lambda: self.image.publish(msg) or self.node._latest_image is not None, 10)
        self.spin_until(lambda: False, 0.2)  # the frame is the latest before the instruction arrives
        self.text.publish(String(data="stack the blocks"))
        assert self.spin_until(lambda: any(m.header.stamp.sec == sec for m in self.got[topic]), TIMEOUT), \
            sorted(self.node.health.errors.items())
        self.spin_until(lambda: False, 0.5)  # the rest of this run's outputs

    def close(self):
        self.executor.shutdown(timeout_sec=1.0)
        self.probe.destroy_node()
        self.node.destroy_node()


def convert_stamp(sec):
    from builtin_interfaces.msg import Time

    return Time(sec=sec, nanosec=17)


def _of(msgs, sec):
    return [m for m in msgs if m.header.stamp.sec == sec]


def test_predictor_publishes_map_confidence_and_heat_map(ctx, models):
    rig = Rig(ctx, models)
    try:
        rig.run(100, "/frameplan/uncertainty")
        pred = _of(rig.got["/frameplan/predicted_image"], 100)[0]
        unc = _of(rig.got["/frameplan/uncertainty"], 100)[0]
        assert unc.header == pred.header and unc.header.frame_id == FRAME_ID  # same header as the prediction
        assert (unc.encoding, unc.height, unc.width) == ("32FC1", pred.height, pred.width)
        u = convert.image_to_numpy(unc)
        assert np.isnan(u[:, :40]).all() and np.isfinite(u[:, 40:280]).all()  # centre crop: borders unseen
        assert (u[np.isfinite(u)] >= 0).all() and np.nanmax(u) > 0
        conf = rig.got["/frameplan/confidence"][-1].data
        assert 0 < conf <= 1 and conf == pytest.approx(uncertainty.confidence(u), rel=1e-5)
        cmp_ = _of(rig.got["/frameplan/comparison"], 100)[0]
        assert cmp_.width > 3 * 320  # input | prediction | prediction with its heat map
        _, _, values = rig.node.diagnostics_values()
        assert values["uncertainty"] == "on" and values["confidence_last"] == pytest.approx(conf, rel=1e-5)
        assert not rig.got["/frameplan/plan/uncertainty"]

        # switched off at run time: the prediction goes on, the map and its panel stop
        assert all(r.successful for r in rig.node.set_parameters([Parameter("publish_uncertainty", value=False)]))
        rig.run(101, "/frameplan/predicted_image")
        assert not _of(rig.got["/frameplan/uncertainty"], 101)
        assert _of(rig.got["/frameplan/comparison"], 101)[0].width < 3 * 320
        assert rig.node.diagnostics_values()[2]["uncertainty"].startswith("off")

        # one sample: nothing invented, and /diagnostics says why
        assert all(r.successful for r in rig.node.set_parameters([Parameter("publish_uncertainty", value=True),
                                                                   Parameter("samples", value=1)]))
        n_conf = len(rig.got["/frameplan/confidence"])
        rig.run(102, "/frameplan/predicted_image")
        assert not _of(rig.got["/frameplan/uncertainty"], 102) and len(rig.got["/frameplan/confidence"]) == n_conf
        assert "one sample" in rig.node.diagnostics_values()[2]["uncertainty"]
    finally:
        rig.close()


def test_planner_publishes_grid_map_and_per_frame_confidence(ctx, models):
    rig = Rig(ctx, models, mode="planner")
    try:
        rig.run(200, "/frameplan/plan/uncertainty")
        grid = _of(rig.got["/frameplan/plan/grid"], 200)[0]
        unc = _of(rig.got["/frameplan/plan/uncertainty"], 200)[0]
        assert unc.header == grid.header and (unc.encoding, unc.height, unc.width) == ("32FC1", 96, 96)
        u = convert.image_to_numpy(unc)
        assert not u[:32, :32].any() and u.max() > 0  # cell 1 is the observed frame
        frame_conf = rig.got["/frameplan/plan/frame_confidence"][-1].data
        assert len(frame_conf) == 9 and frame_conf[0] == 1.0 and all(0 < c < 1 for c in frame_conf[1:])
        assert 0 < rig.got["/frameplan/confidence"][-1].data < 1
        assert not math.isnan(rig.node.diagnostics_values()[2]["confidence_p50"])
        assert not rig.got["/frameplan/uncertainty"]
    finally:
        rig.close()
