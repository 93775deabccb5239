"""The environment stored with every run, and its fingerprint: the facts that change timings, so
comparisons and histories can tell a code change from a machine change."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import bench

if TYPE_CHECKING:
    from bench.records import Environment


def available_cores() -> int:
    """Cores this process may run on (its affinity mask, not the machine's count)."""
    return len(os.sched_getaffinity(0))


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit(cwd: str | None = None) -> dict[str, Any] | None:
    """HEAD of the git repository the run is started in, and whether the tree had local changes."""
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head, "dirty": bool(dirty)} if head else None


def collect(torch_info: dict[str, Any] | None) -> dict[str, Any]:
    """Host facts read here plus the torch facts a worker reported (``torch_info``)."""
    import psutil

    info: dict[str, Any] = {
        "bench": bench.__version__,
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "platform": platform.platform(),
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cores_logical": os.cpu_count(),
        "cores_physical": psutil.cpu_count(logical=False),
        "cores_available": available_cores(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "git": git_commit(),
        "time": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "torch": None, "cuda": None, "cudnn": None, "cuda_available": False, "gpus": [], "torch_threads": None,
    }
    if torch_info:
        info.update(torch_info)
    return info


def _gpus(env: Environment) -> str | None:
    names = [g.name for g in env.gpus]
    return ", ".join(names) if names else None


def _driver(env: Environment) -> str | None:
    for key in ("driver", "nvidia_driver", "driver_version"):
        if env.extra(key):
            return str(env.extra(key))
    drivers = {str(g.extra("driver")) for g in env.gpus if g.extra("driver")}
    return ", ".join(sorted(drivers)) or None


# The facts that change timings: a difference in any of them makes a comparison a comparison of
# machines. The hostname is left out on purpose: CI runners are fresh machines with new names.
FINGERPRINT: dict[str, Callable[[Environment], Any]] = {
    "CPU model": lambda e: e.cpu_model,
    "cores": lambda e: e.cores_available or e.cores_logical,
    "torch threads": lambda e: e.torch_threads,
    "GPUs": _gpus,
    "GPU driver": _driver,
    "torch": lambda e: e.torch,
    "CUDA": lambda e: e.cuda,
    "cuDNN": lambda e: e.cudnn,
    "Python": lambda e: e.python,
}


def fingerprint(env: Environment) -> dict[str, str]:
    """The timing-relevant facts of an environment, as text ('-' where unknown)."""
    return {name: "-" if (v := get(env)) is None else str(v) for name, get in FINGERPRINT.items()}


def fingerprint_key(env: Environment) -> str:
    """A short text that is equal for two environments exactly when their fingerprints are."""
    fp = fingerprint(env)
    return " / ".join(f"{k} {v}" for k, v in fp.items() if v != "-")


def differences(base: Environment, new: Environment) -> list[str]:
    """One line per fingerprint fact that differs: ``torch: 2.3 → 2.4``."""
    a, b = fingerprint(base), fingerprint(new)
    return [f"{key}: {a[key]} → {b[key]}" for key in FINGERPRINT if a[key] != b[key]]
