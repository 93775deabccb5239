"""Hand-made results files for the report tests and benchmark: the data a CPU machine cannot
produce (GPU telemetry, CUDA memory, FLOPs, profiler output, scaling over world sizes), failures,
hostile names, and a thousand cases. (Real `bench run` output comes from conftest's smoke_run.)

The hand-made documents follow bench/results.schema.json; the test below keeps them honest."""

from __future__ import annotations

import copy
import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from bench.results import SCHEMA_VERSION, load_run, validate_doc

EVIL = "<img src=x onerror=alert(1)>"

MODELS = ["mlp", "cnn", "torchvision:resnet18", "torchvision:mobilenet_v3_small", "torchvision:vgg11",
          "torchvision:resnet50", "torchvision:densenet121", "torchvision:alexnet", "torchvision:squeezenet1_0",
          "torchvision:shufflenet_v2_x0_5"]
OPTIMIZERS: list[dict[str, Any]] = [{"name": "sgd", "kwargs": {}}, {"name": "sgd", "kwargs": {"momentum": 0.9}},
                                    {"name": "adam", "kwargs": {}}]
ACTIVATIONS = ["relu", "tanh", "gelu", "sigmoid"]


def _params(model: str, optimizer: dict[str, Any], activation: str, batch_size: int, mode: str) -> dict[str, Any]:
    return {
        "model": {"name": model, "import": None, "kwargs": {}, "input_shape": None, "num_classes": 10},
        "optimizer": copy.deepcopy(optimizer), "activation": activation, "loss": "cross_entropy",
        "data": {"name": "synthetic", "size": 1024, "transforms": [], "num_workers": 0, "pin_memory": False,
                 "persistent_workers": True, "prefetch_factor": None},
        "mode": mode, "world_size": 1, "device": None, "batch_size": batch_size, "lr": 0.01, "threads": None,
        "seed": 0, "measure": {"warmup_steps": 3, "min_time": 1.0, "max_time": 10.0, "target_ci": 0.01,
                               "window_time": 0.1, "min_windows": 10},
        "timeout": 300.0,
    }


def _case_id(params: dict[str, Any]) -> str:
    opt = params["optimizer"]
    opt_label = opt["name"] + "".join(f"_m{v:g}" for v in opt["kwargs"].values())
    return f"{params['model']['name'].split(':')[-1]}-{opt_label}-{params['activation']}-bs{params['batch_size']}"


