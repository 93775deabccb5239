"""Collectors: the protocol's fault isolation, suite options, FLOPs and MFU, memory, the torch
profiler and py-spy, each on a real (small) CPU training step."""

from __future__ import annotations

import gzip
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
import torch

from bench.collectors import CaseContext, Collector, CollectorSet, make_collectors
from bench.collectors import pyspy as pyspy_mod
from bench.collectors.flops import FlopsCollector, compute_dtype, count_step_flops, peak_from_table
from bench.collectors.memory import MemoryCollector
from bench.collectors.pyspy import PySpyCollector, find_pyspy
from bench.collectors.torch_profiler import TorchProfilerCollector
from bench.errors import SuiteError
from bench.measure import Measurement, run_trial
from bench.suite import CaseParams, load


def _params(**overrides: Any) -> CaseParams:
    return CaseParams.model_validate({"model": "mlp", "batch_size": 16, **overrides})


def _ctx(out_dir: Path | None = None, **overrides: Any) -> CaseContext:
    from bench.worker import build_step

    params = _params(**overrides)
    step, model = build_step(params, torch.device("cpu"), params.batch_size)
    return CaseContext(params=params, device=torch.device("cpu"), out_dir=str(out_dir) if out_dir else None,
                       case_id="mlp-case", step=step, model=model, batch=params.batch_size)


def _measured(ctx: CaseContext, throughput: float) -> None:
    """A measurement whose every window ran at ``throughput`` samples/s."""
    seconds = ctx.samples_per_step / throughput
    ctx.measurement = Measurement(batch_size=ctx.samples_per_step, steps_per_window=1,
                                  window_start=[0.0, seconds, 2 * seconds], window_seconds=[seconds] * 3)


# ---------------------------------------------------------------------------------------------
# The protocol


class Raising(Collector):
    name = "raising"
    fields = ("value",)

    def __init__(self, ctx: CaseContext, where: str) -> None:
        super().__init__(ctx)
        self.where = where

    def _maybe(self, where: str) -> None:
        if where == self.where:
            raise RuntimeError(f"broken in {where}\n  second line")

    def start(self) -> None:
        self._maybe("start")

    def stop(self) -> None:
        self._maybe("stop")

    def after(self) -> None:
        self._maybe("after")

    def result(self) -> dict[str, Any]:
        self._maybe("result")
        return {"value": 1}


class Counting(Collector):
    name = "counting"
    fields = ("calls",)

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def after(self) -> None:
        self.calls.append("after")

    def result(self) -> dict[str, Any]:
        return {"calls": self.calls}


@pytest.mark.parametrize("where", ["start", "stop", "after", "result"])
def test_a_collector_that_raises_records_its_error_and_the_measurement_goes_on(where: str) -> None:
    ctx = _ctx()
    broken, healthy = Raising(ctx, where), Counting(ctx)
    collectors = CollectorSet([broken, healthy])
    with collectors:
        result = run_trial(lambda: None, steps_per_window=5, batch_size=1, seconds=0.01, min_windows=3)
    collectors.after()
    records = collectors.records()
    assert len(result.window_seconds) >= 3
    assert records["raising"] == {"value": None, "error": f"RuntimeError: broken in {where} second line"}
    assert records["counting"] == {"calls": ["start", "stop", "after"], "error": None}


def test_a_collector_that_raises_in_a_real_case_leaves_the_case_ok(monkeypatch: pytest.MonkeyPatch) -> None:
    from bench import session, worker

    real = session.make_collectors
    monkeypatch.setattr(session, "make_collectors",
                        lambda ctx: CollectorSet([*real(ctx).collectors, Raising(ctx, "start")]))
    params = _params(threads=1, measure={"warmup_steps": 1, "min_time": 0.05, "max_time": 0.2,
                                         "window_time": 0.01, "min_windows": 3})
    device, batch, wrap, threads, warnings = worker.single_process_setup(params)
    case = session.CaseSession(params, device, {"id": "c", "out_dir": None}, batch=batch, samples_per_step=batch,
                               wrap=wrap, threads=threads, warnings=warnings)
    assert case.prepare()["status"] == "ready"
    trial = case.trial(0.05, collect=True)
    final = case.finish()
    assert trial["status"] == "ok" and min(trial["window_throughput"]) > 0
    assert final["collectors"]["raising"]["error"] == "RuntimeError: broken in start second line"
    assert final["collectors"]["flops"]["error"] is None


