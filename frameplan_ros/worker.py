"""Latest-wins inference: a one-slot buffer and one worker thread.

Why: inference takes 100 ms to seconds while a camera delivers every 33 ms. A queue would grow without bound
(memory, and ever staler results); the subscription callbacks must never wait for the model. So a new job
replaces an unprocessed one (counted as dropped) and the single worker always runs the newest job.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)


class LatestSlot:
    """Holds at most one item. ``put`` never blocks; it returns True when it replaced an unconsumed item."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._item: Any = None
        self._full = False
        self._closed = False
        self.dropped = 0
        self.put_count = 0

    def put(self, item: Any) -> bool:
        with self._cond:
            replaced = self._full
            if replaced:
                self.dropped += 1
            self._item, self._full = item, True
            self.put_count += 1
            self._cond.notify()
            return replaced

    def take(self, timeout: float | None = None) -> tuple[bool, Any]:
        """(True, item) or (False, None) on timeout/close."""
        with self._cond:
            if not self._full and not self._closed:
                self._cond.wait(timeout)
            if not self._full:
                return False, None
            item, self._item, self._full = self._item, None, False
            return True, item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._item, self._full = None, False
            self._cond.notify_all()

    @property
    def pending(self) -> bool:
        return self._full

    @property
    def closed(self) -> bool:
        return self._closed


class Worker:
    """Runs ``handle(item)`` on the newest item of a LatestSlot in one daemon thread.

    ``idle()`` runs in the thread before each wait (at least every 0.5 s). Exceptions from ``handle`` go to
    ``on_error(exc, item)`` and the loop keeps going. ``stop`` closes the slot and joins: a running ``handle``
    is allowed to finish (it is never interrupted mid-inference), the pending item is discarded."""

    def __init__(self, handle: Callable[[Any], None], on_error: Callable[[BaseException, Any], None] | None = None,
                 idle: Callable[[], None] | None = None, name: str = "frameplan-worker") -> None:
        self.slot = LatestSlot()
        self._handle = handle
        self._on_error = on_error
        self._idle = idle
        self.processed = 0
        self.busy = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: Any) -> bool:
        """Never blocks; True when an older pending item was dropped."""
        return self.slot.put(item)

    @property
    def dropped(self) -> int:
        return self.slot.dropped

    def _loop(self) -> None:
        while not self.slot.closed:
            if self._idle is not None:
                try:
                    self._idle()  # housekeeping between jobs (e.g. model reloads), in this thread
                except Exception:
                    log.exception("worker housekeeping failed")
            ok, item = self.slot.take(timeout=0.5)
            if not ok:
                continue
            self.busy = True
            try:
                self._handle(item)
            except BaseException as exc:
                if self._on_error is not None:
                    try:
                        self._on_error(exc, item)
                    except Exception:
                        log.exception("error handler failed")
                else:
                    log.exception("job failed")
            finally:
                self.busy = False
                self.processed += 1

    @property
    def alive(self) -> bool:
        """The thread still runs (a job outlived ``stop``'s timeout)."""
        return self._thread.is_alive()

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop accepting work and wait up to ``timeout`` s for the current job; True if the thread ended."""
        self.slot.close()
        self._thread.join(timeout)
        return not self._thread.is_alive()
