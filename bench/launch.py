"""Launch a DDP or FSDP2 case through PyTorch's own launcher, ``torch.distributed.run`` (torchrun).

torchrun's elastic agent starts the ranks, runs the c10d rendezvous (across nodes too) and tears
every rank down when one fails; restarts are off because a benchmark rank that fails should fail
the case, not be retried. We only add what a benchmark needs around it: a per-case timeout that
kills the whole process group (agent and ranks), and the failing rank's error text.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import userpath
from bench.processes import kill_tree
from bench.suite import Case


@dataclass(frozen=True)
class Cluster:
    """Where the ranks of a DDP case run: this node alone, or several nodes meeting at a c10d
    rendezvous endpoint (``HOST:PORT``, served by node 0)."""

    nnodes: int = 1
    node_rank: int = 0
    rdzv_endpoint: str | None = None

    @property
    def multi_node(self) -> bool:
        return self.nnodes > 1


def ddp_device(case: Case, gpus: int) -> str:
    """cpu or cuda: what a ddp or fsdp case with ``device`` unset runs on here."""
    if case.params.device in ("cpu", "cuda"):
        return case.params.device
    return "cuda" if gpus > 0 else "cpu"


def skip_reason(case: Case, cluster: Cluster, cores: int, gpus: int) -> str | None:
    """Why this machine cannot run a ddp or fsdp case, or None when it can."""
    from bench.training import precision_skip_reason

    p = case.params
    if p.world_size % cluster.nnodes:
        return f"world_size {p.world_size} does not split evenly over {cluster.nnodes} nodes"
    per_node = p.world_size // cluster.nnodes
    device = ddp_device(case, gpus)
    if device == "cuda" and per_node > gpus:
        return f"{p.mode} with {per_node} rank(s) per node needs {per_node} GPUs; this machine has {gpus}"
    if device == "cpu":
        if p.backend == "nccl":
            return "backend nccl needs GPUs; this machine has none"
        threads = p.threads or 1
        if per_node * threads > cores:
            return (f"{p.mode} with {per_node} CPU rank(s) x {threads} thread(s) needs {per_node * threads} cores; "
                    f"this machine has {cores}")
    # Said before any rank starts; a GPU without bfloat16 is found by the ranks themselves.
    return precision_skip_reason(p.precision, device)


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """End a torchrun job: it leads its own session, its ranks are in its group, and any that left
    the group are still its descendants; then reap it."""
    kill_tree(proc.pid, group=True)
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        pass


_PEER_FAILURE = ("Connection closed by peer", "Connection reset by peer", "ProcessGroup", "NCCL communicator was aborted")


def _rank_errors(case_dir: Path) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(the first rank error that is a cause, the first that only reports a lost peer)."""
    errors = []
    for path in sorted(case_dir.glob("rank*.error.json")):
        try:
            errors.append(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError):
            continue
    errors.sort(key=lambda e: e["rank"])
    # When one rank fails, the others usually fail next in a collective, reporting only that
    # their peer went away: those are symptoms, not the cause.
    causes = [e for e in errors if not any(p in e.get("error", "") for p in _PEER_FAILURE)]
    symptoms = [e for e in errors if e not in causes]
    return (causes[0] if causes else None), (symptoms[0] if symptoms else None)


_ROOT_CAUSE = re.compile(r"Root Cause.*?rank\s*:\s*(\d+).*?exitcode\s*:\s*(-?\d+)", re.S)


def _signalled_rank(log_path: Path) -> str | None:
    """torchrun's failure summary names the first failed rank and its exit code; a negative
    code is the signal that killed it (a rank killed by SIGKILL writes no error of its own)."""
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    matches = list(_ROOT_CAUSE.finditer(text))
    match = matches[-1] if matches else None  # the summary comes last in the log
    if match is None or int(match.group(2)) >= 0:
        return None
    code = int(match.group(2))
    try:
        name = signal.Signals(-code).name
    except ValueError:
        name = f"signal {-code}"
    return f"rank {match.group(1)} was killed by {name}"


def _log_tail(log_path: Path, lines: int = 6) -> str:
    try:
        text = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    except OSError:
        return ""
    interesting = [ln for ln in text if "exitcode" in ln or "Error" in ln or "Signal" in ln or "error" in ln]
    return " | ".join((interesting or text)[-lines:])[-1500:]


