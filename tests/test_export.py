"""`bench export --format pytest-benchmark` as a user runs it, checked with pytest-benchmark's own
loader (its FileStorage, the `pytest-benchmark compare` command) on a real run and on a committed
version-1 file: one benchmark per ok case, seconds per training step per trial, the environment
as machine_info and commit_info, and one-line errors with nothing written for bad input."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import DATA, SmokeRun, bench, cli_env
from pytest_benchmark.logger import Logger
from pytest_benchmark.stats import Stats
from pytest_benchmark.storage.file import FileStorage

from bench.export import machine_info
from bench.records import Environment

V1 = DATA / "good_results.json"


class FailingLogger(Logger):
    """pytest-benchmark's FileStorage skips a file it cannot read with a warning; here that fails."""

    def __init__(self) -> None:
        super().__init__(Logger.QUIET)

    def warning(self, text: str, **kwargs: Any) -> None:
        raise AssertionError(text)


def export(results: Path, out: Path) -> dict[str, Any]:
    proc = bench("export", results, "--format", "pytest-benchmark", "--out", out)
    assert proc.returncode == 0, proc.stderr
    loaded: dict[str, Any] = json.loads(out.read_text(encoding="utf-8"))
    return loaded


def load_with_pytest_benchmark(file: Path, storage: Path) -> list[dict[str, Any]]:
    """The benchmarks as pytest-benchmark's storage hands them to `compare` (stats flattened in)."""
    return list(FileStorage(storage, logger=FailingLogger()).load_benchmarks(str(file)))


