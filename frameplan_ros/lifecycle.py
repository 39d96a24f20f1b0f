"""The foresight node as a managed (lifecycle) node: ``lifecycle: true`` starts it unconfigured and lets a manager
(``ros2 lifecycle set``, a launch file's lifecycle events, nav2's lifecycle manager) drive it:

==============  =====================================================================================
configure       load the model(s) (blocking; FAILURE with the reason when they cannot be loaded)
activate        process camera frames and publish outputs
deactivate      stop: frames are dropped (counted as ``inactive_dropped``), a pending one is discarded,
                the result of an inference still running is not published
cleanup         free the model(s): references dropped, ``gc.collect()``, ``torch.cuda.empty_cache()``
shutdown        free, stop the worker, and leave spin: the process exits 0
==============  =====================================================================================

With ``lifecycle: false`` (the default) the node configures and activates itself at start (the model loads in the
background as before) and is then an ordinary node; its lifecycle services answer all the same. /diagnostics is
published in every state."""
from __future__ import annotations

import gc
import time
from typing import Any

from rclpy.lifecycle import LifecycleState, TransitionCallbackReturn
from rclpy.task import Future

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE


def free_model_memory(devices: set[str]) -> None:
    """Return what dropped models held: Python objects now, and CUDA's cached blocks when a CUDA device was used
    (without ``empty_cache`` the memory stays reserved by this process and other processes cannot use it)."""
    gc.collect()
    if any(str(d).startswith("cuda") for d in devices):
        import torch

        if torch.cuda.is_available():
            torch.cuda.synchronize()
            torch.cuda.empty_cache()


class ManagedNode:
    """Lifecycle callbacks of the foresight node (mixed in before rclpy's LifecycleNode). The node provides
    ``p`` (parameters), ``worker``, ``models`` (model_slot.ModelSlot), ``load_model_now()`` and ``drop_model()``."""

    active = False  # frames are processed and outputs published
    allow_load = False  # the worker loads models only while configured
    lifecycle_state = "unconfigured"

    def lifecycle_start(self) -> None:
        """At the end of __init__: wait for a manager, or configure and activate at once."""
        self.shutdown_future = Future()  # done after the shutdown transition: spin returns, the process exits
        if not self.p.lifecycle:
            self.trigger_configure()
            self.trigger_activate()
        else:
            self.get_logger().info("lifecycle: true: unconfigured; `ros2 lifecycle set "
                                   f"{self.get_fully_qualified_name()} configure` loads the model")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        if not self.p.lifecycle:
            self.allow_load = True  # the worker loads in the background; the node reports meanwhile
            self.models.reload.set()
            self.lifecycle_state = "inactive"
            return SUCCESS
        self.models.reload.clear()
        t0 = time.monotonic()
        if not self.load_model_now():
            self.get_logger().error("configure failed: the model could not be loaded (see /diagnostics model_load)")
            return FAILURE
        self.allow_load = True
        self.lifecycle_state = "inactive"
        self.get_logger().info(f"configured in {time.monotonic() - t0:.1f} s: {self.model_info}")
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = True
        self.lifecycle_state = "active"
        return SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self.worker.slot.take(timeout=0)  # a frame waiting for the worker is not processed any more
        self.lifecycle_state = "inactive"
        return SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._free()
        self.lifecycle_state = "unconfigured"
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._free()
        self.worker.stop(self.p.shutdown_timeout)
        self.lifecycle_state = "finalized"
        self.shutdown_future.set_result(True)
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self.active = False
        self._free()
        self.lifecycle_state = "unconfigured"
        return SUCCESS

    def _free(self) -> None:
        """Drop the model(s) once the worker is idle (at most shutdown_timeout s), then free their memory."""
        self.allow_load = False
        deadline = time.monotonic() + self.p.shutdown_timeout
        while self.worker.busy and time.monotonic() < deadline:
            time.sleep(0.02)
        devices = self.drop_model()
        free_model_memory(devices)

    def lifecycle_values(self) -> dict[str, Any]:
        return {"lifecycle_state": self.lifecycle_state}


__all__ = ["ManagedNode", "free_model_memory"]