def test_every_case_gets_memory_nvml_anatomy_flops_and_memory_breakdown_and_profile_adds_the_profilers() -> None:
    names = [c.name for c in make_collectors(_ctx()).collectors]
    assert names == ["memory", "nvml", "anatomy", "flops", "memory_breakdown"]
    names = [c.name for c in make_collectors(_ctx(profile=["pyspy", "torch"])).collectors]
    assert names == ["memory", "nvml", "anatomy", "flops", "memory_breakdown", "torch_profiler", "pyspy"]


# ---------------------------------------------------------------------------------------------
# Suite options


@pytest.mark.parametrize(("given", "expected"), [
    ("none", ()), (None, ()), ("torch", ("torch",)), (["torch", "pyspy", "torch"], ("torch", "pyspy")), ([], ()),
])
def test_profile_accepts_none_one_name_or_a_list(given: Any, expected: tuple[str, ...]) -> None:
    assert _params(profile=given).profile == expected


def test_profiler_options_have_quiet_defaults() -> None:
    cfg = _params().profiler
    assert (cfg.wait, cfg.warmup, cfg.active, cfg.top) == (1, 1, 3, 20)
    assert not (cfg.record_shapes or cfg.profile_memory or cfg.with_stack)
    assert _params().nvml_interval == 0.2 and _params().peak_flops is None


@pytest.mark.parametrize(("yaml_text", "message"), [
    ("defaults: {model: mlp, profile: flame}",
     "defaults.profile: unknown profiler 'flame' (choose from: none, pyspy, torch)"),
    ("defaults: {model: mlp}\nmatrix: {profile: [none, torch, [pyspy, perf]]}",
     "matrix.profile[2][1]: unknown profiler 'perf' (choose from: none, pyspy, torch)"),
    ("defaults: {model: mlp, profiler: {active: 2, activ: 3}}", "defaults.profiler.activ: unknown key"),
    ("defaults: {model: mlp, profiler: {active: 0}}", "defaults.profiler.active: Input should be greater than or equal to 1"),
    ("defaults: {model: mlp, nvml_interval: 0}", "defaults.nvml_interval: Input should be greater than or equal to 0.01"),
    ("defaults: {model: mlp, peak_flops: -1}", "defaults.peak_flops: Input should be greater than 0"),
])
def test_bench_validate_names_file_and_key_of_a_bad_collector_option(write_suite: Any, run_bench: Any,
                                                                      yaml_text: str, message: str) -> None:
    path = write_suite(f"name: s\n{yaml_text}\n")
    if "matrix" not in yaml_text:
        path.write_text(path.read_text() + "matrix: {batch_size: [8]}\n")
    result = run_bench("validate", path)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip() == f"bench: {path}: {message}"


def test_collector_options_validate_in_the_library_as_suite_errors(write_suite: Any) -> None:
    path = write_suite("name: s\ndefaults: {model: mlp}\nmatrix: {profile: [none, torch]}\n")
    assert [c.params.profile for c in load(path).cases] == [(), ("torch",)]
    with pytest.raises(SuiteError) as info:
        load(path, ["profile=gdb"])
    assert info.value.path == "--set profile"


# ---------------------------------------------------------------------------------------------
# FLOPs and MFU


def test_flop_count_of_an_mlp_training_step_matches_the_analytic_formula() -> None:
    ctx = _ctx(model={"name": "mlp", "hidden": [64, 32]}, batch_size=8)
    assert ctx.step is not None
    counted = count_step_flops(ctx.step)
    batch, layers = 8, [(784, 64), (64, 32), (32, 10)]
    forward = sum(2 * batch * i * o for i, o in layers)
    # Backward: every layer's weight gradient costs as much as its forward product, and every
    # layer but the first also computes the gradient of its input (the data needs none).
    backward = forward + sum(2 * batch * i * o for i, o in layers[1:])
    assert (counted.total, counted.forward, counted.backward) == (forward + backward, forward, backward)
    assert counted.by_op == {"aten.addmm": forward, "aten.mm": backward}