def pytest_benchmark_compare(file: Path, cwd: Path) -> str:
    # Its `compare` imports a conftest.py from, and keeps a .benchmarks folder in, the current folder.
    proc = subprocess.run([shutil.which("pytest-benchmark") or "pytest-benchmark", "compare", str(file),
                           "--columns", "min,median,mean,ops,rounds,iterations"],
                          cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def trial_medians(doc: dict[str, Any], case_id: str) -> list[float]:
    case = next(c for c in doc["cases"] if c["id"] == case_id)
    if case.get("trials"):
        return [t["median"] for t in case["trials"]]
    return [case["metrics"]["throughput"]["median"]]  # version 1: the case's one stretch is one trial


def test_a_real_run_exports_one_benchmark_per_case_that_pytest_benchmarks_loader_reads(
        smoke_run: SmokeRun, tmp_path: Path) -> None:
    assert smoke_run.result.returncode == 0, smoke_run.result.stderr
    results = smoke_run.doc
    exported = export(smoke_run.out, tmp_path / "pb.json")
    ok = [c["id"] for c in results["cases"] if c["status"] == "ok"]
    loaded = load_with_pytest_benchmark(tmp_path / "pb.json", tmp_path / "storage")
    assert sorted(b["name"] for b in loaded) == sorted(ok) and len(ok) == 4
    for bench_ in loaded:
        case = next(c for c in results["cases"] if c["id"] == bench_["name"])
        medians = trial_medians(results, case["id"])
        # A step of the smoke suite trains on one batch of 32 samples: its time is 32 / throughput.
        assert case["params"]["batch_size"] == 32 and case["params"]["world_size"] == 1
        assert bench_["data"] == pytest.approx([32 / m for m in medians], rel=1e-9)
        assert bench_["rounds"] == len(medians) == case["metrics"]["trials"] >= 6
        assert bench_["ops"] == pytest.approx(1 / bench_["mean"])
        assert bench_["min"] <= bench_["q1"] <= bench_["median"] <= bench_["q3"] <= bench_["max"]
        assert bench_["group"] == "smoke" and bench_["fullname"] == f"smoke::{case['id']}"
        assert bench_["params"]["model.name"] == case["params"]["model"]["name"]
        assert bench_["extra_info"]["throughput"] == case["metrics"]["throughput"]["median"]
        assert bench_["extra_info"]["throughput_ci95"] == case["metrics"]["throughput"]["ci95"]
        assert bench_["extra_info"]["params"] == case["params"]
    env = results["environment"]
    assert exported["machine_info"]["node"] == env["hostname"]
    assert exported["machine_info"]["python_version"] == env["python"]
    assert exported["machine_info"]["python_implementation"] == "CPython"
    assert exported["machine_info"]["cpu"]["brand_raw"] == env["cpu_model"]
    assert exported["machine_info"]["system"] == "Linux"
    git = env["git"]
    assert exported["commit_info"]["id"] == (git["commit"] if git else None)
    assert exported["datetime"] == results["run"]["finished"]


def test_the_statistics_are_pytest_benchmarks_own_for_the_same_samples(smoke_run: SmokeRun, tmp_path: Path) -> None:
    exported = export(smoke_run.out, tmp_path / "pb.json")
    for bench_ in exported["benchmarks"]:
        stats = Stats()
        for value in bench_["stats"]["data"]:
            stats.update(value)
        expected = stats.as_dict()
        assert {k: bench_["stats"][k] for k in expected} == expected
        # iterations: the steps a trial timed, on average
        assert bench_["stats"]["iterations"] >= 1


def test_pytest_benchmark_compare_lists_every_case_of_a_real_run(smoke_run: SmokeRun, tmp_path: Path) -> None:
    exported = export(smoke_run.out, tmp_path / "pb.json")
    table = pytest_benchmark_compare(tmp_path / "pb.json", tmp_path)
    assert "benchmark 'smoke': 4 tests" in table
    for case in smoke_run.doc["cases"]:
        row = next(line for line in table.splitlines() if line.startswith(case["id"] + " "))
        iterations = next(b["stats"]["iterations"] for b in exported["benchmarks"] if b["name"] == case["id"])
        # the table's last columns: rounds (the case's trials) and iterations
        assert row.split()[-2:] == [str(case["metrics"]["trials"]), str(iterations)]


def test_a_version_1_file_exports_each_case_as_one_round(tmp_path: Path) -> None:
    doc = json.loads(V1.read_text(encoding="utf-8"))
    assert doc["schema_version"] == 1
    exported = export(V1, tmp_path / "pb.json")
    (case,) = doc["cases"]
    (bench_,) = exported["benchmarks"]
    samples = case["samples"]
    per_step = samples["window_throughput"][0] * samples["window_s"][0] / case["metrics"]["steps_per_window"]
    assert bench_["stats"]["data"] == pytest.approx([per_step / case["metrics"]["throughput"]["median"]])
    assert bench_["stats"]["rounds"] == 1 and bench_["stats"]["stddev"] == 0
    assert "version 1" in bench_["extra_info"]["interval"]
    assert exported["commit_info"] == {"id": None, "time": None, "author_time": None, "dirty": None,
                                       "project": None, "branch": None}
    assert [b["name"] for b in load_with_pytest_benchmark(tmp_path / "pb.json", tmp_path / "s")] == ["mlp-sgd"]
    assert "mlp-sgd" in pytest_benchmark_compare(tmp_path / "pb.json", tmp_path)


def test_without_out_the_json_goes_to_stdout_unchanged(tmp_path: Path) -> None:
    exported = export(V1, tmp_path / "pb.json")
    proc = bench("export", V1, "--format", "pytest-benchmark")
    assert proc.returncode == 0 and proc.stderr == ""
    assert json.loads(proc.stdout) == exported


def test_failed_cases_are_left_out_with_a_warning(tmp_path: Path) -> None:
    doc = json.loads(V1.read_text(encoding="utf-8"))
    failed = json.loads(json.dumps(doc["cases"][0]))
    failed.update(id="mlp-adam", status="failed", error="boom", metrics=None, samples=None)
    doc["cases"].append(failed)
    results = tmp_path / "results.json"
    results.write_text(json.dumps(doc), encoding="utf-8")
    proc = bench("export", results, "--format", "pytest-benchmark")
    assert proc.returncode == 0
    assert [b["name"] for b in json.loads(proc.stdout)["benchmarks"]] == ["mlp-sgd"]
    assert proc.stderr == (f"bench: warning: {results}: 1 case(s) failed or skipped; "
                           f"only ok cases are exported\n")


@pytest.mark.parametrize(("name", "message"), [
    ("missing.json", "no such results file"),
    ("bad/results/tenth_case_bad_status.json", "cases[9].status: Input should be 'ok', 'failed' or 'skipped'"),
    ("bad/results/truncated.json", "not valid JSON"),
    ("bad/results/wrong_schema_version.json", "schema_version"),
])
def test_a_bad_results_file_exits_2_with_one_line_naming_it_and_writes_nothing(
        tmp_path: Path, name: str, message: str) -> None:
    out = tmp_path / "out" / "pb.json"
    proc = bench("export", DATA / name, "--format", "pytest-benchmark", "--out", out)
    assert proc.returncode == 2
    assert len(proc.stderr_lines) == 1 and proc.stderr.startswith(f"bench: {DATA / name}: ")
    assert message in proc.stderr
    assert proc.stdout == "" and not out.parent.exists()


def test_an_unknown_format_exits_2_listing_the_formats_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "pb.json"
    proc = bench("export", V1, "--format", "csv", "--out", out)
    assert (proc.returncode, proc.stdout) == (2, "")
    assert proc.stderr_lines == ["bench: --format: unknown format 'csv' (choose from: pytest-benchmark)"]
    assert not out.exists()


def test_an_unwritable_out_exits_2_naming_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("", encoding="utf-8")
    proc = bench("export", V1, "--format", "pytest-benchmark", "--out", blocker / "pb.json")
    assert proc.returncode == 2
    assert len(proc.stderr_lines) == 1 and proc.stderr.startswith(f"bench: {blocker / 'pb.json'}: cannot write")


def env_with(platform: str | None) -> Environment:
    return Environment.model_validate({"python": "3.11.7", "torch": None, "cpu_model": "AMD EPYC", "cores_logical": 2,
                                       "hostname": "h", "time": "2026-12-01T00:00:00+00:00", "gpus": [],
                                       "implementation": "cpython", "platform": platform})


@pytest.mark.parametrize(("platform", "parts"), [
    # A release with dashes in it, as on this machine's kernel.
    ("Linux-6.18.44-fc-v657-x86_64-with-glibc2.36", ("Linux", "6.18.44-fc-v657", "x86_64")),
    ("Linux-5.15.0-1057-azure-aarch64-with-glibc2.35", ("Linux", "5.15.0-1057-azure", "aarch64")),
    # Other shapes: only the system is read, rather than a guess at the rest.
    ("macOS-14.2-arm64-arm-64bit", ("macOS", None, None)),
    (None, (None, None, None)),
])
def test_machine_info_reads_system_release_and_machine_from_the_platform_string(
        platform: str | None, parts: tuple[str | None, str | None, str | None]) -> None:
    info = machine_info(env_with(platform))
    assert (info["system"], info["release"], info["machine"]) == parts
    assert info["node"] == "h" and info["python_implementation"] == "CPython"
    assert info["cpu"] == {"brand_raw": "AMD EPYC", "count": 2, "arch_string_raw": parts[2]}


def test_export_imports_no_heavy_library(tmp_path: Path) -> None:
    probe = ("import sys; from bench.cli import main; code = main(sys.argv[1:]); "
             "print([m for m in ('torch', 'pandas', 'plotly', 'scipy') if m in sys.modules], code)")
    proc = subprocess.run([sys.executable, "-c", probe, "export", str(V1), "--format", "pytest-benchmark",
                           "--out", str(tmp_path / "pb.json")],
                          env=cli_env(), capture_output=True, text=True, timeout=60, check=False)
    assert proc.stdout.splitlines()[-1] == "[] 0", proc.stderr
