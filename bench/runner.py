"""Schedule the cases of a suite, each in its own process, with a timeout, and save results after
every case.

Why a fresh process per case: no state (allocator caches, thread pools, cuDNN autotuning, a user's
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
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

import psutil

from bench import environment
from bench.errors import UsageError
from bench.launch import Cluster, run_ddp_case, skip_reason
from bench.measure import step_time_summary, thin, throughput_summary
from bench.results import ResultsWriter, now, prepare_output
from bench.scaling import analyze
from bench.suite import Case, Suite


class Interrupted(Exception):
    """The run was stopped by SIGINT or SIGTERM; finished cases are saved."""


class Observer(Protocol):
    def suite_started(self, suite: Suite, out_dir: Path) -> None: ...
    def case_started(self, case: Case) -> None: ...
    def case_finished(self, case: Case, record: dict[str, Any]) -> None: ...


class _Silent:
    def suite_started(self, suite: Suite, out_dir: Path) -> None:
        pass

    def case_started(self, case: Case) -> None:
        pass

    def case_finished(self, case: Case, record: dict[str, Any]) -> None:
        pass


def kill_tree(pid: int, timeout: float = 5.0) -> None:
    """Kill a process and every descendant (DataLoader workers, DDP ranks), then reap them."""
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=timeout)


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

    def _call(self, target: Callable[..., None], args: tuple[Any, ...], timeout: float
              ) -> tuple[Any | None, str | None]:
        """Run ``target(conn, *args)`` in a new process; return (message, error)."""
        receiver, sender = self.ctx.Pipe(duplex=False)
        proc = self.ctx.Process(target=target, args=(sender, *args), daemon=False)
        deadline = time.monotonic() + timeout
        message: Any | None = None
        error: str | None = None
        try:
            proc.start()
            sender.close()
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

    def run_case(self, case: Case, out_dir: Path | None, log_path: Path | None) -> dict[str, Any]:
        """Run one case in a fresh process; files it writes (traces...) go under ``out_dir``."""
        from bench import worker_entry

        payload = {"id": case.id, "params": case.params_json(), "out_dir": str(out_dir) if out_dir else None}
        message, error = self._call(worker_entry.child_main, (payload, str(log_path) if log_path else None),
                                    case.params.timeout)
        if error is not None:
            return {"status": "failed", "error": error}
        assert isinstance(message, dict)
        return message

    def probe(self) -> dict[str, Any] | None:
        from bench import worker_entry

        message, _ = self._call(worker_entry.probe_main, (), 120)
        return message if isinstance(message, dict) else None


@dataclass
class RunOutcome:
    out_dir: Path
    results_path: Path
    records: list[dict[str, Any]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(r["status"] == "failed" for r in self.records)


def _case_record(case: Case, started: str, duration: float, result: dict[str, Any],
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
        **({"backend": result["backend"]} if "backend" in result else {}),
    }


def pool_repeats(results: list[dict[str, Any]], target_ci: float) -> dict[str, Any]:
    """One record from several processes of the same case: windows pooled (the interval then
    covers process-to-process variation too), each process's median kept."""
    if len(results) == 1 or any(r.get("status") != "ok" for r in results):
        return next((r for r in results if r.get("status") != "ok"), results[0])
    pooled = dict(results[0])
    samples = {key: [v for r in results for v in r["samples"][key]]
               for key in ("window_throughput", "window_s", "step_time_ms", "local_window_s")}
    samples["window_repeat"] = [i for i, r in enumerate(results) for _ in r["samples"]["window_s"]]
    samples["step_time_ms"] = thin(samples["step_time_ms"])
    samples["clock_origin"] = results[0]["samples"]["clock_origin"]
    samples["window_start_s"] = results[0]["samples"]["window_start_s"]
    metrics = dict(results[0]["metrics"])
    metrics["throughput"] = {**throughput_summary(samples["window_throughput"], target_ci),
                             "per_repeat": [r["metrics"]["throughput"]["median"] for r in results]}
    metrics["step_time_ms"] = step_time_summary(samples["step_time_ms"],
                                                results[0]["metrics"]["step_time_ms"]["source"])
    for key in ("windows", "steps", "measured_s"):
        metrics[key] = sum(r["metrics"][key] for r in results)
    metrics["peak_rss_mb"] = max(r["metrics"]["peak_rss_mb"] for r in results)
    metrics["repeats"] = len(results)
    pooled["metrics"] = metrics
    pooled["samples"] = samples
    pooled["warnings"] = sorted({w for r in results for w in r.get("warnings") or []})
    return pooled


def _run_one(launcher: CaseLauncher, case: Case, out_dir: Path | None, log_path: Path, cluster: Cluster,
             env: dict[str, Any]) -> dict[str, Any]:
    # Profilers run in the first process only: the pooled record keeps that process's collector
    # records, and later ones would overwrite the files those records name with others' profiles.
    later = replace(case, params=case.params.model_copy(update={"profile": ()}))
    results = [_run_process(launcher, case if i == 0 else later, out_dir, log_path, cluster, env)
               for i in range(case.params.repeats)]
    return pool_repeats(results, case.params.measure.target_ci)