def _ok_case(params: dict[str, Any], rng: random.Random, *, gpu: bool, n_samples: int, speed: float) -> dict[str, Any]:
    base = speed * 4000 / (1 + MODELS.index(params["model"]["name"])) * math.sqrt(params["batch_size"] / 32)
    step_ms = [params["batch_size"] / base * 1000 * rng.lognormvariate(0, 0.05) for _ in range(n_samples)]
    windows = max(10, n_samples // 10)
    window_s = [0.1 * rng.uniform(0.98, 1.02) for _ in range(windows)]
    starts = list(itertools.accumulate([0.0, *window_s[:-1]]))
    thr = [base * rng.uniform(0.97, 1.03) for _ in range(windows)]
    median = sorted(thr)[windows // 2]
    metrics: dict[str, Any] = {
        "throughput": {"median": median, "mean": sum(thr) / windows, "ci95": [median * 0.985, median * 1.015],
                       "ci_rel_half_width": 0.015, "ci_target": 0.01, "ci_target_met": False, "unit": "samples/s"},
        "step_time_ms": {"p50": sorted(step_ms)[n_samples // 2], "p95": sorted(step_ms)[int(n_samples * 0.95)],
                         "source": "per_step"},
        "peak_rss_mb": 500 + 40 * MODELS.index(params["model"]["name"]) + rng.uniform(0, 5), "threads": 2,
        "windows": windows, "steps": n_samples, "stop_reason": "max_time",
    }
    collectors: dict[str, Any] = {}
    if gpu:
        metrics["cuda_peak_allocated_mb"] = 300 + params["batch_size"] * 3.0
        metrics["cuda_peak_reserved_mb"] = 512 + params["batch_size"] * 3.5
        duration = sum(window_s)
        t = [-0.5 + i * 0.1 for i in range(int((duration + 1.0) / 0.1))]
        collectors["nvml"] = {
            "error": None, "devices": [{"device": "cuda:0", "uuid": "GPU-0000", "name": "NVIDIA H100 80GB HBM3"}],
            "samples": {"t": t,
                        "util": [0.0 if x < 0 or x > duration else rng.uniform(85, 99) for x in t],
                        "power_w": [90.0 if x < 0 or x > duration else rng.uniform(500, 650) for x in t],
                        "sm_clock_mhz": [1980.0 if x > 0 else 345.0 for x in t],
                        "mem_used_mb": [metrics["cuda_peak_reserved_mb"] + 400.0 for _ in t],
                        "temp_c": [60.0 for _ in t]},
            "summary": {"util_mean": 93.0, "power_mean_w": 580.0, "energy_j": 580.0 * duration,
                        "energy_source": "power_integral"},
            "metric_errors": {},
        }
        flops_per_sample = 3 * 1.8e9 / (1 + MODELS.index(params["model"]["name"]))
        collectors["flops"] = {"error": None, "flops_per_step": int(flops_per_sample * params["batch_size"]),
                               "flops_per_sample": flops_per_sample, "achieved_flops": flops_per_sample * median,
                               "peak_flops": 989e12, "mfu": flops_per_sample * median / 989e12}
    return {"id": _case_id(params), "params": params, "status": "ok", "error": None, "traceback": None,
            "warnings": ["95% CI ±1.5% did not reach the target ±1.0%"], "started": "2026-11-27T12:00:00+00:00",
            "duration_s": 12.5, "device": "cuda:0" if gpu else "cpu", "log": None, "metrics": metrics,
            "samples": {"window_throughput": thr, "window_s": window_s, "window_start_s": starts,
                        "step_time_ms": step_ms},
            "collectors": collectors}


def make_doc(n_cases: int = 12, *, suite_name: str = "synthetic", gpu: bool = True, seed: int = 0,
             n_samples: int = 60, speed: float = 1.0, problems: bool = True, profile: bool = True,
             scaling: bool = True, evil: bool = False) -> dict[str, Any]:
    """A schema-valid results document of ``n_cases`` cases (models, optimizers, activations and
    batch sizes), with GPU collectors, profiler output, scaling entries and one failed and one skipped case."""
    rng = random.Random(seed)
    mode = "cuda" if gpu else "cpu"
    batch_sizes = [16 * 2**k for k in range(max(1, math.ceil(n_cases / (len(MODELS) * 12))))]
    combos = itertools.product(MODELS, OPTIMIZERS, ACTIVATIONS, batch_sizes)
    cases = [_ok_case(_params(m, o, a, b, mode), rng, gpu=gpu, n_samples=n_samples, speed=speed)
             for m, o, a, b in itertools.islice(combos, n_cases)]
    if profile and cases:
        cases[0]["collectors"]["torch_profiler"] = {
            "error": None, "traces": [f"traces/{cases[0]['id']}.json"],
            "top_ops": [{"name": f"aten::op{i}", "self_cpu_ms": 10.0 / (i + 1), "self_cuda_ms": 30.0 / (i + 1),
                         "calls": 100 * (i + 1)} for i in range(20)]}
        cases[0]["collectors"]["pyspy"] = {"error": None, "flamegraph": f"profiles/{cases[0]['id']}.svg",
                                           "speedscope": f"profiles/{cases[0]['id']}.speedscope.json"}
    if problems and len(cases) > 2:
        failed = cases[-1]
        failed.update(status="failed", error="RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB",
                      traceback="Traceback (most recent call last):\n  ...\nRuntimeError: CUDA out of memory",
                      metrics=None, samples=None, collectors={}, log=f"logs/{failed['id']}.log", warnings=[])
        skipped = cases[-2]
        skipped.update(status="skipped", error="skipped: mode 'cuda' needs a CUDA device", metrics=None,
                       samples=None, collectors={}, warnings=[])
        if len(cases) > 3 and gpu:
            cases[-3]["collectors"]["pyspy"] = {"error": "py-spy: permission denied (ptrace)", "flamegraph": None,
                                                "speedscope": None}
    if evil and cases:
        cases[0]["id"] = EVIL
        cases[1]["params"]["activation"] = EVIL
        if len(cases) > 2:
            cases[-1]["error"] = EVIL
    doc: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "suite": {"name": EVIL if evil else suite_name, "path": f"suites/{suite_name}.yaml", "source": {}},
        "run": {"started": "2026-11-27T12:00:00+00:00", "finished": "2026-11-27T12:30:00+00:00",
                "status": "complete", "argv": ["bench", "run", f"suites/{suite_name}.yaml"], "overrides": [],
                "only": None},
        "environment": {"bench": "0.1.0", "python": "3.11.7", "platform": "Linux-x86_64", "hostname": "gpu-node-1",
                        "cpu_model": "AMD EPYC 9654", "cores_logical": 16, "time": "2026-11-27T12:00:00+00:00",
                        "torch": "2.14.1+cu130", "cuda": "13.0" if gpu else None,
                        "gpus": [{"name": "NVIDIA H100 80GB HBM3", "memory_mb": 81559}] if gpu else [],
                        "git": {"commit": "0123456789abcdef0123456789abcdef01234567", "dirty": False}},
        "cases": cases,
    }
    if scaling:
        doc["scaling"] = [
            {"group": "resnet18 bs64", "mode": mode_, "world_size": ws, "case_id": f"resnet18-{mode_}-ws{ws}",
             "baseline_case": f"resnet18-{mode_}-ws1", "throughput": 1000 * ws * eff, "speedup": ws * eff, "efficiency": eff, "scaling": "weak"}
            for mode_, decay in (("dp", 0.18), ("ddp", 0.04)) for ws in (1, 2, 4, 8)
            for eff in [1 / (1 + decay * math.log2(ws))]]
    return doc


def write_doc(folder: Path, doc: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "results.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def slower_copy(results: Path, folder: Path, factor: float) -> Path:
    """The same run again with every throughput multiplied by ``factor``: a second run to compare."""
    doc = json.loads(results.read_text(encoding="utf-8"))
    for case in doc["cases"]:
        thr = (case.get("metrics") or {}).get("throughput")
        if thr:
            thr["median"] *= factor
            thr["mean"] = thr.get("mean", thr["median"]) * factor
            thr["ci95"] = [v * factor if v is not None else None for v in thr["ci95"]]
    return write_doc(folder, doc)


@pytest.mark.parametrize("kwargs", [{}, {"gpu": False}, {"evil": True}, {"n_cases": 1000, "n_samples": 20}])
def test_hand_made_results_pass_the_results_schema(kwargs: dict[str, Any]) -> None:
    doc = make_doc(**kwargs)
    validate_doc(doc, "synthetic")
    assert len(doc["cases"]) == kwargs.get("n_cases", 12)


def test_hand_made_results_load_like_a_real_results_file(tmp_path: Path) -> None:
    run = load_run(write_doc(tmp_path / "run-a", make_doc(5)))
    assert run.label == "run-a"
    assert [c.status for c in run.cases] == ["ok", "ok", "ok", "skipped", "failed"]
