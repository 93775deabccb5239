"""``bench ab``: two versions of a user's code, measured in alternation, case by case, with three
answers (``bench.pairs``).

A case is measured in *launches*. By default a launch is one process, forked from a server that
imported torch once for the run, that builds both sides' models, each from its own side's code
(``bench.session.serve_sides``); with ``--separate-processes``, or when the shared process fails,
each side gets a process of its own, both forked back to back from a fresh server per launch; under
``--base-python``/``--new-python``, a fresh interpreter per side (``bench.side_worker``). Both
sides build and warm up, and the coordinator then asks them in turn for short measurements (a
*half*: a few windows of about 50 ms): base then new or new then base, balanced and seeded
(``pairs.pair_orders``). Such a *pair* sees one state of a machine whose speed drifts by 10-30%
over minutes; only one side runs at a time. After ``pairs_per_launch`` pairs the launch ends.

Why one process for both sides: on this project's 2-core VM a process often has a speed of its
own, 5-8% apart from its siblings' at some hours and kept for its whole life, and models in one
process share it (the README's *Launches and pairs*). In one process it cancels in every pair; in
two, it is the largest noise there is. The unit of inference is still the *launch*: its change is
the median of its pairs' log ratios, and the inference is over launches (Hodges-Lehmann with its
Wilcoxon interval), so whatever a process might still add widens the interval instead of becoming
a verdict.

A case takes launches until they answer (``pairs.answer``: looked at after ``min_launches`` and
then every ``check_every``) or its budget runs out: ``max_launches`` per set, and time from the
run's pool (``Budget``: ``max_time`` seconds per case, what one case leaves going to the ones after
it). A case flagged as a regression or an improvement is measured again with fresh launches, which
must give the same answer: one burst of noise cannot fail a build. Across cases the p-values are adjusted
(Benjamini-Hochberg).

Each side's halves are written as that side's ``results.json`` (each half a trial), after every
case, so an interrupted run keeps what it measured; ``ab.json`` holds the pairs, the launches and
the verdicts, ``ab.md`` and ``ab.html`` the report.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol

from bench import environment, pairs, userpath
from bench import trials as trial_stats
from bench.errors import UsageError
from bench.processes import kill_tree
from bench.records import (
    ABCaseRecord,
    ABDoc,
    ABSettings,
    CaseRecord,
    Environment,
    Params,
    RoundsInfo,
    RunInfo,
    SideRecord,
    StageRecord,
    SuiteInfo,
    dump,
    finite,
)
from bench.results import ResultsWriter, atomic_write_text, now, prepare_output
from bench.rounds import CaseState, Worker, case_result, fork_worker, trial_record
from bench.side_worker import ENV_KEY
from bench.sides import Side
from bench.suite import Case, Suite

if TYPE_CHECKING:
    from bench.runner import CaseLauncher

AB_NAME = "ab.json"
ESTIMATOR = "median of halves; 95% order-statistic interval over halves (bench ab: each half of a pair is a trial)"
# Pairs per launch by how launches start: where a process's luck cancels in every pair (shared),
# more pairs per launch narrow its change; where it does not, more launches do.
PAIRS_PER_LAUNCH = {"shared": 20, "server": 10, "interpreters": 10}
DEFAULT_SETTINGS = {"threshold": pairs.THRESHOLD, "confidence": pairs.CONFIDENCE, "pairs_per_launch": None,
                    "min_launches": 8, "check_every": 2, "max_launches": 24, "max_time": 65.0, "half_windows": 2,
                    "confirm": True}
REWARM_STEPS = 1
# A set whose time runs out while its estimate lies beyond the threshold (a suspected change it
# cannot yet call) may go on this many times its deadline: missing a regression costs a user more
# than the seconds, and same-code cases, whose estimates stay within the threshold, never use it.
SUSPECT_EXTENSION = 1.5
# Modes whose case is one process; ddp cases are torchrun jobs, which `bench ab` does not pair yet.
SINGLE_PROCESS = ("cpu", "cuda", "dp")


class Interrupted(Exception):
    """Ctrl-C or SIGTERM during an A/B run; everything measured so far is saved."""


class _SideFailed(Exception):
    def __init__(self, side: str, answer: dict[str, Any]) -> None:
        super().__init__(answer.get("error"))
        self.side = side
        self.answer = answer


@dataclass
class ABOutcome:
    out_dir: Path
    doc: ABDoc

    @property
    def regressions(self) -> list[ABCaseRecord]:
        return [c for c in self.doc.cases if c.verdict == "regression"]

    @property
    def broken(self) -> list[ABCaseRecord]:
        """Cases the new side failed where the base side ran: a build that breaks a case fails."""
        return [c for c in self.doc.cases if c.verdict == "failed" and (c.error or "").startswith("new:")]


class Observer(Protocol):
    """What the terminal shows while pairs run (``bench.console.ABObserver``)."""

    def case_started(self, case: Case, index: int, total: int) -> None: ...
    def pair_finished(self, case: Case, stage: str, n: int, stats: Any) -> None: ...
    def case_finished(self, case: Case, record: Any) -> None: ...


class _Silent:
    def case_started(self, case: Case, index: int, total: int) -> None:
        pass

    def pair_finished(self, case: Case, stage: str, n: int, stats: Any) -> None:
        pass

    def case_finished(self, case: Case, record: Any) -> None:
        pass


# --- starting a side's case process ----------------------------------------------------------------


def _payload(case: Case) -> dict[str, Any]:
    return {"id": case.id, "params": case.params_json(), "out_dir": None}


def fork_side(launcher: CaseLauncher, side: Side, case: Case, log_path: Path) -> Worker:
    """``side``'s own case process for ``case`` (``--separate-processes``, or a shared launch's
    fallback). For sides under this interpreter."""
    from bench import worker_entry

    return fork_worker(launcher, worker_entry.serve_side_main, _payload(case), str(log_path.resolve()), str(side.directory))


def fork_both(launcher: CaseLauncher, sides: tuple[Side, Side], case: Case, log_path: Path) -> Worker:
    """A shared launch's process for ``case``: it builds both sides' models, each from its own
    side's code, in the order of ``sides`` (``bench.session.serve_sides``)."""
    from bench import worker_entry

    return fork_worker(launcher, worker_entry.serve_both_main, _payload(case), str(log_path.resolve()),
                 [(side.label, str(side.directory)) for side in sides])


