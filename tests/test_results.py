"""results.json: real output validates against the shipped schema, loads into one DataFrame row
per case, and bad files are refused with a ResultsError naming the file."""

from __future__ import annotations

import copy
import json
import os
import threading
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from conftest import SmokeRun, bench

from bench.errors import OutputError, ResultsError
from bench.records import SCHEMA_PATH, CaseRecord, Environment, SuiteInfo, json_schema, schema_text
from bench.results import SCHEMA_VERSION, ResultsWriter, load_run, load_runs, to_dataframe

SMOKE_IDS = ["mlp-sgd", "mlp-adam", "cnn-sgd", "cnn-adam"]


def test_the_shipped_schema_is_the_one_generated_from_the_typed_records() -> None:
    # Regenerate with `python -m bench.records` after changing bench/records.py.
    assert SCHEMA_PATH.read_text(encoding="utf-8") == schema_text()


def test_real_output_validates_against_the_shipped_schema(smoke_run: SmokeRun) -> None:
    doc = smoke_run.doc
    shipped = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(shipped)
    assert shipped == json_schema()
    assert list(jsonschema.Draft202012Validator(shipped).iter_errors(doc)) == []
    assert doc["schema_version"] == SCHEMA_VERSION == 2
    assert doc["suite"]["name"] == "smoke"
    assert doc["run"]["status"] == "complete"
    assert "--set" in doc["run"]["argv"] and "measure.max_time=0.3" in doc["run"]["overrides"]


def test_real_output_carries_the_environment_fingerprint(smoke_run: SmokeRun) -> None:
    env = smoke_run.doc["environment"]
    assert env["python"].count(".") == 2
    assert env["torch"].startswith("2.")
    assert env["cores_logical"] >= 1
    assert env["hostname"]
    assert env["gpus"] == [] or all("name" in g for g in env["gpus"])
    # Run from this repository, so the commit is known.
    assert len(env["git"]["commit"]) == 40


def test_every_case_has_params_status_metrics_and_raw_samples(smoke_run: SmokeRun) -> None:
    cases = smoke_run.doc["cases"]
    assert [c["id"] for c in cases] == SMOKE_IDS
    for case in cases:
        assert case["status"] == "ok", case["error"]
        p = case["params"]
        assert (p["mode"], p["world_size"], p["batch_size"]) == ("cpu", 1, 32)
        assert p["measure"]["max_time"] == 0.3 and p["measure"]["warmup_steps"] == 1
        m = case["metrics"]
        lo, hi = m["throughput"]["ci95"]
        if m["windows"] >= 2:
            assert lo <= m["throughput"]["median"] <= hi
        else:  # a loaded machine can make one window outlast max_time: then there is no interval
            assert (lo, hi) == (None, None)
        assert m["step_time_ms"]["p50"] <= m["step_time_ms"]["p95"]
        assert m["peak_rss_mb"] > 0 and m["threads"] >= 1
        assert len(case["samples"]["window_throughput"]) == m["windows"]
        assert len(case["samples"]["window_s"]) == m["windows"]


def test_to_dataframe_gives_one_row_per_case_with_flat_columns(smoke_run: SmokeRun) -> None:
    df = to_dataframe([load_run(smoke_run.out)])
    assert list(df["id"]) == SMOKE_IDS
    assert set(df["status"]) == {"ok"}
    assert set(df["run"]) == {"out"}  # labelled by the folder name
    for col in ["suite", "error", "params.model.name", "params.optimizer.name", "params.activation",
                "params.batch_size", "params.mode", "params.world_size", "metrics.throughput.median",
                "metrics.throughput.ci95_low", "metrics.throughput.ci95_high", "metrics.step_time_ms.p50",
                "metrics.step_time_ms.p95", "metrics.peak_rss_mb", "metrics.threads"]:
        assert col in df.columns, col
    assert "metrics.throughput.ci95" not in df.columns
    assert list(df["params.model.name"]) == ["mlp", "mlp", "cnn", "cnn"]
    assert list(df["params.optimizer.name"]) == ["sgd", "adam", "sgd", "adam"]
    with_ci = df[df["metrics.windows"] >= 2]
    assert (with_ci["metrics.throughput.ci95_low"] <= with_ci["metrics.throughput.median"]).all()
    assert df["metrics.throughput.median"].dtype == float


