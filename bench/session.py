"""A case built once and measured in trials: the worker side of rounds (``bench.rounds``).

A case process builds its model, data and optimizer, warms up and calibrates its window length
once, then waits. The coordinator asks it for a trial (a few windows of steps, about
``measure.trial_time`` seconds) when the case's turn comes in a round, and for its collectors'
extra work once all rounds are done. Only one case process runs at a time; the others block on
their pipe, so they take no CPU from the trial being timed.

Why one persistent process per case rather than one per trial: a fresh process per trial would
repeat the build and warm-up (seconds for a CNN) for every trial, so trials could not be short, and
short trials interleaved in random order are what let the rounds sample the machine's drift.
Isolation between cases is unchanged: every case still has a process of its own.
"""

from __future__ import annotations

import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch

from bench import reference
from bench.collectors import CaseContext, make_collectors
from bench.measure import calibrate, run_trial, thin
from bench.suite import CaseParams
from bench.training import CompileFailed, compiler_error, graph_breaks
from bench.worker import Skip, build_step, describe_error, peak_rss_mb, single_process_setup


class CompanionReference:
    """The machine-speed reference's training step built in a case's own process and measured right
    after each of the case's trials (``bench.reference``: why), on the CPU at the case's thread
    count. It shares the process's luck with the case, so the trial's ratio of the two cancels it."""

    def __init__(self, seconds: float) -> None:
        self.params = reference.companion_params()
        self.seconds = seconds
        self.step, _ = build_step(self.params, torch.device("cpu"), self.params.batch_size)
        self.steps_per_window = 0

    def prepare(self) -> None:
        m = self.params.measure
        self.steps_per_window = calibrate(self.step, m.warmup_steps, m.window_time).steps_per_window

    def trial(self) -> list[float]:
        """Its windows' throughput, after a few untimed steps: the case's trial has just evicted
        the reference's weights from the caches."""
        for _ in range(reference.COMPANION_REWARM_STEPS):
            self.step()
        result = run_trial(self.step, self.steps_per_window, self.params.batch_size, self.seconds,
                           step_times=False, min_windows=self.params.measure.min_windows)
        return list(result.window_throughput)


