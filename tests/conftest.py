"""Shared test settings: never reach a model hub; isolate ROS discovery to loopback; one torch thread.

One thread per process because the suite starts node processes beside the test process on a 2-core machine,
where OpenMP threads of several processes otherwise spin against each other (10-100x slower small matmuls)."""
import os
import signal

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("ROS_DOMAIN_ID", str(100 + os.getpid() % 100))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)

# Started in the background of a non-interactive shell (`make test &`), pytest inherits SIGINT *ignored*, and so
# would every process it starts: the tests that stop a child with Ctrl-C (SIGINT) would then wait for nothing.
# Catching it here gives the children the default disposition again (a caught signal is reset on exec).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def ctx():
    """An rclpy context of the test's own (the ROS tests that run nodes in this process), so a node one test leaves
    behind cannot answer another's; rclpy is imported only here, after those modules' importorskip."""
    import rclpy

    c = rclpy.context.Context()
    rclpy.init(context=c)
    yield c
    if rclpy.ok(context=c):
        rclpy.shutdown(context=c)
