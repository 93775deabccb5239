"""Collectors observe a case without changing what it measures.

The protocol (see ``Collector``): the worker builds every collector the case asks for, enters
them just before the measured region and exits them just after, then calls ``after`` once
measurement is over (for work that must stay out of the timed windows, such as a profiler window
or a FLOP count). ``record()`` returns a JSON-ready dict stored under ``collectors.<name>`` of the
case. A collector that fails records its error; it never raises into the measurement.

One module per collector: ``nvml`` (GPU telemetry), ``memory`` (CUDA and host peaks), ``anatomy``
(time per step by phase), ``flops`` (FLOPs and MFU), ``memory_breakdown`` (bytes by category on an
extra step), ``torch_profiler`` and ``pyspy`` (opt-in with the case's ``profile``).
"""

from __future__ import annotations

import ctypes
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    import torch

    from bench.measure import Measurement
    from bench.suite import CaseParams


@dataclass
class CaseContext:
    """What a collector may need to know about the case it observes."""

    params: CaseParams
    device: torch.device
    out_dir: str | None          # where files (traces, flame graphs) go; None: do not write files
    case_id: str
    rank: int = 0
    step: Callable[[], None] | None = None        # one training step (for untimed extra work)
    model: Any = None
    optimizer: Any = None                          # the step's torch.optim.Optimizer
    batch: int = 0                                 # samples this process feeds its model per step
    measurement: Measurement | None = None         # set by the worker once the timed windows are done
    measured_step_ms: float | None = None            # median over every trial's windows of their mean step
    extras: dict[str, Any] = field(default_factory=dict)
    # The maximum of a number over all ranks (an all-reduce under DDP; the number itself alone).
    agree: Callable[[float], float] = float

    def everyone_ready(self, ready: bool) -> bool:
        """True when every rank is ready for extra training steps. Under DDP each step
        all-reduces, so a rank that runs them alone waits for the others until the case's timeout;
        every rank must call this, once, at the same point."""
        return self.agree(0.0 if ready else 1.0) == 0.0

    @property
    def samples_per_step(self) -> int:
        return self.batch or self.params.batch_size

    def profile_dir(self) -> str | None:
        """``<out_dir>/profiles/<case id>``, created on demand; None when files are not wanted."""
        if self.out_dir is None:
            return None
        path = os.path.join(self.out_dir, "profiles", self.case_id or "case")
        os.makedirs(path, exist_ok=True)
        return path

    def relative(self, path: str) -> str:
        """A file's path relative to the results folder, as results.json stores it."""
        assert self.out_dir is not None
        return os.path.relpath(path, self.out_dir)


@contextmanager
def native_logs_silenced() -> Iterator[None]:
    """Standard output and error sent to /dev/null at the file-descriptor level while a collector's own torch.profiler
    runs: Kineto and the CPU allocator log its start and stop from C++ (``profiler_start``,
    "Memory block of unknown size..."), which would give every case a log file of noise, where a
    log should mean the case printed something. A Python exception is unaffected."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 1)
        os.dup2(devnull, 2)
        yield
    finally:
        # C's stdio buffers what it writes to a file: flushed here, it lands in /dev/null, not
        # in the log once the descriptors are back.
        ctypes.CDLL(None).fflush(None)
        for fd, copy in ((1, saved[0]), (2, saved[1])):
            os.dup2(copy, fd)
            os.close(copy)
        os.close(devnull)


class Collector:
    """Base class: subclasses override ``start``, ``stop``, ``after`` and ``result``.

    ``fields`` lists the keys of the record; a collector that fails or cannot run (no NVML, no
    py-spy) still has them all, as ``null``, next to its ``error``, so readers see one shape."""

    name = "collector"
    fields: ClassVar[tuple[str, ...]] = ()

    def __init__(self, ctx: CaseContext) -> None:
        self.ctx = ctx
        self.error: str | None = None

    def start(self) -> None:
        """Called just before the measured region."""

    def stop(self) -> None:
        """Called just after the measured region."""

    def after(self) -> None:
        """Called once measurement is over; may run extra, untimed steps."""

    def result(self) -> dict[str, Any] | None:
        return None

    def fail(self, reason: str) -> None:
        """Give up with a reason (recorded once); later calls of this collector are skipped."""
        if self.error is None:
            self.error = reason

    def _guard(self, what: Callable[[], None]) -> None:
        if self.error is not None:
            return
        try:
            what()
        except Exception as exc:  # a collector must never fail the measurement it observes
            self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:1000]
            # The record keeps one line; the full traceback goes to the case's log file.
            print(f"bench: collector {self.name} failed:\n{traceback.format_exc()[-4000:]}", file=sys.stderr)

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = dict.fromkeys(self.fields)
        if self.error is None:
            result: dict[str, Any] = {}
            self._guard(lambda: result.update(self.result() or {}))
            if self.error is None:
                out.update(result)
        out["error"] = self.error
        return out


class CollectorSet:
    """Runs a list of collectors around the measured region, guarding each one."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors

    def __enter__(self) -> CollectorSet:
        for c in self.collectors:
            c._guard(c.start)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for c in reversed(self.collectors):
            c._guard(c.stop)

    def after(self) -> None:
        for c in self.collectors:
            c._guard(c.after)

    def records(self) -> dict[str, Any]:
        return {c.name: c.record() for c in self.collectors}


def make_collectors(ctx: CaseContext) -> CollectorSet:
    """The collectors a case asks for. Memory, NVML, the step anatomy, FLOPs and the memory
    breakdown always run; the profilers when the case's ``profile`` names them. Samplers are entered
    first and py-spy last, so each sampler's own start-up happens before the profiler starts watching."""
    from bench.collectors.anatomy import AnatomyCollector
    from bench.collectors.flops import FlopsCollector
    from bench.collectors.memory import MemoryCollector
    from bench.collectors.memory_breakdown import MemoryBreakdownCollector
    from bench.collectors.nvml import NvmlCollector
    from bench.collectors.pyspy import PySpyCollector
    from bench.collectors.torch_profiler import TorchProfilerCollector

    chosen: list[Collector] = [MemoryCollector(ctx), NvmlCollector(ctx), AnatomyCollector(ctx), FlopsCollector(ctx),
                               MemoryBreakdownCollector(ctx)]
    profile = ctx.params.profile
    if "torch" in profile:
        chosen.append(TorchProfilerCollector(ctx))
    if "pyspy" in profile:
        chosen.append(PySpyCollector(ctx))
    return CollectorSet(chosen)
