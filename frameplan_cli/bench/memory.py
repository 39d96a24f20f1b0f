"""Peak memory of a block of work, for the benchmarks (one definition for the predictor and planner rows)."""
from __future__ import annotations

import os
import threading
import time


class PeakMemory:
    """Peak memory during a block: CUDA allocator peak on GPU, this process's resident memory sampled every 2 ms on
    CPU (ru_maxrss cannot be reset between rows). ``peak_mb``: above what was in use when the block began;
    ``total_mb``: the whole peak."""

    def __init__(self, device):
        self.device, self.peak_mb = device, 0.0

    def _rss(self) -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self.base = torch.cuda.memory_allocated()
        else:
            self.base = self._rss()
            self.max, self.stop = self.base, False
            self.thread = threading.Thread(target=self._watch, daemon=True)
            self.thread.start()
        return self

    def _watch(self):
        while not self.stop:
            self.max = max(self.max, self._rss())
            time.sleep(0.002)

    def __exit__(self, *exc):
        import torch

        if self.device.type == "cuda":
            torch.cuda.synchronize()
            self.peak_mb = (torch.cuda.max_memory_allocated() - self.base) / 2**20
            self.total_mb = torch.cuda.max_memory_allocated() / 2**20
        else:
            self.stop = True
            self.thread.join()
            self.max = max(self.max, self._rss())
            self.peak_mb = (self.max - self.base) / 2**20
            self.total_mb = self.max / 2**20
