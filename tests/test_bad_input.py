"""Every broken input ends the same way: exit 2, one line on stderr naming the file and the key or
position, no traceback, nothing executed and nothing written. The corpus lives in tests/data/bad/;
hypothesis mutates valid suites and results to look for inputs the corpus missed."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import Result, bench
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bench.compare import compare_runs
from bench.errors import ResultsError, SuiteError, UsageError
from bench.results import load_run, to_dataframe
from bench.suite import load

ROOT = Path(__file__).resolve().parent.parent
BAD = ROOT / "tests" / "data" / "bad"
SUITES = json.loads((BAD / "suites" / "expected.json").read_text())
RESULTS = json.loads((BAD / "results" / "expected.json").read_text())
GOOD_RESULTS = ROOT / "tests" / "data" / "good_results.json"


def assert_one_line_error(result: Result, path: str, expected: str) -> None:
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"bench: {path}"), lines[0]
    assert expected in lines[0], lines[0]


def test_the_corpus_has_at_least_forty_broken_inputs() -> None:
    # suites_core/ holds the classes of the core issue, each checked with its exact message in
    # tests/test_suite.py; suites/ and results/ are checked here.
    core = list((BAD / "suites_core").glob("*.yaml"))
    assert len(SUITES) + len(RESULTS) + len(core) >= 40
    assert {p.name for p in (BAD / "suites").glob("*.yaml")} == set(SUITES)


@pytest.mark.parametrize("name", sorted(SUITES))
def test_a_broken_suite_is_refused_with_one_line_naming_file_and_key_and_writes_nothing(
        name: str, tmp_path: Path) -> None:
    path = f"tests/data/bad/suites/{name}"
    out = tmp_path / "out"
    assert_one_line_error(bench("run", path, "--out", str(out)), path, SUITES[name])
    assert not out.exists()


def test_yaml_tags_never_execute_code(tmp_path: Path) -> None:
    marker = Path("/tmp/bench-pwned")
    marker.unlink(missing_ok=True)
    bench("validate", "tests/data/bad/suites/python_object_tag.yaml")
    assert not marker.exists()


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_a_broken_results_file_is_refused_by_report_with_one_line_and_writes_nothing(
        name: str, tmp_path: Path) -> None:
    path = f"tests/data/bad/results/{name}"
    out = tmp_path / "report.html"
    assert_one_line_error(bench("report", path, "--out", str(out)), path, RESULTS[name])
    assert not out.exists()


MANY_CASE_FILES = sorted(n for n in RESULTS if n.startswith("tenth_case_"))


@pytest.mark.parametrize("name", MANY_CASE_FILES)
def test_a_bad_last_case_of_many_is_refused_by_compare_history_and_resume(name: str, tmp_path: Path) -> None:
    path = f"tests/data/bad/results/{name}"
    expected = RESULTS[name]
    assert_one_line_error(bench("compare", "tests/data/good_results.json", path), path, expected)
    history = tmp_path / "history"
    for run in ("a", "b"):
        (history / run).mkdir(parents=True)
    (history / "a" / "results.json").write_bytes(GOOD_RESULTS.read_bytes())
    (history / "b" / "results.json").write_bytes((ROOT / path).read_bytes())
    out = tmp_path / "trend.html"
    assert_one_line_error(bench("history", str(history), "--out", str(out)), str(history / "b" / "results.json"),
                          expected)
    assert not out.exists()
    before = (history / "b" / "results.json").read_bytes()
    assert_one_line_error(bench("run", "--resume", str(history / "b")), str(history / "b" / "results.json"),
                          expected)
    assert (history / "b" / "results.json").read_bytes() == before
    assert sorted(p.name for p in (history / "b").iterdir()) == ["results.json"]


def test_a_results_file_over_the_size_limit_is_refused_without_reading_it(tmp_path: Path) -> None:
    big = tmp_path / "results.json"
    with big.open("wb") as fh:
        fh.truncate(100 * 2**20)  # 100 MB (sparse): the size check must come before any parse
    result = bench("report", str(big), "--out", str(tmp_path / "r.html"))
    assert_one_line_error(result, str(big), "larger than")
    assert not (tmp_path / "r.html").exists()


# ---------------------------------------------------------------------------------------------
# Property-based: random mutations of valid inputs meet the same contract in-process.

VALID_SUITE: dict[str, Any] = yaml.safe_load((ROOT / "suites" / "cnn.yaml").read_text())
def _many_cases(n: int) -> dict[str, Any]:
    """The good file with ``n`` cases, so that a mutation can land in any case, not just the first."""
    doc: dict[str, Any] = json.loads(GOOD_RESULTS.read_text())
    first = doc["cases"][0]
    doc["cases"] = [{**copy.deepcopy(first), "id": f"{first['id']}-{i}"} for i in range(n)]
    return doc


VALID_RESULTS = _many_cases(6)

ODD_VALUES = st.one_of(
    st.none(), st.booleans(), st.integers(-10**6, 10**6), st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=2),
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


@st.composite
def mutated(draw: st.DrawFn, base: dict[str, Any]) -> dict[str, Any]:
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        paths = _paths(doc)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent: Any = doc
        for part in path[:-1]:
            parent = parent[part]
        action = draw(st.sampled_from(["replace", "delete", "rename"]))
        key = path[-1]
        if action == "replace":
            parent[key] = draw(ODD_VALUES)
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.text(min_size=1, max_size=8))] = parent.pop(key)
    return doc


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=mutated(VALID_SUITE))
def test_a_mutated_suite_either_loads_or_raises_a_one_line_suite_error(tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "mutant.yaml"
    path.write_text(yaml.safe_dump(doc))
    try:
        suite = load(path)
    except SuiteError as exc:
        assert str(exc).startswith(f"{path}: ")
        assert "\n" not in str(exc)
    else:
        assert len(suite.cases) >= 1
        assert len({c.id for c in suite.cases}) == len(suite.cases)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(doc=mutated(VALID_RESULTS))
def test_a_mutated_results_file_either_loads_or_raises_a_one_line_results_error(
        tmp_path: Path, doc: dict[str, Any]) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps(doc))
    try:
        run = load_run(path)
    except ResultsError as exc:
        assert str(exc).startswith(f"{path}: ")
        assert "\n" not in str(exc)
    else:
        # What loaded is safe to use: every reader works on it without an error of its own.
        assert all(c.status in ("ok", "failed", "skipped") for c in run.cases)
        assert len(to_dataframe([run])) == len(run.cases)
        try:
            comparison = compare_runs(run, run)
        except UsageError:  # no case to compare: a message, not a crash
            assert not run.cases
        else:
            assert {r.case_id for r in comparison.rows} == {c.id for c in run.cases}
