"""The foresight node: camera frames + instructions in, predicted frames / 3x3 plans out.

Callbacks only validate and hand the newest job to one worker thread (latest-frame-wins, see worker.py); the
worker runs the model and publishes. Bad inputs and model failures are logged once per kind, reported on
/diagnostics, and the node keeps going with the next good frame. Topics: docs/ROS.md.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Path as PathMsg
from rclpy.lifecycle import LifecycleNode
from rclpy.node import Node
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CameraInfo, CompressedImage, Image
from std_msgs.msg import Float32, Float32MultiArray, String
from visualization_msgs.msg import Marker, MarkerArray

from frameplan_core.errors import ConfigError, FrameplanError, InputError, ModelError, one_line
from frameplan_ros import compressed, convert
from frameplan_ros import params as paramlib
from frameplan_ros.diagnostics import ERROR, OK, WARN, Health, set_period, status_message, window_for
from frameplan_ros.foresight_params import (
    MAX_CHAIN,
    MODEL_PARAMS,
    PRESET_MODELS,
    ForesightParams,
    model_outside_roots,
    resolve_model_roots,
)
from frameplan_ros.lifecycle import ManagedNode
from frameplan_ros.worker import Worker


@dataclass
class Job:
    """One unit of work for the worker: a colour frame (still encoded) and what goes with it."""

    image: Any  # sensor_msgs/Image, already validated
    received: float  # time.monotonic() when the frame arrived
    instruction: str | None
    triggered: float = 0.0  # time.monotonic() of what started the job (the instruction, or the frame itself)
    depth: Any = None  # sensor_msgs/Image paired by stamp, or None
    K: np.ndarray | None = None
    trajectory: Any = None  # nav_msgs/Path or None
    extra: dict = field(default_factory=dict)


def stamp_seconds(stamp: Any) -> float:
    return stamp.sec + stamp.nanosec * 1e-9


def stamp_plus(stamp: Any, seconds: float) -> Any:
    from builtin_interfaces.msg import Time

    total = stamp.sec * 1_000_000_000 + stamp.nanosec + round(seconds * 1e9)
    return Time(sec=total // 1_000_000_000, nanosec=total % 1_000_000_000)


def load_model(mode: str, model: str, device: str, policy: str = "", policy_goal: str = "predictor") -> Any:
    """The predictor or planner from a folder or preset ('' = embedded default); in policy mode the policy and its
    goal model (policy_runner.PolicyModels)."""
    if mode == "policy":
        from frameplan_ros.policy_runner import load_policy_models

        return load_policy_models(policy_goal, model, policy, device)
    name = model or "tiny"
    if mode == "predictor":
        from frameplan_core.predictor import FramePredictor

        return FramePredictor.from_pretrained(name, device=device)
    from frameplan_core.planner import GridPlanner

    return GridPlanner.from_pretrained(name, device=device)


def _describe(model: Any) -> str:
    try:
        d = model.describe()
    except Exception:  # noqa: BLE001 - description is cosmetic
        return type(model).__name__
    return d if isinstance(d, str) else str(d)


class ForesightNode(ManagedNode, LifecycleNode):
    def __init__(self, node_name: str = "foresight_node", **kwargs: Any) -> None:
        self.worker: Worker | None = None
        self._closing = False
        super().__init__(node_name, **kwargs)
        self.p: ForesightParams = paramlib.declare(self, ForesightParams)
        self._model_roots = resolve_model_roots(self.p.model_roots)
        reason = instruction_refusal(self.p.default_instruction, "default_instruction")
        if reason:
            raise ConfigError(f"node {node_name}: {reason}")
        self._start_model = self.p.model  # the operator's launch choice: trusted as given, and allowed again later
        self._start_policy = self.p.policy
        self.health = Health(window_s=window_for(self.p.diagnostics_period), log=self.get_logger().error,
                             warn_log=self.get_logger().warning)
        self._lock = threading.Lock()
        self._latest_image: Any = None
        self._latest_received = 0.0
        self._pending_instruction: str | None = None
        self._instruction: str | None = self.p.default_instruction.strip() or None
        self._instruction_received = False  # until one arrives, default_instruction (also when changed) is used
        self._depth: deque = deque(maxlen=8)
        self._last_job: Job | None = None
        self.recent_instructions: deque = deque(maxlen=64)  # ((sec, nanosec) of a source frame, instruction used)
        self._K: np.ndarray | None = None
        self._trajectory: Any = None
        self.model: Any = None
        self.model_info = "not loaded"
        self._loaded_key: tuple | None = None
        self._reload = threading.Event()
        self._reload.set()  # initial load happens in the worker, so the node is up (and reports) at once

        cam_qos = qos_profile_sensor_data if self.p.camera_qos == "sensor_data" else QoSProfile(
            depth=5, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        out_qos = QoSProfile(depth=self.p.output_queue_depth, reliability=ReliabilityPolicy.RELIABLE,
                             history=HistoryPolicy.KEEP_LAST)
        ctl_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        pre = self.p.output_prefix.rstrip("/")
        self.pub_pred = self.create_publisher(Image, f"{pre}/predicted_image", out_qos)
        self.pub_cmp = self.create_publisher(Image, f"{pre}/comparison", out_qos)
        self.pub_grid = self.create_publisher(Image, f"{pre}/plan/grid", out_qos)
        # a plan's frames are published in one burst: keep all of them, whatever chain is set to later
        frames_qos = QoSProfile(depth=max(self.p.output_queue_depth, 8 * MAX_CHAIN + 1),
                                reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        self.pub_frames = self.create_publisher(Image, f"{pre}/plan/frames", frames_qos)
        self.pub_path = self.create_publisher(PathMsg, f"{pre}/plan/trajectory", out_qos)
        self.pub_markers = self.create_publisher(MarkerArray, f"{pre}/plan/trajectory_markers", out_qos)
        # how sure the model is (frameplan_core/uncertainty.py); published when publish_uncertainty is on
        self.pub_unc = self.create_publisher(Image, f"{pre}/uncertainty", out_qos)
        self.pub_plan_unc = self.create_publisher(Image, f"{pre}/plan/uncertainty", out_qos)
        self.pub_conf = self.create_publisher(Float32, f"{pre}/confidence", out_qos)
        self.pub_frame_conf = self.create_publisher(Float32MultiArray, f"{pre}/plan/frame_confidence", out_qos)
        self._confidences: deque = deque(maxlen=100)
        self.uncertainty_state = "no output yet"
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", ctl_qos)

        if self.p.image_transport == "compressed":  # image_transport's compressed topic of the same camera
            self.image_where = f"{self.p.image_topic.rstrip('/')}/compressed"
            self.create_subscription(CompressedImage, self.image_where, self._on_compressed, cam_qos)
        else:
            self.image_where = self.p.image_topic
            self.create_subscription(Image, self.p.image_topic, self._on_image, cam_qos)
        self.policy_stage = None
        if self.p.mode == "policy":
            self._policy_stage()
        self.create_subscription(String, self.p.instruction_topic, self._on_instruction, ctl_qos)
        self.create_subscription(PathMsg, self.p.trajectory_topic, self._on_trajectory, ctl_qos)
        if self.p.use_depth:
            self.create_subscription(Image, self.p.depth_topic, self._on_depth, cam_qos)
        if self.p.use_camera_info:
            self.create_subscription(CameraInfo, self.p.camera_info_topic, self._on_camera_info, cam_qos)

        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.worker = Worker(self._run_job, self._job_failed, idle=self._maintain, name=f"{node_name}-worker")
        self._diag_timer = self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"mode={self.p.mode} trigger={self.p.trigger} device={self.p.device} model={self.p.model or '(embedded)'}"
            f"; listening on {self.image_where} and {self.p.instruction_topic}; outputs under {pre}/")
        self.lifecycle_start()

    def _policy_stage(self) -> Any:
        """Policy mode's inputs and outputs (joint states, JointTrajectory), made on first use."""
        if self.policy_stage is None:
            from frameplan_ros.policy_stage import PolicyStage

            self.policy_stage = PolicyStage(self)
        return self.policy_stage

    # ------------------------------------------------------------------ callbacks (never block)
    def _on_image(self, msg: Image) -> None:
        self.health.input()
        try:
            convert.check_image(msg, f"{self.p.image_topic}")
            if msg.encoding not in convert.COLOR_ENCODINGS:
                raise InputError(f"{self.p.image_topic}: encoding {msg.encoding!r} is not a colour image; "
                                 f"accepted: {list(convert.COLOR_ENCODINGS)}")
        except InputError as exc:
            self.health.error(_input_kind(str(exc)), str(exc), WARN)
            return
        self._on_frame(msg)

    def _on_compressed(self, msg: CompressedImage) -> None:
        """image_transport: compressed: format, signature and size checked here; decoded by the worker."""
        self.health.input()
        try:
            compressed.check(msg, self.image_where)
        except InputError as exc:
            self.health.error("bad_compressed", str(exc), WARN)
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
        text = msg.data.strip()
        if not text:
            self.health.error("instruction_empty", f"{self.p.instruction_topic}: empty instruction ignored", WARN)
            return
        if len(text) > self.p.max_instruction_chars:
            self.health.error("instruction_too_long", f"{self.p.instruction_topic}: instruction of {len(text)} "
                              f"characters refused (max_instruction_chars={self.p.max_instruction_chars})", WARN)
            return
        try:
            text = validate_instruction(text, self.p.instruction_topic)
        except InputError as exc:
            self.health.error("instruction_invalid", f"{exc}; refused, the previous instruction is kept", WARN)
            return
        with self._lock:
            self._instruction, self._instruction_received = text, True
            image, received = self._latest_image, self._latest_received
            if self.p.trigger == "on_instruction" and image is None:
                self._pending_instruction = text
        if self.p.trigger == "on_instruction" and image is not None:
            self._submit(image, received, text, now)

    def _on_depth(self, msg: Image) -> None:
        try:
            convert.check_image(msg, self.p.depth_topic)
            if msg.encoding not in convert.DEPTH_ENCODINGS:
                raise InputError(f"{self.p.depth_topic}: depth encoding {msg.encoding!r}; expected one of "
                                 f"{list(convert.DEPTH_ENCODINGS)} (16UC1/mono16 in mm, 32FC1 in m)")
        except InputError as exc:
            self.health.error("depth_" + _input_kind(str(exc)), str(exc), WARN)
            return
        with self._lock:
            self._depth.append(msg)
            job = self._last_job  # its depth often arrives just after the colour frame: attach it now
            if job is not None and job.depth is None and abs(
                    stamp_seconds(msg.header.stamp) - stamp_seconds(job.image.header.stamp)) <= self.p.depth_match_tolerance:
                job.depth = msg

    def _on_camera_info(self, msg: CameraInfo) -> None:
        try:
            K = convert.camera_info_to_K(msg, self.p.camera_info_topic)
        except InputError as exc:
            self.health.error("camera_info", str(exc), WARN)
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
            job = Job(image, received, instruction, triggered, self._match_depth(image), self._K,
                      self._trajectory if self.p.mode == "planner" else None)
            self._last_job = job
        self.worker.submit(job)  # True when it replaced an unprocessed job (counted in worker.dropped)

    def _match_depth(self, image: Image) -> Any:
        t = stamp_seconds(image.header.stamp)
        best = min(self._depth, key=lambda d: abs(stamp_seconds(d.header.stamp) - t), default=None)
        if best is not None and abs(stamp_seconds(best.header.stamp) - t) <= self.p.depth_match_tolerance:
            return best
        return None

    # ------------------------------------------------------------------ parameters
    def _check_parameters(self, changed: list) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        names = {prm.name for prm in changed}
        for prm in changed:
            reason = paramlib.validate(ForesightParams, prm.name, prm.value)
            if reason is None and prm.name == "model" and prm.value:
                reason = self._model_refusal(str(prm.value))
            if reason is None and prm.name == "policy":
                from frameplan_ros.policy_runner import policy_refusal

                reason = policy_refusal(str(prm.value), self._model_roots, self._start_policy)
            if reason is None and prm.name == "default_instruction":
                reason = instruction_refusal(str(prm.value), "default_instruction")
            if reason is None and prm.name == "steps" and not names & set(MODEL_PARAMS):
                # checked against the model that will run it (a new model is checked when it is loaded)
                reason = steps_refusal(self.model, getattr(self, "model_mode", None), prm.value)
            if reason is None and prm.name == "device" and str(prm.value).startswith("cuda"):
                try:
                    import torch

                    if not torch.cuda.is_available():
                        reason = f"device={prm.value!r}: CUDA is not available on this machine"
                except ImportError:
                    reason = "device: torch is not importable"
            if reason:
                reason = one_line(reason)  # the value may be anything a client sent
                self.get_logger().warning(f"parameter change refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

    def _model_refusal(self, value: str) -> str | None:
        """Why a run-time ``model`` value is refused: a path outside ``model_roots`` is refused on its name alone,
        before anything there is looked at (remote callers must not learn what exists where)."""
        if _is_preset(value):
            return None
        if model_outside_roots(value, self._model_roots, self._start_model):
            roots = os.pathsep.join(map(str, self._model_roots))
            return (f"model={one_line(value, 200)!r}: outside model_roots ({roots}); put the checkpoint under one "
                    "of them, or start the node with a model_roots that holds it")
        if not Path(value).expanduser().exists():
            return f"model={one_line(value, 200)!r}: no such checkpoint folder"
        return None

    def _apply_parameters(self, changed: list) -> None:
        self.p = paramlib.with_changes(self.p, changed)
        names = {prm.name for prm in changed}
        if "default_instruction" in names:
            with self._lock:
                if not self._instruction_received:
                    self._instruction = self.p.default_instruction.strip() or None
        if "diagnostics_period" in names:
            set_period(self._diag_timer, self.health, self.p.diagnostics_period)
        if self.p.mode == "policy":
            self._policy_stage()
        if any(prm.name in MODEL_PARAMS for prm in changed):
            self.get_logger().info(f"model parameters changed: reloading {self.p.mode} model "
                                   f"{one_line(self.p.model or '(embedded)')} on {self.p.device} (the current one "
                                   "serves until then)")
            self._reload.set()
        elif "steps" in names and self._loaded_key != self._model_key():
            self._reload.set()  # a load refused for the old steps may succeed now

    def _model_key(self) -> tuple:
        """What decides the loaded model(s): a change reloads them."""
        p = self.p
        return (p.mode, p.model, p.device) + ((p.policy, p.policy_goal) if p.mode == "policy" else ())

    # ------------------------------------------------------------------ worker side
    def _maintain(self) -> None:
        """Runs in the worker thread between jobs: (re)load the model when asked (and while configured)."""
        if not self._reload.is_set() or not self.allow_load:
            return
        self._reload.clear()
        self.load_model_now()

    def load_model_now(self) -> bool:
        """Load the model(s) of the current parameters unless they are loaded; False (reported) when they cannot
        be. Runs in the worker thread, or in lifecycle's configure while the worker has nothing to do."""
        key = self._model_key()
        if key == self._loaded_key and self.model is not None:
            return True
        t0 = time.monotonic()
        what = f"{key[0]} model {one_line(key[1] or '(embedded)')}" if key[0] != "policy" else (
            f"policy {one_line(key[3] or '(embedded)')} with {key[4]} goals ({one_line(key[1] or '(embedded)')})")
        try:
            model = load_model(*key)
        except (FrameplanError, ImportError, OSError, RuntimeError, ValueError) as exc:
            kept = f"; keeping {self.model_info}" if self.model is not None else ""
            self.health.error("model_load", f"cannot load {what} on {key[2]}: {exc}{kept}", ERROR)
            return False
        refusal = steps_refusal(model, key[0], self.p.steps)
        if refusal:
            kept = f"; keeping {self.model_info}" if self.model is not None else ""
            self.health.error("model_load", f"{what} cannot run steps={self.p.steps}: {refusal} (set steps, 0 = the "
                              f"model's default){kept}", ERROR)
            return False
        if self.p.warmup:
            try:
                blank = np.zeros((64, 64, 3), np.uint8)
                if key[0] == "policy":
                    model.warmup()
                elif key[0] == "predictor":
                    model.predict(blank, "warm up", steps=1, seed=0)
                else:
                    model.plan(blank, "warm up", steps=1, seed=0)
            except Exception as exc:  # noqa: BLE001 - a failed warm-up is reported; the model may still work
                self.health.error("model_warmup", f"warm-up inference failed: {type(exc).__name__}: {exc}", WARN)
        with self._lock:
            self.model_info = f"{key[0]}: {_describe(model)}"
            self.model_mode = key[0]
            self.model, self._loaded_key = model, key
        self.health.clear("model_load")
        self.get_logger().info(f"loaded {self.model_info} in {time.monotonic() - t0:.1f} s")
        return True

    def drop_model(self) -> set[str]:
        """Forget the loaded model(s) (lifecycle cleanup); returns the devices they were on."""
        with self._lock:
            model, self.model, self._loaded_key = self.model, None, None
            self.model_info = "not loaded"
        if self.policy_stage is not None:
            self.policy_stage.forget()
        devices = {str(self.p.device)}
        for m in (model, getattr(model, "policy", None), getattr(model, "goal_model", None)):
            dev = getattr(m, "device", None)
            if dev is not None:
                devices.add(str(dev))
        return devices

    def _run_job(self, job: Job) -> None:
        self._maintain()
        model, mode = self.model, getattr(self, "model_mode", None)
        with self._lock:  # paired again here: the depth of this stamp usually arrives just after the colour
            job.depth = job.depth if job.depth is not None else self._match_depth(job.image)
            job.K = self._K if job.K is None else job.K
            stamp = job.image.header.stamp
            self.recent_instructions.append(((stamp.sec, stamp.nanosec), job.instruction))
        if model is None:
            self.health.error("no_model", "frame skipped: no model loaded (see the model_load error)", ERROR)
            return
        if mode == "policy":  # frameplan_ros/policy_stage.py: a JointTrajectory when one is due
            infer_ms = self._policy_stage().run(job, model)
            if infer_ms is not None:
                done = time.monotonic()
                self.health.output((done - job.received) * 1e3, infer_ms, (done - job.received) * 1e3)
            return
        rgb = convert.to_rgb(job.image, self.image_where)
        seed = self.p.seed if self.p.seed >= 0 else int.from_bytes(os.urandom(4), "little") >> 1
        steps, samples = self.p.steps or None, self.p.samples or None
        t0 = time.monotonic()
        if mode == "predictor":
            if not job.instruction:
                raise InputError("predictor: no instruction yet (publish one on the instruction topic)")
            kw = {"steps": steps, "seed": seed, "output_size": self.p.output_size, "samples": samples}
            full = model.predict_full(rgb, job.instruction, **kw) if self.p.publish_uncertainty else None
            pred = full.image if full is not None else model.predict(rgb, job.instruction, **kw)
            infer_ms = (time.monotonic() - t0) * 1e3
            self._publish(self.pub_pred, convert.rgb_to_image(np.asarray(pred), job.image.header))
            u = self._publish_uncertainty(job, full, self.pub_unc)
            if self.p.publish_comparison:
                self._publish(self.pub_cmp, convert.rgb_to_image(self._comparison(rgb, pred, u), job.image.header))
        else:
            traj_px = self._project_trajectory(job, rgb.shape[:2])
            plan = model.plan(rgb, instruction=job.instruction, trajectory=traj_px, steps=steps, seed=seed,
                              chain=self.p.chain, samples=samples)
            infer_ms = (time.monotonic() - t0) * 1e3
            self._publish(self.pub_grid, convert.rgb_to_image(np.asarray(plan.grid), job.image.header))
            for k, frame in enumerate(plan.frames):
                stamp = stamp_plus(job.image.header.stamp, k * self.p.plan_frame_stamp_step)
                self._publish(self.pub_frames, convert.rgb_to_image(np.asarray(frame), job.image.header, stamp=stamp))
            self._publish_uncertainty(job, plan if self.p.publish_uncertainty else None, self.pub_plan_unc)
            if self.p.publish_comparison:
                last_u = plan.uncertainty[-1] if self.p.publish_uncertainty and plan.uncertainty else None
                self._publish(self.pub_cmp, convert.rgb_to_image(self._comparison(rgb, plan.frames[-1], last_u),
                                                                 job.image.header))
            if job.trajectory is not None and traj_px is not None:
                self._publish_trajectory(job)
        done = time.monotonic()
        # latency: from what triggered the job (an instruction, or the frame in continuous mode) to the outputs;
        # frame age: how old the source frame was by then (in on_instruction mode it may have waited long)
        self.health.output((done - (job.triggered or job.received)) * 1e3, infer_ms, (done - job.received) * 1e3)
        self.health.count("depth_paired" if job.depth is not None else "depth_unpaired")

    def _publish_uncertainty(self, job: Job, result: Any, pub: Any) -> np.ndarray | None:
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
        self._publish(pub, convert.numpy_to_image(np.ascontiguousarray(u, np.float32), "32FC1", job.image.header))
        if result.confidence is not None:
            self._publish(self.pub_conf, Float32(data=float(result.confidence)))
            with self._lock:
                self._confidences.append(float(result.confidence))
        if getattr(result, "frame_confidence", None) is not None:
            self._publish(self.pub_frame_conf, Float32MultiArray(data=[float(c) for c in result.frame_confidence]))
        self.uncertainty_state = "on"
        return u

    def _comparison(self, rgb: np.ndarray, pred: np.ndarray, u: np.ndarray | None) -> np.ndarray:
        """input | prediction, and the prediction with its uncertainty as a heat map when there is one."""
        from frameplan_core import uncertainty
        from frameplan_core.image import hstack

        pred = np.asarray(pred)
        panels = [rgb, pred]
        if u is not None:
            panels.append(uncertainty.overlay(pred, u, self.p.uncertainty_heatmap_max))
        return hstack(panels)

    def _project_trajectory(self, job: Job, hw: tuple[int, int]) -> np.ndarray | None:
        if job.trajectory is None:
            return None
        if job.K is None:
            raise InputError(f"{self.p.trajectory_topic}: cannot project the path without camera_info on "
                             f"{self.p.camera_info_topic}")
        frame = job.trajectory.header.frame_id
        if frame and job.image.header.frame_id and frame != job.image.header.frame_id:
            raise InputError(f"{self.p.trajectory_topic}: path is in frame {frame!r} but the camera frame is "
                             f"{job.image.header.frame_id!r}; publish it in the camera optical frame (no tf2 here)")
        from frameplan_core.trajectory import project

        pts = np.array([[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in job.trajectory.poses])
        return project(pts, job.K, where=self.p.trajectory_topic)

    def _publish_trajectory(self, job: Job) -> None:
        path = PathMsg()
        path.header.stamp = job.image.header.stamp
        path.header.frame_id = job.trajectory.header.frame_id or job.image.header.frame_id
        path.poses = list(job.trajectory.poses)
        self._publish(self.pub_path, path)
        self._publish(self.pub_markers, trajectory_markers(path))

    def _publish(self, pub: Any, msg: Any) -> None:
        if self._closing or (not self.active and pub is not self.pub_diag):  # lifecycle: outputs only when active
            return
        try:
            pub.publish(msg)
        except Exception as exc:
            if not self._closing and rclpy.ok(context=self.context):
                raise
            self.get_logger().debug(f"publish after shutdown skipped: {exc}")

    def _job_failed(self, exc: BaseException, job: Job) -> None:
        kind, level = "model_exception", ERROR
        if isinstance(exc, InputError):
            kind, level = _input_kind(str(exc)), WARN
        elif isinstance(exc, ModelError):
            kind = "model"
        elif _is_cuda_oom(exc):
            kind = "cuda_oom"
            try:
                import torch

                torch.cuda.empty_cache()
            except Exception as cleanup_exc:  # noqa: BLE001 - best effort; the OOM itself is reported below
                self.get_logger().debug(f"empty_cache failed: {cleanup_exc}")
        elif not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt/SystemExit in the worker: let them through
        self.health.error(kind, f"{type(exc).__name__}: {exc}", level)

    # ------------------------------------------------------------------ diagnostics
    def diagnostics_values(self) -> tuple[int, str, dict]:
        snap = self.health.snapshot()
        recent = snap.pop("recent_errors")
        level, message = self.health.level(recent)
        if self.model is None and level < ERROR and self.p.lifecycle and self.lifecycle_state == "unconfigured":
            level, message = OK, "unconfigured (lifecycle: configure loads the model)"
        elif self.model is None and level < ERROR:
            load_error = self.health.errors.get("model_load")
            # no model at all is an ERROR for as long as it lasts, with the load error as the reason (not "ok")
            level, message = (WARN, "loading model") if load_error is None else (
                ERROR, f"[model_load] {load_error.message}")
        with self._lock:
            conf = list(self._confidences)
        values = {"model": self.model_info, "mode": self.p.mode, "device": self.p.device, "trigger": self.p.trigger,
                  "frames_dropped": self.worker.dropped, "worker_busy": self.worker.busy, **snap,
                  "uncertainty": self.uncertainty_state,
                  "confidence_last": conf[-1] if conf else float("nan"),
                  "confidence_p50": float(np.median(conf)) if conf else float("nan"),
                  **self.lifecycle_values(), "image_transport": self.p.image_transport}
        if self.policy_stage is not None:
            values.update(self.policy_stage.values())
        return level, message, values

    def _publish_diagnostics(self) -> None:
        level, message, values = self.diagnostics_values()
        arr = DiagnosticArray()
        arr.header.stamp = self.get_clock().now().to_msg()
        arr.status = [status_message(f"{self.get_name()}: foresight", values["device"], level, message, values)]
        self._publish(self.pub_diag, arr)

    def destroy_node(self) -> None:
        """Stop the worker first (waits at most shutdown_timeout for a running inference; its result is dropped)."""
        self._closing = True
        if self.worker is not None and not self.worker.stop(self.p.shutdown_timeout):
            text = (f"worker still busy after shutdown_timeout={self.p.shutdown_timeout} s; its inference is "
                    "abandoned")
            if rclpy.ok(context=self.context):
                self.get_logger().warning(text)
            else:  # after SIGINT/SIGTERM the context is gone: a node log would also fail to reach /rosout
                print(f"[WARN] [{self.get_name()}]: {text}", file=sys.stderr, flush=True)
        super().destroy_node()


def _input_kind(message: str) -> str:
    m = message.lower()
    if "no instruction yet" in m:
        return "no_instruction"
    if m.startswith("joint_state") or "joint state" in m:
        return "joint_state"
    if "/compressed" in m or "compressed image" in m:
        return "bad_compressed"
    if m.startswith("instruction"):  # the core's validate_instruction (where="instruction[i]")
        return "instruction_invalid"
    if "encoding" in m:
        return "bad_encoding"
    if "empty" in m:
        return "empty_image"
    if "step" in m or "bytes" in m:
        return "bad_size"
    if "instruction" in m:
        return "instruction_invalid"
    if "trajectory" in m or "path" in m:
        return "trajectory"
    return "bad_input"


def instruction_refusal(text: str, where: str) -> str | None:
    """Why an instruction given as a parameter would be refused by the model (empty = none given: fine)."""
    from frameplan_core.text import validate_instruction

    if not text.strip():
        return None
    try:
        validate_instruction(text, where)
    except InputError as exc:
        return str(exc)
    return None


def _is_preset(value: str) -> bool:
    """A preset name (``tiny``...) rather than a path: loads the embedded or a named model, no file of the caller's."""
    return value in PRESET_MODELS and not os.path.lexists(value)


def steps_refusal(model: Any, mode: str | None, steps: int) -> str | None:
    """Why ``steps`` (0 = the model's default) cannot run on ``model``, else None: the check its predict would
    make on every frame (the predictor's schedule must stay inside its training range; the planner takes any
    count), made once, when the value is set or the model loaded. The other parameters' ranges do not depend on
    the model (``samples`` <= 64 is both models' limit), so their declared ranges say it all."""
    if mode == "policy":  # the goal model's schedule (a goal: false policy has none)
        model, mode = getattr(model, "goal_model", None), getattr(model, "goal_source", None)
    if model is None or mode is None:
        return None
    try:
        if mode == "predictor" and steps:
            from frameplan_core.predictor import sampling

            # a fresh scheduler: the model's own ones may be in use by the worker right now
            sched = sampling.make_scheduler(model.config.sampling.sampler, dict(model.scheduler.config))
            sampling.set_timesteps(sched, int(steps), "cpu")
    except FrameplanError as exc:
        return one_line(exc)
    return None


def _is_cuda_oom(exc: BaseException) -> bool:
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return "out of memory" in str(exc).lower() and "cuda" in str(exc).lower()


def trajectory_markers(path: PathMsg) -> MarkerArray:
    """A red -> blue LINE_STRIP through the path plus a sphere at its end (rviz)."""
    from geometry_msgs.msg import Point
    from std_msgs.msg import ColorRGBA

    n = len(path.poses)
    line = Marker()
    line.header = path.header
    line.ns, line.id, line.type, line.action = "frameplan_trajectory", 0, Marker.LINE_STRIP, Marker.ADD
    line.pose.orientation.w = 1.0
    line.scale.x = 0.005
    for i, ps in enumerate(path.poses):
        f = i / max(n - 1, 1)
        line.points.append(Point(x=ps.pose.position.x, y=ps.pose.position.y, z=ps.pose.position.z))
        line.colors.append(ColorRGBA(r=1.0 - f, g=0.0, b=f, a=1.0))
    end = Marker()
    end.header = path.header
    end.ns, end.id, end.type, end.action = "frameplan_trajectory", 1, Marker.SPHERE, Marker.ADD
    end.pose = path.poses[-1].pose
    end.scale.x = end.scale.y = end.scale.z = 0.02
    end.color = ColorRGBA(r=0.0, g=0.0, b=1.0, a=1.0)
    return MarkerArray(markers=[line, end])


def spin_node(node: Node) -> int:
    """Spin until SIGINT/SIGTERM; then stop the worker and shut down cleanly."""
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    done = getattr(node, "shutdown_future", None)  # a lifecycle node's shutdown transition ends the spin
    try:
        if done is not None:
            executor.spin_until_future_complete(done)
        else:
            executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        try:
            executor.shutdown(timeout_sec=1.0)
            node.destroy_node()
        except KeyboardInterrupt:  # a second Ctrl-C while waiting for the worker: stop waiting
            pass
        if rclpy.ok(context=node.context):
            rclpy.shutdown(context=node.context)
    return 0


def run_node(factory, name: str, argv: list[str] | None = None) -> int:
    """Console-script body: init rclpy, build the node (a FrameplanError is reported in one line, exit 1), spin;
    exit 0 after SIGINT/SIGTERM, also when an inference outlives shutdown_timeout."""
    rclpy.init(args=sys.argv if argv is None else argv)
    try:
        node = factory()
    except FrameplanError as exc:
        print(f"{name}: error: {exc}", file=sys.stderr)
        rclpy.shutdown()
        return 1
    rc = spin_node(node)
    worker = getattr(node, "worker", None)
    if worker is not None and worker.alive:
        # A normal exit finalises the interpreter (torch's thread pools, static objects) under a thread that is
        # still inside torch, and the C++ runtime aborts: "terminate called without an active exception", exit
        # 134. Nothing waits for that inference any more, so leave without finalising.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    return rc


def main(argv: list[str] | None = None) -> int:
    return run_node(ForesightNode, "foresight_node", argv)


if __name__ == "__main__":
    sys.exit(main())
