"""Ending process trees (bench.processes.kill_tree) on real processes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import psutil
import pytest

from bench.processes import kill_tree

# Starts a child that sleeps, prints its pid, then sleeps too (or exits at once with "exit",
# orphaning the child while it stays in the process group).
PARENT = textwrap.dedent("""
    import os, subprocess, sys, time
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    print(child.pid, flush=True)
    if sys.argv[1] == "exit":
        os._exit(0)
    time.sleep(120)
""")


def gone(pid: int) -> bool:
    """No such process, or a zombie (killed; its new parent, init, has not reaped it yet)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def start(mode: str, **popen: object) -> tuple[subprocess.Popen[str], int]:
    proc = subprocess.Popen([sys.executable, "-c", PARENT, mode], stdout=subprocess.PIPE, text=True,
                            **popen)  # type: ignore[call-overload]
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_kill_tree_kills_the_descendants_and_leaves_its_own_child_for_the_owner_to_reap() -> None:
    proc, grandchild = start("sleep")
    kill_tree(proc.pid, timeout=10)
    assert gone(grandchild)
    # Killed, not reaped: the Popen that owns it reads its exit status.
    assert proc.wait(timeout=10) == -9


@pytest.mark.parametrize("group", [True, False])
def test_with_group_kill_tree_also_kills_a_member_of_the_group_that_was_orphaned_before(group: bool) -> None:
    proc, orphan = start("exit", start_new_session=True)
    # As with torchrun at a case's end: the leader has exited, unreaped; its child now belongs to
    # init, no longer to the tree, and is still in the leader's group.
    leader = psutil.Process(proc.pid)
    while leader.status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.01)
    assert leader.children() == []
    try:
        kill_tree(proc.pid, group=group, timeout=10)
        assert gone(orphan) == group
        assert proc.wait(timeout=10) == 0
    finally:
        try:
            psutil.Process(orphan).kill()
        except psutil.NoSuchProcess:
            pass
