"""Torch-free entry points of case processes. The parent names these as process targets, so it
never imports torch itself; in the child, ``bench.worker`` is already imported by the forkserver's
preload, so the import below costs nothing."""

from __future__ import annotations

from multiprocessing.connection import Connection
from typing import Any


def probe_main(conn: Connection) -> None:
    from bench import worker

    worker.probe_main(conn)


def serve_main(conn: Connection, payload: dict[str, Any], log_path: str | None) -> None:
    from bench import session, userpath

    userpath.forget_safe_path()  # the case server needed it, the user's code should not see it

    session.serve_process(payload, conn, log_path)


def serve_side_main(conn: Connection, payload: dict[str, Any], log_path: str | None, side_dir: str) -> None:
    """A ``bench ab`` side's case process forked from the case server: it runs in the side's
    directory, with that directory first on its import path (``bench.side_worker`` says why), so
    the user's model comes from that side's code; bench and torch were imported before the fork."""
    import os
    import sys

    from bench import session, userpath

    userpath.forget_safe_path()
    os.chdir(side_dir)
    sys.path.insert(0, side_dir)
    keep = scatter_layout()  # noqa: F841 - held for the process's life: the offsets are the point
    session.serve_process(payload, conn, log_path)


# Pages and bytes a launch may shift its allocations by (see ``scatter_layout``).
SCATTER_PAGES = 1024
SCATTER_BYTES = 128 * 1024


def scatter_layout() -> list[object]:
    """Shift where this process's allocations land by a random amount, and return what holds the
    shift (it must stay alive).

    Why: a process's speed here depends on where its tensors landed (5-20% between two processes
    of identical code), and every fork of one case server starts from the same memory state, so
    each launch of one side would repeat the same layout and so the same speed. The launches of a
    ``bench ab`` invocation would then share one draw of each side's luck, a bias no number of
    launches averages out: a model with 5% more work was measured 7% and 14% *faster* in two of
    four runs. Forked back to back from one state, children's speeds clustered by parent (one-way
    ANOVA over 3 parents x 4 children, p = 0.02); with the same kind of shift, not (p = 0.44;
    ``benchmarks/fork_luck.py``). A random number of pages mapped moves the later large
    allocations, which glibc maps on their own (the 256x256 weights and the activations of the
    models measured); a random heap block moves what later grows the heap. Small blocks that
    reuse memory the server had already freed stay where they were."""
    import ctypes
    import mmap
    import secrets

    pages = mmap.mmap(-1, mmap.PAGESIZE * (1 + secrets.randbelow(SCATTER_PAGES)))
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    block = libc.malloc(16 + 16 * secrets.randbelow(SCATTER_BYTES // 16))  # never freed: it is the shift
    return [pages, block]
