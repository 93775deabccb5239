"""The memory_breakdown collector: bytes by category checked exactly against models whose sizes are
known by hand, cross-checked with torch's memory profiler, its failures recorded and never raised,
and the record of a real `bench run` case."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from bench.collectors import CaseContext, CollectorSet
from bench.collectors import memory_breakdown as mb
from bench.collectors.memory_breakdown import (
    EXTRA_STEPS,
    MemoryBreakdownCollector,
    memory_profiling,
    optimizer_state_bytes,
    parameters_bytes,
    profiled_peak,
    tensor_bytes,
)
from bench.records import MemoryBreakdownRecord
from bench.suite import CaseParams
from bench.worker import build_step

F32 = 4
# bench's mlp, 784 -> 128 -> 10: two weights and two biases, float32.
MLP_PARAMETERS = (784 * 128 + 128 + 128 * 10 + 10) * F32
MLP_TENSORS = 4
# Adam keeps one scalar float32 ``step`` tensor per parameter; the collector counts them as
# optimizer state (the convention torch's memory profiler follows too).
ADAM_STEP_TENSORS = MLP_TENSORS * F32


def _params(**overrides: Any) -> CaseParams:
    return CaseParams.model_validate({"model": "mlp", "batch_size": 16, **overrides})


def _ctx(**overrides: Any) -> CaseContext:
    params = _params(**overrides)
    step, model = build_step(params, torch.device("cpu"), params.batch_size)
    step()  # a first step creates the optimizer's state, as the warm-up does in a case
    return CaseContext(params=params, device=torch.device("cpu"), out_dir=None, case_id="c", step=step,
                       model=model, optimizer=step.optimizer,  # type: ignore[attr-defined]
                       batch=params.batch_size)


def _breakdown(ctx: CaseContext) -> dict[str, Any]:
    collectors = CollectorSet([MemoryBreakdownCollector(ctx)])
    collectors.after()
    record: dict[str, Any] = collectors.records()["memory_breakdown"]
    MemoryBreakdownRecord.model_validate(record)  # the shape results.json requires, strictly
    return record


# ---------------------------------------------------------------------------------------------
# Exact categories


@pytest.mark.parametrize(("optimizer", "state"), [
    ("sgd", 0),
    ({"name": "sgd", "momentum": 0.9}, MLP_PARAMETERS),
    ("adam", 2 * MLP_PARAMETERS + ADAM_STEP_TENSORS),
])
def test_parameters_gradients_and_optimizer_state_of_the_mlp_are_its_analytic_sizes(optimizer: Any,
                                                                                     state: int) -> None:
    record = _breakdown(_ctx(optimizer=optimizer))
    cats = record["categories"]
    assert record["error"] is None
    assert cats["parameters_bytes"] == MLP_PARAMETERS
    assert cats["gradients_bytes"] == MLP_PARAMETERS
    assert cats["optimizer_state_bytes"] == state
    assert record["ranks"] is None


def test_activations_of_a_linear_relu_model_are_what_its_backward_needs_computed_by_hand() -> None:
    n, a, b, c = 8, 5, 7, 3
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(a, b), torch.nn.ReLU(), torch.nn.Linear(b, c))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss_fn = torch.nn.MSELoss()
    x, y = torch.randn(n, a), torch.randn(n, c)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        optimizer.step()

    ctx = CaseContext(params=_params(), device=torch.device("cpu"), out_dir=None, case_id="c", step=step,
                      model=model, optimizer=optimizer, batch=n)
    cats = _breakdown(ctx)["categories"]
    # The first Linear saves x (the input: not an activation) and its weight (a parameter). ReLU
    # saves its output, which the second Linear saves too (one storage, counted once); MSE saves
    # the model's output and the target (an input).
    assert cats["activations_bytes"] == n * b * F32 + n * c * F32
    assert cats["parameters_bytes"] == (a * b + b + b * c + c) * F32
    assert cats["optimizer_state_bytes"] == 0


def test_activations_of_the_mlp_with_cross_entropy_are_counted_by_hand() -> None:
    cats = _breakdown(_ctx(batch_size=16))["categories"]
    # ReLU's output (saved by it and by the second Linear), log_softmax's output, and nll_loss's
    # scalar total weight; the batch and the targets are inputs.
    assert cats["activations_bytes"] == 16 * 128 * F32 + 16 * 10 * F32 + F32


def test_with_gradient_accumulation_activations_are_one_micro_batchs_not_their_sum() -> None:
    one = _breakdown(_ctx(batch_size=16))["categories"]["activations_bytes"]
    accumulated = _breakdown(_ctx(batch_size=16, grad_accum=3))["categories"]["activations_bytes"]
    assert accumulated == one == 16 * 138 * F32 + F32


def test_one_memory_region_is_counted_once_and_distinct_regions_of_one_storage_each() -> None:
    flat = torch.zeros(10)
    first, second = flat[:4], flat[4:]
    assert tensor_bytes([flat, flat.view(2, 5)]) == 10 * F32
    assert tensor_bytes([first, second, first]) == 10 * F32
    tied = torch.nn.Sequential(torch.nn.Linear(3, 3, bias=False), torch.nn.Linear(3, 3, bias=False))
    tied[1].weight = tied[0].weight
    assert parameters_bytes(tied) == 9 * F32


# ---------------------------------------------------------------------------------------------
# The peak


def test_peak_comes_from_torchs_memory_profiler_and_holds_every_category_alive_at_once() -> None:
    ctx = _ctx(batch_size=16)
    record = _breakdown(ctx)
    cats = record["categories"]
    assert cats["peak_source"] == "torch_memory_profiler"
    # SGD's update runs with parameters, gradients and the batch (16x784 floats, 16 int64
    # targets) all alive, so the peak holds at least those.
    batch = 16 * 784 * F32 + 16 * 8
    assert cats["peak_bytes"] >= 2 * MLP_PARAMETERS + batch
    summed = sum(cats[k] for k in ("parameters_bytes", "gradients_bytes", "optimizer_state_bytes",
                                   "activations_bytes"))
    assert cats["other_bytes"] == max(cats["peak_bytes"] - summed, 0)
    assert cats["cuda_allocated_bytes"] is None and cats["cuda_reserved_bytes"] is None


def test_other_is_clamped_at_zero_with_a_note_when_the_categories_exceed_the_peak(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mb, "profiled_peak", lambda prof: mb.ProfiledPeak(peak_bytes=1000, by_category={}))
    record = _breakdown(_ctx(batch_size=16))
    cats = record["categories"]
    summed = 2 * MLP_PARAMETERS + 16 * 138 * F32 + F32
    assert (cats["peak_bytes"], cats["other_bytes"]) == (1000, 0)
    assert record["notes"] == [f"other_bytes clamped at 0: the categories add up to {summed - 1000} bytes more "
                               "than the peak (they are not all alive at the same moment)"]


@pytest.mark.cuda
def test_on_cuda_the_peak_is_the_caching_allocators_over_the_extra_step() -> None:
    params = _params(mode="cuda", optimizer="adam")
    device = torch.device("cuda:0")
    step, model = build_step(params, device, params.batch_size)
    step()
    ctx = CaseContext(params=params, device=device, out_dir=None, case_id="c", step=step, model=model,
                      optimizer=step.optimizer,  # type: ignore[attr-defined]
                      batch=params.batch_size)
    record = _breakdown(ctx)
    cats = record["categories"]
    assert record["error"] is None
    assert cats["parameters_bytes"] == cats["gradients_bytes"] == MLP_PARAMETERS
    assert cats["optimizer_state_bytes"] == 2 * MLP_PARAMETERS + ADAM_STEP_TENSORS
    assert cats["peak_source"] == "cuda_allocator"
    assert cats["peak_bytes"] == cats["cuda_allocated_bytes"] >= 4 * MLP_PARAMETERS
    assert cats["cuda_reserved_bytes"] >= cats["cuda_allocated_bytes"]


def test_torchs_memory_profiler_finds_the_same_parameters_and_adam_state() -> None:
    ctx = _ctx(optimizer="adam")
    assert ctx.step is not None
    with memory_profiling() as prof:
        ctx.step()
    peak = profiled_peak(prof)
    assert peak.by_category["PARAMETER"] == parameters_bytes(ctx.model) == MLP_PARAMETERS
    # The profiler counts Adam's scalar step tensors as optimizer state too.
    assert peak.by_category["OPTIMIZER_STATE"] == optimizer_state_bytes(ctx.optimizer)
    assert peak.peak_bytes == sum(peak.by_category.values())


# ---------------------------------------------------------------------------------------------
# Failures: recorded, never raised; every rank runs the same steps


def _counting(ctx: CaseContext) -> list[int]:
    calls: list[int] = []
    step = ctx.step
    assert step is not None

    def counted() -> None:
        calls.append(1)
        step()

    ctx.step = counted
    return calls


def test_a_step_that_raises_is_recorded_as_the_collectors_error() -> None:
    ctx = _ctx()

    def broken() -> None:
        raise RuntimeError("step broke\n  here")

    ctx.step = broken
    record = _breakdown(ctx)
    assert record == {"categories": None, "ranks": None, "notes": [], "error": "RuntimeError: step broke here"}


def test_without_an_optimizer_nothing_runs_and_the_reason_is_recorded() -> None:
    ctx = _ctx()
    ctx.optimizer = None
    calls = _counting(ctx)
    record = _breakdown(ctx)
    assert record["error"] == "no training step, model or optimizer to measure"
    assert record["categories"] is None and calls == []


def test_when_another_rank_cannot_measure_no_rank_steps() -> None:
    ctx = _ctx()
    ctx.agree = lambda value: 1.0  # the all-reduced maximum: some rank was not ready
    calls = _counting(ctx)
    record = _breakdown(ctx)
    assert record["error"] == "another rank could not measure memory, so no rank did"
    assert calls == []


def test_a_profiler_that_cannot_start_still_runs_the_same_steps_and_leaves_the_peak_null(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse() -> Callable[[], None]:
        raise RuntimeError("kineto is busy")

    monkeypatch.setattr(mb, "memory_profiling", refuse)
    ctx = _ctx()
    calls = _counting(ctx)
    record = _breakdown(ctx)
    assert len(calls) == EXTRA_STEPS == 1
    assert record["error"] is None
    assert record["categories"]["parameters_bytes"] == MLP_PARAMETERS
    assert record["categories"]["peak_bytes"] is None and record["categories"]["other_bytes"] is None
    assert record["notes"] == ["no peak: the profiler could not start (RuntimeError: kineto is busy)"]


# ---------------------------------------------------------------------------------------------
# End to end

SUITE = """
name: breakdown
defaults:
  model: mlp
  batch_size: 32
  threads: 1
  measure: {warmup_steps: 1, min_time: 0.1, max_time: 0.3, window_time: 0.01}
  timeout: 60
