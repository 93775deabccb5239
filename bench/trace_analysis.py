"""Where the GPU's time went during the profiled steps: the trace-only analyses of Holistic Trace
Analysis (HTA, ``pip install HolisticTraceAnalysis``) over the Chrome traces that ``profile: torch``
exports, summarised per rank into ``collectors.trace_analysis``.

Four analyses, with HTA's definitions:

* temporal breakdown: from the first GPU event's start to the last one's end, the time some
  compute kernel ran (``compute``), the time no GPU event ran on any stream (``idle``), and the
  rest, busy without computing (``non_compute``: NCCL kernels and memory copies not hidden under
  computation);
* idle time per stream, each gap before a kernel put in one class: ``host_wait`` when the host
  launched the kernel only after the previous one had ended, else ``kernel_wait`` when the gap is
  under 30 µs (HTA's ``consecutive_kernel_delay``, compared with the trace's microseconds), else
  ``other`` (queued in time but waiting, e.g. for another stream's event);
* communication/computation overlap: of the union of NCCL kernels' time, the share during which
  a compute kernel ran too;
* the kernels with the most time (HTA's breakdown keeps compute, communication and memory ones).

Which code computes them. HTA 0.5.0 was tried here with pandas 3.1, numpy 2.4 and plotly 7.1 and
works, so it is the first choice, and the record says ``source: "hta"``; pandas 3.1 warns that
HTA's ``inplace=`` calls go in pandas 4, so a later pandas may break it. It is not a hard dependency:
its package requires jupyterlab and pytest (a hundred packages) for analyses that need only
pandas, networkx and pydot, and the lent GPU machines have no package index. So HTA is an
optional extra (``pip install -e '.[trace]'``; ``.ci/run`` installs it without its declared
dependencies), and where it is missing, or raises on a trace (its internals move between
releases), this module computes the same definitions itself with pandas over the trace events
(``source: "bench"``, with a note saying why). The tests hold both paths to the same hand-worked
figures on ``tests/data/traces/``. One known difference: HTA's temporal breakdown counts any
event on a GPU stream, ``cuda_sync`` waits included, where bench's counts kernels, copies and
memsets only, as HTA's idle breakdown does.

HTA runs in the coordinator, after the case, never in the measured process: parsing a trace takes
a second or so. Its parser is asked not to fork worker processes (the coordinator has threads),
and to keep the last profiled step: bench's profiler synchronises after each step, so the last
one is complete, where HTA by default drops it as possibly cut off.
"""

from __future__ import annotations

import gzip
import json
import logging
import re
import time
import warnings
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from bench.records import CaseRecord, KernelTime, RankTraceAnalysis, TraceAnalysisRecord

if TYPE_CHECKING:
    import pandas as pd

KERNEL_WAIT_US = 30.0
TOP_KERNELS = 10
# The GPU events of a Kineto trace (HTA's idle breakdown's list, less the spellings of other
# tracers); ``cuda_runtime``/``cuda_driver`` events carry the launch the ``correlation`` names.
GPU_CATEGORIES = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})
LAUNCH_CATEGORIES = frozenset({"cuda_runtime", "cuda_driver"})
NO_KERNELS = "no GPU kernels in the trace"

# HTA's kernel classes (hta.utils.utils), kept identical so that both paths agree.
_COMMUNICATION = re.compile(r"^nccl.*Kernel")
_MEMORY = re.compile(r"(^Memcpy)|(^Memset)|(^dma)")
_NOT_COMPUTE = re.compile(r"(^nccl.*Kernel)|(.*(Memcpy)|(Memset))|(.*Sync)")
KernelType = Literal["compute", "communication", "memory", "other"]
_HTA_TYPES: dict[str, KernelType] = {"COMPUTATION": "compute", "COMMUNICATION": "communication",
                                     "MEMORY": "memory", "OTHER": "other"}


class TraceReadError(Exception):
    """A trace file that cannot be read as a Chrome trace."""


