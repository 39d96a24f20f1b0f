"""Health counters of a node and their diagnostic_msgs form, plus "log once per kind" for bad inputs.

Why a module: the foresight node and the sim bridge report the same things (rates, latency percentiles, drops,
last error), and a robot team reads them in rqt_runtime_monitor / rviz, so they must be consistent."""
from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from frameplan_core.errors import one_line

OK, WARN, ERROR = 0, 1, 2  # diagnostic_msgs/DiagnosticStatus levels (bytes on the wire)
_LEVEL_NAMES = {OK: "OK", WARN: "WARN", ERROR: "ERROR"}
# Longest message or value a node logs or publishes: error messages echo their input (an image's encoding
# string, a frame id, a parameter value), which a sender can make a megabyte long.
MAX_MESSAGE_CHARS = 300


@dataclass
class ErrorRecord:
    kind: str
    message: str
    level: int
    when: float
    count: int = 1


class Health:
    """Thread-safe counters: events per second over a sliding window, latency percentiles, errors by kind."""

    def __init__(self, window_s: float = 10.0, log: Callable[[str], None] | None = None,
                 warn_log: Callable[[str], None] | None = None) -> None:
        """``log`` gets the first error of each kind; ``warn_log`` (if given) those below ERROR level."""
        self.window_s = window_s
        self._lock = threading.Lock()
        self._inputs: deque[float] = deque(maxlen=2000)
        self._outputs: deque[float] = deque(maxlen=2000)
        self._latency_ms: deque[float] = deque(maxlen=500)
        self._infer_ms: deque[float] = deque(maxlen=500)
        self._age_ms: deque[float] = deque(maxlen=500)
        self.counters: dict[str, int] = {"inputs": 0, "outputs": 0, "errors": 0}
        self.errors: dict[str, ErrorRecord] = {}
        self.last_error: ErrorRecord | None = None
        self.last_latency_ms = float("nan")
        self.last_inference_ms = float("nan")
        self.last_frame_age_ms = float("nan")
        self._log = log
        self._warn_log = warn_log

    def input(self) -> None:
        with self._lock:
            self._inputs.append(time.monotonic())
            self.counters["inputs"] += 1

    def output(self, latency_ms: float, infer_ms: float | None = None, frame_age_ms: float | None = None) -> None:
        """One output: ``latency_ms`` from what triggered it, ``infer_ms`` of model time, ``frame_age_ms`` how old
        its source frame was when it went out."""
        with self._lock:
            self._outputs.append(time.monotonic())
            self._latency_ms.append(latency_ms)
            self.last_latency_ms = latency_ms
            if infer_ms is not None:
                self.last_inference_ms = infer_ms
                self._infer_ms.append(infer_ms)
            if frame_age_ms is not None:
                self.last_frame_age_ms = frame_age_ms
                self._age_ms.append(frame_age_ms)
            self.counters["outputs"] += 1

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] = self.counters.get(name, 0) + n

    def error(self, kind: str, message: str, level: int = WARN) -> bool:
        """Record an error; logs it (through ``log``) only the first time this kind occurs. True if logged.
        The message is cut to one line of MAX_MESSAGE_CHARS (it often echoes the bad input)."""
        message = one_line(message, MAX_MESSAGE_CHARS)
        with self._lock:
            rec = self.errors.get(kind)
            first = rec is None
            if first:
                rec = self.errors[kind] = ErrorRecord(kind, message, level, time.monotonic())
            else:
                rec.count += 1
                rec.message, rec.level, rec.when = message, level, time.monotonic()
            self.last_error = rec
            self.counters["errors"] += 1
        if not first:
            return False
        text = f"[{kind}] {message} (further '{kind}' errors are counted in /diagnostics, not logged)"
        # two call sites: rclpy refuses one call site logging at two severities
        if level < ERROR and self._warn_log is not None:
            self._warn_log(text)
        elif self._log is not None:
            self._log(text)
        return first

    def clear(self, kind: str) -> None:
        with self._lock:
            self.errors.pop(kind, None)

    def _rate(self, stamps: deque[float], now: float) -> float:
        recent = [t for t in stamps if now - t <= self.window_s]
        if len(recent) < 2:
            return 0.0
        span = max(now - recent[0], 1e-6)
        return len(recent) / span if span > 0 else 0.0

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            lat = np.array(self._latency_ms) if self._latency_ms else None
            inf = np.array(self._infer_ms) if self._infer_ms else None
            age = np.array(self._age_ms) if self._age_ms else None
            snap: dict[str, Any] = {
                "input_rate_hz": self._rate(self._inputs, now),
                "output_rate_hz": self._rate(self._outputs, now),
                "latency_p50_ms": float(np.percentile(lat, 50)) if lat is not None else float("nan"),
                "latency_p95_ms": float(np.percentile(lat, 95)) if lat is not None else float("nan"),
                "inference_p50_ms": float(np.percentile(inf, 50)) if inf is not None else float("nan"),
                "last_latency_ms": self.last_latency_ms,
                "last_inference_ms": self.last_inference_ms,
                **({"frame_age_p50_ms": float(np.percentile(age, 50)), "frame_age_p95_ms": float(np.percentile(age, 95)),
                    "last_frame_age_ms": self.last_frame_age_ms} if age is not None else {}),
                **dict(self.counters),
                "last_error": f"[{self.last_error.kind}] {self.last_error.message}" if self.last_error else "",
                **{f"error.{k}": f"{r.count}x {r.message}" for k, r in self.errors.items()},
                "recent_errors": {k: r for k, r in self.errors.items() if now - r.when <= self.window_s},
            }
        return snap

    def level(self, recent: dict[str, ErrorRecord]) -> tuple[int, str]:
        if not recent:
            return OK, "ok"
        worst = max(recent.values(), key=lambda r: (r.level, r.when))
        return worst.level, f"[{worst.kind}] {worst.message}"


def window_for(period_s: float) -> float:
    """Rate/error window of a node publishing /diagnostics every ``period_s``: five periods, at least 5 s."""
    return max(5.0, 5 * period_s)


def set_period(timer: Any, health: Health, period_s: float) -> None:
    """Apply a changed ``diagnostics_period`` to a running node: its timer and its health window."""
    timer.timer_period_ns = round(period_s * 1e9)
    health.window_s = window_for(period_s)


def status_message(name: str, hardware_id: str, level: int, message: str, values: dict[str, Any]) -> Any:
    """A diagnostic_msgs/DiagnosticStatus with every value as a string KeyValue."""
    from diagnostic_msgs.msg import DiagnosticStatus, KeyValue

    st = DiagnosticStatus()
    st.level = bytes([level])
    st.name = name
    st.hardware_id = hardware_id
    st.message = one_line(message, MAX_MESSAGE_CHARS)
    st.values = [KeyValue(key=str(k), value=one_line(_fmt(v), MAX_MESSAGE_CHARS)) for k, v in values.items()]
    return st


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.3f}"
    return str(v)


def level_name(level: int) -> str:
    return _LEVEL_NAMES.get(level, str(level))
