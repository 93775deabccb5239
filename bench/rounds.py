"""Randomized interleaved rounds: how a suite's cases are measured so that their numbers replicate
on a machine whose speed drifts.

Every case gets a process of its own (a forked case process; a torchrun job for ddp) that builds
and warms up once and then waits. The suite then runs in rounds: each round asks every case that
still needs measuring for one short trial (``measure.trial_time``), in a fresh random order
(``bench.trials.round_orders``, replayed from the recorded seed). Only one case runs at a time.

Why: the machine's speed wanders by 10-30% within minutes, and windows of one contiguous stretch
share that stretch's state, so an interval from them says how precisely one stretch was timed,
not how well the number replicates (Kalibera & Jones). Trials spread over the whole run, in random
order, sample the drift; a case's interval comes from the variation between its trials; and two
cases measured in the same round saw nearly the same machine, so their ratio per round cancels
most of the drift (paired effects, ``bench.effects``). This is the design of Abedi & Brecht
(ICPE 2017) and of Google Benchmark's random interleaving.

Stopping: after at least ``min_rounds`` rounds and ``min_time`` measured seconds, a case is done
when its between-trial interval is within ``target_ci``; at the latest after ``max_time`` measured
seconds (or ``rounds`` rounds). One last round then runs every case with its collectors on (memory
and GPU samplers, the window times FLOPs are divided by); it counts like any other. Then each case
does its collectors' extra, untimed work (profilers, the FLOP count) and its process ends.
"""

from __future__ import annotations

import json
import math
import multiprocessing.process
import os
import secrets
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench import trials as stats
from bench import userpath
from bench.measure import step_time_summary, thin
from bench.reference import REFERENCE_ID
from bench.suite import Case

if TYPE_CHECKING:
    from bench.launch import Cluster
    from bench.runner import CaseLauncher

# Cases that hold a process at the same time. Each waiting process keeps its model, data and
# torch runtime in memory (about 100-300 MiB for the shipped models), so a suite of more cases is
# measured in groups of this many, each group in rounds of its own.
GROUP_SIZE = 16
MAX_STEP_SAMPLES = 2000
UNSTABLE_SHARE = 0.2


