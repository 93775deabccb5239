"""Run a suite: start every case in a process of its own, measure them in randomized rounds of
trials (``bench.rounds``), and save results after every round and every finished case; resume an
interrupted run; on nodes other than node 0, run this node's ranks of each ddp case.

Why a process of its own per case: no state (allocator caches, thread pools, cuDNN autotuning, a user's
global variables) leaks from one case into the next, and a crash or a hang costs one case. Why a
forkserver with torch preloaded: the fork is cheap (tens of milliseconds) where a new interpreter
would import torch again (about 1.5 s here).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.connection
import os
import shutil
import signal
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil
from pydantic import ValidationError

from bench import environment, trace_analysis, userpath
from bench import reference as reference_mod
from bench import rounds as rounds_mod
from bench import trials as trial_stats
from bench.effects import effects
from bench.errors import UsageError
from bench.launch import Cluster, run_ddp_case, skip_reason
from bench.processes import kill_tree
from bench.records import (
    CaseRecord,
    EffectRecord,
    Environment,
    ReferenceInfo,
    ReferenceTrial,
    ResultsDoc,
    RoundsInfo,
    SuiteInfo,
    finite,
)
from bench.results import ResultsWriter, describe_validation, now, prepare_output
from bench.rounds import (
    ESTIMATOR,
    GROUP_SIZE,
    CaseState,
    Worker,
    case_result,
    done_reason,
    finish,
    run_round,
    start_case,
    start_process,
    start_torchrun,
)
from bench.scaling import analyze
from bench.suite import LAUNCHED_MODES, Case, Suite


class Interrupted(Exception):
    """The run was stopped by SIGINT or SIGTERM; finished cases are saved."""


class Observer(Protocol):
    def suite_started(self, suite: Suite, out_dir: Path) -> None: ...
    def case_started(self, case: Case) -> None: ...
    def case_finished(self, case: Case, record: CaseRecord) -> None: ...
    def trial_finished(self, case: Case, trials: int) -> None: ...


class _Silent:
    def suite_started(self, suite: Suite, out_dir: Path) -> None:
        pass

    def case_started(self, case: Case) -> None:
        pass

    def case_finished(self, case: Case, record: CaseRecord) -> None:
        pass

    def trial_finished(self, case: Case, trials: int) -> None:
        pass


def _forkserver_of(pid: int | None) -> psutil.Process | None:
    """The forkserver that forked ``pid``: its parent, which is this process's own child (None
    when ``pid`` is gone already or was not forked by a server of ours)."""
    if pid is None:
        return None
    try:
        parent = psutil.Process(pid).parent()
        if parent is None or parent.pid == os.getpid() or parent.ppid() != os.getpid():
            return None
    except psutil.NoSuchProcess:
        return None
    return parent


def signal_name(exitcode: int) -> str:
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


class CaseLauncher:
    """Starts case processes from a forkserver whose interpreter has already imported torch."""

    def __init__(self) -> None:
        self.ctx = multiprocessing.get_context("forkserver")
        self.ctx.set_forkserver_preload(["bench.preload"])
        # multiprocessing has no public handle on its server; it is the parent of what it forks.
        self._server: psutil.Process | None = None

    def _call(self, target: Callable[..., None], args: tuple[Any, ...], timeout: float
              ) -> tuple[Any | None, str | None]:
        """Run ``target(conn, *args)`` in a new process; return (message, error)."""
        receiver, sender = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=target, args=(sender, *args), daemon=False)
        deadline = time.monotonic() + timeout
        message: Any | None = None
        error: str | None = None
        try:
            # The first start also starts the case server, which would otherwise put this
            # directory first on its path and import torch and bench from there (bench.userpath).
            with userpath.safe_path_environ():
                proc.start()
            sender.close()
            self.adopt(proc.pid)
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    error = f"timed out after {timeout:g} s (build, warm-up and measurement included)"
                    break
                if receiver.poll(min(remaining, 0.2)):
                    try:
                        message = receiver.recv()
                    except EOFError:
                        proc.join(5)
                        error = self._death(proc)
                    break
                if not proc.is_alive():
                    # It may have sent its message just before exiting.
                    if receiver.poll(0):
                        continue
                    error = self._death(proc)
                    break
            if message is not None:
                proc.join(max(1.0, deadline - time.monotonic()))
        finally:
            if proc.pid is not None:
                kill_tree(proc.pid)
                proc.join(5)
            receiver.close()
        return message, error

    @staticmethod
    def _death(proc: multiprocessing.process.BaseProcess) -> str:
        code = proc.exitcode
        if code is not None and code < 0:
            return f"worker process was killed by {signal_name(code)}"
        return f"worker process exited with code {code} without a result"

    def probe(self) -> dict[str, Any] | None:
        from bench import worker_entry

        message, _ = self._call(worker_entry.probe_main, (), 120)
        return message if isinstance(message, dict) else None

    def adopt(self, pid: int | None) -> None:
        """Remember the server that forked ``pid`` (a process started through ``self.ctx``), so
        that ``close`` stops it."""
        self._server = _forkserver_of(pid) or self._server

    def close(self) -> None:
        """Stop the forkserver. It would exit on its own once this process ends; stopping it here
        means a finished or interrupted run leaves no running process behind (nor the memory of
        a process that imported torch) while the caller goes on.

        It is killed: asked politely, it would run torch's interpreter teardown (about 0.9 s here),
        and it holds nothing worth a teardown, only a template to fork from. It is left unreaped,
        for multiprocessing to reap: before it starts a server for the next suite it calls
        ``os.waitpid`` on the one it remembers, which raises ChildProcessError if another caller
        reaped it. So this waits for its end with WNOWAIT, which leaves it waitable; until then
        it is a zombie, which holds no memory. It is this process's unreaped child, so its pid
        cannot name another process meanwhile."""
        server, self._server = self._server, None
        if server is None:
            return
        try:
            server.kill()  # psutil checks that the pid still names the process it found
        except psutil.NoSuchProcess:
            return
        try:
            os.waitid(os.P_PID, server.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass


@dataclass
class RunOutcome:
    out_dir: Path
    results_path: Path
    records: list[CaseRecord] = field(default_factory=list)
    effects: list[EffectRecord] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(r.status == "failed" for r in self.records)


def _case_record(case: Case, started: str, duration: float, result: dict[str, Any],
                 log: str | None) -> CaseRecord:
    """The typed record of a case from what its process sent. A message that does not validate
    is a bug of ours or a broken worker: the case fails with the reason rather than losing the run."""
    raw = _raw_record(case, started, duration, result, log)
    try:
        return CaseRecord.model_validate(finite(raw))
    except ValidationError as exc:
        raw.update(status="failed", metrics=None, samples=None, collectors={},
                   error=f"the case's record does not validate: {describe_validation(exc)}")
        raw.pop("ranks", None)
        return CaseRecord.model_validate(finite(raw))


def _raw_record(case: Case, started: str, duration: float, result: dict[str, Any],
                log: str | None) -> dict[str, Any]:
    return {
        "id": case.id,
        "params": case.params_json(),
        "status": result.get("status", "failed"),
        "error": result.get("error"),
        "traceback": result.get("traceback"),
        "warnings": [*([case.note] if case.note else []), *(result.get("warnings") or [])],
        "started": started,
        "duration_s": duration,
        "device": result.get("device"),
        "log": log,
        "metrics": result.get("metrics"),
        "samples": result.get("samples"),
        "collectors": result.get("collectors") or {},
        **({"ranks": result["ranks"]} if "ranks" in result else {}),
        **({"trials": result["trials"]} if "trials" in result else {}),
        **({"backend": result["backend"]} if "backend" in result else {}),
    }


def _record_of(state: CaseState, out_dir: Path) -> CaseRecord:
    keep_log = state.log_path.exists() and state.log_path.stat().st_size > 0
    if state.log_path.exists() and not keep_log and state.stop_reason is not None:
        state.log_path.unlink()
    log = str(state.log_path.relative_to(out_dir)) if keep_log else None
    return _case_record(state.case, state.started or now(), state.elapsed(), case_result(state), log)


def _restore(state: CaseState, record: CaseRecord) -> None:
    """Trials of an interrupted run's case, so that ``--resume`` goes on with its rounds."""
    state.started, state.duration = record.started, record.duration_s
    samples = record.samples
    for i, t in enumerate(record.trials or []):
        window_s = [w for w, k in zip(samples.window_s, samples.window_trial or [], strict=False) if k == i] if samples else []
        state.trials.append({**t.model_dump(), "window_s": window_s or [1.0] * len(t.windows),
                             "local_window_s": window_s or [1.0] * len(t.windows),
                             "step_time_ms": (samples.step_time_ms if samples and i == 0 else []),
                             "steps": (record.metrics.steps if record.metrics and i == 0 else 0),
                             "step_source": (record.metrics.step_time_ms.source if record.metrics else None) or "per_step"})


