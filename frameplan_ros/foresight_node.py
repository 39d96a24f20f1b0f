"""The foresight node: camera frames + instructions in, predicted frames / 3x3 plans (or, in policy mode, joint
trajectories) out.

Callbacks only validate and hand the newest job to one worker thread (latest-frame-wins, see worker.py); the
worker runs the model and publishes. Bad inputs and model failures are counted by the kind their error carries,
logged once per kind, reported on /diagnostics, and the node keeps going with the next good frame. By concern:
parameters (foresight_params.py), the loaded model (model_slot.py), outputs (foresight_outputs.py), policy mode
(policy_stage.py), lifecycle (lifecycle.py), spinning (spin.py). Topics: docs/ROS.md.
"""
from __future__ import annotations

import os
import sys
import time
from collections import deque
from typing import Any

import numpy as np
import rclpy
from rclpy.lifecycle import LifecycleNode

from frameplan_core.errors import ConfigError, InputError, ModelError, one_line
from frameplan_ros import convert
from frameplan_ros import params as paramlib
from frameplan_ros.diagnostics import ERROR, OK, WARN, Health, set_period, status_message, window_for
from frameplan_ros.foresight_inputs import ForesightInputs, Job
from frameplan_ros.foresight_outputs import ForesightOutputs
from frameplan_ros.foresight_params import (
    MODEL_PARAMS,
    ForesightParams,
    instruction_refusal,
    parameter_refusal,
    resolve_model_roots,
)
from frameplan_ros.lifecycle import ManagedNode
from frameplan_ros.model_slot import ModelSlot, is_cuda_oom, model_key
from frameplan_ros.worker import Worker