def kernel_type(name: str) -> KernelType:
    if _COMMUNICATION.match(name):
        return "communication"
    if _MEMORY.match(name):
        return "memory"
    return "other" if _NOT_COMPUTE.match(name) else "compute"


def read_trace(path: Path) -> dict[str, Any]:
    """A Chrome trace, gzipped (as torch writes a ``.gz`` name) or not."""
    try:
        raw = path.read_bytes()
        text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        doc = json.loads(text)
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # BadGzipFile, JSONDecodeError: ValueErrors
        raise TraceReadError(f"{path.name}: cannot read the trace: {type(exc).__name__}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise TraceReadError(f"{path.name}: not a Chrome trace (no traceEvents list)")
    return doc


def gpu_events(doc: dict[str, Any]) -> pd.DataFrame:
    """The trace's kernels, copies and memsets: name, ts, end, stream, and ``launched``, when the
    host's launch call started (NaN where the trace has no launch for the correlation id)."""
    import pandas as pd

    events = [e for e in doc["traceEvents"] if isinstance(e, dict) and e.get("ph") == "X"]
    launched = {e["args"]["correlation"]: float(e["ts"]) for e in events
                if e.get("cat") in LAUNCH_CATEGORIES and "correlation" in (e.get("args") or {})}
    rows = [(str(e.get("name", "")), float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0)), int(e["args"]["stream"]),
             launched.get(e["args"].get("correlation"), float("nan")))
            for e in events if e.get("cat") in GPU_CATEGORIES and "stream" in (e.get("args") or {})]
    return pd.DataFrame(rows, columns=["name", "ts", "end", "stream", "launched"])


def _union(intervals: pd.DataFrame) -> pd.DataFrame:
    """Overlapping [ts, end) intervals merged: sorted, disjoint."""
    ordered = intervals.sort_values("ts")
    group = (ordered["ts"] > ordered["end"].cummax().shift()).cumsum()
    return ordered.groupby(group).agg(ts=("ts", "min"), end=("end", "max")).reset_index(drop=True)


def _length(union: pd.DataFrame) -> float:
    return float((union["end"] - union["ts"]).sum())


def _intersection(a: pd.DataFrame, b: pd.DataFrame) -> float:
    """Time in both of two unions (sorted, disjoint): a merge walk."""
    total, i, j = 0.0, 0, 0
    a_ts, a_end, b_ts, b_end = (list(x) for x in (a["ts"], a["end"], b["ts"], b["end"]))
    while i < len(a_ts) and j < len(b_ts):
        total += max(0.0, min(a_end[i], b_end[j]) - max(a_ts[i], b_ts[j]))
        if a_end[i] < b_end[j]:
            i += 1
        else:
            j += 1
    return total


def _percent(part: float, whole: float) -> float:
    return 100 * part / whole if whole > 0 else 0.0


def _bench_rank(rank: int, trace: str, events: pd.DataFrame, top: int, threshold: float) -> RankTraceAnalysis:
    """HTA's definitions (module docstring) over one trace's GPU events."""
    events = events.assign(type=events["name"].map(kernel_type))
    span = float(events["end"].max() - events["ts"].min())
    idle = span - _length(_union(events))
    compute = _union(events[events["type"] == "compute"])
    communication = _union(events[events["type"] == "communication"])
    compute_us = _length(compute)
    waits = {"host_wait": 0.0, "kernel_wait": 0.0, "other": 0.0}
    for _, stream in events.sort_values("ts").groupby("stream"):
        previous_end = stream["end"].shift()
        gap = stream["ts"] - previous_end
        host = stream["launched"] > previous_end
        kernel = ~host & (gap < threshold)
        waits["host_wait"] += float(gap[host].sum())
        waits["kernel_wait"] += float(gap[kernel].sum())
        waits["other"] += float(gap[~host & ~kernel].sum())
    kernels = (events[events["type"] != "other"].assign(dur=events["end"] - events["ts"])
               .groupby(["name", "type"], as_index=False).agg(total=("dur", "sum"), count=("dur", "size"))
               .sort_values(["total", "name"], ascending=[False, True]).head(top))
    overlap = (_percent(_intersection(communication, compute), _length(communication))
               if len(communication) else None)
    return _rank_record(rank, trace, span, compute_us, span - compute_us - idle, idle, waits, overlap,
                        [KernelTime(name=str(k["name"]), type=k["type"], total_us=float(k["total"]), count=int(k["count"]))
                         for k in kernels.to_dict("records")])


