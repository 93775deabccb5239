"""py-spy sampling of the case's processes (``profile: pyspy``): a flame graph SVG and a
speedscope JSON (speedscope.app shows it as a timeline as well as a flame graph).

Why a window after measurement rather than the measured region itself: py-spy costs CPU time
(two recorders, one per output format, since py-spy writes one format per run), and on a small
machine that took about 8% off a CPU case's measured throughput here. Sampling
``profiler.pyspy_seconds`` of extra steps of the same training loop shows the same code paths and
leaves the measured number comparable with cases that are not profiled, as the torch profiler does.
The recorders run with ``--nonblocking`` (they read the interpreter's memory without pausing it)
and ``--subprocesses`` (DataLoader workers, ranks the case started).

If py-spy is missing or may not read this process (ptrace permission), the record says so and the
case's measurement stands as it is.
"""

from __future__ import annotations

import ctypes
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from bench.collectors import CaseContext, Collector

# What py-spy's flame graph writer says when the window held no sample of a running thread.
NO_SAMPLES = "No stack counts found"
FORMATS = {"flamegraph": "pyspy.rank{rank}.svg", "speedscope": "pyspy.rank{rank}.speedscope.json"}
ATTACH_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 60.0
_PR_SET_PTRACER = 0x59616D61
_PR_SET_PTRACER_ANY = -1


def find_pyspy() -> str | None:
    """py-spy next to this interpreter (where pip put it) first, then on PATH."""
    beside = Path(sys.executable).parent / "py-spy"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("py-spy")


def _allow_tracing_by_children(allow: bool) -> None:
    """Under Yama's ptrace_scope 1 a process may only be read by its ancestors, and py-spy is our
    child; PR_SET_PTRACER lifts that for the profiling window (a no-op where Yama is off)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PTRACER, _PR_SET_PTRACER_ANY if allow else 0, 0, 0, 0)
    except (OSError, AttributeError):
        pass


class Recorder:
    """One ``py-spy record`` process writing one format; its output goes to a temporary file."""

    def __init__(self, exe: str, pid: int, fmt: str, path: str, rate: int) -> None:
        self.fmt = fmt
        self.path = path
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115 - closed in finish()
        cmd = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--subprocesses", "--nonblocking",
               "--format", fmt, "--output", path]
        # Its own session, so that a Ctrl-C in the terminal reaches it only through finish().
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def output(self) -> str:
        # pread leaves the file offset that py-spy writes at untouched.
        return os.pread(self.log.fileno(), 1 << 16, 0).decode(errors="replace")

    def sampling(self) -> bool:
        """True once py-spy has attached (it says so), False while it starts; raises if it died."""
        if "Sampling process" in self.output():
            return True
        if self.proc.poll() is not None:
            raise RuntimeError(self.problem())
        return False

    def problem(self) -> str:
        """py-spy's own error line; after it comes a Rust backtrace whose last line says nothing."""
        lines = [line.strip() for line in self.output().splitlines() if line.strip()]
        errors = [line for line in lines if line.startswith("Error:")]
        said = errors[0] if errors else lines[-1] if lines else "no output"
        return f"py-spy {self.fmt} exited with code {self.proc.returncode}: {said}"[:500]

    def sampled_nothing(self) -> bool:
        return NO_SAMPLES in self.output()

    def finish(self) -> tuple[bool, int | None]:
        """Stop sampling (py-spy writes its file on SIGINT); returns (file written, samples)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        found = re.search(r"Samples: (\d+)", self.output())
        ok = self.proc.returncode == 0 and os.path.isfile(self.path)
        return ok, int(found.group(1)) if found else None

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


class PySpyCollector(Collector):
    name = "pyspy"
    fields = ("flamegraph", "speedscope", "samples", "rate", "seconds", "steps")

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self.files: dict[str, str] = {}
        self.samples: int | None = None
        self.steps = 0
        self.seconds = 0.0

    def after(self) -> None:
        recorders: list[Recorder] = []
        try:
            problem = self._start(recorders)
            if not self.ctx.everyone_ready(problem is None):
                return self.fail(problem or "py-spy could not start on another rank, so no rank sampled")
            self._run_steps(self.ctx.params.profiler.pyspy_seconds)
            problems = []
            for r in recorders:
                ok, samples = r.finish()
                if ok:
                    self.files[r.fmt] = self.ctx.relative(r.path)
                    self.samples = samples if r.fmt == "flamegraph" else self.samples
                else:
                    problems.append(r.problem())
            if any(r.sampled_nothing() for r in recorders):
                self.fail(f"py-spy took no samples in {self.seconds:.2g} s ({self.steps} steps); "
                          "raise profiler.pyspy_seconds")
            elif problems:
                self.fail("; ".join(problems))
        finally:
            for r in recorders:
                r.close()
            _allow_tracing_by_children(False)

    def _start(self, recorders: list[Recorder]) -> str | None:
        """Start one recorder per format and wait until each samples; the reason if not. It does
        not raise: every rank must reach ``everyone_ready`` whatever happened here."""
        ctx = self.ctx
        exe = find_pyspy()
        if exe is None:
            return "py-spy not found (pip install py-spy)"
        if ctx.step is None:
            return "no training step to sample"
        folder = ctx.profile_dir()
        if folder is None:
            return "no output folder for the flame graph"
        _allow_tracing_by_children(True)
        try:
            for fmt, pattern in FORMATS.items():
                path = os.path.join(folder, pattern.format(rank=ctx.rank))
                recorders.append(Recorder(exe, os.getpid(), fmt, path, ctx.params.profiler.pyspy_rate))
            deadline = time.monotonic() + ATTACH_TIMEOUT_S
            while not all(r.sampling() for r in recorders):
                if time.monotonic() > deadline:
                    return f"py-spy did not start sampling within {ATTACH_TIMEOUT_S:g} s"
                time.sleep(0.02)
        except (OSError, RuntimeError) as exc:
            return f"{type(exc).__name__}: {exc}"
        return None

    def _step_count(self, seconds: float) -> int | None:
        """Steps that last about ``seconds`` at the measured pace. Under DDP every rank must run
        the same number of steps (each one all-reduces), and the measured windows are agreed
        between ranks, so this count is the same on all of them where a clock would not be."""
        from bench.measure import median

        m = self.ctx.measurement
        if m is None or not m.window_seconds:
            return None
        per_step = median(m.window_seconds) / m.steps_per_window
        return max(1, round(seconds / per_step))

    def _run_steps(self, seconds: float) -> None:
        assert self.ctx.step is not None
        count = self._step_count(seconds)
        t0 = time.perf_counter()
        while (self.steps < count) if count is not None else (self.steps == 0 or time.perf_counter() - t0 < seconds):
            self.ctx.step()
            self.steps += 1
        if self.ctx.device.type == "cuda":
            import torch

            torch.cuda.synchronize(self.ctx.device)
        self.seconds = time.perf_counter() - t0

    def result(self) -> dict[str, Any]:
        return {"flamegraph": self.files.get("flamegraph"), "speedscope": self.files.get("speedscope"),
                "samples": self.samples, "rate": self.ctx.params.profiler.pyspy_rate,
                "seconds": self.seconds, "steps": self.steps}
