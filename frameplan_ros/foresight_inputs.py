"""The foresight node's inputs: its subscriptions and their callbacks. Callbacks never block: they check a message
(bad ones are counted by the kind their InputError carries), keep the latest frame, instruction, camera matrix and
path, and hand the newest job to the worker (``trigger``: every frame, or one per new instruction). Mixed into
ForesightNode, which provides ``p``, ``health``, ``worker``, ``active`` and ``model``."""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from nav_msgs.msg import Path as PathMsg
from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import String

from frameplan_core.errors import InputError
from frameplan_ros import compressed, convert
from frameplan_ros.diagnostics import WARN


@dataclass
class Job:
    """One unit of work for the worker: a colour frame (still encoded) and what goes with it."""

    image: Any  # sensor_msgs/Image or CompressedImage, already validated
    received: float  # time.monotonic() when the frame arrived
    instruction: str | None
    triggered: float = 0.0  # time.monotonic() of what started the job (the instruction, or the frame itself)
    K: np.ndarray | None = None
    trajectory: Any = None  # nav_msgs/Path or None


class ForesightInputs:
    """Subscriptions and callbacks of the foresight node (see the module docstring)."""

    def subscribe_inputs(self) -> None:
        """The input state, then the subscriptions (colour image raw or compressed, instruction, path, camera_info)."""
        self._lock = threading.Lock()
        self._latest_image: Any = None
        self._latest_received = 0.0
        self._pending_instruction: str | None = None
        self._instruction: str | None = self.p.default_instruction.strip() or None
        self._instruction_received = False  # until one arrives, default_instruction (also when changed) is used
        self._K: np.ndarray | None = None
        self._trajectory: Any = None
        cam_qos = qos_profile_sensor_data if self.p.camera_qos == "sensor_data" else QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        ctl_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        if self.p.image_transport == "compressed":  # image_transport's compressed topic of the same camera
            self.image_where = f"{self.p.image_topic.rstrip('/')}/compressed"
            self.create_subscription(CompressedImage, self.image_where, self._on_compressed, cam_qos)
        else:
            self.image_where = self.p.image_topic
            self.create_subscription(Image, self.p.image_topic, self._on_image, cam_qos)
        self.create_subscription(String, self.p.instruction_topic, self._on_instruction, ctl_qos)
        self.create_subscription(PathMsg, self.p.trajectory_topic, self._on_trajectory, ctl_qos)
        if self.p.use_camera_info:
            self.create_subscription(CameraInfo, self.p.camera_info_topic, self._on_camera_info, cam_qos)

    def _on_image(self, msg: Image) -> None:
        self.health.input()
        try:
            convert.check_color_image(msg, self.p.image_topic)
        except InputError as exc:
            self.health.error(exc.kind, str(exc), WARN)
            return
        self._on_frame(msg)

    def _on_compressed(self, msg: CompressedImage) -> None:
        """image_transport: compressed: format, signature and size checked here; decoded by the worker."""
        self.health.input()
        try:
            compressed.check(msg, self.image_where)
        except InputError as exc:
            self.health.error(exc.kind, str(exc), WARN)
            return
        self._on_frame(msg)

    def _on_frame(self, msg: Any) -> None:
        now = time.monotonic()
        with self._lock:
            self._latest_image, self._latest_received = msg, now
            instruction = self._instruction
            pending, self._pending_instruction = self._pending_instruction, None
        if self.p.trigger == "continuous" or self.p.mode == "policy":  # the policy runs on every frame
            if instruction is None and self._needs_instruction():
                self.health.count("waiting_for_instruction")
                return
            self._submit(msg, now, instruction, now)
        elif pending is not None:
            self._submit(msg, now, pending, now)

    def _needs_instruction(self) -> bool:
        """Frames wait for an instruction: the predictor's, and policy mode's with predictor goals (a goal: false
        policy takes none)."""
        if self.p.mode == "policy":
            return self.p.policy_goal == "predictor" and getattr(self.model, "goal_model", True) is not None
        return self.p.mode == "predictor"

    def _on_instruction(self, msg: String) -> None:
        """Accept an instruction only if the model would (the core's rules); a refused one keeps the last good."""
        from frameplan_core.text import validate_instruction

        now = time.monotonic()
        text, where = msg.data.strip(), self.p.instruction_topic
        if not text:
            self.health.error("instruction_empty", f"{where}: empty instruction ignored", WARN)
            return
        if len(text) > self.p.max_instruction_chars:
            self.health.error("instruction_too_long", f"{where}: instruction of {len(text)} characters refused "
                              f"(max_instruction_chars={self.p.max_instruction_chars})", WARN)
            return
        try:
            text = validate_instruction(text, where)
        except InputError as exc:
            self.health.error(exc.kind, f"{exc}; refused, the previous instruction is kept", WARN)
            return
        with self._lock:
            self._instruction, self._instruction_received = text, True
            image, received = self._latest_image, self._latest_received
            if self.p.trigger == "on_instruction" and image is None:
                self._pending_instruction = text
        if self.p.trigger == "on_instruction" and image is not None:
            self._submit(image, received, text, now)

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            K = convert.camera_info_to_K(msg, self.p.camera_info_topic)
        except InputError as exc:
            self.health.error(exc.kind, str(exc), WARN)
            return
        with self._lock:
            self._K = K

    def _on_trajectory(self, msg: PathMsg) -> None:
        if len(msg.poses) < 2:
            self.health.error("trajectory", f"{self.p.trajectory_topic}: a path needs at least 2 poses, got "
                              f"{len(msg.poses)}; ignored", WARN)
            return
        with self._lock:
            self._trajectory = msg

    def _submit(self, image: Any, received: float, instruction: str | None, triggered: float) -> None:
        if not self.active:  # lifecycle: not active (unconfigured, inactive): nothing is processed
            self.health.count("inactive_dropped")
            return
        with self._lock:
            job = Job(image, received, instruction, triggered, self._K,
                      self._trajectory if self.p.mode == "planner" else None)
        self.worker.submit(job)  # True when it replaced an unprocessed job (counted in worker.dropped)


__all__ = ["ForesightInputs", "Job"]
