"""Export a run to other tools' formats, so its results can feed the dashboards that read them.

``pytest-benchmark``: pytest-benchmark's JSON (what ``pytest --benchmark-json`` writes), read by
``pytest-benchmark compare``, github-action-benchmark and Bencher's pytest adapter. One benchmark
per case that is ok. Those tools expect a time per call, lower is better; a bench case measures
training throughput, so each case becomes the time of one training step: one value per trial
(the unit bench repeats, so ``rounds`` is the number of trials), derived from the trial's median
throughput as ``bench compare`` derives it (``bench.rules.MetricSpec.samples``). ``ops`` is then
training steps per second; the throughput itself, its interval and the case's parameters go to
``extra_info``. The statistics are computed by pytest-benchmark's own ``Stats``, so its
definitions (quartiles, outliers, ``ops``) hold exactly.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from bench.environment import fingerprint
from bench.errors import UsageError
from bench.records import CaseRecord, Environment
from bench.registry import Registry, UnknownName
from bench.results import Run, flatten, load_run
from bench.rules import METRICS


@dataclass(frozen=True)
class Exported:
    """A run in another format, ready to write, and what the reader should know about it."""

    text: str
    count: int  # benchmarks written
    warnings: list[str] = field(default_factory=list)


FORMATS: Registry[Callable[[Run], Exported]] = Registry("format")


def export_run(path: str | Path, format_name: str) -> Exported:
    """Read a results file (or a folder holding one) and convert it; nothing is written here, so
    a bad file or format leaves no partial output behind."""
    try:
        convert = FORMATS.get(format_name)
    except UnknownName as exc:
        raise UsageError(f"--format: {exc}") from None
    return convert(load_run(path))


# --- pytest-benchmark ------------------------------------------------------------------------


class MachineInfo(TypedDict, total=False):
    """pytest-benchmark's ``machine_info`` (its ``pytest_benchmark_generate_machine_info``), from
    what a bench environment records; bench's own facts are added under their own keys."""

    node: str
    processor: str | None
    machine: str | None
    python_compiler: str | None
    python_implementation: str | None
    python_implementation_version: str
    python_version: str
    python_build: list[str] | None
    release: str | None
    system: str | None
    cpu: dict[str, Any]
    platform: str | None
    fingerprint: dict[str, str]
    gpus: list[dict[str, Any]]


class CommitInfo(TypedDict):
    """pytest-benchmark's ``commit_info``; null where the run recorded no such fact."""

    id: str | None
    time: str | None
    author_time: str | None
    dirty: bool | None
    project: str | None
    branch: str | None


class Benchmark(TypedDict):
    group: str
    name: str
    fullname: str
    params: dict[str, Any]
    param: str
    extra_info: dict[str, Any]
    options: dict[str, Any]
    stats: dict[str, Any]


class PytestBenchmarkDoc(TypedDict):
    machine_info: MachineInfo
    commit_info: CommitInfo
    benchmarks: list[Benchmark]
    datetime: str
    version: str


_IMPLEMENTATIONS = {"cpython": "CPython", "pypy": "PyPy", "ironpython": "IronPython", "jython": "Jython"}
# platform.platform() on Linux: SYSTEM-RELEASE-MACHINE-with-LIBC. The release may hold dashes
# (6.18.44-fc-v657), a machine name does not (x86_64, aarch64). Other systems' strings have other
# shapes; for them only the system is taken, rather than a guess.
_LINUX_PLATFORM = re.compile(r"^(?P<system>[^-]+)-(?P<release>.+)-(?P<machine>[^-]+)-with-.+$")


def _platform_parts(env: Environment) -> tuple[str | None, str | None, str | None]:
    text = env.extra("platform")
    if not isinstance(text, str) or not text:
        return None, None, None
    match = _LINUX_PLATFORM.match(text)
    if match is None:
        return text.split("-", 1)[0], None, None
    return match["system"], match["release"], match["machine"]