class ForesightNode(ForesightInputs, ManagedNode, LifecycleNode):
    """Inputs (ForesightInputs) -> the worker's ``_run_job`` (the model of ``mode``) -> ``outputs``; a managed
    node (ManagedNode) that configures and activates itself unless ``lifecycle: true``."""

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
        self.recent_instructions: deque = deque(maxlen=64)  # ((sec, nanosec) of a source frame, instruction used)
        self.models = ModelSlot(self.health, self.get_logger().info)  # loaded by the worker, so the node is up at once
        self.outputs = ForesightOutputs(self)
        self.policy_stage = None
        if self.p.mode == "policy":
            self._policy_stage()
        self.subscribe_inputs()  # foresight_inputs.py

        self.add_on_set_parameters_callback(self._check_parameters)
        self.add_post_set_parameters_callback(self._apply_parameters)
        self.worker = Worker(self._run_job, self._job_failed, idle=self._maintain, name=f"{node_name}-worker")
        self._diag_timer = self.create_timer(self.p.diagnostics_period, self._publish_diagnostics)
        self.get_logger().info(
            f"mode={self.p.mode} trigger={self.p.trigger} device={self.p.device} model={self.p.model or '(embedded)'}"
            f"; listening on {self.image_where} and {self.p.instruction_topic}; outputs under "
            f"{self.p.output_prefix.rstrip('/')}/")
        self.lifecycle_start()

    @property
    def model(self) -> Any:
        return self.models.model

    @property
    def model_info(self) -> str:
        return self.models.info

    def _policy_stage(self) -> Any:
        """Policy mode's inputs and outputs (joint states, JointTrajectory), made on first use."""
        if self.policy_stage is None:
            from frameplan_ros.policy_stage import PolicyStage

            self.policy_stage = PolicyStage(self)
        return self.policy_stage

    # ------------------------------------------------------------------ parameters (foresight_params.py)
    def _check_parameters(self, changed: list) -> Any:
        from rcl_interfaces.msg import SetParametersResult

        names = {prm.name for prm in changed}
        for prm in changed:
            reason = parameter_refusal(prm.name, prm.value, names, roots=self._model_roots,
                                       start_model=self._start_model, start_policy=self._start_policy,
                                       model=self.models.model, kind=self.models.kind)
            if reason:
                reason = one_line(reason)  # the value may be anything a client sent
                self.get_logger().warning(f"parameter change refused: {reason}")
                return SetParametersResult(successful=False, reason=reason)
        return SetParametersResult(successful=True)

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
        if names & set(MODEL_PARAMS):
            self.get_logger().info(f"model parameters changed: reloading {self.p.mode} model "
                                   f"{one_line(self.p.model or '(embedded)')} on {self.p.device} (the current one "
                                   "serves until then)")
            self.models.reload.set()
        elif "steps" in names and self.models.key != model_key(self.p):
            self.models.reload.set()  # a load refused for the old steps may succeed now

    # ------------------------------------------------------------------ worker side
    def _maintain(self) -> None:
        """Runs in the worker thread between jobs: (re)load the model when asked (and while configured)."""
        if self.models.reload.is_set() and self.allow_load:
            self.models.reload.clear()
            self.load_model_now()

    def load_model_now(self) -> bool:
        """Load the model(s) of the current parameters unless they are loaded (model_slot.py); in the worker
        thread, or in lifecycle's configure while the worker has nothing to do."""
        return self.models.load(self.p)

    def drop_model(self) -> set[str]:
        """Forget the loaded model(s) (lifecycle cleanup); returns the devices they were on."""
        if self.policy_stage is not None:
            self.policy_stage.forget()
        return self.models.drop(self.p.device)

    def _run_job(self, job: Job) -> None:
        self._maintain()
        model, mode = self.models.model, self.models.kind
        with self._lock:
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
                raise InputError("predictor: no instruction yet (publish one on the instruction topic)",
                                 kind="no_instruction")
            kw = {"steps": steps, "seed": seed, "output_size": self.p.output_size, "samples": samples}
            full = model.predict_full(rgb, job.instruction, **kw) if self.p.publish_uncertainty else None
            pred = full.image if full is not None else model.predict(rgb, job.instruction, **kw)
            infer_ms = (time.monotonic() - t0) * 1e3
            self.outputs.prediction(job, rgb, pred, full)
        else:
            traj_px = self._project_trajectory(job)
            plan = model.plan(rgb, instruction=job.instruction, trajectory=traj_px, steps=steps, seed=seed,
                              chain=self.p.chain, samples=samples)
            infer_ms = (time.monotonic() - t0) * 1e3
            self.outputs.plan(job, rgb, plan, traj_px is not None)
        done = time.monotonic()
        # latency: from what triggered the job (an instruction, or the frame in continuous mode) to the outputs;
        # frame age: how old the source frame was by then (in on_instruction mode it may have waited long)
        self.health.output((done - (job.triggered or job.received)) * 1e3, infer_ms, (done - job.received) * 1e3)

    def _project_trajectory(self, job: Job) -> np.ndarray | None:
        """The planner's path (camera optical frame) in pixels of the frame, None when there is none."""
        if job.trajectory is None:
            return None
        where = self.p.trajectory_topic
        if job.K is None:
            raise InputError(f"{where}: cannot project the path without camera_info on {self.p.camera_info_topic}",
                             kind="trajectory")
        frame = job.trajectory.header.frame_id
        if frame and job.image.header.frame_id and frame != job.image.header.frame_id:
            raise InputError(f"{where}: path is in frame {frame!r} but the camera frame is "
                             f"{job.image.header.frame_id!r}; publish it in the camera optical frame (no tf2 here)",
                             kind="trajectory")
        from frameplan_core.trajectory import project

        return project(convert.path_points(job.trajectory), job.K, where=where)

    def _job_failed(self, exc: BaseException, job: Job) -> None:
        if isinstance(exc, InputError):  # the raiser named the kind (frameplan_core.errors.InputError.kind)
            self.health.error(exc.kind, f"{type(exc).__name__}: {exc}", WARN)
            return
        kind = "model" if isinstance(exc, ModelError) else "model_exception"
        if is_cuda_oom(exc):
            kind = "cuda_oom"
            try:
                import torch

                torch.cuda.empty_cache()
            except Exception as cleanup_exc:  # noqa: BLE001 - best effort; the OOM itself is reported below
                self.get_logger().debug(f"empty_cache failed: {cleanup_exc}")
        elif not isinstance(exc, Exception):
            raise exc  # KeyboardInterrupt/SystemExit in the worker: let them through
        self.health.error(kind, f"{type(exc).__name__}: {exc}", ERROR)

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
        values = {"model": self.model_info, "mode": self.p.mode, "device": self.p.device, "trigger": self.p.trigger,
                  "frames_dropped": self.worker.dropped, "worker_busy": self.worker.busy, **snap,
                  **self.outputs.values(), **self.lifecycle_values(), "image_transport": self.p.image_transport}
        if self.policy_stage is not None:
            values.update(self.policy_stage.values())
        return level, message, values

    def _publish_diagnostics(self) -> None:
        level, message, values = self.diagnostics_values()
        self.outputs.diagnostics(status_message(f"{self.get_name()}: foresight", values["device"], level, message,
                                                values))

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


def main(argv: list[str] | None = None) -> int:
    from frameplan_ros.spin import run_node

    return run_node(ForesightNode, "foresight_node", argv)


if __name__ == "__main__":
    sys.exit(main())
