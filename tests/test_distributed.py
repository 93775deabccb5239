"""DDP through torch.distributed.run, DataParallel skips, aggregation, scaling, multi-node, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest
from conftest import bench

from bench.launch import Cluster, skip_reason
from bench.records import CaseRecord
from bench.scaling import analyze
from bench.suite import load

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--set", "measure.max_time=0.6", "--set", "measure.min_time=0.2", "--set", "measure.warmup_steps=2",
        "--set", "measure.window_time=0.02"]


def write_suite(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "suite.yaml"
    path.write_text(textwrap.dedent(body), encoding="utf-8")
    return path


def leftover_ranks(since: float) -> list[psutil.Process]:
    """Processes started by these tests that still run bench ranks or torchrun."""
    found = []
    for p in psutil.process_iter(["cmdline", "create_time"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if p.info["create_time"] >= since - 1 and ("bench.ddp_worker" in cmd or "torch.distributed.run" in cmd):
            found.append(p)
    return found


@pytest.fixture(scope="module")
def scaling_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("scaling")
    result = bench("run", "suites/scaling.yaml", "--only", "mlp-*", "--out", str(out), "--quiet", *TINY, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads((out / "results.json").read_text())


def test_scaling_suite_runs_ddp_at_one_and_two_ranks_and_skips_the_rest_with_reasons(scaling_run: dict) -> None:
    status = {c["id"]: (c["status"], c["error"]) for c in scaling_run["cases"]}
    assert status["mlp-ddp-ws1"][0] == "ok"
    assert status["mlp-ddp-ws2"][0] == "ok"
    cores = len(os.sched_getaffinity(0))
    for n in (4, 8):
        if n > cores:
            assert status[f"mlp-ddp-ws{n}"][0] == "skipped"
            assert f"needs {n} cores" in status[f"mlp-ddp-ws{n}"][1]
    for n in (1, 2, 4, 8):
        state, reason = status[f"mlp-dp-ws{n}"]
        assert state == "skipped"
        assert "CUDA devices; this machine has 0" in reason


def test_ddp_global_throughput_is_all_ranks_samples_over_the_slowest_ranks_time(scaling_run: dict) -> None:
    case = next(c for c in scaling_run["cases"] if c["id"] == "mlp-ddp-ws2")
    ranks = case["ranks"]
    assert [r["rank"] for r in ranks] == [0, 1]
    k = case["metrics"]["steps_per_window"]
    windows = case["samples"]["window_throughput"]
    assert len(windows) == len(ranks[0]["window_s"]) == len(ranks[1]["window_s"])
    for i, thr in enumerate(windows):
        expected = sum(k * r["batch"] for r in ranks) / max(r["window_s"][i] for r in ranks)
        assert thr == pytest.approx(expected, rel=1e-12)
    assert case["metrics"]["peak_rss_mb"] == pytest.approx(sum(r["peak_rss_mb"] for r in ranks))
    assert case["metrics"]["throughput_per_rank"] == [r["throughput_median"] for r in ranks]
    assert case["backend"] == "gloo"


def test_scaling_entries_give_speedup_and_efficiency_against_world_size_one(scaling_run: dict) -> None:
    entries = {(e["mode"], e["world_size"]): e for e in scaling_run["scaling"] if e["group"].startswith("mlp")}
    one, two = entries[("ddp", 1)], entries[("ddp", 2)]
    assert one["speedup"] == 1.0 and one["efficiency"] == 1.0
    assert two["speedup"] == pytest.approx(two["throughput"] / one["throughput"])
    assert two["efficiency"] == pytest.approx(two["speedup"] / 2)
    assert ("dp", 1) not in entries  # DataParallel was skipped on this machine: never reported as scaling


def _case(mode: str, n: int, thr: float, scaling: str = "weak") -> CaseRecord:
    params = {"model": {"name": "mlp"}, "optimizer": {"name": "sgd"}, "activation": "relu", "batch_size": 64,
              "mode": mode, "world_size": n, "scaling": scaling, "lr": 0.01, "loss": "cross_entropy",
              "data": {"name": "synthetic"}}
    return CaseRecord.model_validate({
        "id": f"{mode}{n}", "status": "ok", "params": params, "device": "cuda", "error": None, "warnings": [],
        "started": "t", "duration_s": 1.0, "samples": None,
        "metrics": {"throughput": {"median": thr, "ci95": [None, None]}, "step_time_ms": {"p50": 1.0, "p95": 1.0},
                    "peak_rss_mb": 1.0, "threads": 1, "windows": 1, "steps": 1}})


def test_analyze_computes_weak_and_strong_efficiency_per_mode_side_by_side() -> None:
    cases = [_case("ddp", 1, 100.0), _case("ddp", 2, 180.0), _case("ddp", 4, 320.0),
             _case("dp", 1, 100.0), _case("dp", 2, 120.0)]
    got = {(e.mode, e.world_size): e for e in analyze(cases)}
    assert got[("ddp", 4)].efficiency == pytest.approx(320 / (4 * 100))
    assert got[("dp", 2)].efficiency == pytest.approx(120 / (2 * 100))
    assert got[("dp", 2)].group == got[("ddp", 2)].group
    # Strong scaling: t_1 / (N t_N) with t = B / thr is the same ratio.
    strong = analyze([_case("ddp", 1, 100.0, "strong"), _case("ddp", 2, 150.0, "strong")])
    assert strong[1].efficiency == pytest.approx((64 / 100) / (2 * (64 / 150)))


def test_skip_reason_names_missing_gpus_and_cores() -> None:
    suite = load(ROOT / "suites/scaling.yaml")
    case = next(c for c in suite.cases if c.id == "cnn-ddp-ws8")
    assert "needs 8 cores; this machine has 2" in (skip_reason(case, Cluster(), cores=2, gpus=0) or "")
    assert "needs 8 GPUs; this machine has 4" in (skip_reason(case, Cluster(), cores=64, gpus=4) or "")
    assert skip_reason(case, Cluster(), cores=64, gpus=8) is None
    assert "does not split evenly over 3 nodes" in (skip_reason(case, Cluster(nnodes=3), cores=64, gpus=8) or "")


def test_dataparallel_is_skipped_with_a_reason_when_gpus_are_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from bench import worker

    case = next(c for c in load(ROOT / "suites/scaling.yaml").cases if c.id == "mlp-dp-ws2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(worker.Skip, match="needs 2 CUDA devices; this machine has 1"):
        worker.select_device(case.params)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert str(worker.select_device(case.params)) == "cuda:0"


FAULT_SUITE = """
name: faults
defaults:
  model: {{import: "tests.distributed_models:misbehaving", input_shape: [16], kwargs: {{action: {action}}}}}
  mode: ddp
  world_size: 2
  threads: 1
  batch_size: 8
  timeout: {timeout}
  measure: {{warmup_steps: 5, min_time: 0.2, max_time: 0.5, window_time: 0.01}}