@dataclass
class _SideView:
    """One side of a shared launch's process, as the pairs ask a side for its half."""

    worker: Worker
    label: str

    def request(self, message: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        return self.worker.request(None if message is None else {**message, "side": self.label}, timeout)


class _Side(Protocol):
    def request(self, message: dict[str, Any] | None, timeout: float) -> dict[str, Any]: ...


def start_side(side: Side, case: Case, scratch: Path, log_path: Path) -> Callable[[], Worker]:
    """Start ``side``'s case process for ``case`` (a fresh interpreter in the side's directory);
    returns a function that connects to it once it listens, so that both sides' interpreters start
    (import torch) in parallel."""
    scratch.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(16)
    # Absolute: the process runs in the side's directory, not this one.
    address = scratch.resolve() / f"{side.label}-address.json"
    address.unlink(missing_ok=True)
    env = {**os.environ, **userpath.safe_path_env(),
           ENV_KEY: json.dumps({"address_file": str(address), "authkey": key})}
    log = open(log_path, "ab")  # noqa: SIM115 - the process outlives this function; stop() closes it
    proc = subprocess.Popen([side.python, "-m", "bench.side_worker"], cwd=side.directory, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def stop() -> None:
        kill_tree(proc.pid, group=True)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            pass
        log.close()

    def death() -> dict[str, Any]:
        try:
            code = proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        tail = _log_tail(log_path)
        return {"status": "failed", "error": f"the case process exited with code {code} without a result"
                                             + (f": {tail}" if tail else "")}

    def connect() -> Worker:
        from bench.rounds import StartFailed, connect_when_listening

        try:
            conn = connect_when_listening(proc, address, key, case.params.timeout, death, stop, "its process")
        except StartFailed as exc:
            raise _SideFailed(side.label, exc.answer) from None
        return Worker(conn, lambda: proc.poll() is None, stop, death)

    return connect


def _log_tail(path: Path) -> str:
    try:
        lines = [ln.strip() for ln in path.read_text(encoding="utf-8", errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""


# --- one case --------------------------------------------------------------------------------------


@dataclass
class Budget:
    """The run's measuring time, ``max_time`` seconds per paired case, pooled over its cases.

    Why pooled: a case that answers early (most do) leaves time that a harder one can use, while
    the run as a whole keeps a predictable length for a CI job (a 2-case suite took 2-3 minutes
    here, README *What it detects here*). A case's first set may use its *share*: what is left of the pool divided by the cases
    left, itself included. A flagged case's confirmation may take as long as its first set was
    allowed, even past the pool: a budget must not turn a regression into an unconfirmed one. The
    cases after it then get at least their first look (``min_launches`` launches) and no more."""

    total: float
    cases: int  # paired cases not yet finished, the current one included
    used: float = 0.0

    def share(self) -> float:
        return max(0.0, self.total - self.used) / max(1, self.cases)

    def spend(self, seconds: float) -> None:
        """A case is finished after ``seconds`` of measuring (start-ups included)."""
        self.used += seconds
        self.cases = max(0, self.cases - 1)


@dataclass
class _CaseRun:
    """Both sides of one case while its launches run."""

    case: Case
    settings: ABSettings
    launch: Callable[[], tuple[dict[str, _Side], Callable[[], None]]]  # both sides, and the launch's end
    states: dict[str, CaseState]
    origin: float
    orders: list[bool]
    observer: Observer
    clock: Callable[[], float] = time.monotonic
    log_ratios: list[float] = field(default_factory=list)
    base_first: list[bool] = field(default_factory=list)
    stage_of_pair: list[int] = field(default_factory=list)
    launch_of_pair: list[int] = field(default_factory=list)
    pair_start_s: list[float] = field(default_factory=list)
    launch_ratios: list[float] = field(default_factory=list)
    launch_stage: list[int] = field(default_factory=list)
    stages: list[StageRecord] = field(default_factory=list)
    stats: list[pairs.PairStats | None] = field(default_factory=list)

    def half(self, worker: _Side, label: str, index: int, position: int, steps: int) -> tuple[float, float]:
        """One side's half of pair ``index``: (throughput, start). Both sides time windows of the
        same ``steps``, after one untimed step that brings their model back into the caches."""
        request = {"op": "trial", "seconds": 0.0, "windows": self.settings.half_windows, "collect": False,
                   "steps_per_window": steps, "rewarm": REWARM_STEPS}
        answer = worker.request(request, timeout=self.case.params.timeout)
        if answer.get("status") != "ok":
            raise _SideFailed(label, answer)
        record = trial_record(answer, index, position, self.origin, len(self.launch_ratios))
        self.states[label].trials.append(record)
        return record["median"], answer["start"] - self.origin

    def one_launch(self, stage_index: int) -> None:
        """Fresh processes of both sides, ``pairs_per_launch`` pairs from them, then they end."""
        workers, end = self.launch()
        # The longer of the two calibrations, so that a window lasts at least window_time on both.
        steps = max(int(self.states[label].last_ready.get("steps_per_window") or 1) for label in workers)
        logs: list[float] = []
        try:
            for _ in range(self.pairs_per_launch):
                index = len(self.log_ratios)
                base_first = self.orders[index % len(self.orders)]
                order = ("base", "new") if base_first else ("new", "base")
                got: dict[str, float] = {}
                start = 0.0
                for position, label in enumerate(order):
                    got[label], at = self.half(workers[label], label, index, position, steps)
                    start = at if position == 0 else start
                logs.append(math.log(got["new"] / got["base"]))
                self.log_ratios.append(logs[-1])
                self.base_first.append(base_first)
                self.stage_of_pair.append(stage_index)
                self.launch_of_pair.append(len(self.launch_ratios))
                self.pair_start_s.append(start)
        finally:
            end()
        self.launch_ratios.append(statistics.median(logs))
        self.launch_stage.append(stage_index)

    def stage(self, kind: Literal["initial", "confirmation"], deadline: float | None = None) -> StageRecord:
        """Launches until they answer, ``max_launches`` are taken, or the next launch would end after
        ``deadline`` seconds (the set's share of the run's ``Budget``; ``max_time`` when None), or
        ``SUSPECT_EXTENSION`` times that while its estimate lies beyond the threshold."""
        s = self.settings
        allowed = s.max_time if deadline is None else deadline
        stage_index = len(self.stages)
        first = len(self.launch_ratios)
        pairs_before = len(self.log_ratios)
        extended = False
        t0 = self.clock()
        while True:
            self.one_launch(stage_index)
            n = len(self.launch_ratios) - first
            elapsed = self.clock() - t0
            # The launches of a set take about equally long: stop when the next one would end past
            # the deadline, not after it. Not before the first look, though, unless the case's own
            # max_time has passed (a launch of a huge model): a set too short to look at says nothing.
            next_end = elapsed * (n + 1) / n
            out_of_time = next_end > allowed and (n >= s.min_launches or elapsed >= s.max_time)
            full = n >= s.max_launches or out_of_time
            if n < s.min_launches and not full:
                self.observer.pair_finished(self.case, kind, n, None)
                continue
            if not full and (n - s.min_launches) % s.check_every != 0:
                continue
            stats = pairs.analyse(self.launch_ratios[first:], s.confidence, unit=self.unit)
            found = pairs.answer(stats, s.threshold) if stats is not None else None
            self.observer.pair_finished(self.case, kind, n, stats)
            suspect = found is None and stats is not None and abs(math.log(stats.ratio)) > math.log1p(s.threshold)
            if suspect and out_of_time and n < s.max_launches and next_end <= allowed * SUSPECT_EXTENSION:
                extended = True
                continue  # a suspected change (SUSPECT_EXTENSION): on, with a look after every launch
            if found is not None or full:
                reason: Literal["answer", "max_launches", "max_time"] = (
                    "answer" if found is not None else "max_launches" if n >= s.max_launches else "max_time")
                record = StageRecord(
                    kind=kind, launches=n, pairs=len(self.log_ratios) - pairs_before, answer=found,
                    stop_reason=reason, measured_s=elapsed, ratio=stats.ratio if stats else None,
                    low=stats.low if stats else None, high=stats.high if stats else None,
                    p=stats.p if stats else None, sd=stats.sd if stats else None,
                    deadline_s=allowed * SUSPECT_EXTENSION if extended else allowed, extended=extended)
                self.stages.append(record)
                self.stats.append(stats)
                return record

    @property
    def pairs_per_launch(self) -> int:
        return self.settings.pairs_per_launch or PAIRS_PER_LAUNCH["server"]  # run_ab always sets it

    @property
    def unit(self) -> str:
        return f"launches of {self.pairs_per_launch} pairs"

    def all_launches(self) -> pairs.PairStats | None:
        return pairs.analyse(self.launch_ratios, self.settings.confidence, unit=self.unit)


def _verdict(run: _CaseRun) -> dict[str, Any]:
    """The case's verdict and its sentence from its stages (before the correction across cases)."""
    s = run.settings
    initial = run.stages[0]
    first = run.stats[0]
    limit = f"±{s.threshold:.0%}".replace(".0%", "%")
    if initial.answer == "unchanged" and first is not None:
        return _fields(first, "unchanged", f"unchanged: {first.describe()}, within {limit}")
    if initial.answer is None or first is None:
        if first is None:
            return {"verdict": "inconclusive", "message": "inconclusive: too few pairs for an interval"}
        needed = pairs.units_needed(first, s.threshold)
        more = f"; about {needed} launches would settle it" if needed else ""
        if initial.stop_reason == "max_time" and initial.deadline_s is not None:
            more += (f" (this case's {initial.deadline_s:.0f} s ran out, extended for a suspected change: --max-time)"
                     if initial.extended else f" (this case's {initial.deadline_s:.0f} s ran out: --max-time)")
        elif initial.stop_reason == "max_launches":
            more += " (--max-launches)"
        found = _fields(first, "inconclusive", (
            f"inconclusive: {first.describe()} is neither within {limit} nor beyond it; these launches could "
            f"flag a change of {pairs.detectable(first, s.threshold):.1%} or more{more}"))
        found.update(detectable=pairs.detectable(first, s.threshold), launches_needed=needed)
        return found
    if not s.confirm:
        return _fields(first, initial.answer, f"{initial.answer}: {first.describe()}, beyond {limit} (not confirmed: "
                                              f"confirmation is off)")
    confirmation = run.stages[1]
    again = run.stats[1]
    combined = run.all_launches() or first
    if confirmation.answer == initial.answer and again is not None:
        return _fields(combined, initial.answer, (
            f"{initial.answer}: {combined.describe()}, beyond {limit}; confirmed by {again.n} fresh launches "
            f"({again.describe()})"))
    said = confirmation.answer or "undecided"
    detail = f" ({again.describe()})" if again is not None else ""
    return _fields(combined, "inconclusive", (
        f"inconclusive: {first.n} launches said {initial.answer} ({first.describe()}), but {confirmation.launches} "
        f"fresh launches said {said}{detail}: not confirmed"))


def _fields(stats: pairs.PairStats, verdict: str, message: str) -> dict[str, Any]:
    return {"verdict": verdict, "message": message, "ratio": stats.ratio, "low": stats.low, "high": stats.high,
            "confidence": stats.confidence, "p": stats.p, "launches": stats.n}


def _adjust(cases: list[ABCaseRecord], confidence: float) -> None:
    """Benjamini-Hochberg across the run's cases: a flag whose adjusted p-value is above 1 -
    ``confidence`` becomes inconclusive, saying why."""
    measured = [c for c in cases if c.p is not None]
    for case, adjusted in zip(measured, pairs.adjust([c.p for c in measured if c.p is not None]), strict=True):
        case.p_adjusted = min(1.0, adjusted)
        if case.verdict in ("regression", "improvement") and adjusted > 1 - confidence:
            case.message = (f"inconclusive: {case.message}; but not significant across the {len(measured)} cases "
                            f"measured (adjusted p = {adjusted:.3g})")
            case.verdict = "inconclusive"


# --- the run ---------------------------------------------------------------------------------------


def _side_record(side: Side) -> SideRecord:
    return SideRecord(label=side.label, spec=side.spec, directory=str(side.directory),  # type: ignore[arg-type]
                      revision=side.revision, python=side.python, python_version=side.probe.get("python"),
                      torch=side.probe.get("torch"))


def _environment(side: Side) -> Environment:
    info = environment.collect({k: v for k, v in side.probe.items() if k != "python"})
    info["python"] = side.probe.get("python") or info["python"]
    info["git"] = environment.git_commit(str(side.directory)) if side.revision is None else {
        "commit": side.revision, "dirty": False}
    return Environment.model_validate(info)


def settings_from(order_seed: int | None, **given: Any) -> ABSettings:
    values = {**DEFAULT_SETTINGS, **{k: v for k, v in given.items() if v is not None}}
    seed = order_seed if order_seed is not None else int.from_bytes(os.urandom(4), "little")
    try:
        return ABSettings.model_validate({**values, "order_seed": seed})
    except Exception as exc:  # pydantic's message names the option
        raise UsageError(f"bench ab: invalid option: {exc}") from None


def run_ab(suite: Suite, base: Side, new: Side, out_dir: Path, settings: ABSettings, *, argv: list[str],
           overrides: list[str], only: str | None, kind: Literal["ab", "aa"] = "ab",
           observer: Observer | None = None, separate: bool = False) -> ABOutcome:
    """Measure every case of ``suite`` on both sides in pairs; write both sides' results, ``ab.json``
    after every case, and return the outcome. Raises ``Interrupted`` (after saving) on Ctrl-C.
    ``separate``: a process per side in every launch even where one could hold both."""
    obs: Observer = observer or _Silent()
    start = ("server" if separate else "shared") if forkable(base) and forkable(new) else "interpreters"
    paired = sum(case.params.mode in SINGLE_PROCESS for case in suite.cases)
    budget = Budget(settings.max_time * paired, paired)
    settings = settings.model_copy(update={
        "start": start, "pairs_per_launch": settings.pairs_per_launch or PAIRS_PER_LAUNCH[start],
        "budget_s": budget.total or None})  # None: no case to pair (all skipped)
    prepare_output(out_dir)
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    suite_info = SuiteInfo(name=suite.name, path=suite.path, source=suite.source)
    run_info: dict[str, Any] = {"argv": argv, "overrides": list(overrides), "only": only}
    writers: dict[str, ResultsWriter] = {}
    for side in (base, new):
        (out_dir / side.label).mkdir(exist_ok=True)
        writers[side.label] = ResultsWriter(
            out_dir / side.label, suite=suite_info, environment=_environment(side), run=run_info,
            rounds=RoundsInfo(seed=settings.order_seed, completed=0, orders=[], estimator=ESTIMATOR))
    doc = ABDoc(kind=kind, suite=suite_info, run=RunInfo.model_validate({"started": now(), "finished": None,
                                                                        "status": "running", **run_info}),
                environment=writers["base"].doc.environment, base=_side_record(base), new=_side_record(new),
                settings=settings, cases=[])
    path = out_dir / AB_NAME

    def flush() -> None:
        atomic_write_text(path, json.dumps(finite(dump(doc)), indent=1, allow_nan=False))

    flush()
    # The statistics import numpy, scipy and ruptures (seconds): before the first pair, not inside it.
    pairs.analyse([0.01, -0.01, 0.02])
    trial_stats.detect_drift([1.0] * 8)
    from bench.runner import CaseLauncher

    # Shared launches are forks of one server for the whole run: the luck a fork draws is common
    # to both sides' models in it, so nothing needs a fresh server.
    shared = CaseLauncher() if start == "shared" else None
    try:
        for index, case in enumerate(suite.cases):
            obs.case_started(case, index, len(suite.cases))
            record, side_records = _run_case(case, index, base, new, out_dir, settings, obs, budget, shared)
            for label, case_record in side_records.items():
                writers[label].put(case_record)
            doc.cases.append(record)
            flush()
            obs.case_finished(case, record)
    except KeyboardInterrupt:
        if shared is not None:
            shared.close()
        for w in writers.values():
            w.finish("interrupted")
        doc.run.status, doc.run.finished = "interrupted", now()
        flush()
        raise Interrupted(f"interrupted after {len(doc.cases)} of {len(suite.cases)} case(s); saved in {out_dir}") from None
    if shared is not None:
        shared.close()
    _adjust(doc.cases, settings.confidence)
    for w in writers.values():
        w.finish("complete")
    doc.run.status, doc.run.finished = "complete", now()
    flush()
    from bench.report import ab as ab_report

    atomic_write_text(out_dir / "ab.md", ab_report.markdown(doc))
    atomic_write_text(out_dir / "ab.html", ab_report.html(doc, out_dir))
    return ABOutcome(out_dir, doc)


def forkable(side: Side) -> bool:
    """Whether the side runs under this interpreter, so its processes can be forks of a server."""
    return os.path.realpath(side.python) == os.path.realpath(sys.executable)


def _run_case(case: Case, index: int, base: Side, new: Side, out_dir: Path, settings: ABSettings,
              obs: Observer, budget: Budget, shared: CaseLauncher | None = None,
              ) -> tuple[ABCaseRecord, dict[str, CaseRecord]]:
    from bench.runner import CaseLauncher, _case_record

    params = Params.model_validate(case.params_json())
    side_logs = {s.label: out_dir / "logs" / f"{s.label}-{case.id}.log" for s in (base, new)}
    states = {label: CaseState(case, path) for label, path in side_logs.items()}
    if case.params.mode not in SINGLE_PROCESS:
        reason = f"bench ab pairs single-process cases (cpu, cuda, dp); mode {case.params.mode} is not paired yet"
        record = ABCaseRecord(id=case.id, params=params, verdict="skipped", message=f"skipped: {reason}", error=reason)
        return record, {label: _case_record(case, now(), 0.0, {"status": "skipped", "error": reason}, None)
                        for label in states}
    run: _CaseRun | None = None
    failure: tuple[str, dict[str, Any]] | None = None
    for state in states.values():
        state.started, state.t0 = now(), time.monotonic()
    payload = {"id": case.id, "params": case.params_json(), "out_dir": None}
    # How this case's launches start: the run's way, unless a shared launch failed where separate
    # processes may not (``fallback`` says why).
    start = settings.start if shared is not None or settings.start != "shared" else "server"
    fallback: str | None = None
    if start == "shared":
        for state in states.values():
            state.log_path = out_dir / "logs" / f"{case.id}.log"  # one process, one log

    def launch() -> tuple[dict[str, _Side], Callable[[], None]]:
        """Both sides, built and warmed up in turn, and what ends the launch.

        ``shared`` (under one interpreter, the default): one process, forked from the run's case
        server, builds both sides' models. A process's speed here depends by 5-20% on the process
        (a fresh draw for every fork, stable for its life: the README's *Launches and pairs*);
        within one process two models share it, so it cancels in every pair. ``server``: each side
        a process of its own, both forked back to back from a fresh server per launch, so that the
        launches are independent draws of that luck and it averages out over them.
        ``interpreters`` (the sides run under different Pythons): a fresh interpreter per side."""
        workers: dict[str, _Side] = {}
        stops: list[Callable[[], None]] = []
        # Which side is built and warmed up first alternates from launch to launch: whatever the
        # second inherits from the first (other pages, a busier machine while it warms up) is
        # then not always the new side's.
        both = (base, new) if run is None or len(run.launch_ratios) % 2 == 0 else (new, base)
        launcher = CaseLauncher() if start == "server" else None

        def end() -> None:
            for stop in stops:
                stop()
            if launcher is not None:  # after its children: it reports their ends
                launcher.close()

        try:
            if start == "shared":
                assert shared is not None
                worker = fork_both(shared, both, case, states[base.label].log_path)
                stops.append(worker.stop)
                for side in both:  # one ready per side, in the order they are built
                    ready = worker.request(None, timeout=case.params.timeout)
                    label = str(ready.get("side") or side.label)
                    if ready.get("status") != "ready":
                        raise _SideFailed(label, ready)
                    states[label].ready = states[label].ready or ready
                    states[label].last_ready = ready
                    workers[label] = _SideView(worker, label)
                return workers, end
            started: dict[str, Worker] = {}
            if launcher is None:
                # Importing torch in parallel costs one import's time, not two.
                scratch = out_dir / "scratch" / case.id
                connects = {s.label: start_side(s, case, scratch, states[s.label].log_path) for s in both}
                for side in both:
                    started[side.label] = worker = connects[side.label]()
                    stops.append(worker.stop)
                    hello = worker.request(None, timeout=case.params.timeout)
                    if hello.get("status") != "probe":
                        raise _SideFailed(side.label, hello)
            # Building and warming up one after the other: two torch processes warming up at once
            # on the same cores spin against each other's OpenMP threads (10 warm-up steps of a 30 ms
            # step took 20 s).
            for side in both:
                label = side.label
                if launcher is not None:
                    started[label] = worker = fork_side(launcher, side, case, states[label].log_path)
                    stops.append(worker.stop)
                else:
                    worker = started[label]
                    worker.conn.send(payload)
                ready = worker.request(None, timeout=case.params.timeout)
                if ready.get("status") != "ready":
                    raise _SideFailed(label, ready)
                states[label].ready = states[label].ready or ready
                states[label].last_ready = ready
                workers[label] = worker
        except BaseException:
            end()
            raise
        return workers, end

    deadline = budget.share()
    began = time.monotonic()
    try:
        origin = time.perf_counter()
        orders = pairs.pair_orders(4 * settings.max_launches * (settings.pairs_per_launch or 1) + 2,
                                   settings.order_seed + index)
        run = _CaseRun(case, settings, launch, states, origin, orders, obs)
        try:
            first = run.stage("initial", deadline)
        except _SideFailed as exc:
            if start != "shared" or run.launch_ratios or exc.answer.get("status") != "failed":
                raise
            # Both models in one process can fail where each alone would not (two that do not fit
            # in memory together, a module that registers a name both sides register): separate
            # processes then, saying why; a side that fails there too is the case's failure.
            fallback = f"{exc.side}: {exc.answer.get('error') or 'failed without a reason'}"
            start = "server"
            for label, state in states.items():
                state.log_path, state.ready, state.last_ready = side_logs[label], {}, {}
            run.stages.clear()
            run.stats.clear()
            first = run.stage("initial", deadline)
        if first.answer in ("regression", "improvement") and settings.confirm:
            run.stage("confirmation", deadline)  # as long as the first set was allowed (``Budget``)
    except _SideFailed as exc:
        failure = (exc.side, exc.answer)
    finally:
        budget.spend(time.monotonic() - began)
    side_records: dict[str, CaseRecord] = {}
    for label, state in states.items():
        state.stop_reason = "pairs"
        if failure is not None and failure[0] == label:
            state.fail(failure[1])
        result = case_result(state) if state.status == "ok" and state.trials else {
            "status": state.status if state.status != "ok" else "failed",
            "error": state.error or (f"not measured: the {failure[0]} side failed" if failure else "no pair measured"),
            "traceback": state.traceback, "warnings": list(state.ready.get("warnings") or []),
            "device": state.ready.get("device")}
        log = state.log_path
        keep = log.exists() and log.stat().st_size > 0
        side_records[label] = _case_record(case, state.started, time.monotonic() - state.t0, result,
                                           str(log.relative_to(out_dir)) if keep else None)
    how: dict[str, Any] = {"start": start, "fallback": fallback} if start != settings.start or fallback else {}
    if failure is not None:
        side, answer = failure
        status: Literal["failed", "skipped"] = "skipped" if answer.get("status") == "skipped" else "failed"
        error = f"{side}: {answer.get('error') or 'failed without a reason'}"
        record = ABCaseRecord(id=case.id, params=params, verdict=status, message=f"{status}: {error}", error=error,
                              **how, **_pairs_of(run))
        return record, side_records
    assert run is not None
    fields = _verdict(run)
    if fallback:
        fields["message"] += (f" (each side in a process of its own: both in one process failed, {fallback})")
    record = ABCaseRecord(id=case.id, params=params, stages=run.stages, **how, **_pairs_of(run), **{
        k: v for k, v in fields.items()})
    return record, side_records


def _pairs_of(run: _CaseRun | None) -> dict[str, Any]:
    if run is None:
        return {}
    return {"log_ratios": run.log_ratios, "base_first": run.base_first, "stage_of_pair": run.stage_of_pair,
            "launch_of_pair": run.launch_of_pair, "launch_ratios": run.launch_ratios,
            "pair_start_s": run.pair_start_s, "pairs": len(run.log_ratios)}