def _rank_record(rank: int, trace: str, span: float, compute: float, non_compute: float, idle: float,
                 waits: dict[str, float], overlap: float | None, kernels: list[KernelTime]) -> RankTraceAnalysis:
    return RankTraceAnalysis(
        rank=rank, trace=trace, span_us=span, compute_us=compute, non_compute_us=non_compute, idle_us=idle,
        compute_pct=_percent(compute, span), non_compute_pct=_percent(non_compute, span), idle_pct=_percent(idle, span),
        idle_host_wait_us=waits["host_wait"], idle_kernel_wait_us=waits["kernel_wait"], idle_other_us=waits["other"],
        comm_comp_overlap_pct=overlap, kernels=kernels)


@contextmanager
def _quiet_hta() -> Iterator[None]:
    """HTA logs each file it parses and warns about short traces on the console, where the run's
    progress is; numpy warns of the 0/0 of an overlap without communication (which the record
    holds as null), and pandas 3 of HTA's use of ``inplace=``, removed in pandas 4. The record's
    notes say what matters."""
    logger = logging.getLogger("hta")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _hta_ranks(files: dict[int, tuple[Path, str, bool]], top: int, threshold: float) -> list[RankTraceAnalysis]:
    """The four analyses through HTA's analyzers, on the traces with GPU events (the flag)."""
    from hta.analyzers.breakdown_analysis import BreakdownAnalysis
    from hta.analyzers.communication_analysis import CommunicationAnalysis
    from hta.common.trace import Trace

    paths = {rank: str(path.resolve()) for rank, (path, _, has_gpu) in files.items() if has_gpu}
    with _quiet_hta():
        trace = Trace(trace_files=paths, trace_dir=str(Path(next(iter(paths.values()))).parent))
        trace.load_traces(include_last_profiler_step=True, use_multiprocessing=False)
        temporal = BreakdownAnalysis.get_temporal_breakdown(trace, visualize=False).set_index("rank")
        overlap = CommunicationAnalysis.get_comm_comp_overlap(trace, visualize=False).set_index("rank")
        # Per type, the top ``top`` (num_kernels wins over duration_ratio); the rest are "others".
        _, kernels = BreakdownAnalysis.get_gpu_kernel_breakdown(trace, visualize=False, num_kernels=top,
                                                                include_memory_kernels=True)
        idle = {rank: BreakdownAnalysis.get_idle_time_breakdown(trace, int(threshold), rank=rank, visualize=False)[0]
                for rank in paths}
    out = []
    for rank in paths:
        t = temporal.loc[rank]
        waits = idle[rank].groupby("idle_category")["idle_time"].sum()
        ratio = overlap.loc[rank, "comp_comm_overlap_pctg"]
        mine = kernels[(kernels["rank"] == rank) & (kernels["name"] != "others")]
        mine = mine.sort_values(["sum (us)", "name"], ascending=[False, True]).head(top)
        out.append(_rank_record(
            rank, files[rank][1], float(t["kernel_time(us)"]), float(t["compute_time(us)"]),
            float(t["non_compute_time(us)"]), float(t["idle_time(us)"]),
            {k: float(waits.get(k, 0.0)) for k in ("host_wait", "kernel_wait", "other")},
            # 0/0 without communication kernels: NaN, which the record holds as null.
            float(ratio) if ratio == ratio else None,
            # HTA gives sum and mean per kernel name, not the count: their ratio is the count.
            [KernelTime(name=str(k["name"]), type=_HTA_TYPES[str(k["kernel_type"])], total_us=float(k["sum (us)"]),
                        count=round(float(k["sum (us)"]) / float(k["mean (us)"])) if k["mean (us)"] else 1)
             for _, k in mine.iterrows()]))
    return out


