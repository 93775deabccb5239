"""The GPU trace analysis (``bench.trace_analysis``) on hand-made Kineto traces whose figures are
worked out in ``tests/kineto_traces.py``: through HTA (skipped where HolisticTraceAnalysis is not
installed) and through bench's own pandas code, to the same numbers; traces it cannot analyse
give an error record, never an exception; the runner analyses each finished CUDA case once."""

from __future__ import annotations

import gzip
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from bench import runner, trace_analysis
from bench import suite as suite_mod
from bench.records import CaseRecord, Collectors, TorchProfilerRecord, TraceAnalysisRecord
from bench.trace_analysis import NO_KERNELS, analyse_traces, kernel_type
from tests import kineto_traces
from tests.kineto_traces import ALLREDUCE, COPY, ELEMENTWISE, GEMM

DATA = kineto_traces.FOLDER.parent


@pytest.fixture(params=["hta", "bench"])
def source(request: pytest.FixtureRequest) -> str:
    if request.param == "hta":
        pytest.importorskip("hta.analyzers.breakdown_analysis", reason="HolisticTraceAnalysis is not installed")
    return str(request.param)


@pytest.fixture
def analysed(source: str) -> TraceAnalysisRecord:
    return analyse_traces(kineto_traces.fixtures(), DATA, use_hta=source == "hta", top=3)


def test_the_committed_traces_are_what_the_fixture_module_writes(tmp_path: Path) -> None:
    for rank, committed in enumerate(kineto_traces.fixtures()):
        fresh = kineto_traces.write(tmp_path / committed.name, kineto_traces.trace(rank))
        assert fresh.read_bytes() == committed.read_bytes(), f"run `python -m tests.kineto_traces` ({committed.name})"
        assert committed.stat().st_size < 4096


def test_the_record_says_which_code_computed_it_and_names_each_trace(analysed: TraceAnalysisRecord,
                                                                      source: str) -> None:
    assert analysed.error is None and analysed.source == source
    assert analysed.notes == []
    assert analysed.ranks is not None
    assert [(r.rank, r.trace) for r in analysed.ranks] == [(0, "traces/rank0.pt.trace.json.gz"),
                                                           (1, "traces/rank1.pt.trace.json.gz")]
    assert analysed.kernel_wait_threshold_us == 30.0
    assert analysed.cost_s is not None and analysed.cost_s < 30


def test_the_temporal_breakdown_divides_the_kernel_span_into_compute_non_compute_and_idle(
        analysed: TraceAnalysisRecord) -> None:
    assert analysed.ranks is not None
    r0, r1 = analysed.ranks
    # Rank 0: span 90..260; the copy and the all-reduce's time outside compute are non-compute.
    assert (r0.span_us, r0.compute_us, r0.non_compute_us, r0.idle_us) == (170, 130, 30, 10)
    assert (r0.compute_pct, r0.non_compute_pct, r0.idle_pct) == pytest.approx((76.4706, 17.6471, 5.8824), abs=1e-4)
    # Rank 1: the exposed all-reduce is non-compute time all through.
    assert (r1.span_us, r1.compute_us, r1.non_compute_us, r1.idle_us) == (210, 130, 70, 10)
    assert r1.compute_pct + r1.non_compute_pct + r1.idle_pct == pytest.approx(100)


def test_idle_gaps_are_host_wait_kernel_wait_or_other_by_when_the_kernel_was_launched(
        analysed: TraceAnalysisRecord) -> None:
    assert analysed.ranks is not None
    r0, r1 = analysed.ranks
    # Rank 0: the second GEMM was launched after the elementwise kernel ended (host wait, 20 µs);
    # the elementwise kernel was queued in time, 10 µs after the GEMM (kernel wait).
    assert (r0.idle_host_wait_us, r0.idle_kernel_wait_us, r0.idle_other_us) == (20, 10, 0)
    # Rank 1: the second GEMM was queued long before but waited 60 µs for the all-reduce (other).
    assert (r1.idle_host_wait_us, r1.idle_kernel_wait_us, r1.idle_other_us) == (0, 10, 60)


def test_overlap_is_the_share_of_communication_time_with_compute_running_too(analysed: TraceAnalysisRecord) -> None:
    assert analysed.ranks is not None
    r0, r1 = analysed.ranks
    assert r0.comm_comp_overlap_pct == pytest.approx(200 / 3, abs=0.005)  # 40 of the all-reduce's 60 µs
    assert r1.comm_comp_overlap_pct == 0