class CaseSession:
    """One process's share of a case (the whole case, or one rank of a DDP case), built and warmed
    up, measuring trials on request. ``batch`` is what this process feeds its model per step,
    ``samples_per_step`` what all ranks together process per step."""

    def __init__(self, params: CaseParams, device: torch.device, payload: dict[str, Any], *, batch: int,
                 samples_per_step: int, wrap: Callable[[torch.nn.Module], torch.nn.Module] | None,
                 threads: int, warnings: list[str], rank: int = 0,
                 agree: Callable[[float], float] | None = None, companion_s: float | None = None) -> None:
        self.params = params
        self.device = device
        self.batch = batch
        # A step is grad_accum micro-batches of ``batch``: throughput counts every one of them.
        self.micro_batches = params.grad_accum
        self.samples_per_step = samples_per_step * params.grad_accum
        self.threads = threads
        self.warnings = warnings
        self.agree: Callable[[float], float] = agree or (lambda seconds: seconds)
        t0 = time.perf_counter()
        self.step, self.model = build_step(params, device, batch, wrap)
        self.build_s = time.perf_counter() - t0
        self.ctx = CaseContext(params=params, device=device, out_dir=payload.get("out_dir"),
                               case_id=payload.get("id", ""), rank=rank, step=self.step, model=self.model,
                               optimizer=getattr(self.step, "optimizer", None), batch=batch * params.grad_accum)
        if agree is not None:
            self.ctx.agree = agree
        self.collectors = make_collectors(self.ctx)
        # On CUDA, steps are asynchronous: synchronise at window edges only, so a window's time
        # covers exactly its steps; per-step timestamps would time kernel launches, so they are off.
        self.cuda = device.type == "cuda"
        self.sync: Callable[[], None] = (lambda: torch.cuda.synchronize(device)) if self.cuda else (lambda: None)
        self.steps_per_window = 0
        self.cuda_peaks: tuple[float, float] | None = None
        # This process's own view over all trials (under DDP each rank's, for its rank summary).
        self.local_window_s: list[float] = []
        self.step_ms: list[float] = []
        self.companion_s = companion_s if device.type == "cpu" else None
        self.companion: CompanionReference | None = None

    def compile(self) -> dict[str, Any]:
        """Compile before the warm-up: torch.compile compiles on the model's first call, so one
        step here does it, timed on its own (``compile_s``: that first step, compilation
        included). The warm-up that follows then warms compiled code, and no trial ever
        contains a compilation. A compiler error fails the case with the compiler's message."""
        if not self.params.compile.enabled:
            return {}
        before = graph_breaks()
        t0 = time.perf_counter()
        try:
            self.step()
            self.sync()
        except Exception as exc:
            if not compiler_error(exc):
                raise  # the model's own error, compiled or not
            raise CompileFailed(f"torch.compile failed: {describe_error(exc)}") from exc
        seconds = self.agree(time.perf_counter() - t0)
        after = graph_breaks()
        breaks = after - before if after is not None and before is not None else None
        return {"compile_s": seconds, "graph_breaks": breaks}

    def prepare(self) -> dict[str, Any]:
        m = self.params.measure
        compiled = self.compile()
        cal = calibrate(self.step, m.warmup_steps, m.window_time, self.sync, agree=self.agree)
        self.steps_per_window = cal.steps_per_window
        if self.companion_s:
            # Built after the case's model and warm-up, so the case's own memory layout is what it
            # would be alone.
            try:
                self.companion = CompanionReference(self.companion_s)
                self.companion.prepare()
            except Exception as exc:  # the reference is an aid: the case is measured without it
                self.companion = None
                self.warnings.append(f"machine-speed reference not measured in this process: {describe_error(exc)}")
        return {"status": "ready", "device": str(self.device), "threads": self.threads, "build_s": self.build_s,
                "warmup_s": cal.warmup_seconds, "steps_per_window": cal.steps_per_window,
                "batch_per_process": self.batch, "warnings": list(self.warnings), **compiled}

    def trial(self, seconds: float, collect: bool, windows: int | None = None, steps_per_window: int | None = None,
              rewarm: int = 0) -> dict[str, Any]:
        """Windows of steps for ``seconds`` (and at least ``windows`` of them: ``measure.min_windows``
        unless given; ``bench ab`` asks for exactly a few); with ``collect``, the collectors watch
        this trial (memory and GPU samplers, the window times FLOPs are divided by). On a GPU that
        trial lasts at least ten NVML sampling intervals, so the telemetry has samples to summarise.

        ``bench ab`` gives both sides the same ``steps_per_window`` (a half of fewer steps would pay
        more of a cold start per step) and ``rewarm`` untimed steps first: the other side's half
        has just evicted this model from the caches, which a process that trains on never sees."""
        if collect and self.cuda:
            seconds = max(seconds, 10 * self.params.nvml_interval)
        if rewarm:
            for _ in range(rewarm):
                self.step()
            self.sync()
        per_window = steps_per_window or self.steps_per_window
        measure = lambda: run_trial(self.step, per_window, self.samples_per_step, seconds,  # noqa: E731
                                    self.sync, step_times=not self.cuda, agree=self.agree,
                                    min_windows=self.params.measure.min_windows if windows is None else windows)
        if collect:
            if self.cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            with self.collectors:
                result = measure()
            if self.cuda:
                self.cuda_peaks = (torch.cuda.max_memory_allocated(self.device) / 2**20,
                                   torch.cuda.max_memory_reserved(self.device) / 2**20)
            self.ctx.measurement = result
        else:
            result = measure()
        steps_ms = ([s * 1000 for s in result.step_seconds] or
                    [s * 1000 / result.steps_per_window for s in result.window_seconds])
        self.local_window_s.extend(result.local_window_seconds)
        self.step_ms.extend(thin(steps_ms, 500))
        answer = {"status": "ok", "start": result.window_start[0], "window_s": result.window_seconds,
                  "local_window_s": result.local_window_seconds, "window_throughput": result.window_throughput,
                  "steps": result.steps, "step_time_ms": thin(steps_ms, 500),
                  "step_source": "per_step" if result.step_seconds else "window_mean"}
        if self.companion is not None:  # after the collectors: they watch the case's steps only
            try:
                answer["reference_windows"] = self.companion.trial()
            except Exception:
                # The round's reference stands in for this trial and the rest (``reference_source``
                # says so); the case's own trial is unaffected.
                self.companion = None
        return answer

    def finish(self) -> dict[str, Any]:
        """The collectors' extra, untimed work (profiler windows, the FLOP count) and their records."""
        # What the step anatomy compares its mean step with: the mean step of each of this
        # process's windows, over every trial (one trial's would carry that trial's moment of the
        # machine's drift), the median over windows (as throughput is). Not the median single
        # step: a mean counts the occasional slow step that a median of steps leaves out.
        windows = self.local_window_s
        self.ctx.measured_step_ms = (1000 * statistics.median(windows) / self.steps_per_window
                                   if windows and self.steps_per_window else None)
        self.collectors.after()
        out: dict[str, Any] = {"status": "ok", "collectors": self.collectors.records(), "peak_rss_mb": peak_rss_mb()}
        if self.cuda_peaks is not None:
            out["cuda_peak_allocated_mb"], out["cuda_peak_reserved_mb"] = self.cuda_peaks
        return out


def _failure(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, Skip):
        return {"status": "skipped", "error": str(exc)}
    return {"status": "failed", "error": describe_error(exc),
            "traceback": "".join(traceback.format_exception(exc))[-8000:]}


