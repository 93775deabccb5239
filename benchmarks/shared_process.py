"""Does a process's speed luck cancel when both code versions run in one process? (``bench ab``'s
shared launches; the README's *Launches and pairs*.)

L launches, one after another; each is a fresh fork of this interpreter (which has imported torch)
that builds two MLPs, 256 wide, batch 64, SGD: the base with BASE linear blocks, the new with NEW
(which first alternates between launches), warms both up, and then takes N pairs: each side's half
is one untimed step (the other model has just evicted it from the caches) and then about H seconds
of steps, base first or new first, balanced over every two pairs. A launch's change is the median
of its pairs' log(new/base). Prints every launch's change, their mean and spread, the spread that
the pairs alone would give a median of N (1.25 sd / sqrt N: no process-level effect left), and a
Wilcoxon signed-rank p over launches. Asserts nothing; the machine must be otherwise idle.

    python benchmarks/shared_process.py [L N H BASE NEW]    (the README: 10 20 0.1 40 42, then 10 10 0.1 40 40)
"""

from __future__ import annotations

import json
import math
import multiprocessing as mp
import random
import statistics
import sys
import time
from collections.abc import Callable
from multiprocessing.connection import Connection

import torch


def build(blocks: int) -> Callable[[], None]:
    torch.manual_seed(0)
    layers: list[torch.nn.Module] = [torch.nn.Linear(256, 256)]
    for _ in range(blocks):
        layers += [torch.nn.Linear(256, 256), torch.nn.ReLU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(256, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    x, y = torch.randn(64, 256), torch.randint(0, 10, (64,))
    loss = torch.nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss(model(x), y).backward()
        opt.step()

    for _ in range(10):
        step()
    return step


def launch(conn: Connection, index: int, n: int, half: float, blocks: dict[str, int]) -> None:
    order = ("base", "new") if index % 2 == 0 else ("new", "base")
    steps = {side: build(blocks[side]) for side in order}
    t0 = time.perf_counter()
    steps["base"]()
    per_half = max(1, round(half / (time.perf_counter() - t0)))
    rng = random.Random(index)
    logs: list[float] = []
    base_first = True
    for i in range(n):
        base_first = rng.random() < 0.5 if i % 2 == 0 else not base_first
        got: dict[str, float] = {}
        for side in (("base", "new") if base_first else ("new", "base")):
            steps[side]()
            t0 = time.perf_counter()
            for _ in range(per_half):
                steps[side]()
            got[side] = per_half / (time.perf_counter() - t0)
        logs.append(math.log(got["new"] / got["base"]))
    conn.send(logs)


def main() -> None:
    args = sys.argv[1:]
    launches, n, half = (int(args[0]), int(args[1]), float(args[2])) if len(args) >= 3 else (10, 20, 0.1)
    blocks = {"base": int(args[3]), "new": int(args[4])} if len(args) >= 5 else {"base": 40, "new": 42}
    ctx = mp.get_context("fork")
    per_launch: list[list[float]] = []
    t0 = time.perf_counter()
    for index in range(launches):
        parent, child = ctx.Pipe()
        proc = ctx.Process(target=launch, args=(child, index, n, half, blocks))
        proc.start()
        per_launch.append(parent.recv())
        proc.join()
    from scipy import stats

    changes = [statistics.median(logs) for logs in per_launch]
    within = statistics.fmean(statistics.stdev(logs) for logs in per_launch)
    print(json.dumps({
        "launches": launches, "pairs_per_launch": n, "half_s": half, **blocks,
        "seconds": round(time.perf_counter() - t0, 1),
        "launch_change_pct": [round(100 * math.expm1(c), 1) for c in changes],
        "mean_pct": round(100 * math.expm1(statistics.fmean(changes)), 2),
        "sd_launches_pct": round(100 * statistics.stdev(changes), 2),
        "sd_from_pairs_alone_pct": round(100 * 1.25 * within / math.sqrt(n), 2),
        "wilcoxon_p": float(stats.wilcoxon(changes).pvalue) if any(changes) else 1.0}))


if __name__ == "__main__":
    main()