def test_to_dataframe_stacks_runs_and_keeps_failed_cases(smoke_run: SmokeRun, tmp_path: Path) -> None:
    doc = copy.deepcopy(smoke_run.doc)
    doc["cases"][1].update(status="failed", error="RuntimeError: boom", metrics=None, samples=None)
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.json").write_text(json.dumps(doc), encoding="utf-8")
    df = to_dataframe(load_runs([smoke_run.out, other]))
    assert len(df) == 8
    assert list(df["run"]) == ["out"] * 4 + ["other"] * 4
    failed = df[(df["run"] == "other") & (df["id"] == "mlp-adam")].iloc[0]
    assert failed["status"] == "failed" and failed["error"] == "RuntimeError: boom"
    assert failed["metrics.throughput.median"] != failed["metrics.throughput.median"]  # NaN


def test_runs_from_folders_of_the_same_name_are_labelled_by_path(smoke_run: SmokeRun, tmp_path: Path) -> None:
    paths = []
    for parent in ("a", "b"):
        folder = tmp_path / parent / "out"
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps(smoke_run.doc), encoding="utf-8")
        paths.append(folder)
    assert [r.label for r in load_runs(paths)] == [str(paths[0]), str(paths[1])]


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "results.json"
    path.write_text(text, encoding="utf-8")
    return path


def _mutated(smoke_run: SmokeRun, change: Any) -> str:
    doc = copy.deepcopy(smoke_run.doc)
    change(doc)
    return json.dumps(doc)


BAD_FILES = [
    ("not JSON", lambda s: "hello", "line 1, column 1: not valid JSON: Expecting value"),
    ("truncated", lambda s: json.dumps(s.doc, indent=1)[:500], "not valid JSON"),
    ("NaN", lambda s: json.dumps(s.doc).replace('"error": null', '"error": NaN', 1), "NaN is not valid JSON"),
    ("a list", lambda s: "[]", "not a bench results file (top level is not an object)"),
    ("newer version", lambda s: _mutated(s, lambda d: d.update(schema_version=3)),
     "schema_version: 3 is not supported (this bench reads versions 1, 2)"),
    ("no version", lambda s: _mutated(s, lambda d: d.pop("schema_version")), "schema_version: None is not supported"),
    ("no environment", lambda s: _mutated(s, lambda d: d.pop("environment")),
     "environment: required key is missing"),
    ("a case without status", lambda s: _mutated(s, lambda d: d["cases"][2].pop("status")),
     "cases[2].status: required key is missing"),
    ("a status that is no status", lambda s: _mutated(s, lambda d: d["cases"][3].update(status="banana")),
     "cases[3].status: Input should be 'ok', 'failed' or 'skipped' (got 'banana')"),
    ("a throughput that is text", lambda s: _mutated(
        s, lambda d: d["cases"][3]["metrics"]["throughput"].update(median="fast")),
     "cases[3].metrics.throughput.median: Input should be a valid number"),
    ("a negative throughput", lambda s: _mutated(s, lambda d: d["cases"][0]["metrics"]["throughput"].update(median=-1)),
     "cases[0].metrics"),
    ("a duplicate case id", lambda s: _mutated(s, lambda d: d["cases"][1].update(id="mlp-sgd")),
     "cases[1].id: duplicate case id 'mlp-sgd'"),
]


@pytest.mark.parametrize(("name", "make", "message"), BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_a_bad_results_file_raises_results_error_naming_the_file(
        smoke_run: SmokeRun, tmp_path: Path, name: str, make: Any, message: str) -> None:
    path = _write(tmp_path, make(smoke_run))
    with pytest.raises(ResultsError) as info:
        load_run(path)
    text = str(info.value)
    assert text.startswith(f"{path}: "), text
    assert message in text, text
    if name == "truncated":
        assert "truncated" in text


def test_a_missing_results_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ResultsError, match=r"results\.json: no such results file"):
        load_run(tmp_path)
    with pytest.raises(ResultsError) as info:
        load_run(tmp_path / "nope.json")
    assert str(info.value) == f"{tmp_path / 'nope.json'}: no such results file"