def _run_process(launcher: CaseLauncher, case: Case, out_dir: Path | None, log_path: Path, cluster: Cluster,
                 env: dict[str, Any]) -> dict[str, Any]:
    if case.params.mode != "ddp":
        if cluster.multi_node:
            return {"status": "skipped", "error": "multi-node run: only ddp cases run across nodes"}
        return launcher.run_case(case, out_dir, log_path)
    reason = skip_reason(case, cluster, cores=env.get("cores_available") or 1, gpus=len(env.get("gpus") or []))
    if reason is not None:
        return {"status": "skipped", "error": reason}
    work_dir = out_dir / "ranks" / case.id if out_dir is not None else None
    result = run_ddp_case(case, cluster, work_dir, log_path, out_dir)
    if work_dir is not None and result.get("status") == "ok":
        # The scratch folder only matters for a post-mortem: the record now holds everything.
        shutil.rmtree(work_dir, ignore_errors=True)
    return result


def run_suite(suite: Suite, out_dir: Path, *, argv: list[str], overrides: list[str] | None = None,
              only: str | None = None, observer: Observer | None = None, cluster: Cluster | None = None,
              previous: dict[str, Any] | None = None,
              after_case: Callable[[ResultsWriter], None] | None = None) -> RunOutcome:
    """Run every case of ``suite`` in isolation and write ``out_dir/results.json`` after each.

    Raises ``Interrupted`` on KeyboardInterrupt (the CLI maps SIGTERM to it too), after killing
    the running case's processes and saving what finished. On a node other than node 0 of a
    multi-node run, ddp cases run their share of ranks and nothing is written.

    ``previous`` is the document of an interrupted run in ``out_dir`` (``--resume``): its
    finished cases are kept as they are and not run again."""
    obs = observer or _Silent()
    cluster = cluster or Cluster()
    if cluster.node_rank != 0:
        return _run_follower(suite, cluster, obs)
    prepare_output(out_dir)
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    launcher = CaseLauncher()
    env = environment.fingerprint(launcher.probe())
    done: list[dict[str, Any]] = []
    run_info: dict[str, Any] = {"argv": argv, "overrides": list(overrides or []), "only": only,
                                "nnodes": cluster.nnodes}
    if previous is not None:
        if previous["suite"]["name"] != suite.name:
            raise UsageError(f"{out_dir}: holds a run of suite {previous['suite']['name']!r}, not {suite.name!r}")
        wanted = {c.id for c in suite.cases}
        done = [c for c in previous["cases"] if c["id"] in wanted]
        run_info["resumed"] = [*previous["run"].get("resumed", []), now()]
        run_info["started"] = previous["run"]["started"]
        # The fingerprint of the first session stays; a resume on another machine mixes numbers
        # from two machines, so the run says so (with the same fingerprint `bench compare` uses).
        from bench.compare import environment_differences

        if environment_differences(previous["environment"], env):
            run_info["resumed_on_other_machine"] = True
        env = previous["environment"]
    writer = ResultsWriter(out_dir, suite={"name": suite.name, "path": suite.path, "source": suite.source},
                           environment=env, run=run_info, cases=done)
    outcome = RunOutcome(out_dir=out_dir, results_path=writer.path, records=list(done))
    finished = {c["id"] for c in done}
    obs.suite_started(suite, out_dir)
    try:
        for case in suite.cases:
            if case.id in finished:
                obs.case_finished(case, next(c for c in done if c["id"] == case.id))
                continue
            obs.case_started(case)
            log_path = logs / f"{case.id}.log"
            started, t0 = now(), time.monotonic()
            result = _run_one(launcher, case, out_dir, log_path, cluster, env)
            duration = time.monotonic() - t0
            keep_log = log_path.exists() and log_path.stat().st_size > 0
            if log_path.exists() and not keep_log:
                log_path.unlink()
            record = _case_record(case, started, duration, result,
                                  str(log_path.relative_to(out_dir)) if keep_log else None)
            writer.add(record)
            outcome.records.append(record)
            obs.case_finished(case, record)
            if after_case is not None:
                after_case(writer)
    except KeyboardInterrupt:
        writer.finish("interrupted", {"scaling": analyze(outcome.records)})
        raise Interrupted(f"interrupted: {len(outcome.records)} of {len(suite.cases)} cases finished "
                          f"and saved in {writer.path}; continue with: bench run --resume {out_dir}") from None
    finally:
        _stop_forkserver()
    writer.finish("complete", {"scaling": analyze(outcome.records)})
    return outcome


def _stop_forkserver() -> None:
    """The forkserver would exit on its own once this process ends; stopping it here means a
    finished or interrupted run leaves no process behind even while the caller goes on.

    It is killed first: asked politely, it runs torch's interpreter teardown (about 0.9 s here)
    while this process waits, and it holds nothing worth a teardown, only a template to fork from.
    Its pid is our unreaped child until ``_stop`` waits for it, so the signal cannot reach another
    process."""
    from multiprocessing import forkserver

    server = forkserver._forkserver
    pid = getattr(server, "_forkserver_pid", None)  # CPython's own (private) state and shutdown
    if pid is not None:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    stop = getattr(server, "_stop", None)
    if stop is not None:
        try:
            stop()
        except OSError:
            pass


def _run_follower(suite: Suite, cluster: Cluster, obs: Observer) -> RunOutcome:
    """A node other than node 0: run this node's ranks of every ddp case, write nothing."""
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix="bench-node"))
    outcome = RunOutcome(out_dir=scratch, results_path=scratch / "results.json")
    cores = environment.available_cores()
    obs.suite_started(suite, scratch)
    try:
        for case in suite.cases:
            if case.params.mode != "ddp":
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
