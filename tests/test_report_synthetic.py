"""Hand-made results files for the report tests and benchmark: the data a CPU machine cannot
produce (GPU telemetry, CUDA memory, FLOPs, profiler output, scaling over world sizes), failures,
hostile names, a thousand cases, and either results format: version 1 (one stretch per case) or
version 2 (trials in randomized rounds, with paired effects). (Real `bench run` output comes from
conftest's smoke_run.)

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

from bench import trials as stats
from bench.effects import effects
from bench.records import dump
from bench.results import load_run, validate_doc

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
             scaling: bool = True, evil: bool = False, version: int = 1, rounds: int = 8,
             model_speed: dict[str, float] | None = None) -> dict[str, Any]:
    """A schema-valid results document of ``n_cases`` cases (models, optimizers, activations and
    batch sizes), with GPU collectors, profiler output, scaling entries and one failed and one skipped case.
    ``version=2`` measures the cases in ``rounds`` randomized rounds of trials (the first case has an
    unstable trial) and adds the paired effects; ``model_speed`` multiplies a model's throughput."""
    rng = random.Random(seed)
    mode = "cuda" if gpu else "cpu"
    batch_sizes = [16 * 2**k for k in range(max(1, math.ceil(n_cases / (len(MODELS) * 12))))]
    combos = itertools.product(MODELS, OPTIMIZERS, ACTIVATIONS, batch_sizes)
    cases = [_ok_case(_params(m, o, a, b, mode), rng, gpu=gpu, n_samples=n_samples,
                      speed=speed * (model_speed or {}).get(m, 1.0))
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
        "schema_version": version,
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
    if version == 2:
        _in_rounds(doc, rng, rounds)
    return doc


TARGET_CI = 0.03


def _in_rounds(doc: dict[str, Any], rng: random.Random, rounds: int) -> None:
    """Turn each measured case into ``rounds`` trials, as a version-2 writer records them: the
    machine's speed drifts from round to round (shared by the cases of a round), each trial has
    its own noise, and the first case drifts by 14% inside one trial."""
    ok = [c for c in doc["cases"] if c["status"] == "ok"]
    orders = [rng.sample([c["id"] for c in ok], len(ok)) for _ in range(rounds)]
    machine = [1 + 0.03 * math.sin(r) for r in range(rounds)]
    for n, case in enumerate(ok):
        level = case["metrics"]["throughput"]["median"]
        # A case's own noise: some cases are noisier than the target allows, most are not.
        noise = 0.04 if n % 3 == 2 else 0.005
        trials = []
        for r, order in enumerate(orders):
            position = order.index(case["id"])
            median = level * machine[r] * rng.lognormvariate(0, noise)
            unstable = n == 0 and r == 2  # needs 3 rounds or more
            windows = [median * rng.uniform(0.99, 1.01) * (1.07 if unstable and w >= 3 else 1.0) for w in range(6)]
            trials.append({"round": r, "position": position, "start_s": r * len(ok) * 0.6 + position * 0.6,
                           "repeat": 0, "median": median, "trimmed": 0, "drift": 0.14 if unstable else 0.0,
                           "stable": not unstable, "windows": windows})
        origin = trials[0]["start_s"]
        for t in trials:
            t["start_s"] -= origin
        medians = [t["median"] for t in trials]
        est = stats.estimate(medians)
        met = stats.target_met(est, TARGET_CI)
        half = None if math.isinf(est.rel_half_width) else est.rel_half_width  # no interval from one trial
        case["trials"] = trials
        case["metrics"]["throughput"].update(
            median=est.point, mean=sum(medians) / len(medians), ci95=[est.low, est.high],
            ci_rel_half_width=half, ci_target=TARGET_CI, ci_target_met=met, interval=est.method,
            trials=len(trials))
        drifted = any(not t["stable"] for t in trials)
        case["metrics"].update(trials=len(trials), trimmed_windows=0, unstable=drifted,
                               stop_reason="target_ci" if met else "rounds",
                               windows=sum(len(t["windows"]) for t in trials))
        case["warnings"] = [] if met else [
            f"95% CI {'undefined' if half is None else f'±{half:.1%}'} over {len(trials)} trials did not reach "
            f"the target ±{TARGET_CI:.1%}"]
        if drifted:
            case["warnings"].append(f"unstable: throughput drifted within 1 of {len(trials)} trials, "
                                    "by up to +14.0% (round 2)")
        windows = [w for t in trials for w in t["windows"]]
        case["samples"].update(window_throughput=windows, window_s=[0.1] * len(windows),
                               window_start_s=[t["start_s"] + 0.1 * w for t in trials for w in range(len(t["windows"]))],
                               window_trial=[i for i, t in enumerate(trials) for _ in t["windows"]])
    doc["rounds"] = {"seed": 1234, "completed": rounds, "orders": orders,
                     "estimator": "median of trial medians; 95% order-statistic interval over trials"}
    doc["effects"] = [dump(e) for e in effects(validate_doc(doc, "synthetic").cases)]


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


@pytest.mark.parametrize("kwargs", [{}, {"gpu": False}, {"evil": True}, {"n_cases": 1000, "n_samples": 20},
                                    {"version": 2}, {"version": 2, "n_cases": 1000, "n_samples": 20}])
def test_hand_made_results_pass_the_results_schema(kwargs: dict[str, Any]) -> None:
    doc = make_doc(**kwargs)
    validate_doc(doc, "synthetic")
    assert len(doc["cases"]) == kwargs.get("n_cases", 12)


def test_hand_made_results_load_like_a_real_results_file(tmp_path: Path) -> None:
    run = load_run(write_doc(tmp_path / "run-a", make_doc(5)))
    assert run.label == "run-a"
    assert [c.status for c in run.cases] == ["ok", "ok", "ok", "skipped", "failed"]


def test_hand_made_version_2_results_have_trials_in_rounds_and_paired_effects(tmp_path: Path) -> None:
    run = load_run(write_doc(tmp_path / "v2", make_doc(12, version=2, rounds=6)))
    assert run.doc.trial_based and run.doc.rounds is not None and run.doc.rounds.completed == 6
    measured = [c for c in run.cases if c.ok]
    assert all(len(c.trials or []) == 6 for c in measured)
    assert [c.metrics.unstable for c in measured[:2] if c.metrics] == [True, False]
    assert {e.parameter for e in run.doc.effects} == {"optimizer", "activation"}
    # The failed and skipped cases leave cells of some values without a counterpart.
    assert any(e.missing for e in run.doc.effects)