def _starter(launcher: CaseLauncher, state: CaseState, out_dir: Path, cluster: Cluster,
             log: RoundsInfo) -> Callable[[int], Worker]:
    case = state.case
    if case.params.mode not in LAUNCHED_MODES:
        measured = log.reference is not None and log.reference.error is None
        companion = reference_mod.companion_seconds(case) if measured else None
        return lambda i: start_process(launcher, case, out_dir, state.log_path, companion)
    return lambda i: start_torchrun(case, cluster, out_dir / "ranks" / case.id / f"process{i}", state.log_path, out_dir)


def _skip_reason(case: Case, cluster: Cluster, env: Environment) -> str | None:
    if case.params.mode not in LAUNCHED_MODES:
        return "multi-node run: only ddp and fsdp cases run across nodes" if cluster.multi_node else None
    return skip_reason(case, cluster, cores=env.cores_available or 1, gpus=len(env.gpus))


def _groups(states: list[CaseState], cluster: Cluster) -> list[list[CaseState]]:
    """Cases measured together in rounds. Across nodes one ddp case at a time: the other nodes
    start their ranks of each case in suite order and cannot serve two cases at once."""
    size = 1 if cluster.multi_node else GROUP_SIZE
    return [states[i:i + size] for i in range(0, len(states), size)]