@dataclass
class Worker:
    """One process (or torchrun job) that measures a case on request."""

    conn: Connection
    alive: Callable[[], bool]
    stop: Callable[[], None]
    death: Callable[[], dict[str, Any]]  # what to record when it died without answering

    def request(self, message: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        """Send ``message`` (none: just wait for the next answer) and return the answer, or a
        failure saying why none came within ``timeout`` seconds."""
        try:
            if message is not None:
                self.conn.send(message)
            deadline = time.monotonic() + timeout
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return {"status": "failed", "error": f"timed out after {timeout:g} s (a step hung or was too slow)"}
                if self.conn.poll(min(remaining, 0.2)):
                    answer: dict[str, Any] = self.conn.recv()
                    return answer
                if not self.alive():
                    if self.conn.poll(0):
                        continue
                    return self.death()
        except (EOFError, OSError):
            return self.death()


@dataclass
class CaseState:
    """Everything the coordinator knows about one case while its rounds run."""

    case: Case
    log_path: Path
    started: str = ""
    t0: float = 0.0
    workers: list[Worker] = field(default_factory=list)
    ready: dict[str, Any] = field(default_factory=dict)
    last_ready: dict[str, Any] = field(default_factory=dict)  # bench ab: the latest launch's
    trials: list[dict[str, Any]] = field(default_factory=list)
    final: dict[str, Any] = field(default_factory=dict)
    status: str = "ok"
    error: str | None = None
    traceback: str | None = None
    stop_reason: str | None = None
    done: str | None = None  # why it needs no more rounds (before its collector round)
    closed: bool = False  # its record is final
    duration: float = 0.0

    @property
    def active(self) -> bool:
        return self.status == "ok" and self.stop_reason is None

    def fail(self, answer: dict[str, Any]) -> None:
        self.status = answer.get("status", "failed") if answer.get("status") in ("failed", "skipped") else "failed"
        self.error = answer.get("error") or "the case process ended without a reason"
        self.traceback = answer.get("traceback")

    def elapsed(self) -> float:
        """Seconds since the case's processes started (plus any before a resume)."""
        return self.duration + (time.monotonic() - self.t0 if self.t0 else 0.0)

    def measured_s(self) -> float:
        return sum(sum(t["window_s"]) for t in self.trials)


# --- starting case processes ----------------------------------------------------------------------


def start_process(launcher: CaseLauncher, case: Case, out_dir: Path | None, log_path: Path,
                  companion_s: float | None = None) -> Worker:
    """A forked case process serving trials (``bench.session.serve_process``); with ``companion_s``,
    it measures the machine-speed reference that long after each trial (``bench.reference``)."""
    from bench import worker_entry

    payload = {"id": case.id, "params": case.params_json(), "out_dir": str(out_dir) if out_dir else None,
               "companion_s": companion_s}
    return fork_worker(launcher, worker_entry.serve_main, payload, str(log_path))


def fork_worker(launcher: CaseLauncher, target: Callable[..., None], *args: Any) -> Worker:
    """A case process forked from ``launcher``'s server (which has imported torch and bench:
    ``bench.preload``), serving ``target(conn, *args)`` over a pipe; the launcher remembers the
    server, so that closing it stops that server (``bench ab`` starts a fresh one per launch)."""
    parent, child = launcher.ctx.Pipe(duplex=True)
    proc = launcher.ctx.Process(target=target, args=(child, *args), daemon=False)
    with userpath.safe_path_environ():  # should this start the case server (bench.userpath)
        proc.start()
    child.close()
    launcher.adopt(proc.pid)
    return process_worker(proc, parent)


def process_worker(proc: multiprocessing.process.BaseProcess, parent: Connection) -> Worker:
    """The coordinator's handle on a forked case process and its end of the pipe."""
    from bench.processes import kill_tree

    def stop() -> None:
        if proc.pid is not None:
            kill_tree(proc.pid)
        proc.join(5)
        parent.close()

    def death() -> dict[str, Any]:
        proc.join(5)
        code = proc.exitcode
        if code is not None and code < 0:
            from bench.runner import signal_name

            return {"status": "failed", "error": f"worker process was killed by {signal_name(code)}"}
        return {"status": "failed", "error": f"worker process exited with code {code} without a result"}

    return Worker(parent, proc.is_alive, stop, death)


def start_torchrun(case: Case, cluster: Cluster, scratch: Path, log_path: Path, out_dir: Path | None) -> Worker:
    """A ddp case as a torchrun job whose writing rank serves trials over a local connection
    (``bench.ddp_worker``); the other ranks follow it. Fails like ``run_ddp_case`` when a rank dies."""
    from bench.launch import case_outcome, kill_group, torchrun_command

    scratch.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(16)
    address_path = scratch / "address.json"
    payload = {"id": case.id, "params": case.params_json(), "case_dir": str(scratch),
               "record_path": str(scratch / "record.json"), "out_dir": str(out_dir) if out_dir else None,
               "serve": {"address_file": str(address_path), "authkey": key}}
    payload_path = scratch / "payload.json"
    payload_path.write_text(json.dumps(payload), encoding="utf-8")
    cmd, env = torchrun_command(case, cluster, payload_path)
    log = open(log_path, "ab")  # noqa: SIM115 - the job outlives this function; stop() closes it
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                            start_new_session=True)

    def death() -> dict[str, Any]:
        # torchrun's agent notices a failed rank and tears down the others within seconds.
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            code = None
        return case_outcome(code, scratch, log_path, case.params.timeout)

    def stop() -> None:
        kill_group(proc)
        log.close()

    # The writing rank listens on a local port once its process group is up, and says where in a
    # file; wait for it (or for the job to die) within the case's timeout.
    conn = connect_when_listening(proc, address_path, key, case.params.timeout, death, stop, "the ranks")
    return Worker(conn, lambda: proc.poll() is None, stop, death)


