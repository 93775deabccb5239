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
    session.serve_process(payload, conn, log_path)


def serve_both_main(conn: Connection, payload: dict[str, Any], log_path: str | None,
                    sides: list[tuple[str, str]]) -> None:
    """A ``bench ab`` shared launch forked from the case server: one process that builds both
    sides' models, each from its own side's code (``bench.session.serve_both_sides``)."""
    from bench import session, userpath

    userpath.forget_safe_path()
    session.serve_both_sides(payload, conn, log_path, sides)