def test_the_top_kernels_are_ranked_by_total_time_with_their_type_and_count(analysed: TraceAnalysisRecord) -> None:
    assert analysed.ranks is not None
    kernels = analysed.ranks[0].kernels
    assert [(k.name, k.type, k.total_us, k.count) for k in kernels] == [
        (GEMM, "compute", 110, 2), (ALLREDUCE, "communication", 60, 1), (ELEMENTWISE, "compute", 20, 1)]


def test_without_communication_kernels_the_overlap_is_null_and_their_time_is_idle(tmp_path: Path,
                                                                                   source: str) -> None:
    doc = kineto_traces.trace(0, world_size=1)
    doc["traceEvents"] = [e for e in doc["traceEvents"] if not str(e.get("name", "")).startswith("nccl")]
    path = kineto_traces.write(tmp_path / "rank0.pt.trace.json.gz", doc)
    record = analyse_traces([path], tmp_path, use_hta=source == "hta")
    assert record.error is None and record.ranks is not None
    (rank,) = record.ranks
    assert rank.comm_comp_overlap_pct is None
    # The all-reduce's [170,180] and [180,200] were covered or idle; now [180,200] is idle.
    assert (rank.span_us, rank.compute_us, rank.non_compute_us, rank.idle_us) == (170, 130, 10, 30)
    assert [k.type for k in rank.kernels] == ["compute", "compute", "memory"]
    assert rank.kernels[-1].name == COPY


def test_a_cpu_only_trace_gives_the_no_gpu_kernels_error_and_no_figures(tmp_path: Path) -> None:
    path = kineto_traces.write(tmp_path / "rank0.pt.trace.json.gz", kineto_traces.trace(0, gpu=False))
    record = analyse_traces([path], tmp_path)
    assert record.error is not None and record.error.startswith(NO_KERNELS)
    assert record.ranks is None and record.source is None


def test_a_rank_without_gpu_events_is_noted_and_the_others_analysed(tmp_path: Path, source: str) -> None:
    gpu = shutil.copy(kineto_traces.fixtures()[0], tmp_path / "rank0.pt.trace.json.gz")
    cpu = kineto_traces.write(tmp_path / "rank1.pt.trace.json.gz", kineto_traces.trace(1, gpu=False))
    record = analyse_traces([Path(gpu), cpu], tmp_path, use_hta=source == "hta")
    assert record.error is None and record.ranks is not None
    assert [r.rank for r in record.ranks] == [0]
    assert record.notes == [f"rank1.pt.trace.json.gz: {NO_KERNELS}"]


@pytest.mark.parametrize("content", [b"\x1f\x8b\x08\x00 truncated gzip", b"{\"traceEvents\": [", b"[1, 2]"],
                         ids=["truncated-gzip", "truncated-json", "not-a-trace"])
