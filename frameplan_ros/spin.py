"""Running a node as a process: ``run_node`` is every console script's body (init rclpy, build the node, spin until
SIGINT/SIGTERM or a lifecycle shutdown, clean up), ``spin_node`` the spin-and-clean-up part of it."""
from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import rclpy

from frameplan_core.errors import FrameplanError


def spin_node(node: Any) -> int:
    """Spin until SIGINT/SIGTERM (or a lifecycle node's shutdown transition); then destroy the node (which stops its
    worker) and shut its context down."""
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


def run_node(factory: Callable[[], Any], name: str, argv: list[str] | None = None) -> int:
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


__all__ = ["run_node", "spin_node"]
