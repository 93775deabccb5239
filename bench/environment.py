"""The environment fingerprint stored with every run, so comparisons can tell a code change from
a machine change."""

from __future__ import annotations

import datetime as dt
import os
import platform
import socket
import subprocess
import sys
from typing import Any

import bench


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


def fingerprint(torch_info: dict[str, Any] | None) -> dict[str, Any]:
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