def test_a_corrupt_file_gives_an_error_record_naming_it(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "rank0.pt.trace.json.gz"
    path.write_bytes(content)
    record = analyse_traces([path], tmp_path)
    assert record.error is not None and record.error.startswith("rank0.pt.trace.json.gz: ")
    assert record.ranks is None


def test_a_missing_file_and_no_files_give_error_records(tmp_path: Path) -> None:
    missing = analyse_traces([tmp_path / "rank0.pt.trace.json.gz"], tmp_path)
    assert missing.error is not None and "FileNotFoundError" in missing.error
    assert analyse_traces([]).error == "no trace files to analyse"


def test_without_hta_installed_bench_computes_the_same_figures_and_says_why(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A None entry in sys.modules makes the import fail as if the package were absent.
    monkeypatch.setitem(sys.modules, "hta.analyzers.breakdown_analysis", None)
    record = analyse_traces(kineto_traces.fixtures(), DATA)
    assert record.source == "bench" and record.ranks is not None
    assert record.ranks[0].compute_us == 130
    assert len(record.notes) == 1 and record.notes[0].startswith("HolisticTraceAnalysis is not installed")


def test_when_hta_raises_on_a_trace_bench_computes_the_figures_and_notes_the_error(
        monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any) -> Any:
        raise KeyError("index_correlation")

    monkeypatch.setattr(trace_analysis, "_hta_ranks", broken)
    record = analyse_traces(kineto_traces.fixtures(), DATA)
    assert record.source == "bench" and record.ranks is not None and record.ranks[1].idle_other_us == 60
    assert record.notes == ["HTA failed (KeyError: 'index_correlation'): bench's own code computed HTA's definitions"]


def test_kernels_are_classed_as_hta_classes_them() -> None:
    assert [kernel_type(n) for n in (GEMM, ALLREDUCE, COPY, "Memset (Device)", "cudaStreamSync", ELEMENTWISE)] == [
        "compute", "communication", "memory", "memory", "other", "compute"]


def _case(device: str, traces: list[str] | None) -> CaseRecord:
    doc = json.loads((DATA / "good_results.json").read_text(encoding="utf-8"))
    case = CaseRecord.model_validate(doc["cases"][0])
    collectors = Collectors(torch_profiler=TorchProfilerRecord(traces=traces)) if traces is not None else Collectors()
    return case.model_copy(update={"device": device, "collectors": collectors})


def test_a_cuda_case_with_traces_gets_its_analysis_in_the_record_that_round_trips(tmp_path: Path) -> None:
    folder = tmp_path / "profiles" / "case"
    folder.mkdir(parents=True)
    for path in kineto_traces.fixtures():
        shutil.copy(path, folder / path.name)
    record = trace_analysis.attach(_case("cuda:0", ["profiles/case/rank0.pt.trace.json.gz",
                                                    "profiles/case/rank1.pt.trace.json.gz"]), tmp_path)
    analysis = record.collectors.trace_analysis
    assert analysis is not None and analysis.error is None and analysis.ranks is not None
    assert [r.trace for r in analysis.ranks] == ["profiles/case/rank0.pt.trace.json.gz",
                                                 "profiles/case/rank1.pt.trace.json.gz"]
    again = CaseRecord.model_validate(json.loads(record.model_dump_json()))
    assert again.collectors.trace_analysis == analysis


def test_cpu_cases_and_cases_without_traces_are_left_as_they_are(tmp_path: Path) -> None:
    cpu = _case("cpu", ["profiles/case/rank0.pt.trace.json.gz"])
    assert trace_analysis.attach(cpu, tmp_path) is cpu
    unprofiled = _case("cuda:0", None)
    assert trace_analysis.attach(unprofiled, tmp_path) is unprofiled


def test_a_trace_the_case_lost_becomes_the_analysis_error_not_a_failed_case(tmp_path: Path) -> None:
    record = trace_analysis.attach(_case("cuda:0", ["profiles/gone/rank0.pt.trace.json.gz"]), tmp_path)
    assert record.status == "ok"
    analysis = record.collectors.trace_analysis
    assert analysis is not None and analysis.error is not None and "FileNotFoundError" in analysis.error


PROFILED_SUITE = """
name: profiled
defaults:
  model: mlp
  batch_size: 16
  threads: 1
  profile: torch
  profiler: {wait: 0, warmup: 1, active: 1}
  measure: {warmup_steps: 2, min_time: 0.2, max_time: 0.4, window_time: 0.02}
  timeout: 120
matrix:
  optimizer: [sgd]
"""


def test_the_runner_analyses_each_finished_case_once_and_saves_the_analysis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A CPU case stands in for a CUDA one (its record says cuda before the analysis): the real
    # torch trace it wrote has host events only, so the analysis is the no-kernels error.
    calls: list[str] = []
    real = trace_analysis.attach

    def as_if_on_cuda(record: CaseRecord, out_dir: Path) -> CaseRecord:
        calls.append(record.id)
        return real(record.model_copy(update={"device": "cuda:0"}), out_dir)

    monkeypatch.setattr(runner.trace_analysis, "attach", as_if_on_cuda)
    path = tmp_path / "profiled.yaml"
    path.write_text(PROFILED_SUITE, encoding="utf-8")
    outcome = runner.run_suite(suite_mod.load(path), tmp_path / "out", argv=["bench", "run", str(path)])
    (record,) = outcome.records
    assert record.status == "ok", record.error
    assert calls == [record.id]
    saved = json.loads((tmp_path / "out" / "results.json").read_text(encoding="utf-8"))
    analysis = saved["cases"][0]["collectors"]["trace_analysis"]
    assert analysis["error"].startswith(NO_KERNELS) and analysis["ranks"] is None
    with gzip.open(tmp_path / "out" / record.collectors.torch_profiler.traces[0]) as f:  # type: ignore[union-attr]
        assert any(e.get("cat") == "cpu_op" for e in json.load(f)["traceEvents"])
