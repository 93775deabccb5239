"""Measurement quality: harness overhead and agreement with torch.utils.benchmark.

    python benchmarks/measurement.py [--rounds 6] [--seconds 2]

Overhead: the MLP (784-128-10, batch 64, SGD, synthetic data, 2 threads) measured the way a bench
case process measures a trial (bench.session.CaseSession: windows of steps, a clock read per step)
against a bare hand-written loop with the same model, data and threads, interleaved A/B in one
process so that both see the same machine state.
Agreement: the same step timed by torch.utils.benchmark.Timer (blocked_autorange) against bench's
median step time. Prints medians and ratios; nothing is asserted (this is a benchmark).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from bench import worker
from bench.models.classic import MLP
from bench.session import CaseSession
from bench.suite import CaseParams

THREADS = 2
BATCH = 64


def case_session() -> CaseSession:
    """A case built and warmed up as a case process does it, ready to measure trials."""
    params = CaseParams.model_validate({"model": "mlp", "optimizer": "sgd", "batch_size": BATCH, "threads": THREADS,
                                        "measure": {"warmup_steps": 50}})
    device, batch, wrap, threads, warnings = worker.single_process_setup(params)
    session = CaseSession(params, device, {"id": "overhead", "out_dir": None}, batch=batch, samples_per_step=batch,
                          wrap=wrap, threads=threads, warnings=warnings)
    session.prepare()
    return session


def bare_loop(seconds: float) -> float:
    """What a user would write: the same model, data and step, timed around a plain loop."""
    torch.set_num_threads(THREADS)
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = MLP(torch.nn.ReLU, [128])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = torch.nn.CrossEntropyLoss()
    x = torch.randn((BATCH, 1, 28, 28), generator=gen)
    y = torch.randint(0, 10, (BATCH,), generator=gen)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), y).backward()
        opt.step()

    for _ in range(50):
        step()
    steps = 0
    t0 = time.perf_counter()
    while True:
        for _ in range(100):
            step()
        steps += 100
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return steps * BATCH / elapsed


def timer_step_ms() -> float:
    from torch.utils.benchmark import Timer

    torch.set_num_threads(THREADS)
    setup = """
import torch
from bench.models.classic import MLP
torch.manual_seed(0)
model = MLP(torch.nn.ReLU, [128]); opt = torch.optim.SGD(model.parameters(), lr=0.01)
loss_fn = torch.nn.CrossEntropyLoss(); x = torch.randn(64, 1, 28, 28); y = torch.randint(0, 10, (64,))
for _ in range(50):
    opt.zero_grad(set_to_none=True); loss_fn(model(x), y).backward(); opt.step()
"""
    stmt = "opt.zero_grad(set_to_none=True); loss_fn(model(x), y).backward(); opt.step()"
    m = Timer(stmt=stmt, setup=setup, num_threads=THREADS).blocked_autorange(min_run_time=2.0)
    return m.median * 1000


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=2.0)
    args = ap.parse_args()
    bench_thr, bare_thr, bench_p50 = [], [], []
    session = case_session()
    for i in range(args.rounds):
        order = ("bench", "bare") if i % 2 == 0 else ("bare", "bench")
        for who in order:
            if who == "bench":
                trial = session.trial(args.seconds, collect=False)
                bench_thr.append(statistics.median(trial["window_throughput"]))
                bench_p50.append(statistics.median(trial["step_time_ms"]))
            else:
                bare_thr.append(bare_loop(args.seconds))
    ratios = [b / a for b, a in zip(bench_thr, bare_thr, strict=True)]
    timer_ms = timer_step_ms()
    out = {
        "bench_throughput_median": statistics.median(bench_thr),
        "bare_throughput_median": statistics.median(bare_thr),
        "overhead_ratio_median": statistics.median(ratios),
        "overhead_ratios": ratios,
        "bench_step_p50_ms": statistics.median(bench_p50),
        # Timer reports the median over blocks of each block's mean step time; bench's estimator
        # of the same quantity is the median window's mean step time, batch / median throughput.
        "bench_window_step_ms": BATCH / statistics.median(bench_thr) * 1000,
        "timer_step_median_ms": timer_ms,
        "agreement": BATCH / statistics.median(bench_thr) * 1000 / timer_ms,
        "agreement_per_step_p50": statistics.median(bench_p50) / timer_ms,
    }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