def test_flops_collector_computes_achieved_flops_and_mfu_from_the_suites_peak() -> None:
    ctx = _ctx(batch_size=16, peak_flops=1e12)
    collector = FlopsCollector(ctx)
    collector.after()
    _measured(ctx, throughput=1000.0)
    record = collector.record()
    per_sample = record["flops_per_step"] / 16
    assert record["flops_per_sample"] == per_sample
    assert record["achieved_flops"] == pytest.approx(per_sample * 1000.0)
    assert record["peak_flops"] == 1e12 and record["peak_source"] == "suite: peak_flops"
    assert record["mfu"] == pytest.approx(per_sample * 1000.0 / 1e12)
    assert (record["dtype"], record["devices"], record["error"]) == ("float32", 1, None)


def test_a_cpu_without_a_declared_peak_has_no_mfu_and_says_how_to_get_one() -> None:
    ctx = _ctx()
    collector = FlopsCollector(ctx)
    collector.after()
    _measured(ctx, throughput=500.0)
    record = collector.record()
    assert record["achieved_flops"] > 0
    assert record["peak_flops"] is None and record["mfu"] is None
    assert record["peak_source"] == "no peak known for 'cpu'; set peak_flops in the suite"


@pytest.mark.parametrize(("name", "dtype", "peak"), [
    ("NVIDIA H100 80GB HBM3", "bfloat16", 989.5e12),
    ("NVIDIA H100 80GB HBM3", "float32", 67e12),
    ("NVIDIA H100 PCIe", "tf32", 378e12),
    ("NVIDIA H200", "float16", 989.5e12),
    ("NVIDIA A100-SXM4-80GB", "tf32", 156e12),
    ("NVIDIA A100 80GB PCIe", "bfloat16", 312e12),
    ("Tesla V100-SXM2-16GB", "float16", 125e12),
    ("Tesla V100-PCIE-32GB", "float32", 14e12),
    ("NVIDIA L4", "bfloat16", 121e12),
    ("NVIDIA A10", "float32", 31.2e12),
    ("Tesla T4", "float16", 65e12),
])
def test_peak_table_gives_the_vendors_dense_number_per_model_and_dtype(name: str, dtype: str, peak: float) -> None:
    assert peak_from_table(name, dtype)[0] == pytest.approx(peak)


@pytest.mark.parametrize(("name", "dtype", "reason"), [
    ("NVIDIA A10G", "float32", "no peak known for 'NVIDIA A10G'; set peak_flops in the suite"),
    ("NVIDIA H100 NVL", "bfloat16", "no peak known for 'NVIDIA H100 NVL'; set peak_flops in the suite"),
    ("Tesla T4", "bfloat16", "table: no bfloat16 peak for T4; set peak_flops in the suite"),
])
def test_peak_table_guesses_nothing_for_boards_or_types_it_does_not_list(name: str, dtype: str,
                                                                          reason: str) -> None:
    assert peak_from_table(name, dtype) == (None, reason)


def test_float32_matrix_products_count_as_tf32_when_torch_may_use_tf32() -> None:
    model = torch.nn.Linear(2, 2)
    before = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision("highest")
        assert compute_dtype(model) == "float32"
        torch.set_float32_matmul_precision("high")
        assert compute_dtype(model) == "tf32"
    finally:
        torch.set_float32_matmul_precision(before)
    assert compute_dtype(torch.nn.Linear(2, 2).to(torch.bfloat16)) == "bfloat16"


# ---------------------------------------------------------------------------------------------
# Memory