def connect_when_listening(proc: subprocess.Popen[bytes], address_path: Path, key: str, timeout: float,
                           death: Callable[[], dict[str, Any]], stop: Callable[[], None], what: str) -> Connection:
    """Connect to a process that listens on a local port and writes the address to
    ``address_path`` once it is ready (a DDP job's writing rank, a ``bench ab`` side); if it dies
    or ``timeout`` passes first, stop it and raise ``StartFailed`` with the reason."""
    deadline = time.monotonic() + timeout
    while not address_path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            answer = death() if proc.poll() is not None else {
                "status": "failed", "error": f"timed out after {timeout:g} s starting {what}"}
            stop()
            raise StartFailed(answer)
        time.sleep(0.02)
    host, port = json.loads(address_path.read_text(encoding="utf-8"))
    return Client((host, port), authkey=bytes.fromhex(key))


class StartFailed(Exception):
    def __init__(self, answer: dict[str, Any]) -> None:
        super().__init__(answer.get("error"))
        self.answer = answer


# --- the rounds -----------------------------------------------------------------------------------


def max_rounds(case: Case) -> int:
    return case.params.measure.max_rounds


def done_reason(state: CaseState) -> str | None:
    """Why a case needs no more rounds, or None."""
    m = state.case.params.measure
    n = len(state.trials)
    if n >= max_rounds(state.case):
        return "rounds" if m.rounds is not None and n >= m.rounds else "max_time"
    if n < m.min_rounds or state.measured_s() < m.min_time:
        return None
    est = stats.estimate([t["median"] for t in state.trials])
    return "target_ci" if stats.target_met(est, m.target_ci) else None


ESTIMATOR = "median of trial medians; 95% order-statistic interval over trials"


def trial_record(answer: dict[str, Any], round_: int, position: int, origin: float, repeat: int) -> dict[str, Any]:
    """One trial as results.json keeps it, its warm-up trimmed and its drift measured."""
    trial = stats.trial_from_windows(round_, position, answer["start"], answer["window_throughput"])
    record = {"round": round_, "position": position, "start_s": answer["start"] - origin, "repeat": repeat,
              "median": trial.median, "trimmed": trial.trimmed, "drift": trial.drift, "stable": trial.stable,
              "windows": list(trial.windows), "window_s": answer["window_s"],
              "local_window_s": answer.get("local_window_s") or answer["window_s"],
              "step_time_ms": answer["step_time_ms"], "steps": answer["steps"], "step_source": answer["step_source"]}
    if answer.get("reference_windows"):  # the companion reference, measured in the case's process
        companion = stats.trial_from_windows(round_, position, answer["start"], answer["reference_windows"])
        record.update(reference=companion.median, reference_source="case")
    return record


def run_round(states: list[CaseState], order: list[str], round_: int, origin: float, *, collect: bool,
              on_trial: Callable[[CaseState], None]) -> list[str]:
    """One trial of each case named in ``order`` (active ones), in that order; returns the order
    actually run. A case whose process fails or hangs is failed and dropped from later rounds."""
    by_id = {s.case.id: s for s in states}
    ran: list[str] = []
    for case_id in order:
        state = by_id[case_id]
        if state.status != "ok":
            continue
        m = state.case.params.measure
        # The collectors watch the first process, which also does their extra work at the end; the
        # machine-speed reference has none, so its turn in the collector round is like any other.
        collecting = collect and state.case.id != REFERENCE_ID
        repeat = 0 if collecting else round_ % len(state.workers)
        answer = state.workers[repeat].request({"op": "trial", "seconds": m.trial_seconds, "collect": collecting},
                                               timeout=state.case.params.timeout)
        if answer.get("status") != "ok":
            state.fail(answer)
            stop_workers(state)
        else:
            state.trials.append(trial_record(answer, round_, len(ran), origin, repeat))
            ran.append(case_id)
        on_trial(state)
    return ran


def stop_workers(state: CaseState) -> None:
    for w in state.workers:
        w.stop()
    state.workers = []


