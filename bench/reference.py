"""A machine-speed reference in every round: a small fixed training step, independent of the
suite's code, measured like a case at a random position of every round.

Why: runs made at different times see different machine speeds (here 10-30% apart within minutes),
and nothing in a run said how fast the machine was while it ran. The reference is that index: a
case's throughput over the reference's throughput *in the same round* (its *relative* throughput)
cancels most of the drift common to both, so runs made at different times can be compared on it
(``bench compare``, ``bench history``). Measured here (NOISE.md): a small training step (a 4-layer
MLP) as the reference cut the spread of a 40-layer MLP's trial medians from 36% to 13%; a matmul
kernel did much worse (48% to 35%): the drift is not one scalar CPU speed, so the reference is a
training step like the cases.

What it hides: a change that slows the reference too (a torch upgrade, a new machine, another
thread count) moves the relative throughput less than the raw one, or not at all. So both are
kept and shown, and the fingerprint still separates machines.

Its trial is sized to a small share of the round (``SHARE`` of the cases' trial time, at least
``MIN_SECONDS`` so that it has windows to take a median of) and runs on the CPU; on GPU cases it
indexes the host's speed, not the GPU's.

**A companion in every CPU case's own process.** On this machine a process often has a speed of its
own for its whole life (forks of one server differed by 5-8% at some hours, NOISE.md "Process
luck"), and two models inside one process share it (``bench ab``'s shared launches). A reference in
a process of its own carries a luck of its own, different in every run, and dividing by it moved
the cases of a run together (history_drift.py: the reference ranged over a factor of two across
nine runs). So every CPU case's process also builds the reference's step and measures it right
after each of its trials (``companion_seconds``): that trial's relative throughput divides out the
process's luck as well as the machine's moment. The round's own reference stays: the run's speed
index, and the reference of cases that cannot hold a companion (GPU, DataParallel, torchrun-launched
ranks). Each trial records which one it was divided by (``reference_source``).
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence

from bench.suite import Case, CaseParams

REFERENCE_ID = "(reference)"
SHARE = 0.04
MIN_SECONDS = 0.1
MAX_SECONDS = 0.5
PARAMS = {
    "model": {"name": "mlp", "kwargs": {"hidden": 256, "depth": 4}},
    "optimizer": "sgd",
    "activation": "relu",
    "batch_size": 64,
    "data": "synthetic",
    "mode": "cpu",
    "measure": {"warmup_steps": 20, "min_windows": 2, "window_time": 0.05},
    "timeout": 120,
}
DESCRIPTION = "mlp 784-256x4-10, batch 64, SGD, on the CPU"


def trial_seconds(cases: Sequence[Case]) -> float:
    """The reference's trial: a small share of a round of ``cases``, within bounds."""
    total = sum(c.params.measure.trial_seconds for c in cases)
    return min(MAX_SECONDS, max(MIN_SECONDS, SHARE * total))


COMPANION_SHARE = 0.1
COMPANION_MIN_SECONDS = 0.05
COMPANION_WINDOW_TIME = 0.025
COMPANION_REWARM_STEPS = 5


def companion_seconds(case: Case) -> float | None:
    """The companion reference's trial in ``case``'s process, or None where the case cannot hold
    one: only CPU cases, whose speed the CPU reference indexes and whose process is the case's own
    (a GPU case's host-side reference would index the host, not the GPU; a torchrun-launched case
    has a process per rank)."""
    if case.params.mode != "cpu":
        return None
    return min(MAX_SECONDS, max(COMPANION_MIN_SECONDS, COMPANION_SHARE * case.params.measure.trial_seconds))


def companion_params() -> CaseParams:
    """The reference's training step as a companion builds it (shorter windows: its trials are short)."""
    return CaseParams.model_validate({**PARAMS, "measure": {**PARAMS["measure"],  # type: ignore[dict-item]
                                                            "window_time": COMPANION_WINDOW_TIME}})


def reference_case(cases: Sequence[Case]) -> Case:
    """The reference as a case of the rounds (never written as a case of the run)."""
    seconds = trial_seconds(cases)
    params = dict(PARAMS)
    params["measure"] = {**PARAMS["measure"], "trial_time": seconds,  # type: ignore[dict-item]
                         "max_time": 1e6, "min_time": 0.01, "min_rounds": 2}
    return Case(id=REFERENCE_ID, params=CaseParams.model_validate(params))


def relative(trials: Sequence[tuple[int, float]], reference: Mapping[int, float]) -> list[float]:
    """A case's trial medians over the reference's median of the same round, for the rounds in
    which the reference ran."""
    return [median / reference[r] for r, median in trials if r in reference and reference[r] > 0]


def index(reference: Mapping[int, float]) -> dict[int, float]:
    """Each round's machine-speed index: the reference's throughput that round over its median."""
    if not reference:
        return {}
    middle = statistics.median(reference.values())
    return {r: v / middle for r, v in reference.items()}
