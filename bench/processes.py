"""Ending a process tree: a case's process or torchrun, and everything it started (DataLoader
workers, DDP ranks). One function, used wherever a case ends, so every case is cleaned up the same
way."""

from __future__ import annotations

import os
import signal
import time

import psutil


def kill_tree(pid: int, *, group: bool = False, timeout: float = 5.0) -> None:
    """Kill ``pid`` and every descendant with SIGKILL, and wait until they are gone.

    The tree is listed before anything is killed: a process whose parent dies is adopted by init
    and is no longer anyone's descendant. ``group`` says that ``pid`` leads its own process group
    (it was started with ``start_new_session``); the group is then killed too, which also reaches
    members that were orphaned before this call. Never pass it for a process in this process's
    own group: the signal would reach this process as well.

    A process that is this process's own child is killed but not reaped: its owner reaps it
    (``Popen.wait``), which must see its exit first; reaped here, its pid could be given to another
    process before the owner waits on it. psutil's ``kill`` checks that a pid still names the
    process listed (not a newer one that reused the pid) before it signals."""
    try:
        root = psutil.Process(pid)
        tree = [root, *root.children(recursive=True)]
        ours = root.ppid() == os.getpid()
    except psutil.NoSuchProcess:
        tree, ours = [], False
    if group:
        listed = {p.pid for p in tree}
        tree += [p for p in _group(pid) if p.pid not in listed]
        # One signal to the whole group, before the one by one kills below: a member that is
        # still running cannot start another process after it. The leader is unreaped (its owner
        # reaps it after this call), so its pid, the group's id, cannot name another group yet.
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for p in tree:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_dead([p for p in tree if not (ours and p.pid == pid)], timeout)


def _wait_dead(procs: list[psutil.Process], timeout: float) -> None:
    """Wait until each process has ended. A zombie has ended: it holds no memory and runs nothing,
    and only its parent (a case server's fork, say, whose parent is the server) can reap it;
    ``psutil.wait_procs`` would wait the whole timeout for such a process, which cost every
    stopped case process 5 s."""
    deadline = time.monotonic() + timeout
    pending = list(procs)
    while pending and time.monotonic() < deadline:
        still = []
        for p in pending:
            try:
                if p.status() != psutil.STATUS_ZOMBIE:
                    still.append(p)
            except psutil.NoSuchProcess:
                pass
        pending = still
        if pending:
            time.sleep(0.005)


def _group(pgid: int) -> list[psutil.Process]:
    """The processes of a process group (psutil has no query for it)."""
    members = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == pgid:
                members.append(p)
        except ProcessLookupError:
            continue
    return members