matrix:
  mode: [cpu]
  optimizer: [sgd, adam]
include:
  # FSDP2 over two CPU ranks: each rank holds and counts half of every parameter.
  - {optimizer: adam, mode: fsdp, world_size: 2, device: cpu}
"""


def test_bench_run_records_the_breakdown_of_every_case_in_results_json(write_suite: Any, run_bench: Any,
                                                                        tmp_path: Path) -> None:
    from bench.results import load_run

    out = tmp_path / "out"
    result = run_bench("run", write_suite(SUITE), "--out", out, "--no-report", "--quiet", timeout=300)
    assert result.returncode == 0, result.stderr
    # load_run checks results.json against its schema.
    cases = {(case.params.mode, case.params.optimizer["name"]): case for case in load_run(out).cases}
    assert sorted(cases) == [("cpu", "adam"), ("cpu", "sgd"), ("fsdp", "adam")]
    for (mode, optimizer), case in cases.items():
        record = case.collectors.memory_breakdown
        assert record is not None and record.error is None and record.categories is not None
        cats = record.categories
        shards = 2 if mode == "fsdp" else 1
        assert cats.parameters_bytes == cats.gradients_bytes == MLP_PARAMETERS // shards
        # Adam's step tensors are plain tensors, not shards: every rank keeps all four.
        state = 2 * MLP_PARAMETERS // shards + ADAM_STEP_TENSORS if optimizer == "adam" else 0
        assert cats.optimizer_state_bytes == state
        # Each rank's batch (32: scaling is weak by default) saves ReLU's and log_softmax's
        # outputs and a scalar; FSDP2's gathered weights are parameters, not activations.
        assert cats.activations_bytes == 32 * (128 + 10) * F32 + F32
        assert cats.peak_source == "torch_memory_profiler"
        assert cats.peak_bytes is not None and cats.peak_bytes >= cats.parameters_bytes + state
