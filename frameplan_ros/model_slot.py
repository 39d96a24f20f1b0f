"""The foresight node's loaded model(s) (``frameplan_core.models``): the parameters they were loaded for, a new
load in the worker thread when those change (the current model serves until the new one is ready), the checks and
the warm-up a new model gets before it serves, and dropping them (lifecycle cleanup). A load that fails is reported
once on the node's Health (``model_load``), keeping the model there was."""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from frameplan_core.errors import FrameplanError, one_line
from frameplan_core.models import describe, load_model, steps_refusal, warmup
from frameplan_ros.diagnostics import ERROR, WARN, Health


def model_key(p: Any) -> tuple:
    """What decides the loaded model(s) (ForesightParams): a change loads them again; also load_model's arguments."""
    return (p.mode, p.model, p.device) + ((p.policy, p.policy_goal) if p.mode == "policy" else ())


class ModelSlot:
    """``model`` (None until loaded), ``kind`` (the mode it was loaded for), ``info`` (its description); ``reload``
    is set when the worker should (re)load between jobs (set at start: the first load happens in the worker)."""

    def __init__(self, health: Health, log: Callable[[str], None]) -> None:
        self.health, self._log = health, log
        self.model: Any = None
        self.kind: str | None = None
        self.info = "not loaded"
        self.key: tuple | None = None
        self.reload = threading.Event()
        self.reload.set()
        self._lock = threading.Lock()

    def load(self, p: Any) -> bool:
        """Load the model(s) of the parameters ``p`` unless they are loaded; False (reported) when they cannot be."""
        key = model_key(p)
        if key == self.key and self.model is not None:
            return True
        t0 = time.monotonic()
        what = f"{key[0]} model {one_line(key[1] or '(embedded)')}" if key[0] != "policy" else (
            f"policy {one_line(key[3] or '(embedded)')} with {key[4]} goals ({one_line(key[1] or '(embedded)')})")
        kept = f"; keeping {self.info}" if self.model is not None else ""
        try:
            model = load_model(*key)
        except (FrameplanError, ImportError, OSError, RuntimeError, ValueError) as exc:
            self.health.error("model_load", f"cannot load {what} on {key[2]}: {exc}{kept}", ERROR)
            return False
        refusal = steps_refusal(model, key[0], p.steps)
        if refusal:
            self.health.error("model_load", f"{what} cannot run steps={p.steps}: {refusal} (set steps, 0 = the "
                              f"model's default){kept}", ERROR)
            return False
        if p.warmup:
            try:
                warmup(model, key[0])
            except Exception as exc:  # noqa: BLE001 - a failed warm-up is reported; the model may still work
                self.health.error("model_warmup", f"warm-up inference failed: {type(exc).__name__}: {exc}", WARN)
        with self._lock:
            self.info = f"{key[0]}: {describe(model)}"
            self.kind = key[0]
            self.model, self.key = model, key
        self.health.clear("model_load")
        self._log(f"loaded {self.info} in {time.monotonic() - t0:.1f} s")
        return True

    def drop(self, device: str) -> set[str]:
        """Forget the loaded model(s); returns the devices they were on (for lifecycle.free_model_memory)."""
        with self._lock:
            model, self.model, self.key = self.model, None, None
            self.info = "not loaded"
        devices = {str(device)}
        for m in (model, getattr(model, "policy", None), getattr(model, "goal_model", None)):
            dev = getattr(m, "device", None)
            if dev is not None:
                devices.add(str(dev))
        return devices


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether an inference failed for want of GPU memory (then the node frees torch's cache and goes on)."""
    try:
        import torch

        if isinstance(exc, torch.cuda.OutOfMemoryError):
            return True
    except ImportError:
        pass
    return "out of memory" in str(exc).lower() and "cuda" in str(exc).lower()


__all__ = ["ModelSlot", "is_cuda_oom", "model_key"]
