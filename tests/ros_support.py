"""What the in-process ROS tests share besides the ``ctx`` fixture (conftest.py): waiting for a condition while an
executor spins in the test's thread or the node's own threads work."""
import time


def wait_for(predicate, timeout: float, executor=None, poll: float = 0.02) -> bool:
    """True once ``predicate()`` holds, False after ``timeout`` s; between checks spin ``executor`` once (if given)
    or sleep ``poll`` s."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        if executor is not None:
            executor.spin_once(timeout_sec=poll)
        else:
            time.sleep(poll)
    return True


def spin_until(executor, predicate, timeout: float) -> bool:
    """``wait_for`` that spins ``executor`` between checks (the node runs in the test's thread)."""
    return wait_for(predicate, timeout, executor=executor)