matrix:
  seed: [1]
include:
  - {{model: mlp, seed: 2, timeout: 120}}
"""


@pytest.mark.parametrize(("action", "expected"), [
    ("raise", "rank 1: RuntimeError: planted failure on rank 1"),
    ("kill", "SIGKILL"),
    ("hang", "timed out after 20 s"),
])
def test_a_failing_rank_fails_its_case_with_its_error_and_leaves_no_process(
        tmp_path: Path, action: str, expected: str) -> None:
    started = time.time()
    suite = write_suite(tmp_path, FAULT_SUITE.format(action=action, timeout=20))
    out = tmp_path / "out"
    result = bench("run", str(suite), "--out", str(out), "--quiet", timeout=300)
    assert result.returncode == 1, result.stderr
    cases = {c["params"]["seed"]: c for c in json.loads((out / "results.json").read_text())["cases"]}
    bad, good = cases[1], cases[2]
    assert bad["status"] == "failed"
    assert expected in bad["error"]
    assert good["status"] == "ok", good["error"]  # the suite went on
    assert leftover_ranks(started) == []


def test_two_nodes_on_loopback_produce_one_result_with_world_size_two(tmp_path: Path) -> None:
    started = time.time()
    port = 29000 + os.getpid() % 1000
    common = ["run", "suites/scaling.yaml", "--only", "mlp-ddp-ws2", "--nnodes", "2",
              "--rdzv-endpoint", f"127.0.0.1:{port}", "--quiet", *TINY]
    node1 = subprocess.Popen([sys.executable, "-m", "bench", *common, "--node-rank", "1",
                              "--out", str(tmp_path / "node1")],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    node0 = bench(*common, "--node-rank", "0", "--out", str(tmp_path / "node0"), timeout=300)
    out1, err1 = node1.communicate(timeout=120)
    assert node0.returncode == 0, node0.stderr
    assert node1.returncode == 0, err1
    assert not (tmp_path / "node1").exists()  # only node 0 writes results
    doc = json.loads((tmp_path / "node0" / "results.json").read_text())
    (case,) = doc["cases"]
    assert case["status"] == "ok"
    assert case["params"]["world_size"] == 2
    assert sorted(r["rank"] for r in case["ranks"]) == [0, 1]
    assert "node 0 writes the results" in out1
    assert leftover_ranks(started) == []


# ---------------------------------------------------------------------------------------------
# How a torchrun outcome becomes a case record (bench.launch.case_outcome), from the files it leaves.

ROOT_CAUSE_LOG = """torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
Root Cause (first observed failure):
[0]:
  time      : 2026-11-27_14:37:54
  host      : localhost
  rank      : 1 (local_rank: 1)
  exitcode  : {code} (pid: 11308)
  error_file: <N/A>
