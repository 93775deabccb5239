"""The results file: its schema, an atomic writer that saves after every case, and loaders that
read one or more files (size-limited, schema-checked) into runs or a pandas DataFrame.

schema_version history (refuse versions not listed here):
  1 - first version: suite, run, environment, cases[] with params, status, metrics, samples.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import tempfile
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.errors import OutputError, ResultsError

if TYPE_CHECKING:
    import pandas as pd

# The results format. Each change, and whether older readers can read the new files:
#   1  first version.
#      Additions within 1 (optional keys; readers of 1 ignore them): collectors.nvml.per_device
#      and summary.devices (telemetry of every GPU of a case); ranks[].files and
#      ranks[].collector_errors (ddp); collectors.flops.forward_flops and backward_flops (a count
#      whose backward/forward ratio or MFU is impossible is now null with an error, where earlier
#      files may hold it).
# A key removed or changing meaning needs a new version, and readers refuse versions they do not know.
SCHEMA_VERSION = 1
RESULTS_NAME = "results.json"
# A results file of 1,000 cases with raw samples is a few MB; anything far larger is not ours.
MAX_RESULTS_BYTES = 64 * 2**20


def now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


@cache
def schema() -> dict[str, Any]:
    path = Path(__file__).with_name("results.schema.json")
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return loaded


def _finite(value: Any) -> Any:
    """JSON has no NaN or Infinity; store them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


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

    def __init__(self, out_dir: Path, suite: dict[str, Any], environment: dict[str, Any],
                 run: dict[str, Any], cases: list[dict[str, Any]] | None = None) -> None:
        self.path = out_dir / RESULTS_NAME
        self.doc: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "suite": suite,
            "run": {"started": now(), "finished": None, "status": "running", **run},
            "environment": environment,
            "cases": list(cases or []),
        }
        self.flush()

    def add(self, case: dict[str, Any]) -> None:
        self.doc["cases"].append(case)
        self.flush()

    def finish(self, status: str = "complete", extra: dict[str, Any] | None = None) -> None:
        self.doc["run"]["finished"] = now()
        self.doc["run"]["status"] = status
        if extra:
            self.doc.update(extra)
        self.flush()

    def flush(self) -> None:
        try:
            atomic_write_text(self.path, json.dumps(_finite(self.doc), indent=1, allow_nan=False))
        except OSError as exc:
            raise OutputError(f"{self.path}: cannot write results ({exc.strerror or exc})") from None


@dataclass(frozen=True)
class Run:
    """One loaded results file."""

    path: Path
    label: str
    doc: dict[str, Any]

    @property
    def cases(self) -> list[dict[str, Any]]:
        cases: list[dict[str, Any]] = self.doc["cases"]
        return cases

    @property
    def environment(self) -> dict[str, Any]:
        env: dict[str, Any] = self.doc["environment"]
        return env

    def case(self, case_id: str) -> dict[str, Any] | None:
        return next((c for c in self.cases if c["id"] == case_id), None)


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
    validate_doc(doc, str(file))
    return Run(path=file, label=label or default_label(file), doc=doc)


def default_label(file: Path) -> str:
    return file.parent.name or file.stem


def validate_doc(doc: Any, source: str) -> None:
    if not isinstance(doc, dict):
        raise ResultsError(f"{source}: not a bench results file (top level is not an object)")
    version = doc.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ResultsError(f"{source}: schema_version: {version!r} is not supported "
                           f"(this bench reads version {SCHEMA_VERSION})")
    import jsonschema

    # jsonschema checks every element of every raw sample array one by one, which is most of
    # the time for a large file (seconds for 1,000 cases). It sees a short prefix of each long
    # array instead; _check_long_arrays checks the full arrays with plain loops.
    validator = jsonschema.Draft202012Validator(schema())
    error = jsonschema.exceptions.best_match(validator.iter_errors(_schema_view(doc)))
    if error is not None:
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in error.absolute_path).lstrip(".")
        raise ResultsError(f"{source}: {where or 'top level'}: {' '.join(error.message.split())[:300]}")
    _check_long_arrays(doc, source)
    seen: set[str] = set()
    for i, case in enumerate(doc["cases"]):
        if case["id"] in seen:
            raise ResultsError(f"{source}: cases[{i}].id: duplicate case id {case['id']!r}")
        seen.add(case["id"])


_PREFIX = 8
# Raw sample arrays whose every element must be a positive (or non-negative) number.
_POSITIVE = ("window_throughput", "window_s")
_NON_NEGATIVE = ("step_time_ms",)


def _schema_view(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _schema_view(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_schema_view(v) for v in node[:_PREFIX]] if len(node) > _PREFIX else [_schema_view(v) for v in node]
    return node


def _check_long_arrays(doc: dict[str, Any], source: str) -> None:
    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            for k, v in node.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(node, list) and len(node) > _PREFIX:
            # The schema saw the first elements; the rest must be of the same kind.
            kinds = {_kind(v) for v in node[:_PREFIX]}
            for i in range(_PREFIX, len(node)):
                if _kind(node[i]) not in kinds:
                    raise ResultsError(f"{source}: {where}[{i}]: {node[i]!r} does not match the elements before it")
                if isinstance(node[i], (dict, list)):
                    walk(node[i], f"{where}[{i}]")

    walk(doc, "")
    for i, case in enumerate(doc["cases"]):
        samples = case.get("samples") or {}
        for key, positive in [(k, True) for k in _POSITIVE] + [(k, False) for k in _NON_NEGATIVE]:
            for j, v in enumerate(samples.get(key) or []):
                if not isinstance(v, (int, float)) or isinstance(v, bool) or (v <= 0 if positive else v < 0):
                    raise ResultsError(f"{source}: cases[{i}].samples.{key}[{j}]: {v!r} is not a "
                                       f"{'positive' if positive else 'non-negative'} number")


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return type(value).__name__


def load_runs(paths: list[str | Path]) -> list[Run]:
    runs = [load_run(p) for p in paths]
    # Folder names label runs; where two coincide, fall back to the file paths.
    labels = [r.label for r in runs]
    if len(set(labels)) < len(labels):
        runs = [Run(r.path, str(r.path.parent) if r.path.name == RESULTS_NAME else str(r.path), r.doc)
                for r in runs]
    return runs


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else k, v, out)
    else:
        out[prefix] = value


def to_dataframe(runs: list[Run]) -> pd.DataFrame:
    """One row per case and run: ``run``, ``id``, ``status``, ``error``, the parameters as
    ``params.*`` and the metrics as ``metrics.*`` (``throughput.ci95`` split into low/high)."""
    import pandas as pd

    rows = []
    for run in runs:
        for case in run.cases:
            row: dict[str, Any] = {"run": run.label, "suite": run.doc["suite"]["name"], "id": case["id"],
                                   "status": case["status"], "error": case.get("error")}
            _flatten("params", case["params"], row)
            metrics = dict(case.get("metrics") or {})
            ci = (metrics.get("throughput") or {}).get("ci95")
            _flatten("metrics", metrics, row)
            if ci:
                row.pop("metrics.throughput.ci95", None)
                row["metrics.throughput.ci95_low"], row["metrics.throughput.ci95_high"] = ci
            rows.append(row)
    return pd.DataFrame(rows)
