"""Helpers to drive nodes over real DDS from tests and benchmarks: start a node as a separate process, and a
probe node (own context, own spin thread) that publishes inputs and records what comes back. ``config_path``
(frameplan_core.paths) is re-exported for them."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from frameplan_core.paths import config_path  # noqa: F401 -- tests and benchmarks find config/ files through here


class NodeProcess:
    """``python -m <module> --ros-args --params-file <yaml> -p k:=v ...`` as a child process (own DDS participant)."""

    def __init__(self, module: str, params_file: str | Path | None, params: dict[str, Any] | None = None,
                 env: dict[str, str] | None = None, log_path: str | Path | None = None) -> None:
        args = [sys.executable, "-m", module, "--ros-args"]
        if params_file:
            args += ["--params-file", str(params_file)]
        for k, v in (params or {}).items():
            if isinstance(v, bool):
                v = "true" if v else "false"
            elif isinstance(v, str) and v == "":
                v = "''"
            args += ["-p", f"{k}:={v}"]
        self.log_path = Path(log_path) if log_path else None
        # kept open for the child's lifetime, closed in close()
        self._log = open(self.log_path, "wb") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.proc = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})})

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def rss_mb(self) -> float:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def interrupt(self, timeout: float = 30.0) -> int:
        """SIGINT and wait; returns the exit code (raises TimeoutExpired if it hangs)."""
        if self.alive():
            self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout)
        finally:
            self.close()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(10)
        self.close()

    def close(self) -> None:
        if self._log not in (None, subprocess.DEVNULL):
            self._log.close()
            self._log = subprocess.DEVNULL

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""


class Probe:
    """A node in its own rclpy context, spinning in a thread: ``listen`` records messages, ``publisher`` sends."""

    def __init__(self, name: str = "frameplan_probe") -> None:
        import rclpy
        from rclpy.executors import SingleThreadedExecutor

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        self.node = rclpy.create_node(name, context=self.context)
        self.received: dict[str, list[tuple[float, Any]]] = defaultdict(list)
        self._cond = threading.Condition()
        self._executor = SingleThreadedExecutor(context=self.context)
        self._executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        try:
            self._executor.spin()
        except Exception:  # noqa: BLE001, S110 - the context was shut down by close()
            pass

    def listen(self, msg_type: Any, topic: str, qos: Any = None, on_message: Callable[[Any], None] | None = None) -> None:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=50, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)

        def cb(msg: Any) -> None:
            t = time.perf_counter()
            if on_message is not None:
                on_message(msg)
            with self._cond:
                self.received[topic].append((t, msg))
                self._cond.notify_all()

        self.node.create_subscription(msg_type, topic, cb, qos)

    def publisher(self, msg_type: Any, topic: str, qos: Any = None) -> Any:
        from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

        qos = qos or QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, history=HistoryPolicy.KEEP_LAST)
        return self.node.create_publisher(msg_type, topic, qos)

    def wait_for(self, predicate: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def messages(self, topic: str) -> list[Any]:
        with self._cond:
            return [m for _, m in self.received[topic]]

    def wait_matched(self, publishers: list[Any], timeout: float = 20.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(p.get_subscription_count() > 0 for p in publishers):
                return True
            time.sleep(0.05)
        return False

    def now(self) -> Any:
        return self.node.get_clock().now().to_msg()

    def close(self) -> None:
        import rclpy

        self._executor.shutdown(timeout_sec=1.0)
        self.node.destroy_node()
        if rclpy.ok(context=self.context):
            rclpy.shutdown(context=self.context)
        self._thread.join(5)


def diagnostic_values(arr: Any, name_part: str = "") -> list[tuple[int, str, dict[str, str]]]:
    """(level, message, values) of each status in a DiagnosticArray whose name contains ``name_part``."""
    out = []
    for st in arr.status:
        if name_part in st.name:
            level = st.level[0] if isinstance(st.level, (bytes, bytearray)) else int(st.level)
            out.append((level, st.message, {kv.key: kv.value for kv in st.values}))
    return out
