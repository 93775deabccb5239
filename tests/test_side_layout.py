"""bench ab's side processes, forked from one case server, each start from a fresh layout."""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing.connection import Connection

import torch

from bench.worker_entry import scatter_layout


def _addresses(conn: Connection, scatter: bool) -> None:
    keep = scatter_layout() if scatter else None
    big = torch.empty(1 << 20)  # 4 MiB: mapped on its own, as a model's weights and activations are
    conn.send((big.data_ptr(), keep is not None))
    conn.close()


def _forked_addresses(scatter: bool, n: int = 4) -> list[tuple[int, bool]]:
    ctx = mp.get_context("fork")
    pipes = [ctx.Pipe(duplex=False) for _ in range(n)]  # all before the first fork: one parent state
    procs = [ctx.Process(target=_addresses, args=(w, scatter)) for _, w in pipes]
    out = []
    for proc, (r, _) in zip(procs, pipes, strict=True):
        proc.start()
        out.append(r.recv())
        proc.join()
    return out


def test_forks_of_one_state_put_their_tensors_at_the_same_addresses_without_the_scatter() -> None:
    seen = _forked_addresses(scatter=False)
    assert len({big for big, _ in seen}) == 1  # each launch of a side would repeat one layout


def test_the_scatter_gives_every_fork_its_own_addresses_for_large_tensors() -> None:
    seen = _forked_addresses(scatter=True)
    assert len({big for big, _ in seen}) == len(seen)
    assert all(scattered for _, scattered in seen)
