"""On a real GPU (marked ``cuda``; skipped on a machine without one, which is where CI runs):
`bench run` of a CUDA case, DataParallel on one GPU and DDP with NCCL, with every collector on;
and the training axes there: bf16 and fp16 autocast, torch.compile, FSDP2 with NCCL.
scripts/gpu-smoke.sh runs these on a lent GPU machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bench.collectors.pyspy import find_pyspy

pytestmark = pytest.mark.cuda

SUITE = """
name: cuda-check
defaults:
  model: cnn
  batch_size: 256
  profile: [torch, pyspy]
  profiler: {wait: 1, warmup: 1, active: 3, pyspy_seconds: 1.0}
  nvml_interval: 0.05
  measure: {warmup_steps: 20, min_time: 2.0, max_time: 6.0, target_ci: 0.02}
  timeout: 180
matrix:
  mode: [cuda, dp]
include:
  - {mode: ddp, backend: nccl, device: cuda}
"""


@pytest.fixture(scope="module")
def cuda_run(tmp_path_factory: pytest.TempPathFactory, run_bench: Any) -> tuple[Path, dict[str, dict[str, Any]]]:
    tmp = tmp_path_factory.mktemp("cuda")
    (tmp / "cuda.yaml").write_text(SUITE, encoding="utf-8")
    result = run_bench("run", tmp / "cuda.yaml", "--out", tmp / "out", "--quiet", "--no-report", timeout=900)
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp / "out" / "results.json").read_text(encoding="utf-8"))
    return tmp / "out", {c["params"]["mode"]: c for c in doc["cases"]}


def test_every_gpu_mode_runs_on_the_gpu(cuda_run: Any) -> None:
    _, cases = cuda_run
    assert sorted(cases) == ["cuda", "ddp", "dp"]
    for mode, case in cases.items():
        assert case["status"] == "ok", (mode, case["error"])
        assert case["device"].startswith("cuda"), (mode, case["device"])
        assert case["metrics"]["throughput"]["median"] > 0
        assert case["metrics"]["cuda_peak_allocated_mb"] > 0
    assert cases["ddp"]["backend"] == "nccl"


def test_nvml_finds_the_cases_gpu_by_uuid_and_samples_the_measured_windows(cuda_run: Any) -> None:
    import torch

    _, cases = cuda_run
    nvml = cases["cuda"]["collectors"]["nvml"]
    assert nvml["error"] is None
    (device,) = nvml["devices"]
    assert device["uuid"].removeprefix("GPU-") == str(torch.cuda.get_device_properties(0).uuid).removeprefix("GPU-")
    summary = nvml["summary"]
    assert summary["samples"] >= 10
    assert 0 < summary["util_mean"] <= 100, "a training loop keeps the GPU busy"
    assert summary["power_mean_w"] > 0
    assert summary["energy_per_sample_j"] > 0
    assert len(nvml["samples"]["t"]) == len(nvml["samples"]["util"])
    # DDP's ranks sample their own GPU and the launcher joins them (one rank here).
    ddp = cases["ddp"]["collectors"]["nvml"]
    assert ddp["error"] is None
    assert [d["rank"] for d in ddp["per_device"]] == [0]
    assert ddp["summary"]["devices"] == 1 and ddp["summary"]["energy_per_sample_j"] > 0


def test_flops_give_an_mfu_between_zero_and_one_where_the_peak_is_known(cuda_run: Any) -> None:
    _, cases = cuda_run
    flops = cases["cuda"]["collectors"]["flops"]
    assert flops["error"] is None
    assert flops["flops_per_sample"] > 0 and flops["achieved_flops"] > 0
    if flops["peak_flops"] is None:
        pytest.skip(f"no peak known for this GPU ({flops['peak_source']})")
    assert 0 < flops["mfu"] < 1


def test_the_torch_profiler_ranks_operators_by_cuda_time(cuda_run: Any) -> None:
    out, cases = cuda_run
    prof = cases["cuda"]["collectors"]["torch_profiler"]
    assert prof["error"] is None
    assert prof["sort_by"] == "self_cuda_ms"
    assert any((op["self_cuda_ms"] or 0) > 0 for op in prof["top_ops"])
    assert all((out / trace).is_file() for trace in prof["traces"])


def test_the_trace_analysis_finds_compute_time_in_the_profiled_gpu_steps(cuda_run: Any) -> None:
    _, cases = cuda_run
    for mode in ("cuda", "ddp"):
        analysis = cases[mode]["collectors"]["trace_analysis"]
        assert analysis["error"] is None, (mode, analysis["error"], analysis["notes"])
        assert analysis["source"] in ("hta", "bench")
        (rank,) = analysis["ranks"]
        assert rank["rank"] == 0
        assert rank["compute_us"] > 0 and 0 < rank["compute_pct"] <= 100, (mode, rank)
        assert rank["compute_pct"] + rank["non_compute_pct"] + rank["idle_pct"] == pytest.approx(100)
        # The CNN's training step is convolutions and GEMMs: the top kernel computes.
        assert rank["kernels"][0]["type"] == "compute" and rank["kernels"][0]["count"] >= 1


@pytest.mark.skipif(find_pyspy() is None, reason="py-spy is not installed")
def test_the_step_anatomy_is_timed_with_cuda_events_and_accounts_for_the_step(cuda_run: Any) -> None:
    _, cases = cuda_run
    for mode in ("cuda", "dp", "ddp"):
        anatomy = cases[mode]["collectors"]["anatomy"]
        assert anatomy["error"] is None, (mode, anatomy["error"])
        assert anatomy["timing"] == "cuda_events"
        phases = anatomy["phases"]
        parts = sum(phases[f"{p}_ms"] for p in ("data", "forward", "loss", "backward", "optimizer", "other"))
        assert parts == pytest.approx(phases["step_ms"])
        assert phases["forward_ms"] > 0 and phases["backward_ms"] > 0
        # The anatomy's steps are the measured steps' kind: same step function, same device.
        assert 0.5 < phases["step_ms"] / anatomy["measured_step_ms"] < 2.0, mode


def test_pyspy_samples_a_gpu_case(cuda_run: Any) -> None:
    out, cases = cuda_run
    pyspy = cases["cuda"]["collectors"]["pyspy"]
    assert pyspy["error"] is None, pyspy["error"]
    assert "<svg" in (out / pyspy["flamegraph"]).read_text(encoding="utf-8")


AXES_SUITE = """
name: cuda-axes
defaults:
  model: cnn
  batch_size: 256
  measure: {warmup_steps: 10, min_time: 1.0, max_time: 4.0, target_ci: 0.05}
  timeout: 300