def test_host_memory_counts_child_processes_per_process_and_summed() -> None:
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent("""
        import sys, time
        block = bytearray(96 * 2**20)
        for i in range(0, len(block), 4096):
            block[i] = 1
        print("ready", flush=True)
        time.sleep(30)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        collector = MemoryCollector(_ctx())
        with CollectorSet([collector]):
            time.sleep(0.25)
        record = collector.record()
    finally:
        child.kill()
        child.wait()
    by_pid = {p["pid"]: p for p in record["processes"]}
    assert by_pid[os.getpid()]["role"] == "case"
    assert by_pid[child.pid]["role"] == "child"
    assert by_pid[child.pid]["peak_rss_mb"] >= 96
    assert record["host_peak_rss_mb"] == by_pid[os.getpid()]["peak_rss_mb"] > 0
    assert record["host_peak_rss_sum_mb"] >= record["host_peak_rss_mb"] + 96
    assert record["cuda_peak_allocated_mb"] is None and record["error"] is None


# ---------------------------------------------------------------------------------------------
# Profilers


def test_torch_profiler_keeps_top_operators_by_self_time_and_a_gzipped_trace(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, profile="torch", profiler={"wait": 0, "warmup": 1, "active": 2, "top": 5})
    collector = TorchProfilerCollector(ctx)
    collector.after()
    record = collector.record()
    assert record["error"] is None
    ops = record["top_ops"]
    assert len(ops) == 5
    assert [op["self_cpu_ms"] for op in ops] == sorted((op["self_cpu_ms"] for op in ops), reverse=True)
    assert {"aten::addmm", "aten::mm"} & {op["name"] for op in ops}
    assert not any(op["name"].startswith("ProfilerStep") for op in ops)
    assert all(op["self_cuda_ms"] is None and op["calls"] >= 1 for op in ops)
    assert record["traces"] == ["profiles/mlp-case/rank0.pt.trace.json.gz"]
    with gzip.open(tmp_path / record["traces"][0], "rt") as f:
        trace = json.load(f)
    assert any(e.get("name") == "aten::addmm" for e in trace["traceEvents"])


def _counting_steps(ctx: CaseContext) -> list[int]:
    """Wrap the context's step so that the test can see how many extra steps ran."""
    count = [0]
    step = ctx.step
    assert step is not None

    def counted() -> None:
        count[0] += 1
        step()

    ctx.step = counted
    return count


def test_torch_profiler_that_cannot_start_tells_the_other_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(**_: Any) -> Any:
        raise RuntimeError("CUPTI_ERROR_INSUFFICIENT_PRIVILEGES\n(second line)")

    monkeypatch.setattr(torch.profiler, "profile", broken)
    ctx = _ctx(tmp_path, profile="torch")
    told: list[float] = []
    ctx.agree = lambda value: told.append(value) or value
    steps = _counting_steps(ctx)
    collector = TorchProfilerCollector(ctx)
    CollectorSet([collector]).after()
    assert told == [1.0] and steps == [0]
    assert collector.record()["error"] == "RuntimeError: CUPTI_ERROR_INSUFFICIENT_PRIVILEGES (second line)"


@pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed")
def test_pyspy_writes_a_flame_graph_and_a_speedscope_profile(tmp_path: Path) -> None:
    ctx = _ctx(tmp_path, profile="pyspy", profiler={"pyspy_seconds": 0.5})
    # The collector turns seconds into a step count from the measured pace (a count, not a clock,
    # so that DDP ranks agree); the pace must be this step's real one, or the window is too short
    # for py-spy to take a sample.
    assert ctx.step is not None
    t0 = time.perf_counter()
    for _ in range(20):
        ctx.step()
    window = (time.perf_counter() - t0) / 2
    ctx.measurement = Measurement(batch_size=16, steps_per_window=10, window_start=[0.0, window],
                                  window_seconds=[window, window])
    expected_steps = max(1, round(0.5 / (window / 10)))
    collector = PySpyCollector(ctx)
    CollectorSet([collector]).after()
    record = collector.record()
    assert record["error"] is None, record["error"]
    assert record["flamegraph"] == "profiles/mlp-case/pyspy.rank0.svg"
    assert record["speedscope"] == "profiles/mlp-case/pyspy.rank0.speedscope.json"
    assert "<svg" in (tmp_path / record["flamegraph"]).read_text()
    speedscope = json.loads((tmp_path / record["speedscope"]).read_text())
    assert speedscope["$schema"] == "https://www.speedscope.app/file-format-schema.json"
    assert record["samples"] > 0 and record["steps"] == expected_steps and record["seconds"] > 0
    assert not [p for p in psutil.Process().children() if p.name() == "py-spy"], "recorders are gone"


def test_pyspy_that_took_no_samples_says_to_sample_longer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # What py-spy 0.4 prints when the window was too short for one sample: the flame graph writer
    # fails and the last line of its backtrace is "8: main", which helps nobody.
    fake = tmp_path / "py-spy"
    # The trap comes first: on a loaded machine the interrupt can arrive before a later line runs.
    fake.write_text("#!/bin/sh\n"
                    "trap 'echo \"Error: Failed to write flamegraph: No stack counts found\"; "
                    "echo \"Stack backtrace:\"; echo \"   8: main\"; exit 1' INT\n"
                    "echo 'py-spy> Sampling process 100 times a second.'\n"
                    "while :; do sleep 0.01; done\n")
    fake.chmod(0o755)
    monkeypatch.setattr(pyspy_mod, "find_pyspy", lambda: str(fake))
    ctx = _ctx(tmp_path, profile="pyspy", profiler={"pyspy_seconds": 0.01})
    _measured(ctx, throughput=1600.0)
    collector = PySpyCollector(ctx)
    CollectorSet([collector]).after()
    record = collector.record()
    assert re.fullmatch(r"py-spy took no samples in [0-9.e-]+ s \(\d+ steps\); raise profiler\.pyspy_seconds",
                        record["error"] or ""), record["error"]
    assert record["flamegraph"] is None


@pytest.mark.parametrize(("profile", "collector_class", "expected"), [
    ("torch", TorchProfilerCollector, "the torch profiler could not start on another rank, so no rank profiled"),
    pytest.param("pyspy", PySpyCollector, "py-spy could not start on another rank, so no rank sampled",
                 marks=pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed")),
])
def test_a_profiler_runs_no_step_when_another_rank_could_not_start_it(
        tmp_path: Path, profile: str, collector_class: type[Collector], expected: str) -> None:
    # Under DDP every extra step all-reduces: a rank that stepped alone would wait for the others
    # until the case's timeout. Here this rank's profiler starts and another rank's does not.
    ctx = _ctx(tmp_path, profile=profile, profiler={"wait": 0, "warmup": 1, "active": 1, "pyspy_seconds": 0.2})
    _measured(ctx, throughput=1600.0)
    told: list[float] = []
    ctx.agree = lambda value: told.append(value) or max(value, 1.0)
    steps = _counting_steps(ctx)
    collector = collector_class(ctx)
    CollectorSet([collector]).after()
    assert told == [0.0], "this rank said it was ready, once"
    assert collector.record()["error"] == expected
    assert steps == [0]
    assert not [p for p in psutil.Process().children() if p.name() == "py-spy"], "recorders are gone"
    assert not [p for p in (tmp_path / "profiles").rglob("*") if p.is_file()], "no file was written"


def test_pyspy_that_cannot_start_tells_the_other_ranks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyspy_mod, "find_pyspy", lambda: None)
    ctx = _ctx(tmp_path, profile="pyspy")
    told: list[float] = []
    ctx.agree = lambda value: told.append(value) or value
    collector = PySpyCollector(ctx)
    CollectorSet([collector]).after()
    assert told == [1.0]
    assert collector.record()["error"] == "py-spy not found (pip install py-spy)"


def test_pyspy_missing_is_recorded_and_nothing_else_happens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyspy_mod, "find_pyspy", lambda: None)
    collector = PySpyCollector(_ctx(tmp_path, profile="pyspy"))
    CollectorSet([collector]).after()
    record = collector.record()
    assert record["error"] == "py-spy not found (pip install py-spy)"
    assert record["flamegraph"] is None and record["steps"] is None
    assert not (tmp_path / "profiles").exists()


def test_pyspy_without_permission_records_its_message(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Permission Denied: Try running again with elevated permissions'\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setattr(pyspy_mod, "find_pyspy", lambda: str(fake))
    collector = PySpyCollector(_ctx(tmp_path, profile="pyspy"))
    CollectorSet([collector]).after()
    record = collector.record()
    assert record["error"] == ("RuntimeError: py-spy flamegraph exited with code 1: "
                               "Error: Permission Denied: Try running again with elevated permissions")
    assert record["flamegraph"] is None