def run_suite(suite: Suite, out_dir: Path, *, argv: list[str], overrides: list[str] | None = None,
              only: str | None = None, observer: Observer | None = None, cluster: Cluster | None = None,
              previous: ResultsDoc | None = None, order_seed: int | None = None,
              after_case: Callable[[ResultsWriter], None] | None = None, reference: bool = True) -> RunOutcome:
    """Measure every case of ``suite`` in randomized rounds (``bench.rounds``), each case in a
    process of its own, and write ``out_dir/results.json`` after every round and every finished case.

    Raises ``Interrupted`` on KeyboardInterrupt (the CLI maps SIGTERM to it too), after killing
    every case process and saving the trials measured so far. On a node other than node 0 of a
    multi-node run, ddp cases run their share of ranks and nothing is written.

    ``previous`` is the document of an interrupted run in ``out_dir`` (``--resume``): its finished
    cases are kept as they are, and cases interrupted between rounds go on with their trials.

    ``reference``: measure the machine-speed reference in every round (``bench.reference``; on one
    node only: across nodes a round holds one ddp case)."""
    obs = observer or _Silent()
    cluster = cluster or Cluster()
    if cluster.node_rank != 0:
        return _run_follower(suite, cluster, obs)
    prepare_output(out_dir)
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    launcher = CaseLauncher()
    env = Environment.model_validate(environment.collect(launcher.probe()))
    done: list[CaseRecord] = []
    partial: dict[str, CaseRecord] = {}
    run_info: dict[str, Any] = {"argv": argv, "overrides": list(overrides or []), "only": only,
                                "nnodes": cluster.nnodes}
    seed = rounds_mod.seed_from(order_seed)
    completed = 0
    if previous is not None:
        if previous.suite.name != suite.name:
            raise UsageError(f"{out_dir}: holds a run of suite {previous.suite.name!r}, not {suite.name!r}")
        wanted = {c.id for c in suite.cases}
        for c in previous.cases:
            if c.id not in wanted:
                continue
            if c.status == "ok" and c.metrics is not None and c.metrics.stop_reason is None and c.trials:
                partial[c.id] = c
            else:
                done.append(c)
        run_info["resumed"] = [*previous.run.resumed, now()]
        run_info["started"] = previous.run.started
        # The fingerprint of the first session stays; a resume on another machine mixes numbers
        # from two machines, so the run says so (with the same fingerprint `bench compare` uses).
        if environment.differences(previous.environment, env):
            run_info["resumed_on_other_machine"] = True
        env = previous.environment
        if previous.rounds is not None:
            seed, completed = previous.rounds.seed, previous.rounds.completed
    # The run's rounds as results.json records them; the writer holds this one record.
    log = RoundsInfo(seed=seed, completed=completed, estimator=ESTIMATOR,
                     orders=list(previous.rounds.orders) if previous is not None and previous.rounds else [])
    if previous is not None and previous.rounds is not None and previous.rounds.reference is not None:
        log.reference = previous.rounds.reference
    elif reference and not cluster.multi_node and suite.cases:
        ref = reference_mod.reference_case(suite.cases)
        log.reference = ReferenceInfo(description=reference_mod.DESCRIPTION, params=ref.params_json(),
                                      trial_s=ref.params.measure.trial_seconds)
    writer = ResultsWriter(out_dir, suite=SuiteInfo(name=suite.name, path=suite.path, source=suite.source),
                           environment=env, run=run_info, cases=[*done, *partial.values()],
                           rounds=log)
    outcome = RunOutcome(out_dir=out_dir, results_path=writer.path, records=list(done))
    finished = {c.id: c for c in done}
    states = [CaseState(c, logs / f"{c.id}.log") for c in suite.cases if c.id not in finished]
    for state in states:
        if state.case.id in partial:
            _restore(state, partial[state.case.id])
    # The trials' statistics import numpy, scipy and ruptures (seconds); done now, before the first
    # round, so that it does not stretch that round while every case waits.
    trial_stats.trial_from_windows(0, 0, 0.0, [1.0] * 6)
    origin = time.perf_counter()
    obs.suite_started(suite, out_dir)
    for case in suite.cases:
        if case.id in finished:
            obs.case_finished(case, finished[case.id])

    def save(state: CaseState, *, final: bool = False) -> CaseRecord:
        record = _record_of(state, out_dir)
        if final:  # once, when the case is done: parsing its GPU traces takes a second or two
            record = trace_analysis.attach(record, out_dir)
        writer.put(record)
        return record

    def close(state: CaseState) -> None:
        record = save(state, final=True)
        outcome.records.append(record)
        obs.case_finished(state.case, record)
        if after_case is not None:
            after_case(writer)

    try:
        for group in _groups(states, cluster):
            _run_group(group, launcher, out_dir, cluster, env, log, origin, obs, save, close)
    except KeyboardInterrupt:
        for state in states:
            rounds_mod.stop_workers(state)
            if state.trials or state.status != "ok":
                save(state)
        writer.finish("interrupted", analyze(writer.doc.cases), effects(writer.doc.cases))
        finished_count = sum(1 for s in states if s.stop_reason is not None or s.status != "ok") + len(done)
        raise Interrupted(f"interrupted: {finished_count} of {len(suite.cases)} cases finished, the trials of "
                          f"the rest saved in {writer.path}; continue with: bench run --resume {out_dir}") from None
    finally:
        for state in states:
            rounds_mod.stop_workers(state)
        launcher.close()
    order = {c.id: i for i, c in enumerate(suite.cases)}
    writer.doc.cases.sort(key=lambda c: order.get(c.id, len(order)))
    writer.finish("complete", analyze(writer.doc.cases), effects(writer.doc.cases))
    outcome.records = list(writer.doc.cases)
    outcome.effects = list(writer.doc.effects)
    return outcome