def torchrun_command(case: Case, cluster: Cluster, payload_path: Path) -> tuple[list[str], dict[str, str]]:
    """The torchrun command line and environment that start this node's ranks of a ddp case."""
    p = case.params
    nproc = p.world_size // cluster.nnodes
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}", "--max-restarts=0",
           "--monitor-interval=0.2"]
    if cluster.multi_node:
        cmd += [f"--nnodes={cluster.nnodes}", f"--node-rank={cluster.node_rank}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={cluster.rdzv_endpoint}", f"--rdzv-id=bench-{case.id}",
                # Node 0 serves the rendezvous store; saying so avoids guessing from host names,
                # which fails when several "nodes" share one host (tests on 127.0.0.1).
                f"--rdzv-conf=is_host={'true' if cluster.node_rank == 0 else 'false'},"
                f"join_timeout={max(30, int(p.timeout))}"]
    else:
        cmd += ["--standalone", "--nnodes=1"]
    cmd += ["-m", "bench.ddp_worker", str(payload_path)]
    # Without PYTHONSAFEPATH, `-m` would put this directory first on the path of torchrun and of
    # every rank; a user's model is imported from it last instead (bench.userpath).
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TORCH_NCCL_ASYNC_ERROR_HANDLING": "1",
           "BENCH_NODE_RANK": str(cluster.node_rank), **userpath.safe_path_env()}
    return cmd, env


def run_ddp_case(case: Case, cluster: Cluster, work_dir: Path | None, log_path: Path,
                 out_dir: Path | None) -> dict[str, Any]:
    """Run this node's ranks of a ddp case on a node other than node 0, until node 0's writing
    rank finishes it; returns a status (the record is node 0's)."""
    p = case.params
    scratch = Path(tempfile.mkdtemp(prefix=f"bench-{case.id}-")) if work_dir is None else work_dir
    scratch.mkdir(parents=True, exist_ok=True)
    record_path = scratch / "record.json"
    payload_path = scratch / "payload.json"
    payload = {"id": case.id, "params": case.params_json(), "case_dir": str(scratch),
               "record_path": str(record_path), "out_dir": str(out_dir) if out_dir else None}
    payload_path.write_text(json.dumps(payload), encoding="utf-8")
    cmd, env = torchrun_command(case, cluster, payload_path)
    # On a node other than node 0 the ranks follow node 0's writing rank, trial by trial, until it
    # finishes the case; how long that takes is node 0's to decide, so no deadline here beyond the
    # ranks' own collective timeouts.
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, start_new_session=True)
        try:
            code: int | None = proc.wait()
        finally:
            kill_group(proc)
    return case_outcome(code, scratch, log_path, p.timeout)


def case_outcome(code: int | None, scratch: Path, log_path: Path, timeout: float) -> dict[str, Any]:
    """The case record from what torchrun left: its exit code (None: killed at the timeout), the
    record rank 0 wrote, the ranks' error files in ``scratch`` and torchrun's log."""
    record_path = scratch / "record.json"
    cause, symptom = _rank_errors(scratch)
    if code is None:
        detail = f" (rank {cause['rank']}: {cause['error']})" if cause else ""
        return {"status": "failed",
                "error": f"timed out after {timeout:g} s (a rank hung or was too slow){detail}"}
    if record_path.exists() and (code == 0 or cause is None):
        record: dict[str, Any] = json.loads(record_path.read_text(encoding="utf-8"))
        if code != 0:
            # Every rank finished measuring (the record is written only after all of them sent
            # theirs); one died on its way out. The numbers stand; say what happened.
            record.setdefault("warnings", []).append(
                f"after the measurement: {_signalled_rank(log_path) or f'torchrun exited with code {code}'}")
        return record
    if code == 0:  # a node other than node 0: rank 0's record lives there
        return {"status": "ok", "error": None}
    if cause is not None:
        if cause.get("status") == "skipped":
            return {"status": "skipped", "error": cause["error"]}
        return {"status": "failed", "error": f"rank {cause['rank']}: {cause['error']}",
                "traceback": cause.get("traceback")}
    signalled = _signalled_rank(log_path)
    if signalled is not None:
        return {"status": "failed", "error": signalled}
    if symptom is not None:
        return {"status": "failed", "error": f"rank {symptom['rank']}: {symptom['error']}"}
    tail = _log_tail(log_path)
    return {"status": "failed", "error": f"torchrun exited with code {code}: {tail or 'no output'}"}
