"""One rank of a DDP or FSDP2 case, started by PyTorch's launcher (``python -m torch.distributed.run ...
-m bench.ddp_worker PAYLOAD.json``), which sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous.

Every rank builds and warms up once and then measures trials when the coordinator (``bench run``,
through ``bench.rounds``) asks, like a single-process case, but window times are agreed by an
all-reduce (max) at window edges: global throughput is all ranks' samples over the slowest rank's
time, and all ranks stop together. At the end the writing rank gathers the per-rank summaries and
sends the case's collectors and ranks; a rank that fails writes its error next to the payload so
the coordinator can report that rank's text.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import sys
import traceback
from multiprocessing.connection import Connection, Listener
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bench.environment import available_cores
from bench.measure import median
from bench.results import atomic_write_text
from bench.session import CaseSession
from bench.suite import CaseParams
from bench.training import fsdp_wrapper
from bench.userpath import forget_safe_path
from bench.worker import Skip, describe_error, select_device, set_threads


def _ddp_wrapper(params: CaseParams, device: torch.device) -> Any:
    from torch.nn.parallel import DistributedDataParallel as DDP

    options: dict[str, Any] = {
        "gradient_as_bucket_view": params.gradient_as_bucket_view,
        "static_graph": params.static_graph,
        "find_unused_parameters": params.find_unused_parameters,
    }
    if params.bucket_cap_mb is not None:
        options["bucket_cap_mb"] = params.bucket_cap_mb
    device_ids = [device.index] if device.type == "cuda" else None
    return lambda model: DDP(model, device_ids=device_ids, **options)


def _agree(device: torch.device) -> Any:
    buf = torch.zeros(1, dtype=torch.float64, device=device)

    def agree(seconds: float) -> float:
        buf.fill_(seconds)
        dist.all_reduce(buf, op=dist.ReduceOp.MAX)
        return float(buf.item())

    return agree


def _rank_summary(rank: int, local_rank: int, session: CaseSession, final: dict[str, Any]) -> dict[str, Any]:
    """What this rank alone knows, for the case record's ``ranks``: its own throughput over all its
    trials' windows, memory, and collector records (merged by ``aggregate``)."""
    local = session.local_window_s
    k = session.steps_per_window
    return {
        "rank": rank,
        "local_rank": local_rank,
        "host": socket.gethostname(),
        "device": str(session.device),
        "threads": session.threads,
        "batch": session.batch,
        "window_s": local,
        # A step is micro_batches micro-batches of batch samples (grad_accum).
        "throughput_median": median([k * session.batch * session.micro_batches / s for s in local]) if local else None,
        "peak_rss_mb": final["peak_rss_mb"],
        "cuda_peak_allocated_mb": final.get("cuda_peak_allocated_mb"),
        "step_time_ms_p50": median(session.step_ms) if session.step_ms else None,
        "warnings": list(session.warnings),
        "collectors": final.get("collectors") or {},
    }


# The collector fields that name files; each rank writes its own, and the record names them all.
FILE_FIELDS = {"torch_profiler": ("traces",), "pyspy": ("flamegraph", "speedscope")}


def _files(collectors: dict[str, Any]) -> list[str]:
    found: list[str] = []
    for name, fields in FILE_FIELDS.items():
        for key in fields:
            value = (collectors.get(name) or {}).get(key)
            found.extend(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str) and v)
    return found


