"""Entry point of one side's case process in ``bench ab`` when the two sides run under different
interpreters (``--base-python``/``--new-python``): ``python -m bench.side_worker``. Under one
interpreter both sides are forks of a fresh server instead (``bench.ab``).

Each is a fresh interpreter started in its side's directory, and that directory is put first on
its import path once bench itself is imported, so that ``import: "mypkg.model:make"`` resolves to
that side's code and bench's own modules stay the harness's. It connects back to the coordinator
(address and key in the environment, never on the command line; it listens, the coordinator
connects), answers a probe of its torch, and then serves trials exactly as a case process of
``bench run`` does (``bench.session.serve``).
"""

from __future__ import annotations

import json
import os
import sys
from multiprocessing.connection import Listener
from pathlib import Path
from typing import Any

ENV_KEY = "BENCH_SIDE_SERVE"


def main() -> None:
    spec = json.loads(os.environ.pop(ENV_KEY))
    # This process listens and the coordinator connects (as with a DDP job's writing rank): the
    # coordinator can then wait for it with a deadline and notice if it dies while starting.
    with Listener(("127.0.0.1", 0), authkey=bytes.fromhex(spec["authkey"])) as listener:
        address = Path(spec["address_file"])
        partial = address.with_suffix(".partial")
        partial.write_text(json.dumps(list(listener.address)), encoding="utf-8")
        partial.replace(address)  # whole or absent: the coordinator never reads half a file
        conn = listener.accept()
    try:
        # Everything a case needs imported before the probe (torch._dynamo alone, which any
        # optimizer imports, takes seconds): both sides' interpreters start at once and import in
        # parallel, while building and warming up happen one side after the other.
        import bench.preload  # noqa: F401
        from bench import session, userpath, worker

        userpath.forget_safe_path()
        side_dir = os.getcwd()
        # First, not last as in ``bench run``: here the directory *is* the code under test, and a
        # same-named module installed elsewhere must not stand in for it.
        sys.path.insert(0, side_dir)
        conn.send({"status": "probe", "probe": worker.probe_environment(), "python": sys.executable,
                   "version": sys.version.split()[0]})
        payload: dict[str, Any] = conn.recv()

        session.serve(session.single_process_factory(payload), conn.recv, conn.send)
    except (EOFError, OSError):
        pass  # the coordinator went away (interrupted, or done with this side): nothing to answer
    finally:
        conn.close()
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    main()