def finish(state: CaseState) -> None:
    """The collectors' extra work, in the case's first process, then every process of it ends. A
    failure there costs the collectors' results, never the measured trials."""
    if state.status == "ok" and state.workers:
        answer = state.workers[0].request({"op": "finish"}, timeout=state.case.params.timeout)
        if answer.get("status") == "ok":
            state.final = answer
        elif state.trials and answer.get("status") == "failed":
            # Every trial is measured and kept; only the collectors' extra work after them failed
            # (a profiler window, the FLOP count; a native crash in a profiled window of a gloo
            # rank has been seen here). The measurement stands, and the record says what is missing.
            state.final = {"warnings": [f"the collectors' work after the last trial failed, so their results are "
                                        f"missing (the throughput measurement is complete): {answer.get('error')}"]}
        else:
            state.fail(answer)
    stop_workers(state)
    state.duration = state.elapsed()
    state.t0 = 0.0


# --- the record -----------------------------------------------------------------------------------


def case_result(state: CaseState) -> dict[str, Any]:
    """The case's record (as ``bench.runner`` validates it) from its trials so far."""
    if state.status != "ok" or not state.trials:
        return {"status": state.status if state.status != "ok" else "failed",
                "error": state.error or "no trial was measured", "traceback": state.traceback,
                "warnings": list(state.ready.get("warnings") or []), "device": state.ready.get("device")}
    m = state.case.params.measure
    trials = state.trials
    medians = [t["median"] for t in trials]
    est = stats.estimate(medians)
    half = est.rel_half_width
    met = stats.target_met(est, m.target_ci)
    windows = [w for t in trials for w in t["windows"]]
    window_s = [w for t in trials for w in t["window_s"]]
    origin = trials[0]["start_s"]
    starts: list[float] = []
    for t in trials:
        at = t["start_s"] - origin
        for w in t["window_s"]:
            starts.append(at)
            at += w
    steps_ms = thin([s for t in trials for s in t["step_time_ms"]], MAX_STEP_SAMPLES)

    warnings = list(state.ready.get("warnings") or [])
    if not met and state.stop_reason is not None:
        needed = stats.rounds_needed(medians, m.target_ci)
        width = "undefined" if math.isinf(half) else f"±{half:.1%}"
        more = f"; about {needed} more round(s) would reach it" if needed else ""
        warnings.append(f"95% CI {width} over {len(trials)} trials did not reach the target ±{m.target_ci:.1%}{more}")
    unstable = [t for t in trials if not t["stable"]]
    # A stationary trial is flagged 1-4% of the time (bench.trials.detect_drift), so over 20 trials
    # one flag is expected by chance: a case is unstable when a fifth of its trials drifted.
    if len(unstable) >= 2 and len(unstable) > UNSTABLE_SHARE * len(trials):
        worst = max(unstable, key=lambda t: abs(t["drift"]))
        warnings.append(f"unstable: throughput drifted within {len(unstable)} of {len(trials)} trials, "
                        f"by up to {worst['drift']:+.1%} (round {worst['round']})")
    trimmed = sum(t["trimmed"] for t in trials)
    ratios = [t["median"] / t["reference"] for t in trials if t.get("reference")]
    relative = None
    if len(ratios) >= 2:
        rel = stats.estimate(ratios)
        sources = {t.get("reference_source") or "round" for t in trials if t.get("reference")}
        relative = {"median": rel.point, "ci95": [rel.low, rel.high], "trials": len(ratios),
                    "source": sources.pop() if len(sources) == 1 else "mixed"}
    metrics: dict[str, Any] = {
        "throughput": {"median": est.point, "mean": sum(medians) / len(medians),
                       "ci95": [est.low, est.high], "ci_rel_half_width": None if math.isinf(half) else half,
                       "ci_target": m.target_ci, "ci_target_met": met, "unit": "samples/s",
                       "interval": est.method, "trials": len(trials)},
        "step_time_ms": step_time_summary(steps_ms, trials[0]["step_source"]),
        "peak_rss_mb": state.final.get("peak_rss_mb", 0.0),
        "threads": state.ready.get("threads", 1),
        "windows": len(windows),
        "steps": sum(t["steps"] for t in trials),
        "steps_per_window": state.ready.get("steps_per_window"),
        "measured_s": sum(window_s),
        "warmup_s": state.ready.get("warmup_s"),
        "build_s": state.ready.get("build_s"),
        "compile_s": state.ready.get("compile_s"),
        "graph_breaks": state.ready.get("graph_breaks"),
        "stop_reason": state.stop_reason,
        "batch_per_process": state.ready.get("batch_per_process"),
        "trials": len(trials),
        "trimmed_windows": trimmed,
        "unstable": len(unstable) >= 2 and len(unstable) > UNSTABLE_SHARE * len(trials),
        "repeats": len({t["repeat"] for t in trials}),
        "relative": relative,
        **{k: v for k, v in (state.final.get("metrics") or {}).items()},
    }
    for key in ("cuda_peak_allocated_mb", "cuda_peak_reserved_mb"):
        if key in state.final:
            metrics[key] = state.final[key]
    collectors = state.final.get("collectors") or {}
    _rate_from_estimate(collectors.get("flops"), est.point)
    result: dict[str, Any] = {
        "status": "ok", "error": None, "warnings": warnings + list(state.final.get("warnings") or []),
        "device": state.ready.get("device"), "metrics": metrics,
        "samples": {"clock_origin": origin, "window_start_s": starts, "window_s": window_s, "window_throughput": windows,
                    "step_time_ms": steps_ms, "local_window_s": [w for t in trials for w in t["local_window_s"]],
                    "window_trial": [i for i, t in enumerate(trials) for _ in t["windows"]]},
        "trials": [{**{k: t[k] for k in ("round", "position", "start_s", "repeat", "median", "trimmed", "drift",
                                        "stable", "windows")}, "reference": t.get("reference"),
                    "reference_source": t.get("reference_source")} for t in trials],
        "collectors": collectors,
    }
    for key in ("ranks", "backend"):
        if key in state.final:
            result[key] = state.final[key]
    return result


