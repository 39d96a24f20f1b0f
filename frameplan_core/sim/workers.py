"""Simulation jobs on spawned worker processes (collection episodes, rollout scenes): one queue of jobs, one of
events back. Spawned, never forked: a fresh interpreter per worker, so Vulkan/PhysX state is never shared."""
from __future__ import annotations

import multiprocessing as mp
import queue
from typing import Callable

from frameplan_core.errors import SimError


def run_workers(target: Callable, args: tuple, jobs: list, workers: int, on_event: Callable[[tuple], bool],
                what: str) -> None:
    """Run ``jobs`` on ``workers`` processes ``target(*args, job_queue, event_queue)``, each taking jobs until it
    gets None. Every event tuple the workers put goes to ``on_event``, which returns True when the event completes
    a job; an ``("error", message, ...)`` event stops the run with SimError, as do workers that all died with jobs
    left. On the way out (finished, failed or interrupted) the workers still running are terminated (a collection
    worker turns that into a clean exit that removes its unfinished episode) and killed if they do not stop within
    two minutes."""
    ctx = mp.get_context("spawn")
    job_q, events = ctx.Queue(), ctx.Queue()
    for job in jobs:
        job_q.put(job)
    for _ in range(workers):
        job_q.put(None)
    procs = [ctx.Process(target=target, args=(*args, job_q, events), daemon=True) for _ in range(workers)]
    for p in procs:
        p.start()
    remaining = len(jobs)
    try:
        while remaining:
            try:
                event = events.get(timeout=1.0)
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    raise SimError(f"{what} workers exited with {remaining} job(s) left "
                                   f"(exit codes {[p.exitcode for p in procs]})") from None
                continue
            if event[0] == "error":
                raise SimError(f"{what} worker failed: {event[1]}")
            if on_event(event):
                remaining -= 1
    finally:
        if not remaining:  # each worker took its None and is exiting: let it finish instead of terminating it
            for p in procs:
                p.join(timeout=30)
        for p in procs:
            if p.is_alive():
                p.terminate()
        # the signal is handled when the worker returns from C++ (a motion plan can take ~10 s on a busy CPU)
        for p in procs:
            p.join(timeout=120)
            if p.is_alive():
                p.kill()


__all__ = ["run_workers"]