def _run_group(group: list[CaseState], launcher: CaseLauncher, out_dir: Path, cluster: Cluster, env: Environment,
               log: RoundsInfo, origin: float, obs: Observer, save: Callable[[CaseState], CaseRecord],
               close: Callable[[CaseState], None]) -> None:
    """Start the group's case processes, run its rounds, its collector round, and finish it."""
    live: list[CaseState] = []
    for state in group:
        obs.case_started(state.case)
        reason = _skip_reason(state.case, cluster, env)
        if reason is not None:
            state.status, state.error = "skipped", reason
        else:
            start_case(state, _starter(launcher, state, out_dir, cluster, log), state.case.params.repeats)
        if state.status == "ok":
            live.append(state)
        else:
            close(state)
    if not live:
        return
    ref = _start_reference(group, launcher, out_dir, log)
    ids = [s.case.id for s in live] + ([ref.case.id] if ref is not None else [])
    budget = max(rounds_mod.max_rounds(s.case) for s in live) + 1
    orders = trial_stats.round_orders(ids, budget, log.seed + log.completed)
    for i in range(budget):
        for state in live:
            if state.status == "ok" and state.stop_reason is None and state.done is None:
                state.done = done_reason(state)
        wanting = {s.case.id for s in live if s.status == "ok" and s.done is None}
        last = not wanting
        if last:  # every case has its trials: one more round, with the collectors on
            wanting = {s.case.id for s in live if s.status == "ok"}
        if ref is not None and ref.status == "ok":
            wanting.add(ref.case.id)
        order = [c for c in orders[i] if c in wanting]
        ran = run_round([*live, *([ref] if ref is not None else [])], order, log.completed, origin, collect=last,
                        on_trial=lambda s: obs.trial_finished(s.case, len(s.trials)) if s is not ref else None)
        if ref is not None:
            _index_round(ref, live, log)
        log.orders.append(ran)
        log.completed += 1
        for state in live:
            if state.status != "ok" and state.error is not None and not state.closed:
                state.closed = True
                close(state)
            elif state.trials:
                save(state)
        if last:
            break
    if ref is not None:
        rounds_mod.stop_workers(ref)
        # Its log matters when it says something (a warning, a traceback); an empty one is clutter.
        if ref.log_path.exists() and ref.log_path.stat().st_size == 0:
            ref.log_path.unlink()
    for state in live:
        if state.closed:
            continue
        finish(state)
        state.stop_reason = state.done or "max_time"
        if state.case.params.mode in LAUNCHED_MODES and state.status == "ok":
            # The scratch folder only matters for a post-mortem: the record now holds everything.
            shutil.rmtree(out_dir / "ranks" / state.case.id, ignore_errors=True)
        state.closed = True
        close(state)