include:
  - {mode: cuda, precision: fp32}
  - {mode: cuda, precision: bf16}
  - {mode: cuda, precision: fp16}
  - {mode: cuda, compile: true}
  - {mode: fsdp, device: cuda, backend: nccl}
  - {mode: fsdp, device: cuda, backend: nccl, precision: bf16}
"""


@pytest.fixture(scope="module")
def axes_run(tmp_path_factory: pytest.TempPathFactory, run_bench: Any) -> dict[str, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("cuda-axes")
    (tmp / "axes.yaml").write_text(AXES_SUITE, encoding="utf-8")
    result = run_bench("run", tmp / "axes.yaml", "--out", tmp / "out", "--quiet", "--no-report", timeout=900)
    assert result.returncode == 0, result.stderr
    doc = json.loads((tmp / "out" / "results.json").read_text(encoding="utf-8"))
    cases = {}
    for c in doc["cases"]:
        p = c["params"]
        cases[f"{p['mode']}-{p['precision']}" + ("-compile" if p["compile"] else "")] = c
    return cases


def test_bf16_and_fp16_autocast_run_on_the_gpu(axes_run: dict[str, dict[str, Any]]) -> None:
    for key in ("cuda-fp32", "cuda-bf16", "cuda-fp16"):
        case = axes_run[key]
        assert case["status"] == "ok", (key, case["error"])
        assert case["device"].startswith("cuda")
        assert case["metrics"]["throughput"]["median"] > 0


def test_compile_on_the_gpu_records_its_time_outside_the_trials(axes_run: dict[str, dict[str, Any]]) -> None:
    case = axes_run["cuda-fp32-compile"]
    assert case["status"] == "ok", case["error"]
    assert case["metrics"]["compile_s"] > 0
    assert case["metrics"]["graph_breaks"] is not None


def test_fsdp_runs_with_nccl_on_the_gpu_in_fp32_and_bf16(axes_run: dict[str, dict[str, Any]]) -> None:
    for key in ("fsdp-fp32", "fsdp-bf16"):
        case = axes_run[key]
        assert case["status"] == "ok", (key, case["error"])
        assert case["backend"] == "nccl"
        assert case["device"].startswith("cuda")
        assert case["metrics"]["throughput"]["median"] > 0
