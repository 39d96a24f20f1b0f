"""The foresight node's output topics and what goes on them: a prediction (with its uncertainty, confidence and the
input | prediction comparison), a plan (grid, frames stamped one after another, per-frame confidences, the path it
followed with rviz markers), a policy goal, and /diagnostics. Outputs go out only while the node is active and not
shutting down (/diagnostics always). Topics: docs/ROS.md."""
from __future__ import annotations

import threading
from collections import deque
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Path as PathMsg
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import Float32, Float32MultiArray
from visualization_msgs.msg import MarkerArray

from frameplan_ros import convert
from frameplan_ros.foresight_params import MAX_CHAIN


class ForesightOutputs:
    """Made by the node in its __init__ (the publishers are the node's); the worker thread publishes through it."""

    def __init__(self, node: Any) -> None:
        self.node = node
        p = node.p
        out_qos = QoSProfile(depth=p.output_queue_depth, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
        ctl_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        pre = p.output_prefix.rstrip("/")
        self.pub_pred = node.create_publisher(Image, f"{pre}/predicted_image", out_qos)
        self.pub_cmp = node.create_publisher(Image, f"{pre}/comparison", out_qos)
        self.pub_grid = node.create_publisher(Image, f"{pre}/plan/grid", out_qos)
        # a plan's frames are published in one burst: keep all of them, whatever chain is set to later
        frames_qos = QoSProfile(depth=max(p.output_queue_depth, 8 * MAX_CHAIN + 1),
                                reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.pub_frames = node.create_publisher(Image, f"{pre}/plan/frames", frames_qos)
        self.pub_path = node.create_publisher(PathMsg, f"{pre}/plan/trajectory", out_qos)
        self.pub_markers = node.create_publisher(MarkerArray, f"{pre}/plan/trajectory_markers", out_qos)
        # how sure the model is (frameplan_core/uncertainty.py); published when publish_uncertainty is on
        self.pub_unc = node.create_publisher(Image, f"{pre}/uncertainty", out_qos)
        self.pub_plan_unc = node.create_publisher(Image, f"{pre}/plan/uncertainty", out_qos)
        self.pub_conf = node.create_publisher(Float32, f"{pre}/confidence", out_qos)
        self.pub_frame_conf = node.create_publisher(Float32MultiArray, f"{pre}/plan/frame_confidence", out_qos)
        self.pub_diag = node.create_publisher(DiagnosticArray, "/diagnostics", ctl_qos)
        self._confidences: deque = deque(maxlen=100)
        self._lock = threading.Lock()
        self.uncertainty_state = "no output yet"

    def publish(self, pub: Any, msg: Any) -> None:
        node = self.node
        if node._closing or (not node.active and pub is not self.pub_diag):  # lifecycle: outputs only when active
            return
        try:
            pub.publish(msg)
        except Exception as exc:
            if not node._closing and rclpy.ok(context=node.context):
                raise
            node.get_logger().debug(f"publish after shutdown skipped: {exc}")

    def prediction(self, job: Any, rgb: np.ndarray, pred: np.ndarray, full: Any) -> None:
        """A predicted frame; ``full`` is its Prediction with the uncertainty, None when publish_uncertainty is off."""
        header = job.image.header
        self.publish(self.pub_pred, convert.rgb_to_image(np.asarray(pred), header))
        u = self._uncertainty(header, full, self.pub_unc)
        if self.node.p.publish_comparison:
            self.publish(self.pub_cmp, convert.rgb_to_image(self.comparison(rgb, pred, u), header))

    def plan(self, job: Any, rgb: np.ndarray, plan: Any, followed_path: bool) -> None:
        """A plan: grid, frames (frame k stamped source + k * plan_frame_stamp_step), uncertainty, comparison (the last
        frame) and, when it followed ``job.trajectory``, that path."""
        p, header = self.node.p, job.image.header
        self.publish(self.pub_grid, convert.rgb_to_image(np.asarray(plan.grid), header))
        for k, frame in enumerate(plan.frames):
            stamp = convert.stamp_plus(header.stamp, k * p.plan_frame_stamp_step)
            self.publish(self.pub_frames, convert.rgb_to_image(np.asarray(frame), header, stamp=stamp))
        self._uncertainty(header, plan if p.publish_uncertainty else None, self.pub_plan_unc)
        if p.publish_comparison:
            last_u = plan.uncertainty[-1] if p.publish_uncertainty and plan.uncertainty else None
            self.publish(self.pub_cmp, convert.rgb_to_image(self.comparison(rgb, plan.frames[-1], last_u), header))
        if followed_path:
            path = convert.path_msg(job.trajectory.poses, header.stamp, job.trajectory.header.frame_id or header.frame_id)
            self.publish(self.pub_path, path)
            self.publish(self.pub_markers, convert.trajectory_markers(path))

    def goal(self, header: Any, rgb: np.ndarray, goal: np.ndarray, plan: Any = None) -> None:
        """Policy mode: a new goal frame (and the plan it came from) on the predictor's / planner's topics."""
        self.publish(self.pub_pred, convert.rgb_to_image(np.ascontiguousarray(goal), header))
        if self.node.p.publish_comparison:
            self.publish(self.pub_cmp, convert.rgb_to_image(self.comparison(rgb, goal, None), header))
        if plan is not None:
            self.publish(self.pub_grid, convert.rgb_to_image(np.asarray(plan.grid), header))

    def _uncertainty(self, header: Any, result: Any, pub: Any) -> np.ndarray | None:
        """The map of a Prediction (or a Plan's grid mosaic) as 32FC1 on ``pub`` with the source header, its
        confidence (and a plan's per-frame ones); returns that map, None when there is none (and notes why, for
        /diagnostics)."""
        if result is None:
            self.uncertainty_state = "off (publish_uncertainty: false)"
            return None
        u = getattr(result, "grid_uncertainty", None) if hasattr(result, "grid") else result.uncertainty
        if u is None:
            self.uncertainty_state = f"unavailable: {result.uncertainty_note}"
            return None
        self.publish(pub, convert.numpy_to_image(np.ascontiguousarray(u, np.float32), "32FC1", header))
        if result.confidence is not None:
            self.publish(self.pub_conf, Float32(data=float(result.confidence)))
            with self._lock:
                self._confidences.append(float(result.confidence))
        if getattr(result, "frame_confidence", None) is not None:
            self.publish(self.pub_frame_conf, Float32MultiArray(data=[float(c) for c in result.frame_confidence]))
        self.uncertainty_state = "on"
        return u

    def comparison(self, rgb: np.ndarray, pred: np.ndarray, u: np.ndarray | None) -> np.ndarray:
        """input | prediction, and the prediction with its uncertainty as a heat map when there is one."""
        from frameplan_core import uncertainty
        from frameplan_core.image import hstack

        pred = np.asarray(pred)
        panels = [rgb, pred]
        if u is not None:
            panels.append(uncertainty.overlay(pred, u, self.node.p.uncertainty_heatmap_max))
        return hstack(panels)

    def values(self) -> dict:
        """The outputs' part of /diagnostics."""
        with self._lock:
            conf = list(self._confidences)
        return {"uncertainty": self.uncertainty_state, "confidence_last": conf[-1] if conf else float("nan"),
                "confidence_p50": float(np.median(conf)) if conf else float("nan")}

    def diagnostics(self, status: Any) -> None:
        arr = DiagnosticArray()
        arr.header.stamp = self.node.get_clock().now().to_msg()
        arr.status = [status]
        self.publish(self.pub_diag, arr)


__all__ = ["ForesightOutputs"]
