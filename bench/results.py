"""The results file: an atomic writer that saves after every case, and loaders that read one or
more files (size-limited, every case validated into the typed records of ``bench.records``) into
runs or a pandas DataFrame."""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from bench.errors import OutputError, ResultsError
from bench.records import (
    CaseRecord,
    EffectRecord,
    Environment,
    ResultsDoc,
    RoundsInfo,
    RunInfo,
    ScalingEntry,
    SuiteInfo,
    TrialRecord,
    dump,
)

if TYPE_CHECKING:
    import pandas as pd

# The results format. Each change, and whether older readers can read the new files:
#   1  first version.
#      Additions within 1 (optional keys; readers of 1 ignore them): collectors.nvml.per_device
#      and summary.devices (telemetry of every GPU of a case); ranks[].files and
#      ranks[].collector_errors (ddp); collectors.flops.forward_flops and backward_flops (a count
#      whose backward/forward ratio or MFU is impossible is now null with an error, where earlier
#      files may hold it). From here on the records are typed (bench/records.py) and the JSON
#      Schema is generated from them; the format itself did not change.
#   2  cases are measured in randomized rounds of trials: cases[].trials, samples.window_trial,
#      top-level rounds and effects; metrics.throughput.median is the median of trial medians and
#      ci95 its interval over trials (in 1, the median of one stretch's windows and an interval
#      from those windows). Version-1 files still load, each case as one trial, labelled.
#      Additions within 2 (optional keys): metrics.compile_s and metrics.graph_breaks (cases with
#      `compile`); params gain precision, compile, channels_last, grad_accum,
#      activation_checkpointing and reshard_after_forward, and mode may be `fsdp`.
# A key removed or changing meaning needs a new version, and readers refuse versions they do not know.
SCHEMA_VERSION: Literal[2] = 2
READABLE_VERSIONS = (1, 2)
V1_INTERVAL = "windows of one stretch (results version 1): within-run precision only, not run-to-run"
RESULTS_NAME = "results.json"
# A results file of 1,000 cases with raw samples is a few MB; anything far larger is not ours.
MAX_RESULTS_BYTES = 64 * 2**20


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same folder and rename over the target: a reader (or a
    crash) sees the old file or the new one, never half of one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        # mkstemp makes the file private (0600); results and reports are meant to be shared and
        # published, so give them the permissions any other new file would get.
        os.fchmod(fd, 0o666 & ~_UMASK)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_output(path: Path, text: str) -> Path:
    """Write an output file a user named (a report, a summary) atomically, creating its folder;
    a failure is an OutputError naming the file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)
    except OSError as exc:
        raise OutputError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def prepare_output(out_dir: Path) -> Path:
    """Create the output folder and prove it is writable before any case runs."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / ".write-test"
        probe.write_text("ok", encoding="utf-8")
        probe.unlink()
    except OSError as exc:
        raise OutputError(f"{out_dir}: cannot write results here ({exc.strerror or exc})") from None
    return out_dir


class ResultsWriter:
    """Holds the run document and rewrites ``results.json`` atomically after every case, so an
    interrupted run keeps every case that finished."""

    def __init__(self, out_dir: Path, suite: SuiteInfo, environment: Environment, run: dict[str, Any],
                 cases: list[CaseRecord] | None = None, rounds: RoundsInfo | None = None) -> None:
        self.path = out_dir / RESULTS_NAME
        self.doc = ResultsDoc(
            schema_version=SCHEMA_VERSION, suite=suite,
            run=RunInfo.model_validate({"started": now(), "finished": None, "status": "running", **run}),
            environment=environment, cases=list(cases or []), rounds=rounds)
        self.flush()

    def add(self, case: CaseRecord) -> None:
        self.doc.cases.append(case)
        self.flush()

    def put(self, case: CaseRecord) -> None:
        """Add a case, or replace the record of a case of the same id (its trials so far)."""
        cases = self.doc.cases
        index = next((i for i, c in enumerate(cases) if c.id == case.id), None)
        if index is None:
            cases.append(case)
        else:
            cases[index] = case
        self.flush()

    def finish(self, status: Literal["complete", "interrupted"] = "complete",
               scaling: list[ScalingEntry] | None = None, effects: list[EffectRecord] | None = None) -> None:
        self.doc.run.finished = now()
        self.doc.run.status = status
        if scaling is not None:
            self.doc.scaling = scaling
        if effects is not None:
            self.doc.effects = effects
        self.flush()

    def flush(self) -> None:
        try:
            atomic_write_text(self.path, json.dumps(dump(self.doc), indent=1, allow_nan=False))
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write results ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class Run:
    """One loaded results file."""

    path: Path
    label: str
    doc: ResultsDoc

    @property
    def cases(self) -> list[CaseRecord]:
        return self.doc.cases

    @property
    def environment(self) -> Environment:
        return self.doc.environment

    def case(self, case_id: str) -> CaseRecord | None:
        return next((c for c in self.cases if c.id == case_id), None)


