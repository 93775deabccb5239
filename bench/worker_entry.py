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