def _start_reference(group: list[CaseState], launcher: CaseLauncher, out_dir: Path,
                     log: RoundsInfo) -> CaseState | None:
    """The group's machine-speed reference, started and warmed up; None when the run has none or
    it could not start (the reason is recorded, and the cases go on without it)."""
    info = log.reference
    if info is None or info.error is not None:
        return None
    case = reference_mod.reference_case([s.case for s in group])
    state = CaseState(case, out_dir / "logs" / "reference.log")
    start_case(state, lambda i: start_process(launcher, case, None, state.log_path), 1)
    if state.status != "ok":
        info.error = state.error
        return None
    return state


def _index_round(ref: CaseState, live: list[CaseState], log: RoundsInfo) -> None:
    """Give the round just run its machine-speed index: the reference's trial, recorded in the run
    and on every trial of that round that has no reference of its own (a companion's, measured in
    the case's process). A reference that failed is dropped, with its reason."""
    info = log.reference
    assert info is not None
    if ref.status != "ok":
        info.error = info.error or ref.error
        return
    last = next((t for t in reversed(ref.trials) if t["round"] == log.completed), None)
    if last is None:
        return
    info.trials.append(ReferenceTrial(round=log.completed, median=last["median"], index=1.0))
    middle = statistics.median(t.median for t in info.trials)
    for t in info.trials:
        t.index = t.median / middle
    for state in live:
        for trial in state.trials:
            if trial["round"] == log.completed and trial.get("reference_source") != "case":
                trial.update(reference=last["median"], reference_source="round")


def _run_follower(suite: Suite, cluster: Cluster, obs: Observer) -> RunOutcome:
    """A node other than node 0: run this node's ranks of every ddp case, write nothing."""
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="bench-node"))
    outcome = RunOutcome(out_dir=scratch, results_path=scratch / "results.json")
    cores = environment.available_cores()
    obs.suite_started(suite, scratch)
    try:
        for case in suite.cases:
            if case.params.mode not in LAUNCHED_MODES:
                continue
            obs.case_started(case)
            started, t0 = now(), time.monotonic()
            # The GPU count is not probed here: a node that cannot run its ranks fails the rendezvous
            # on node 0 too, which reports it.
            reason = skip_reason(case, cluster, cores=cores, gpus=0 if case.params.device == "cpu" else 1_000)
            result = ({"status": "skipped", "error": reason} if reason else
                      run_ddp_case(case, cluster, scratch / case.id, scratch / f"{case.id}.log", None))
            record = _case_record(case, started, time.monotonic() - t0, result, None)
            outcome.records.append(record)
            obs.case_finished(case, record)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {len(outcome.records)} ddp case(s) on node {cluster.node_rank}") from None
    return outcome