def machine_info(env: Environment) -> MachineInfo:
    system, release, machine = _platform_parts(env)
    implementation = env.extra("implementation")
    return MachineInfo(
        node=env.hostname,
        # platform.processor() on Linux is the architecture, or empty.
        processor=machine,
        machine=machine,
        python_compiler=None,
        python_implementation=_IMPLEMENTATIONS.get(implementation, implementation) if implementation else None,
        python_implementation_version=env.python,
        python_version=env.python,
        python_build=None,
        release=release,
        system=system,
        # py-cpuinfo's keys, as far as bench knows them.
        cpu={"brand_raw": env.cpu_model, "count": env.cores_logical, "arch_string_raw": machine},
        platform=env.extra("platform"),
        fingerprint=fingerprint(env),
        gpus=[gpu.model_dump(mode="json") for gpu in env.gpus],
    )


def commit_info(env: Environment) -> CommitInfo:
    git = env.git
    if git is None:
        return CommitInfo(id=None, time=None, author_time=None, dirty=None, project=None, branch=None)
    # bench records the commit and whether the tree was dirty; the rest only if a writer added it.
    return CommitInfo(id=git.commit, time=git.extra("time"), author_time=git.extra("author_time"),
                      dirty=git.dirty, project=git.extra("project"), branch=git.extra("branch"))


def step_seconds(case: CaseRecord) -> list[float]:
    """Seconds per training step, one value per trial in time order (the step time that trial's
    median throughput implies); empty where the case's samples cannot give it."""
    return [ms / 1000 for ms in METRICS.get("step_time_ms").samples(case, unit="trials")]


def _stats(seconds: list[float], iterations: int) -> dict[str, Any]:
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for value in seconds:
        stats.update(value)
    result: dict[str, Any] = stats.as_dict()
    result["iterations"] = iterations
    result["data"] = list(seconds)  # as `--benchmark-save-data` keeps them
    return result


def _benchmark(run: Run, case: CaseRecord, seconds: list[float]) -> Benchmark:
    assert case.metrics is not None  # only ok cases are exported
    throughput = case.metrics.throughput
    params = case.params.as_dict()
    flat: dict[str, Any] = {}
    flatten("", params, flat)  # scalar values, so `pytest-benchmark compare --group-by param:model.name` works
    suite = run.doc.suite.name
    return Benchmark(
        group=suite,
        name=case.id,
        # The suite's name, not its path: a series keeps its name when the suite file moves.
        fullname=f"{suite}::{case.id}",
        params=flat,
        param=case.id,
        extra_info={
            "throughput": throughput.median,
            "throughput_ci95": list(throughput.ci95),
            "throughput_unit": throughput.unit,
            "interval": throughput.interval,
            "trials": len(seconds),
            "unstable": case.metrics.unstable,
            "device": case.device,
            "warnings": list(case.warnings),
            "params": params,
        },
        options={"timer": "perf_counter", **(case.params.extra("measure") or {})},
        # A round is a trial; its value is the mean over the trial's steps, so `iterations` is the
        # steps a trial timed (on average: trials end on time, not on a step count).
        stats=_stats(seconds, max(1, round(case.metrics.steps / len(seconds)))),
    )


def to_pytest_benchmark(run: Run) -> Exported:
    from pytest_benchmark import __version__ as pytest_benchmark_version

    benchmarks: list[Benchmark] = []
    warnings: list[str] = []
    for case in run.cases:
        if not case.ok:
            continue
        seconds = step_seconds(case)
        if not seconds:
            warnings.append(f"{run.path}: case {case.id!r} has no trial timings to derive a step time from; left out")
            continue
        benchmarks.append(_benchmark(run, case, seconds))
    skipped = sum(not c.ok for c in run.cases)
    if skipped:
        warnings.append(f"{run.path}: {skipped} case(s) failed or skipped; only ok cases are exported")
    doc = PytestBenchmarkDoc(machine_info=machine_info(run.environment), commit_info=commit_info(run.environment),
                             benchmarks=benchmarks, datetime=run.doc.run.finished or run.doc.run.started,
                             version=pytest_benchmark_version)
    return Exported(json.dumps(doc, indent=4, allow_nan=False) + "\n", len(benchmarks), warnings)


FORMATS.add("pytest-benchmark", to_pytest_benchmark,
            "pytest-benchmark's JSON: one benchmark per ok case, seconds per training step per trial")