"""


def _scratch(tmp_path: Path, *, record: bool = False, errors: dict[int, str] | None = None,
             log_code: int | None = None) -> tuple[Path, Path]:
    scratch = tmp_path / "case"
    scratch.mkdir()
    if record:
        (scratch / "record.json").write_text(json.dumps({"status": "ok", "error": None, "warnings": []}))
    for rank, text in (errors or {}).items():
        (scratch / f"rank{rank}.error.json").write_text(json.dumps({"rank": rank, "status": "failed",
                                                                     "error": text, "traceback": "tb"}))
    log = tmp_path / "case.log"
    log.write_text(ROOT_CAUSE_LOG.format(code=log_code) if log_code is not None else "")
    return scratch, log


def test_a_complete_record_stands_when_a_rank_dies_on_its_way_out(tmp_path: Path) -> None:
    from bench.launch import case_outcome

    scratch, log = _scratch(tmp_path, record=True, log_code=-6)
    out = case_outcome(1, scratch, log, timeout=60)
    assert out["status"] == "ok"
    assert out["warnings"] == ["after the measurement: rank 1 was killed by SIGABRT"]


def test_the_rank_that_raised_is_named_not_the_peer_that_lost_it(tmp_path: Path) -> None:
    from bench.launch import case_outcome

    scratch, log = _scratch(tmp_path, record=True, errors={
        0: "RuntimeError: [gloo/transport/tcp/pair.cc:561] Connection closed by peer [127.0.0.1]:1234",
        1: "ValueError: bad shape"})
    out = case_outcome(1, scratch, log, timeout=60)
    assert out == {"status": "failed", "error": "rank 1: ValueError: bad shape", "traceback": "tb"}


def test_a_killed_rank_is_named_from_torchruns_summary(tmp_path: Path) -> None:
    from bench.launch import case_outcome

    scratch, log = _scratch(tmp_path, errors={0: "RuntimeError: Connection closed by peer"}, log_code=-9)
    assert case_outcome(1, scratch, log, timeout=60) == {"status": "failed",
                                                         "error": "rank 1 was killed by SIGKILL"}


def test_a_timeout_fails_the_case_with_the_hanging_ranks_error_if_it_wrote_one(tmp_path: Path) -> None:
    from bench.launch import case_outcome

    scratch, log = _scratch(tmp_path, errors={1: "RuntimeError: stuck"})
    out = case_outcome(None, scratch, log, timeout=20)
    assert out == {"status": "failed",
                   "error": "timed out after 20 s (a rank hung or was too slow) (rank 1: RuntimeError: stuck)"}


def _rank_record(rank: int, collectors: dict) -> dict:
    """The record a writing rank starts from at the end of a case (bench.ddp_worker.run_rank)."""
    return {"metrics": {"peak_rss_mb": 400.0 + rank, "cuda_peak_allocated_mb": None}, "collectors": collectors,
            "warnings": []}


def _summary(rank: int, record: dict) -> dict:
    """A rank's summary from its session's trials and its collectors' final records."""
    from bench.ddp_worker import _rank_summary

    session = SimpleNamespace(local_window_s=[0.01, 0.011], steps_per_window=10, batch=64, micro_batches=1,
                              device="cpu", threads=1, step_ms=[1.0], warnings=[])
    return _rank_summary(rank, rank, session, {"peak_rss_mb": record["metrics"]["peak_rss_mb"],
                                                "collectors": record["collectors"]})


def _profiled(rank: int, *, pyspy_error: str | None = None, nvml_error: str = "no NVIDIA driver") -> dict:
    return {
        "torch_profiler": {"error": None, "top_ops": [], "traces": [f"profiles/c/rank{rank}.pt.trace.json.gz"]},
        "pyspy": {"error": pyspy_error,
                  "flamegraph": None if pyspy_error else f"profiles/c/pyspy.rank{rank}.svg",
                  "speedscope": None if pyspy_error else f"profiles/c/pyspy.rank{rank}.speedscope.json"},
        "nvml": {"error": nvml_error},
    }


