"""torch.profiler on a short window of extra steps after measurement (``profile: torch``).

Why after and not during: the profiler's own cost (an event per operator, CUPTI on the GPU)
would lower the throughput it explains; on its own window it changes nothing that is reported as
a measurement. The schedule waits a step and warms up before it records, because the first
profiled steps carry the profiler's start-up. The result keeps the top operators by self time
(CUDA time on a GPU, CPU time otherwise) and a gzipped Chrome trace per rank, which Perfetto
(ui.perfetto.dev) and TensorBoard's profiler plugin open directly.
"""

from __future__ import annotations

import os
from contextlib import ExitStack
from typing import Any

from bench.collectors import CaseContext, Collector


def top_operators(events: Any, by_device: bool, top: int) -> list[dict[str, Any]]:
    """``key_averages()`` rows as plain dicts, most expensive first (times in ms over the window)."""

    def device_us(e: Any) -> float:
        # Renamed from self_cuda_time_total in torch 2.4; accept both.
        return float(getattr(e, "self_device_time_total", None) or getattr(e, "self_cuda_time_total", 0) or 0)

    key = device_us if by_device else (lambda e: float(e.self_cpu_time_total))
    # ``ProfilerStep#N`` is the profiler's own span around each step, not an operator.
    ops = [e for e in events if not e.key.startswith("ProfilerStep")]
    rows = sorted(ops, key=key, reverse=True)[:top]
    return [{"name": e.key, "self_cpu_ms": e.self_cpu_time_total / 1000,
             "self_cuda_ms": device_us(e) / 1000 if by_device else None, "calls": int(e.count)} for e in rows]


class TorchProfilerCollector(Collector):
    name = "torch_profiler"
    fields = ("top_ops", "traces", "active_steps", "sort_by")

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self.top_ops: list[dict[str, Any]] = []
        self.traces: list[str] = []

    def after(self) -> None:
        import torch
        from torch.profiler import ProfilerActivity, profile, schedule

        ctx, cfg = self.ctx, self.ctx.params.profiler
        cuda = ctx.device.type == "cuda"
        activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
        folder = ctx.profile_dir()

        def ready(prof: Any) -> None:
            self.top_ops = top_operators(prof.key_averages(), cuda, cfg.top)
            if folder is not None:
                # The ``.pt.trace.json.gz`` suffix is what TensorBoard's plugin looks for; torch
                # gzips the export because the name ends in .gz.
                path = os.path.join(folder, f"rank{ctx.rank}.pt.trace.json.gz")
                prof.export_chrome_trace(path)
                self.traces.append(ctx.relative(path))

        with ExitStack() as stack:
            # Every rank reaches ``everyone_ready`` whatever happens before it: under DDP a rank
            # that stepped alone would wait in an all-reduce for the others until the timeout.
            problem: str | None = None
            if ctx.step is None:
                problem = "no training step to profile"
            else:
                try:
                    prof = stack.enter_context(profile(
                        activities=activities, schedule=schedule(wait=cfg.wait, warmup=cfg.warmup, active=cfg.active,
                                                                 repeat=1),
                        on_trace_ready=ready, record_shapes=cfg.record_shapes, profile_memory=cfg.profile_memory,
                        with_stack=cfg.with_stack))
                except Exception as exc:  # the profiler's start-up (Kineto, CUPTI) failing on this rank
                    problem = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
            if not ctx.everyone_ready(problem is None):
                return self.fail(problem or "the torch profiler could not start on another rank, so no rank profiled")
            assert ctx.step is not None
            for _ in range(cfg.wait + cfg.warmup + cfg.active):
                ctx.step()
                if cuda:
                    torch.cuda.synchronize(ctx.device)
                prof.step()

    def result(self) -> dict[str, Any]:
        cfg = self.ctx.params.profiler
        return {"top_ops": self.top_ops, "traces": self.traces, "active_steps": cfg.active,
                "sort_by": "self_cuda_ms" if self.ctx.device.type == "cuda" else "self_cpu_ms"}