def _merge_collectors(record: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
    """The record's collectors are its writer's; each rank's own files and collector errors are
    kept in ``ranks`` so that nothing one rank saw is lost, and the profiler's traces (one per
    rank) are all named in ``torch_profiler.traces``."""
    names = sorted({name for r in ranks for name in r["collectors"]})
    written = {name: ((record.get("collectors") or {}).get(name) or {}).get("error") for name in names}
    for r in ranks:
        r["files"] = _files(r["collectors"])
        r["collector_errors"] = {name: (r["collectors"].get(name) or {}).get("error") for name in names
                                 if (r["collectors"].get(name) or {}).get("error")}
        # An error the record already shows (no NVML on any rank) is said once, there; one that
        # only some ranks met would otherwise be invisible.
        r["warnings"] = [*r["warnings"], *(f"collector {name}: {error}" for name, error in r["collector_errors"].items()
                                           if error != written.get(name))]
    # Last: the writer's own rank summary shares its collector records with ``record``.
    prof = (record.get("collectors") or {}).get("torch_profiler")
    if isinstance(prof, dict) and prof.get("error") is None:
        traces = [t for r in ranks for t in ((r["collectors"].get("torch_profiler") or {}).get("traces") or [])]
        prof["traces"] = list(dict.fromkeys(traces))
    _join_gpu_telemetry(record, ranks)
    _join_per_rank(record, ranks)


def _join_per_rank(record: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
    """Every rank times its own step anatomy and counts its own memory: the record lists them all.
    The case's phases (and the measured step beside them) are the slowest rank's, the one the
    others wait for at each all-reduce; its anatomy cost the largest any rank paid."""
    collectors = record.get("collectors") or {}
    anatomy = collectors.get("anatomy")
    if isinstance(anatomy, dict) and anatomy.get("error") is None:
        timed = [(r["rank"], r["collectors"]["anatomy"]) for r in ranks
                 if ((r["collectors"].get("anatomy") or {}).get("phases"))]
        if timed:
            per_rank = [{**a["phases"], "rank": rank} for rank, a in timed]
            slowest = max(per_rank, key=lambda p: p["step_ms"])
            measured = dict(timed)[slowest["rank"]].get("measured_step_ms")
            anatomy.update(ranks=per_rank, slowest_rank=slowest["rank"], measured_step_ms=measured,
                           phases={k: v for k, v in slowest.items() if k != "rank"},
                           cost_s=max(a.get("cost_s") or 0.0 for _, a in timed))
    memory = collectors.get("memory_breakdown")
    if isinstance(memory, dict) and memory.get("error") is None:
        counted = [{**r["collectors"]["memory_breakdown"]["categories"], "rank": r["rank"]} for r in ranks
                   if ((r["collectors"].get("memory_breakdown") or {}).get("categories"))]
        if counted:
            memory["ranks"] = counted


def _join_gpu_telemetry(record: dict[str, Any], ranks: list[dict[str, Any]]) -> None:
    """Each rank samples its own GPU; the case's telemetry covers all of them (the energy per
    sample of one rank's GPU is its share only). Where some rank has no telemetry (its error is
    among the warnings), the sums of power and energy are null: a partial total would read as the
    whole."""
    from bench.collectors.nvml import combine_summaries

    nvml = (record.get("collectors") or {}).get("nvml")
    if not isinstance(nvml, dict) or nvml.get("error") is not None:
        return
    have = [(r["rank"], r["collectors"]["nvml"]) for r in ranks
            if (r["collectors"].get("nvml") or {}).get("error") is None and r["collectors"]["nvml"].get("per_device")]
    per_device = [{**d, "rank": rank} for rank, t in have for d in t["per_device"]]
    devices = [{**d, "rank": rank} for rank, t in have for d in t.get("devices") or []]
    summary = combine_summaries([d["summary"] for d in per_device])
    if len(have) < len(ranks):
        summary.update(power_mean_w=None, energy_j=None, energy_per_sample_j=None)
    nvml.update(per_device=per_device, devices=devices, summary=summary)


def aggregate(record: dict[str, Any], ranks: list[dict[str, Any]]) -> dict[str, Any]:
    """The writing rank's record plus what only all ranks together know: per-rank throughput, the
    skew between the fastest and slowest rank, memory per rank and summed, and every rank's
    collector files and errors."""
    m = record["metrics"]
    per_rank = [r["throughput_median"] for r in ranks]
    m["throughput_per_rank"] = per_rank
    m["rank_skew"] = max(per_rank) / min(per_rank) - 1 if min(per_rank) > 0 else None
    m["peak_rss_mb_per_rank"] = [r["peak_rss_mb"] for r in ranks]
    m["peak_rss_mb"] = sum(m["peak_rss_mb_per_rank"])
    if all(r["cuda_peak_allocated_mb"] is not None for r in ranks):
        m["cuda_peak_allocated_mb_per_rank"] = [r["cuda_peak_allocated_mb"] for r in ranks]
    _merge_collectors(record, ranks)
    record["ranks"] = [{k: v for k, v in r.items() if k != "collectors"} for r in ranks]
    by_text: dict[str, list[int]] = {}
    for r in ranks:
        for w in r["warnings"]:
            by_text.setdefault(w, []).append(r["rank"])
    record["warnings"] = [w if len(rs) == len(ranks) else f"rank {', '.join(map(str, rs))}: {w}"
                          for w, rs in by_text.items()]
    return record


class _Channel:
    """How the ranks of a case hear the coordinator: the writing rank (local rank 0 of node 0, whose
    ``bench run`` coordinates) serves a local connection; it passes each request on to the others
    in a gloo group of its own, where waiting is a blocking socket read, not a spinning GPU
    collective, so ranks waiting between trials take nothing from the case being timed."""

    def __init__(self, payload: dict[str, Any], writer: bool, writer_rank: int) -> None:
        self.writer = writer
        self.writer_rank = writer_rank
        # Requests come a round apart, which may be minutes in a large suite.
        group = dist.new_group(backend="gloo", timeout=dt.timedelta(hours=6))
        assert isinstance(group, dist.ProcessGroup)  # every rank is a member
        self.group = group
        self.conn: Connection | None = None
        if writer:
            serve = payload["serve"]
            listener = Listener(("127.0.0.1", 0), authkey=bytes.fromhex(serve["authkey"]))
            atomic_write_text(Path(serve["address_file"]), json.dumps(list(listener.address)))
            self.conn = listener.accept()
            listener.close()

    def receive(self) -> dict[str, Any]:
        message: list[Any] = [self.conn.recv() if self.conn is not None else None]
        dist.broadcast_object_list(message, src=self.writer_rank, group=self.group)
        request: dict[str, Any] = message[0]
        return request

    def send(self, message: dict[str, Any]) -> None:
        if self.conn is not None:
            self.conn.send(message)


def run_rank(payload: dict[str, Any]) -> None:
    params = CaseParams.model_validate(payload["params"])
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ["LOCAL_RANK"])
    world = int(os.environ["WORLD_SIZE"])
    local_world = int(os.environ["LOCAL_WORLD_SIZE"])
    device = select_device(params, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    backend = params.backend or ("nccl" if device.type == "cuda" else "gloo")
    dist.init_process_group(backend, timeout=dt.timedelta(seconds=params.timeout))
    try:
        cores = available_cores()
        # Ranks on one node share its cores: one rank's thread pool must not steal from another's.
        threads = set_threads(params.threads or max(1, cores // local_world))
        warnings = []
        if device.type == "cpu" and threads * local_world > cores:
            warnings.append(f"{local_world} ranks x {threads} threads on {cores} cores: oversubscribed")
        batch = params.batch_size if params.scaling == "weak" else params.batch_size // world
        # c10d's rendezvous hands out global ranks in arrival order, so rank 0 may live on any
        # node; the writer is the first rank of the node the user called node 0, whose bench
        # process coordinates the rounds and writes results.
        writer = local_rank == 0 and os.environ.get("BENCH_NODE_RANK", "0") == "0"
        flags: list[Any] = [None] * world
        dist.all_gather_object(flags, writer)
        channel = _Channel(payload, writer, flags.index(True))
        wrap = fsdp_wrapper(params, device, world) if params.mode == "fsdp" else _ddp_wrapper(params, device)
        session = CaseSession(params, device, payload, batch=batch, samples_per_step=batch * world,
                              wrap=wrap, threads=threads, warnings=warnings,
                              rank=rank, agree=_agree(device))
        channel.send(session.prepare())
        while True:
            request = channel.receive()
            if request["op"] == "trial":
                channel.send(session.trial(float(request["seconds"]), bool(request.get("collect"))))
                continue
            final = session.finish()
            summaries: list[Any] = [None] * world
            dist.all_gather_object(summaries, _rank_summary(rank, local_rank, session, final))
            if writer:
                summaries.sort(key=lambda r: r["rank"])
                record = {"metrics": {"peak_rss_mb": final["peak_rss_mb"],
                                      "cuda_peak_allocated_mb": final.get("cuda_peak_allocated_mb")},
                          "collectors": final["collectors"], "warnings": []}
                aggregate(record, summaries)
                channel.send({**final, "status": "ok", "backend": backend, "ranks": record["ranks"],
                              "warnings": record["warnings"], "collectors": record["collectors"],
                              "metrics": {k: v for k, v in record["metrics"].items() if v is not None},
                              "peak_rss_mb": record["metrics"]["peak_rss_mb"]})
            break
        # Tear down together: a rank that leaves while its peer still uses the gloo pair can
        # abort in gloo's threads ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


def main(argv: list[str]) -> int:
    forget_safe_path()  # torchrun and this rank needed it, the user's code should not see it
    payload = json.loads(Path(argv[1]).read_text(encoding="utf-8"))
    rank = int(os.environ.get("RANK", "0"))
    try:
        run_rank(payload)
        # The record is written and the group destroyed; skip the interpreter's teardown, where
        # the C++ destructors of communication threads have been seen to abort (SIGABRT) a rank
        # that finished its work, which would fail a case whose measurement is complete.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    except BaseException as exc:
        status = "skipped" if isinstance(exc, Skip) else "failed"
        error = {"rank": rank, "status": status, "error": describe_error(exc),
                 "traceback": "".join(traceback.format_exception(exc))[-8000:]}
        try:
            atomic_write_text(Path(payload["case_dir"]) / f"rank{rank}.error.json", json.dumps(error))
        except OSError:
            pass
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
