"""What runs inside a case's own process: build the model and its data, warm up, measure, and send
one record back. The forkserver preloads this module (and so torch), so a case costs a fork, not a
fresh interpreter and torch import, while still sharing no state with other cases."""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch

from bench.collectors import CaseContext, make_collectors
from bench.components import build_loss, build_optimizer
from bench.data import make_batches
from bench.measure import MeasureSettings, measure, summarize, thin
from bench.models import build_model
from bench.suite import CaseParams


class Skip(Exception):
    """The case cannot run on this machine (no GPU, too few GPUs...); not a failure."""


def child_main(payload: dict[str, Any], conn: Connection, log_path: str | None) -> None:
    """Entry point of a case process: never raises, always tries to send one record."""
    if log_path:
        # The case's own output (warnings, a user's prints) goes to its log, not over the
        # progress bar; the record carries the error text.
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
    try:
        record = run_case(payload)
    except Skip as exc:
        record = {"status": "skipped", "error": str(exc)}
    except BaseException as exc:  # a user's model may raise anything; it must become a record
        record = {"status": "failed", "error": describe_error(exc),
                  "traceback": "".join(traceback.format_exception(exc))[-8000:]}
    try:
        conn.send(record)
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory: " + " ".join(str(exc).split())[:500]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:2000] if text else type(exc).__name__


def select_device(params: CaseParams) -> torch.device:
    if params.mode == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise Skip(f"mode {params.mode!r} needs CUDA, and this machine has no CUDA device")
    device = torch.device(params.device or "cuda:0")
    index = device.index or 0
    if index >= torch.cuda.device_count():
        raise Skip(f"device {params.device!r} asked for, but this machine has "
                   f"{torch.cuda.device_count()} CUDA device(s)")
    return device


def set_threads(params: CaseParams) -> int:
    threads = params.threads or len(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return torch.get_num_threads()


def build_step(params: CaseParams, device: torch.device, batch_size: int
               ) -> tuple[Callable[[], None], torch.nn.Module]:
    """One training step as a closure (forward, loss on logits, backward, optimizer step) and the model."""
    generator = torch.Generator().manual_seed(params.seed)
    torch.manual_seed(params.seed)
    model = build_model(params.model.name, params.model.import_path, params.model.kwargs,
                        params.activation, params.model.num_classes).to(device)
    model.train()
    optimizer = build_optimizer(params.optimizer.name, params.optimizer.kwargs, model.parameters(), params.lr)
    loss_fn = build_loss(params.loss).to(device)
    next_batch = make_batches(params, device, batch_size, generator)

    def step() -> None:
        x, y = next_batch()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()

    return step, model


def peak_rss_mb() -> float:
    """Peak resident set size of this case process in MiB (ru_maxrss is in KiB on Linux). It
    includes the preloaded torch libraries, as a real training process would."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(payload: dict[str, Any]) -> dict[str, Any]:
    """Build, warm up and measure one case in this process; returns its record."""
    params = CaseParams.model_validate(payload["params"])
    device = select_device(params)
    threads = set_threads(params)
    warnings: list[str] = []
    cores = len(os.sched_getaffinity(0))
    if threads > cores:
        warnings.append(f"{threads} threads on {cores} cores: oversubscribed, expect noisy timings")
    t0 = time.perf_counter()
    step, model = build_step(params, device, params.batch_size)
    build_s = time.perf_counter() - t0
    m = params.measure
    settings = MeasureSettings(m.warmup_steps, m.min_time, m.max_time, m.target_ci, m.window_time, m.min_windows)
    ctx = CaseContext(params=params, device=device, out_dir=payload.get("out_dir"), case_id=payload.get("id", ""),
                      step=step, model=model)
    collectors = make_collectors(ctx)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    with collectors:
        if device.type == "cuda":
            result = measure(step, settings, params.batch_size, sync=lambda: torch.cuda.synchronize(device),
                             step_times=False)
        else:
            result = measure(step, settings, params.batch_size)
    collectors.after()
    metrics = summarize(result, m.target_ci)
    metrics["peak_rss_mb"] = peak_rss_mb()
    metrics["threads"] = threads
    metrics["build_s"] = build_s
    if device.type == "cuda":
        metrics["cuda_peak_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
        metrics["cuda_peak_reserved_mb"] = torch.cuda.max_memory_reserved(device) / 2**20
    if not metrics["throughput"]["ci_target_met"]:  # type: ignore[index]
        width = metrics["throughput"]["ci_rel_half_width"]  # type: ignore[index]
        shown = "undefined" if width is None else f"±{width:.1%}"
        warnings.append(f"95% CI {shown} did not reach the target ±{m.target_ci:.1%} "
                        f"within max_time {m.max_time:g} s")
    origin = result.window_start[0]
    return {
        "status": "ok",
        "collectors": collectors.records(),
        "error": None,
        "warnings": warnings,
        "device": str(device),
        "metrics": metrics,
        "samples": {
            "clock_origin": origin,
            "window_start_s": [t - origin for t in result.window_start],
            "window_s": result.window_seconds,
            "window_throughput": result.window_throughput,
            "step_time_ms": [s * 1000 for s in thin(result.step_seconds)],
        },
    }


def probe_environment() -> dict[str, Any]:
    """The torch side of the environment fingerprint, read in a worker so the CLI never imports torch."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory_mb": props.total_memory // 2**20,
                         "uuid": str(getattr(props, "uuid", "")) or None})
    return {
        "torch": str(torch.__version__),
        "cuda": str(torch.version.cuda) if torch.version.cuda else None,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "torch_threads": torch.get_num_threads(),
    }


def probe_main(conn: Connection) -> None:
    try:
        conn.send(probe_environment())
    finally:
        conn.close()
