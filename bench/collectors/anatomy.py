"""Step anatomy: where a training step's time goes (data, forward, loss, backward, optimizer, and
under DDP or FSDP the communication, and how much of it backward did not hide).

Measured on extra steps after the measured region, never inside it: the phase marks are the
same ``TrainingStep`` body the measured steps ran (``bench.worker``), called with a mark that
timestamps each phase's end. On a CPU the marks are ``perf_counter`` readings; on a GPU they are
CUDA events recorded on the stream, read after the last step, so a phase's time is the stream's
time between its marks: the work launched in it, plus any wait for the host when the GPU ran dry
(a slow input pipeline shows as "data"). No step synchronises, as no measured step did.

The parts add up: each step lasts from its start to the next step's start, and whatever its
marks do not cover (the loop, hooks) is ``other``; the record keeps means, so the phases sum to
the mean step exactly. ``measured_step_ms`` (the measured region's median) sits beside it so a
reader sees whether the anatomy's steps were representative.

Distributed cases (several ranks) add two passes, the same number of steps on every rank since
every step all-reduces:
- exposed communication: steps alternate between synchronising gradients and not (DDP's
  ``no_sync``, FSDP2's ``set_requires_gradient_sync(False)``); backward's extra time with
  synchronisation is the communication that overlapping with backward's compute did not hide,
  waiting for a slower rank included (a collective ends when the last rank joins it), which is
  why it can exceed the time a collective was actually moving data.
  Under FSDP2 the parameter all-gathers cannot be switched off, so this covers gradient
  reduce-scatters only (a note says so).
- communication: a few steps under torch.profiler; the union of the intervals in which a
  collective was running (gloo's worker-thread spans on a CPU, NCCL kernels on a GPU), per step.
  The profiler slows the steps it watches, so this is an upper bound of the time in flight.

Cost, measured on this 2-core machine: about ``TARGET_S`` seconds of steps (5 to 50 of them)
plus a quarter as many re-warm steps per case; for distributed cases twice that plus a profiled window
(``PROFILED_STEPS`` steps and the profiler's start-up, about 0.3 s).
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from bench.collectors import CaseContext, Collector, native_logs_silenced

if TYPE_CHECKING:
    import torch

    from bench.worker import TrainingStep

PHASES = ("data", "forward", "loss", "backward", "optimizer")
# Seconds of phased steps per pass; between MIN_STEPS and MAX_STEPS steps.
TARGET_S = 0.5
MIN_STEPS = 5
MAX_STEPS = 50
PROFILED_STEPS = 3
# Names of collective spans in a CPU trace (gloo's worker threads) and of NCCL kernels on a GPU.
COLLECTIVE_PREFIXES = ("gloo:", "nccl:")


class PhaseTimer:
    """Timestamps phase ends on the host clock; ``steps()`` returns each step's phase seconds and
    its length (start to the next step's start)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self.clock = clock
        self.starts: list[float] = []
        self.marks: list[list[tuple[str, float]]] = []

    def start_step(self) -> None:
        self.starts.append(self.clock())
        self.marks.append([])

    def mark(self, phase: str) -> None:
        self.marks[-1].append((phase, self.clock()))

    def end(self) -> None:
        self.starts.append(self.clock())

    def _elapsed(self, a: Any, b: Any) -> float:
        return float(b - a)

    def steps(self) -> list[tuple[dict[str, float], float]]:
        out = []
        for i, marks in enumerate(self.marks):
            phases = dict.fromkeys(PHASES, 0.0)
            previous = self.starts[i]
            for phase, stamp in marks:
                phases[phase] += self._elapsed(previous, stamp)
                previous = stamp
            out.append((phases, self._elapsed(self.starts[i], self.starts[i + 1])))
        return out


class CudaPhaseTimer(PhaseTimer):
    """The same marks as CUDA events on the current stream, read once the last step is done."""

    def __init__(self, device: torch.device) -> None:
        import torch

        super().__init__(clock=lambda: self._record())
        self.torch = torch
        self.device = device

    def _record(self) -> Any:
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def end(self) -> None:
        super().end()
        self.torch.cuda.synchronize(self.device)

    def _elapsed(self, a: Any, b: Any) -> float:
        return float(a.elapsed_time(b)) / 1000  # elapsed_time is in milliseconds


def mean_phases(steps: list[tuple[dict[str, float], float]]) -> dict[str, float]:
    """Means in milliseconds of each phase, ``other`` (the step's uncovered rest) and the step;
    the phases sum to ``step_ms`` (up to rounding: ``other`` absorbs it, never below zero)."""
    n = len(steps)
    means = {f"{p}_ms": 1000 * sum(s[0][p] for s in steps) / n for p in PHASES}
    step_ms = 1000 * sum(s[1] for s in steps) / n
    means["other_ms"] = max(0.0, step_ms - sum(means.values()))
    means["step_ms"] = sum(means.values())
    return means


def union_seconds(spans: list[tuple[float, float]]) -> float:
    """Length of the union of [start, end) intervals (collectives on several threads overlap)."""
    total, reach = 0.0, -math.inf
    for start, end in sorted(spans):
        if end <= reach:
            continue
        total += end - max(start, reach)
        reach = end
    return total


def collective_spans(events: Any, cuda: bool) -> list[tuple[float, float]]:
    """Intervals (µs) in which a collective ran, from a profiler's events: gloo's worker-thread
    spans on a CPU, NCCL kernels on a GPU (the host-side ``nccl:`` spans are launches only)."""
    spans = []
    for e in events:
        name = e.name
        on_device = str(getattr(e, "device_type", "")).endswith("CUDA")
        if cuda:
            wanted = on_device and "nccl" in name.lower()
        else:
            wanted = not on_device and name.startswith(COLLECTIVE_PREFIXES)
        if wanted:
            spans.append((float(e.time_range.start), float(e.time_range.end)))
    return spans


def step_count(step_s: float) -> int:
    return max(MIN_STEPS, min(MAX_STEPS, math.ceil(TARGET_S / max(step_s, 1e-6))))


class AnatomyCollector(Collector):
    name = "anatomy"
    fields = ("phases", "steps", "timing", "measured_step_ms", "cost_s", "ranks", "slowest_rank", "notes")

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self.phases: dict[str, float] | None = None
        self.steps = 0
        self.cost_s: float | None = None
        self.measured_step_ms: float | None = None
        self.notes: list[str] = []

    @property
    def distributed(self) -> bool:
        import torch.distributed as dist

        return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1

    def _timer(self) -> PhaseTimer:
        return CudaPhaseTimer(self.ctx.device) if self.ctx.device.type == "cuda" else PhaseTimer()

    def _run(self, step: TrainingStep, n: int, synchronise: Callable[[int], bool] = lambda i: True,
             ) -> list[tuple[dict[str, float], float]]:
        timer = self._timer()
        try:
            for i in range(n):
                step.synchronise = synchronise(i)
                timer.start_step()
                step(timer.mark)
            timer.end()
        finally:
            step.synchronise = True
        return timer.steps()

    def after(self) -> None:
        from bench.worker import TrainingStep

        ctx = self.ctx
        t0 = time.perf_counter()
        step = ctx.step
        measured = ctx.measurement
        problem = None
        if not isinstance(step, TrainingStep):
            problem = "no phased training step to time"
        elif measured is None or not measured.window_seconds:
            problem = "no measured windows to size the anatomy by"
        if not ctx.everyone_ready(problem is None):
            return self.fail(problem or "another rank could not time its step anatomy")
        assert isinstance(step, TrainingStep) and measured is not None
        step_s = statistics.median(measured.window_seconds) / measured.steps_per_window
        # The comparison: the median step over every trial (all rounds), else the watched trial's.
        self.measured_step_ms = ctx.measured_step_ms or 1000 * step_s
        # Every rank runs the same number of steps (each all-reduces): the largest any asks for.
        n = int(ctx.agree(float(step_count(step_s))))
        # Re-warm: other cases' trials ran since this one's last, and its first steps back pay
        # for the caches and the thread pool waking up, as a trial's trimmed first windows do.
        for _ in range(max(2, n // 4)):
            step()
        timed = self._run(step, n)
        self.steps = n
        self.phases = mean_phases(timed)
        self._describe()
        if self.distributed:
            self._communication(step, n)
        self.cost_s = time.perf_counter() - t0

    def _communication(self, step: TrainingStep, n: int) -> None:
        assert self.phases is not None
        # Alternating, so that drift hits both kinds alike; the first of each pair alternates too.
        alternating = self._run(step, 2 * n, synchronise=lambda i: (i + i // 2) % 2 == 0)
        synced = [s[0]["backward"] for i, s in enumerate(alternating) if (i + i // 2) % 2 == 0]
        unsynced = [s[0]["backward"] for i, s in enumerate(alternating) if (i + i // 2) % 2 == 1]
        exposed = statistics.fmean(synced) - statistics.fmean(unsynced)
        self.phases["exposed_communication_ms"] = max(0.0, 1000 * exposed)
        with self._profiled() as events:
            for _ in range(PROFILED_STEPS):
                step()
        if events:
            cuda = self.ctx.device.type == "cuda"
            in_flight = union_seconds(collective_spans(events[0], cuda)) / 1e6
            self.phases["communication_ms"] = 1000 * in_flight / PROFILED_STEPS

    @contextmanager
    def _profiled(self) -> Iterator[list[Any]]:
        import torch
        from torch.profiler import ProfilerActivity, profile

        cuda = self.ctx.device.type == "cuda"
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
        found: list[Any] = []
        with native_logs_silenced(), profile(activities=activities) as prof:
            yield found
            if cuda:
                torch.cuda.synchronize(self.ctx.device)
        found.append(prof.events())

    def _describe(self) -> None:
        params = self.ctx.params
        if params.mode == "dp":
            self.notes.append("DataParallel: scattering inputs, replicating the model and gathering outputs "
                              "are inside forward; reducing gradients onto the first GPU inside backward")
        if params.mode == "fsdp":
            self.notes.append("FSDP: parameter all-gathers are inside forward and backward; exposed "
                              "communication counts gradient reduce-scatters only")
        if params.activation_checkpointing:
            self.notes.append("activation checkpointing: backward includes recomputing the forward")
        if params.grad_accum > 1:
            self.notes.append(f"gradient accumulation: each phase sums {params.grad_accum} micro-batches")
        if params.compile.enabled:
            self.notes.append("compiled: forward and backward are compiled graphs; fused work shows in either")

    def result(self) -> dict[str, Any]:
        return {"phases": self.phases, "steps": self.steps,
                "timing": "cuda_events" if self.ctx.device.type == "cuda" else "timestamps",
                "measured_step_ms": self.measured_step_ms, "cost_s": self.cost_s,
                "ranks": None, "slowest_rank": None, "notes": self.notes}
