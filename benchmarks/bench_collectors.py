"""Overhead of the always-on telemetry: the same CPU training step with the NVML sampler (on a fake
NVML device, since this machine has no driver) and host-memory tracking off and on.

    pytest benchmarks/bench_collectors.py --benchmark-only

Two views of one question. The pytest-benchmark pair (``off``, ``on``) times the step under
each state, one after the other; on a shared machine their ratio also carries any drift between
the two runs. The interleaved test alternates short blocks of steps with telemetry off and on and
takes the median of the per-pair ratios, which cancels slow drift; its figure is the one to quote.
Both print ``on/off`` time ratios (1.01 = steps 1% slower with telemetry on). The last two time
one sample of each sampler and print the CPU time they take per second of training, a bound on
their cost that does not depend on how busy the machine is. Nothing is asserted.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from fakes.fake_pynvml import FakeGpu, FakeNvml  # on sys.path just above

from bench.collectors import CaseContext
from bench.collectors.memory import CHILDREN_EVERY, INTERVAL_S, HostMemorySampler, MemoryCollector
from bench.collectors.nvml import NvmlSampler
from bench.collectors.sampling import PeriodicSampler
from bench.suite import CaseParams

GROUP = "collectors: mlp batch 64, 1 thread, CPU step"
PAIRS = 20
BLOCK_S = 0.6  # several NVML (0.2 s) and memory (0.1 s) samples fall inside each block


@pytest.fixture(scope="module")
def case() -> tuple[CaseContext, Callable[[], None]]:
    from bench.worker import build_step

    torch.set_num_threads(1)
    params = CaseParams.model_validate({"model": "mlp", "batch_size": 64})
    step, model = build_step(params, torch.device("cpu"), params.batch_size)
    for _ in range(20):  # warm-up: allocator, optimizer state
        step()
    ctx = CaseContext(params=params, device=torch.device("cpu"), out_dir=None, case_id="bench", step=step,
                      model=model, batch=params.batch_size)
    return ctx, step


@contextmanager
def telemetry(ctx: CaseContext) -> Iterator[None]:
    """What a CUDA case runs around its measured region: the NVML sampler at the default interval
    on one (fake) device, and the host-memory sampler."""
    fake = FakeNvml([FakeGpu("GPU-00000000-0000-4000-8000-000000000000")])
    nvml = PeriodicSampler(NvmlSampler(fake, fake.gpus[0]).sample, ctx.params.nvml_interval)
    memory = MemoryCollector(ctx)
    nvml.start()
    memory.start()
    try:
        yield
    finally:
        memory.stop()
        nvml.stop()


def say(request: pytest.FixtureRequest, line: str) -> None:
    """Print past pytest's output capture, so the figure shows with the benchmark table."""
    plugins = request.config.pluginmanager
    reporter, capture = plugins.get_plugin("terminalreporter"), plugins.get_plugin("capturemanager")
    if reporter is not None and capture is not None:
        with capture.global_and_fixture_disabled():
            reporter.write_line(line)


@pytest.fixture(scope="module")
def medians(request: pytest.FixtureRequest) -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    yield found
    if {"off", "on"} <= found.keys():
        say(request, f"collectors overhead (pytest-benchmark medians, on/off): {found['on'] / found['off']:.4f}")


@pytest.mark.parametrize("state", ["off", "on"])
def test_training_step_with_telemetry(benchmark: Any, case: Any, medians: dict[str, float], state: str) -> None:
    ctx, step = case
    benchmark.group = GROUP
    with telemetry(ctx) if state == "on" else nullcontext():
        benchmark.pedantic(step, rounds=300, iterations=5, warmup_rounds=20)
    medians[state] = benchmark.stats.stats.median


def _block(step: Callable[[], None], steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return (time.perf_counter() - t0) / steps


def test_interleaved_blocks_with_telemetry_off_and_on(benchmark: Any, case: Any,
                                                      request: pytest.FixtureRequest) -> None:
    ctx, step = case
    per_step = _block(step, 20)
    steps = max(1, round(BLOCK_S / per_step))

    def pairs() -> list[float]:
        ratios = []
        for i in range(PAIRS):
            # Alternate which state goes first, so that a trend within a pair cancels too.
            order = ("off", "on") if i % 2 == 0 else ("on", "off")
            times = {}
            for state in order:
                with telemetry(ctx) if state == "on" else nullcontext():
                    times[state] = _block(step, steps)
            ratios.append(times["on"] / times["off"])
        return ratios

    benchmark.group = GROUP + " (interleaved)"
    ratios = benchmark.pedantic(pairs, rounds=1, iterations=1)
    ratio = statistics.median(ratios)
    benchmark.extra_info.update({"median_on_off_ratio": ratio, "pairs": PAIRS, "steps_per_block": steps})
    q = statistics.quantiles(ratios, n=4)
    say(request, f"collectors overhead (interleaved, {PAIRS} pairs of {steps} steps): "
                 f"median on/off {ratio:.4f}, quartiles {q[0]:.4f}..{q[2]:.4f}")


@pytest.fixture(scope="module")
def sample_costs(request: pytest.FixtureRequest, case: Any) -> Iterator[dict[str, float]]:
    found: dict[str, float] = {}
    yield found
    if {"nvml", "memory"} <= found.keys():
        ctx, _ = case
        # CPU time the samplers take per second of training, at their default intervals.
        per_s = found["nvml"] / ctx.params.nvml_interval + found["memory"] / INTERVAL_S
        say(request, f"collectors overhead (sampler CPU time): nvml {found['nvml'] * 1e6:.1f} us/sample, "
                     f"memory {found['memory'] * 1e6:.1f} us/sample: {per_s * 1e3:.3f} ms per second "
                     f"of training ({per_s:.3%} of one core)")


def test_one_nvml_sample_on_a_fake_device(benchmark: Any, sample_costs: dict[str, float]) -> None:
    fake = FakeNvml([FakeGpu("GPU-00000000-0000-4000-8000-000000000000")])
    sampler = NvmlSampler(fake, fake.gpus[0])
    benchmark.group = "collectors: one sample"
    benchmark.pedantic(sampler.sample, rounds=2000, iterations=1, warmup_rounds=10)
    sample_costs["nvml"] = benchmark.stats.stats.median


def test_one_host_memory_sample(benchmark: Any, sample_costs: dict[str, float]) -> None:
    sampler = HostMemorySampler(os.getpid())
    benchmark.group = "collectors: one sample"
    # CHILDREN_EVERY rounds per iteration: one child-list refresh and the plain reads, as it runs.
    benchmark.pedantic(lambda: [sampler.sample() for _ in range(CHILDREN_EVERY)], rounds=200, iterations=1,
                       warmup_rounds=2)
    sample_costs["memory"] = benchmark.stats.stats.median / CHILDREN_EVERY