def _rate_from_estimate(flops: dict[str, Any] | None, throughput: float) -> None:
    """The FLOP rate and MFU of the case's reported throughput (the median over its trials), not of
    the one trial its collectors watched; an MFU above 1 is an impossible count, never a figure."""
    if not flops or flops.get("error") or not flops.get("flops_per_sample"):
        return
    flops["achieved_flops"] = flops["flops_per_sample"] * throughput
    if flops.get("peak_flops"):
        flops["mfu"] = flops["achieved_flops"] / flops["peak_flops"]
        if flops["mfu"] > 1:
            by_op = flops.get("by_op") or {}
            top = max(by_op, key=by_op.get, default="?")  # type: ignore[arg-type]
            for key in ("flops_per_step", "forward_flops", "backward_flops", "flops_per_sample", "achieved_flops",
                        "peak_flops", "mfu"):
                flops[key] = None
            flops["error"] = (f"MFU above 1 at the case's median throughput: the count is impossible "
                              f"(largest operator: {top})")


def start_case(state: CaseState, start: Callable[[int], Worker], repeats: int) -> None:
    """Start the case's processes and wait until each has built and warmed up."""
    from bench.results import now

    state.started, state.t0 = state.started or now(), time.monotonic()
    for i in range(repeats):
        try:
            worker = start(i)
        except StartFailed as exc:
            state.fail(exc.answer)
            break
        state.workers.append(worker)
        answer = worker.request(None, timeout=state.case.params.timeout)
        if answer.get("status") != "ready":
            state.fail(answer)
            break
        if i == 0:
            state.ready = answer
    if state.status != "ok":
        stop_workers(state)
        state.duration += time.monotonic() - state.t0
        state.t0 = 0.0


def seed_from(suite_seed: int | None) -> int:
    """The order seed: the suite's ``rounds_seed`` when set, else a fresh one (recorded)."""
    return suite_seed if suite_seed is not None else int.from_bytes(os.urandom(4), "little")