def resolve_results_path(path: Path) -> Path:
    return path / RESULTS_NAME if path.is_dir() else path


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def load_run(path: str | Path, label: str | None = None) -> Run:
    """Read and check one results file (or a folder holding ``results.json``)."""
    file = resolve_results_path(Path(path))
    try:
        size = file.stat().st_size
    except FileNotFoundError:
        raise ResultsError(f"{file}: no such results file") from None
    except OSError as exc:
        raise ResultsError(f"{file}: cannot read ({exc.strerror})") from None
    if size > MAX_RESULTS_BYTES:
        raise ResultsError(f"{file}: {size} bytes is larger than the {MAX_RESULTS_BYTES} bytes a results file may have")
    try:
        text = file.read_text(encoding="utf-8")
        doc = json.loads(text, parse_constant=_reject_constant)
    except UnicodeDecodeError as exc:
        raise ResultsError(f"{file}: not UTF-8 text (byte {exc.start})") from None
    except json.JSONDecodeError as exc:
        # A file cut off mid-write (a killed writer without our atomic rename, a partial copy)
        # usually fails at its very end or no longer ends with the closing brace.
        stripped = text.rstrip()
        hint = " (the file looks truncated)" if exc.pos >= len(stripped) - 1 or not stripped.endswith("}") else ""
        raise ResultsError(f"{file}: line {exc.lineno}, column {exc.colno}: not valid JSON: {exc.msg}{hint}") from None
    except ValueError as exc:
        raise ResultsError(f"{file}: {exc}") from None
    except OSError as exc:
        raise ResultsError(f"{file}: cannot read ({exc.strerror})") from None
    return Run(path=file, label=label or default_label(file), doc=validate_doc(doc, str(file)))


def default_label(file: Path) -> str:
    return file.parent.name or file.stem


def validate_doc(doc: Any, source: str) -> ResultsDoc:
    """The typed document, or a ResultsError naming the file and the key path of the first
    problem (every case is checked, whatever its position)."""
    if not isinstance(doc, dict):
        raise ResultsError(f"{source}: not a bench results file (top level is not an object)")
    version = doc.get("schema_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise ResultsError(f"{source}: schema_version: {version!r} is not supported "
                           f"(this bench reads versions {', '.join(map(str, READABLE_VERSIONS))})")
    try:
        typed = ResultsDoc.model_validate(doc)
    except ValidationError as exc:
        raise ResultsError(f"{source}: {describe_validation(exc)}") from None
    if typed.schema_version == 1:
        _as_one_trial_each(typed)
    seen: set[str] = set()
    for i, case in enumerate(typed.cases):
        if case.id in seen:
            raise ResultsError(f"{source}: cases[{i}].id: duplicate case id {case.id!r}")
        seen.add(case.id)
    return typed


def _as_one_trial_each(doc: ResultsDoc) -> None:
    """A version-1 case was one contiguous stretch: one trial, whose windows are the stretch's."""
    for case in doc.cases:
        if case.metrics is None or case.samples is None or case.trials is not None:
            continue
        case.trials = [TrialRecord(round=0, position=0, start_s=0.0, median=case.metrics.throughput.median,
                                   windows=list(case.samples.window_throughput))]
        case.metrics.throughput.interval = case.metrics.throughput.interval or V1_INTERVAL
        case.metrics.throughput.trials = 1


def describe_validation(exc: ValidationError) -> str:
    """The first error of a validation as ``key.path[3].name: message (got VALUE)``."""
    error = exc.errors(include_url=False)[0]
    where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error["loc"]).lstrip(".")
    message = error["msg"]
    if error["type"] == "missing":
        message = "required key is missing"
    elif "input" in error and not isinstance(error["input"], (dict, list)):
        message += f" (got {error['input']!r:.80})"
    return f"{where or 'top level'}: {' '.join(message.split())[:300]}"


def load_runs(paths: list[str | Path]) -> list[Run]:
    runs = [load_run(p) for p in paths]
    # Folder names label runs; where two coincide, fall back to the file paths.
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        runs = [Run(r.path, str(r.path.parent) if r.path.name == RESULTS_NAME else str(r.path), r.doc)
                for r in runs]
    return runs


def flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    """Nested dicts as dotted keys (``params.model.name``) with their leaf values, into ``out``."""
    if isinstance(value, dict):
        for k, v in value.items():
            flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value


def to_dataframe(runs: list[Run]) -> pd.DataFrame:
    """One row per case and run: ``run``, ``id``, ``status``, ``error``, the parameters as
    ``params.*`` and the metrics as ``metrics.*`` (``throughput.ci95`` split into low/high)."""
    import pandas as pd

    rows = []
    for run in runs:
        for case in run.cases:
            row: dict[str, Any] = {"run": run.label, "suite": run.doc.suite.name, "id": case.id,
                                   "status": case.status, "error": case.error}
            flatten("params", case.params.as_dict(), row)
            if case.metrics is not None:
                metrics = dump(case.metrics)
                low, high = metrics["throughput"].pop("ci95")
                flatten("metrics", metrics, row)
                row["metrics.throughput.ci95_low"], row["metrics.throughput.ci95_high"] = low, high
            rows.append(row)
    return pd.DataFrame(rows)
