"""Memory of the measured region: CUDA's peak allocated and reserved bytes, and the host's peak
resident set size across every process of the case (this process and its children: DataLoader
workers, ranks it launched), per process and summed.

Why sampling for the host: the kernel keeps a peak (VmHWM) per process, but only a reset of it
(``clear_refs``) would scope it to the measured region, and that would also change the whole-life
peak the worker reports; a 0.1 s sampler sees any allocation that lives for a step or more. RSS
counts pages shared between forked processes in each of them, so the sum is an upper bound.
"""

from __future__ import annotations

import os
from typing import Any

from bench.collectors import CaseContext, Collector
from bench.collectors.sampling import PeriodicSampler

INTERVAL_S = 0.1
# Listing the children walks all of /proc (about a millisecond); their RSS reads are microseconds.
CHILDREN_EVERY = 10


class HostMemorySampler:
    """Peak RSS of a process tree: per process, and of the sum at any one sample."""

    def __init__(self, root_pid: int) -> None:
        import psutil

        self.root = psutil.Process(root_pid)
        self.procs: dict[int, Any] = {}
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self.peak_sum = 0
        self._ticks = 0

    def _refresh(self) -> None:
        import psutil

        try:
            children = self.root.children(recursive=True)
        except psutil.Error:
            children = []
        for p in [self.root, *children]:
            if p.pid not in self.procs:
                self.procs[p.pid] = p
                try:
                    self.names[p.pid] = p.name()
                except psutil.Error:
                    self.names[p.pid] = "?"

    def sample(self) -> None:
        import psutil

        if self._ticks % CHILDREN_EVERY == 0:
            self._refresh()
        self._ticks += 1
        total = 0
        for pid, p in list(self.procs.items()):
            try:
                rss = p.memory_info().rss
            except psutil.Error:  # exited: its peak so far stays
                del self.procs[pid]
                continue
            total += rss
            if rss > self.peaks.get(pid, 0):
                self.peaks[pid] = rss
        self.peak_sum = max(self.peak_sum, total)

    def result(self) -> dict[str, Any]:
        mb = 2**20
        return {
            "host_peak_rss_mb": self.peaks.get(self.root.pid, 0) / mb,
            "host_peak_rss_sum_mb": self.peak_sum / mb,
            "processes": [
                {"pid": pid, "name": self.names.get(pid, "?"), "role": "case" if pid == self.root.pid else "child",
                 "peak_rss_mb": peak / mb}
                for pid, peak in sorted(self.peaks.items(), key=lambda kv: kv[0] != self.root.pid)
            ],
        }


class MemoryCollector(Collector):
    name = "memory"
    fields = ("cuda_peak_allocated_mb", "cuda_peak_reserved_mb", "host_peak_rss_mb", "host_peak_rss_sum_mb",
              "processes", "interval_s")

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self.cuda: dict[str, float | None] = {"cuda_peak_allocated_mb": None, "cuda_peak_reserved_mb": None}
        self.host = HostMemorySampler(os.getpid())
        self._thread = PeriodicSampler(self.host.sample, INTERVAL_S, "bench-memory")

    def start(self) -> None:
        if self.ctx.device.type == "cuda":
            import torch

            # Reset here so that the peak is the measured region's, not the model build's.
            torch.cuda.reset_peak_memory_stats(self.ctx.device)
        self._thread.start()

    def stop(self) -> None:
        self._thread.stop()
        if self.ctx.device.type == "cuda":
            import torch

            # Read before ``after()``: profiler and FLOP-count steps must not raise the peak.
            self.cuda = {
                "cuda_peak_allocated_mb": torch.cuda.max_memory_allocated(self.ctx.device) / 2**20,
                "cuda_peak_reserved_mb": torch.cuda.max_memory_reserved(self.ctx.device) / 2**20,
            }
        if self._thread.error is not None:
            err = self._thread.error
            self.fail(f"host memory sampling failed: {type(err).__name__}: {err}")

    def result(self) -> dict[str, Any]:
        return {**self.cuda, **self.host.result(), "interval_s": INTERVAL_S}