def _trial(session: CaseSession, request: dict[str, Any]) -> dict[str, Any]:
    """Answer a ``trial`` request (``bench.rounds``, ``bench.ab``)."""
    windows, steps = request.get("windows"), request.get("steps_per_window")
    return session.trial(float(request["seconds"]), bool(request.get("collect")), None if windows is None else int(windows),
                         None if steps is None else int(steps), int(request.get("rewarm") or 0))


def serve(session_factory: Callable[[], CaseSession], receive: Callable[[], dict[str, Any]],
          send: Callable[[dict[str, Any]], None]) -> None:
    """The request loop of a case: build and prepare, then answer ``trial`` and ``finish`` until
    finished or failed. Every answer is one message; a failure is a message, never an exception."""
    try:
        session = session_factory()
        send(session.prepare())
    except BaseException as exc:  # a user's model may raise anything; it must become a message
        send(_failure(exc))
        return
    while True:
        request = receive()
        try:
            if request["op"] == "trial":
                send(_trial(session, request))
            else:
                send(session.finish())
                return
        except BaseException as exc:
            send(_failure(exc))
            return


class SideCode:
    """Where one ``bench ab`` side's code lives in a process that holds both sides' models: its
    directory is first on the import path and the working directory while that side's model is
    built, and every module imported from it is forgotten afterwards (``sys.modules``), so that
    the other side's import of the same name finds that side's own file. The modules stay alive
    through the model built from them."""

    def __init__(self, label: str, directory: str) -> None:
        self.label = label
        self.directory = os.path.realpath(directory)

    def _inside(self, module: object) -> bool:
        places = [getattr(module, "__file__", None), *list(getattr(module, "__path__", None) or [])]
        return any(isinstance(p, str) and os.path.realpath(p).startswith(self.directory + os.sep) for p in places)

    def build(self, factory: Callable[[], CaseSession]) -> CaseSession:
        before = set(sys.modules)
        os.chdir(self.directory)
        sys.path.insert(0, self.directory)
        try:
            return factory()
        finally:
            sys.path.remove(self.directory)
            for name in set(sys.modules) - before:
                if self._inside(sys.modules[name]):
                    del sys.modules[name]

    def enter(self) -> None:
        """Before this side's steps: its directory is the working directory again (a model that
        reads a file relative to it reads its own side's)."""
        os.chdir(self.directory)


def serve_sides(factory: Callable[[], CaseSession], sides: list[SideCode], receive: Callable[[], dict[str, Any]],
                send: Callable[[dict[str, Any]], None]) -> None:
    """``bench ab``'s shared launch: one process builds and prepares each side's model in turn
    (one ``ready`` message each, naming the side), then answers ``trial`` requests for the side
    each names, until ``finish``. Why one process for both: ``bench.ab``. A failure is a message
    naming the side, never an exception."""
    sessions: dict[str, CaseSession] = {}
    for code in sides:
        try:
            sessions[code.label] = session = code.build(factory)
            send({**session.prepare(), "side": code.label})
        except BaseException as exc:  # a user's model may raise anything; it must become a message
            send({**_failure(exc), "side": code.label})
            return
    by_label = {code.label: code for code in sides}
    while True:
        request = receive()
        if request["op"] != "trial":
            send({"status": "ok"})
            return
        label = request["side"]
        try:
            by_label[label].enter()
            send({**_trial(sessions[label], {**request, "collect": False}), "side": label})
        except BaseException as exc:
            send({**_failure(exc), "side": label})
            return


def _redirect_output(log_path: str | None) -> None:
    if log_path:
        # The case's own output (warnings, a user's prints) goes to its log, not over the
        # progress display; the record carries the error text.
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)


def single_process_factory(payload: dict[str, Any]) -> Callable[[], CaseSession]:
    """What builds a cpu, cuda or dp case's session from its payload (in its own process)."""
    def factory() -> CaseSession:
        params = CaseParams.model_validate(payload["params"])
        device, batch, wrap, threads, warnings = single_process_setup(params)
        return CaseSession(params, device, payload, batch=batch, samples_per_step=batch, wrap=wrap,
                           threads=threads, warnings=warnings, companion_s=payload.get("companion_s"))

    return factory


def serve_both_sides(payload: dict[str, Any], conn: Connection, log_path: str | None,
                     sides: list[tuple[str, str]]) -> None:
    """Entry point of ``bench ab``'s shared launch: both sides' models of a single-process case
    (``sides``: label and code directory, in the order they are built)."""
    _redirect_output(log_path)
    try:
        serve_sides(single_process_factory(payload), [SideCode(label, d) for label, d in sides], conn.recv, conn.send)
    except (EOFError, OSError):
        pass  # the coordinator went away (interrupted, or done with this launch)
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()


def serve_process(payload: dict[str, Any], conn: Connection, log_path: str | None) -> None:
    """Entry point of a single-process case (cpu, cuda, dp) in rounds."""
    _redirect_output(log_path)
    try:
        serve(single_process_factory(payload), conn.recv, conn.send)
    except (EOFError, OSError):
        pass  # the coordinator went away (interrupted): nothing left to answer
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()