def test_a_ddp_record_names_every_ranks_profiler_files_and_the_errors_only_some_ranks_met() -> None:
    from bench.ddp_worker import aggregate

    records = [_rank_record(0, _profiled(0)), _rank_record(1, _profiled(1, pyspy_error="py-spy did not start"))]
    summaries = [_summary(rank, rec) for rank, rec in enumerate(records)]
    out = aggregate(records[0], summaries)
    assert out["collectors"]["torch_profiler"]["traces"] == ["profiles/c/rank0.pt.trace.json.gz",
                                                              "profiles/c/rank1.pt.trace.json.gz"]
    assert out["ranks"][0]["files"] == ["profiles/c/rank0.pt.trace.json.gz", "profiles/c/pyspy.rank0.svg",
                                        "profiles/c/pyspy.rank0.speedscope.json"]
    assert out["ranks"][1]["files"] == ["profiles/c/rank1.pt.trace.json.gz"]
    assert out["ranks"][1]["collector_errors"] == {"nvml": "no NVIDIA driver", "pyspy": "py-spy did not start"}
    # The NVML error is already in the record (every rank met it); the py-spy one only rank 1 met.
    assert out["warnings"] == ["rank 1: collector pyspy: py-spy did not start"]
    assert all("collectors" not in r for r in out["ranks"])


def _nvml(rank: int, power: float, per_sample: float) -> dict:
    summary = {"util_mean": 50.0 + rank, "util_max": 60.0, "power_mean_w": power, "sm_clock_mean_mhz": 1800.0,
               "mem_used_max_mb": 1000.0, "temp_max_c": 60.0, "energy_j": power * 2, "energy_source": "counter",
               "energy_per_sample_j": per_sample, "span_s": 2.0, "samples": 10}
    return {"error": None, "devices": [{"device": "cuda:0", "nvml_index": rank, "name": "H100", "uuid": f"GPU-{rank}"}],
            "samples": {"t": [0.0], "util": [50.0]}, "summary": {**summary, "devices": 1},
            "per_device": [{"device": "cuda:0", "uuid": f"GPU-{rank}", "summary": summary}]}


def test_a_ddp_record_joins_every_ranks_gpu_telemetry_into_the_cases() -> None:
    from bench.ddp_worker import aggregate

    records = [_rank_record(0, {"nvml": _nvml(0, 600.0, 0.3)}), _rank_record(1, {"nvml": _nvml(1, 400.0, 0.2)})]
    summaries = [_summary(rank, rec) for rank, rec in enumerate(records)]
    nvml = aggregate(records[0], summaries)["collectors"]["nvml"]
    assert [(d["rank"], d["uuid"]) for d in nvml["devices"]] == [(0, "GPU-0"), (1, "GPU-1")]
    assert [d["rank"] for d in nvml["per_device"]] == [0, 1]
    # Each rank's energy per sample is its GPU's share of the global samples: the case's is their sum.
    assert nvml["summary"]["energy_per_sample_j"] == pytest.approx(0.5)
    assert nvml["summary"]["power_mean_w"] == 1000.0
    assert nvml["summary"]["util_mean"] == 50.5 and nvml["summary"]["devices"] == 2
    assert nvml["samples"] == {"t": [0.0], "util": [50.0]}, "the time series stays the writer's"


def test_a_ddp_record_without_one_ranks_telemetry_sums_no_power_or_energy() -> None:
    from bench.ddp_worker import aggregate

    missing = {"error": "NVML unavailable: Driver Not Loaded", "devices": None, "samples": None, "summary": None,
               "per_device": None}
    records = [_rank_record(0, {"nvml": _nvml(0, 600.0, 0.3)}), _rank_record(1, {"nvml": missing})]
    summaries = [_summary(rank, rec) for rank, rec in enumerate(records)]
    out = aggregate(records[0], summaries)
    summary = out["collectors"]["nvml"]["summary"]
    assert summary["devices"] == 1 and summary["util_mean"] == 50.0
    assert (summary["power_mean_w"], summary["energy_j"], summary["energy_per_sample_j"]) == (None, None, None)
    assert out["warnings"] == ["rank 1: collector nvml: NVML unavailable: Driver Not Loaded"]