def test_the_report_command_refuses_a_bad_results_file_in_one_line(tmp_path: Path) -> None:
    path = _write(tmp_path, '{"schema_version": 1, "cases": [')
    out = tmp_path / "report.html"
    result = bench("report", path, "--out", out)
    assert result.returncode == 2
    assert len(result.stderr_lines) == 1
    assert result.stderr_lines[0].startswith(f"bench: {path}: line 1, column 33: not valid JSON")
    assert "Traceback" not in result.stderr
    assert not out.exists()


SUITE = SuiteInfo(name="s", path="s.yaml", source={})


def _environment(smoke_run: SmokeRun) -> Environment:
    return Environment.model_validate(smoke_run.doc["environment"])


def _case(smoke_run: SmokeRun, case_id: str, **extra: Any) -> CaseRecord:
    return CaseRecord.model_validate({**smoke_run.doc["cases"][0], "id": case_id, **extra})


def test_a_failed_write_leaves_the_previous_results_file_whole(smoke_run: SmokeRun, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    writer = ResultsWriter(tmp_path, suite=SUITE, environment=_environment(smoke_run), run={"argv": []})
    before = writer.path.read_text(encoding="utf-8")

    def fail(src: str, dst: str) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OutputError) as info:
        writer.add(_case(smoke_run, "a"))
    assert str(info.value) == f"{writer.path}: cannot write results (No space left on device)"
    assert writer.path.read_text(encoding="utf-8") == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_a_reader_never_sees_a_partial_results_file(smoke_run: SmokeRun, tmp_path: Path) -> None:
    writer = ResultsWriter(tmp_path, suite=SUITE, environment=_environment(smoke_run), run={"argv": []})
    stop = threading.Event()
    seen: list[int] = []
    failed: list[Exception] = []

    def read() -> None:
        while not stop.is_set():
            # An exception would end this thread quietly, and the test would pass on the reads
            # made before it: keep it for the assertion instead.
            try:
                seen.append(len(json.loads(writer.path.read_text(encoding="utf-8"))["cases"]))
            except Exception as exc:
                failed.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for i in range(100):
            writer.add(_case(smoke_run, f"case-{i}", padding="x" * 5000))
    finally:
        stop.set()
        reader.join()
    assert failed == []
    assert len(set(seen)) > 1, "the reader never read while the writer wrote"
    assert seen == sorted(seen)
    assert len(json.loads(writer.path.read_text(encoding="utf-8"))["cases"]) == 100


def test_a_case_measured_in_one_window_has_no_interval_and_still_loads(smoke_run: SmokeRun, tmp_path: Path) -> None:
    # A step slower than max_time gives a single window: there is no interval, stored as nulls.
    doc = copy.deepcopy(smoke_run.doc)
    case = doc["cases"][0]
    case["metrics"]["throughput"].update(ci95=[None, None], ci_rel_half_width=None, ci_target_met=False)
    case["metrics"]["windows"] = 1
    path = _write(tmp_path, json.dumps(doc))
    df = to_dataframe([load_run(path)])
    assert df["metrics.throughput.ci95_low"].isna().iloc[0]
    assert df["metrics.throughput.median"].iloc[0] == case["metrics"]["throughput"]["median"]


def test_a_version_1_file_loads_with_each_case_as_one_trial_labelled_as_within_run_only() -> None:
    run = load_run(Path(__file__).parent / "data" / "good_results.json")
    assert run.doc.schema_version == 1 and not run.doc.trial_based
    (case,) = [c for c in run.cases if c.ok]
    assert case.metrics is not None and case.samples is not None and case.trials is not None
    (trial,) = case.trials
    assert trial.median == case.metrics.throughput.median
    assert trial.windows == case.samples.window_throughput
    assert case.metrics.throughput.trials == 1
    assert "version 1" in (case.metrics.throughput.interval or "") and "within-run" in case.metrics.throughput.interval
    assert run.doc.effects == [] and run.doc.rounds is None
