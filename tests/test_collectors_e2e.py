"""`bench run suites/profile.yaml` as a user runs it: the torch profiler's trace and top operators,
py-spy's flame graph, FLOPs and MFU, memory, and NVML null with its reason on a machine without
an NVIDIA driver, all in results.json and next to it."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from bench.results import load_run


@pytest.fixture(scope="module")
def profile_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict[str, Any]]]:
    from conftest import bench

    out = tmp_path_factory.mktemp("profile") / "out"
    result = bench("run", "suites/profile.yaml", "--out", out, "--no-report", "--quiet",
                   "--set", "measure.max_time=0.5", "--set", "measure.min_time=0.2",
                   "--set", "profiler.pyspy_seconds=0.5", timeout=300)
    assert result.returncode == 0, result.stderr
    run = load_run(out)  # also checks results.json against its schema
    return out, {case.id: case.model_dump(mode="json") for case in run.cases}


def test_profile_suite_runs_a_torch_and_a_pyspy_case(profile_run: Any) -> None:
    _, cases = profile_run
    assert sorted(cases) == ["pyspy", "torch"]
    assert all(c["status"] == "ok" for c in cases.values())


def test_torch_case_saves_a_chrome_trace_and_its_top_operators(profile_run: Any) -> None:
    out, cases = profile_run
    prof = cases["torch"]["collectors"]["torch_profiler"]
    assert prof["error"] is None
    assert prof["traces"] == ["profiles/torch/rank0.pt.trace.json.gz"]
    with gzip.open(out / prof["traces"][0], "rt") as f:
        assert json.load(f)["traceEvents"]
    assert len(prof["top_ops"]) == 15  # profiler.top in the suite
    assert {"aten::addmm", "aten::mm"} <= {op["name"] for op in prof["top_ops"]}
    assert "pyspy" not in cases["torch"]["collectors"]


def test_pyspy_case_saves_a_flame_graph_and_a_speedscope_file(profile_run: Any) -> None:
    out, cases = profile_run
    spy = cases["pyspy"]["collectors"]["pyspy"]
    assert spy["error"] is None
    assert (out / spy["flamegraph"]).read_text().lstrip().startswith("<?xml")
    assert json.loads((out / spy["speedscope"]).read_text())["profiles"]
    assert spy["samples"] > 0


def test_every_case_records_flops_and_mfu_against_the_suites_peak(profile_run: Any) -> None:
    _, cases = profile_run
    for case in cases.values():
        flops = case["collectors"]["flops"]
        assert flops["error"] is None
        # mlp (784 -> 128 -> 10), batch 64: forward 2*64*(784*128 + 128*10), backward twice that
        # less the first layer's input gradient.
        forward = 2 * 64 * (784 * 128 + 128 * 10)
        assert flops["flops_per_step"] == forward + forward + 2 * 64 * 128 * 10
        throughput = case["metrics"]["throughput"]["median"]
        assert flops["achieved_flops"] == pytest.approx(flops["flops_per_sample"] * throughput)
        assert flops["peak_flops"] == 1e11
        assert flops["mfu"] == pytest.approx(flops["achieved_flops"] / 1e11)


def test_nvml_fields_are_null_with_the_reason_and_memory_is_recorded(profile_run: Any) -> None:
    _, cases = profile_run
    for case in cases.values():
        nvml = case["collectors"]["nvml"]
        assert nvml["error"].startswith(("NVML unavailable: ", "the case runs on cpu"))
        assert nvml["samples"] is None and nvml["summary"] is None and nvml["devices"] is None
        memory = case["collectors"]["memory"]
        assert memory["error"] is None
        assert memory["host_peak_rss_mb"] > 100  # torch alone takes more
        assert memory["processes"][0]["role"] == "case"
        assert memory["cuda_peak_allocated_mb"] is None