def analyse_traces(paths: list[Path], root: Path | None = None, *, top: int = TOP_KERNELS,
                   use_hta: bool = True) -> TraceAnalysisRecord:
    """HTA's trace-only analyses of one case's traces (one per rank), each named relative to
    ``root``. Never raises for a bad trace: the record's ``error`` says what was wrong."""
    start = time.perf_counter()
    threshold = KERNEL_WAIT_US

    def done(**fields: Any) -> TraceAnalysisRecord:
        return TraceAnalysisRecord(cost_s=time.perf_counter() - start, **fields)

    if not paths:
        return done(error="no trace files to analyse")
    names = [str(p.relative_to(root)) if root is not None and p.is_relative_to(root) else str(p) for p in paths]
    try:
        docs = [read_trace(p) for p in paths]
    except TraceReadError as exc:
        return done(error=str(exc))
    # The rank each trace names; their order in the files where some do not, or two name one.
    named = [r for d in docs if isinstance(r := (d.get("distributedInfo") or {}).get("rank"), int) and r >= 0]
    ranks = named if len(named) == len(docs) and len(set(named)) == len(named) else list(range(len(docs)))
    events = {rank: gpu_events(doc) for rank, doc in zip(ranks, docs, strict=True)}
    files = {rank: (path, name, not events[rank].empty) for rank, path, name in zip(ranks, paths, names, strict=True)}
    notes = [f"{name}: {NO_KERNELS}" for _, name, has_gpu in files.values() if not has_gpu]
    if not any(has_gpu for _, _, has_gpu in files.values()):
        return done(error=NO_KERNELS + (" (was CUPTI available to the profiler?)" if len(paths) == 1 else
                                        f" (none of the {len(paths)} traces; was CUPTI available to the profiler?)"))
    if use_hta:
        try:
            return done(source="hta", ranks=_hta_ranks(files, top, threshold), kernel_wait_threshold_us=threshold,
                        notes=notes)
        except ImportError as exc:
            notes.append(f"HolisticTraceAnalysis is not installed ({exc.name or exc}): bench's own code computed "
                         "HTA's definitions")
        except Exception as exc:  # HTA's internals on a trace it does not expect: our own code instead
            notes.append(f"HTA failed ({type(exc).__name__}: {' '.join(str(exc).split())[:200]}): bench's own "
                         "code computed HTA's definitions")
    try:
        analysed = [_bench_rank(rank, name, events[rank], top, threshold)
                    for rank, (_, name, has_gpu) in files.items() if has_gpu]
    except Exception as exc:  # a trace shaped unlike any we know: recorded, never raised into the run
        return done(error=f"{type(exc).__name__}: {exc}", notes=notes)
    return done(source="bench", ranks=analysed, kernel_wait_threshold_us=threshold, notes=notes)


def attach(record: CaseRecord, out_dir: Path) -> CaseRecord:
    """The case's record with ``collectors.trace_analysis`` where the case ran on CUDA and the
    torch profiler wrote traces; the record unchanged otherwise. A failure here becomes the
    analysis's error: the case was measured, and stays as it was."""
    profiler = record.collectors.torch_profiler
    if not (record.device or "").startswith("cuda") or profiler is None or not profiler.traces:
        return record
    try:
        analysis = analyse_traces([out_dir / t for t in profiler.traces], out_dir)
    except Exception as exc:
        analysis = TraceAnalysisRecord(error=f"{type(exc).__name__}: {exc}")
    collectors = record.collectors.model_copy(update={"trace_analysis": analysis})
    return record.model_copy(update={"collectors": collectors})
