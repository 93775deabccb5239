"""`bench ab`: the pairs' order, the paired statistics on drifting series, topping up and
confirming, sides as directories and git revisions, and bad sides refused before anything runs."""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from conftest import bench
from scipy.stats import mannwhitneyu

from bench import ab, pairs
from bench.records import ABDoc, ResultsDoc
from bench.rounds import CaseState
from bench.suite import Case, CaseParams

# --- the order of the halves ---------------------------------------------------------------------


def test_pair_orders_put_each_side_first_once_in_every_two_pairs() -> None:
    orders = pairs.pair_orders(200, seed=7)
    assert len(orders) == 200
    assert all(orders[i] != orders[i + 1] for i in range(0, 200, 2))


def test_pair_orders_replay_from_their_seed_and_differ_between_seeds() -> None:
    assert pairs.pair_orders(50, 3) == pairs.pair_orders(50, 3)
    assert pairs.pair_orders(50, 3) != pairs.pair_orders(50, 4)


# --- paired statistics on a drifting machine -------------------------------------------------------


def machine(n: int, seed: int, drift: float = 0.3) -> list[float]:
    """A machine's speed per pair: a slow slide by ``drift`` plus an AR(1) wander, as measured here
    (NOISE.md: 15-30% within minutes, neighbouring seconds correlated)."""
    rng = random.Random(seed)
    level, out = 0.0, []
    for i in range(n):
        level = 0.9 * level + rng.gauss(0, 0.03)
        out.append(math.exp(-drift * i / n + level))
    return out


def halves(speed: list[float], effect: float, seed: int, noise: float = 0.05) -> tuple[list[float], list[float]]:
    """Base and new throughput per pair: the pair's machine speed times the side's factor, each half
    with its own noise."""
    rng = random.Random(seed)
    base = [1000 * s * math.exp(rng.gauss(0, noise)) for s in speed]
    new = [1000 * s * effect * math.exp(rng.gauss(0, noise)) for s in speed]
    return base, new


def test_a_drift_that_fools_an_unpaired_test_does_not_fool_the_pairs() -> None:
    speed = machine(200, seed=1)
    base, new = halves(speed, 1.0, seed=2)
    # Unpaired, as two runs one after another: base measured in the first half of the time, new in
    # the second; the machine slowed in between, so an unpaired test sees a "regression".
    early, late = base[:100], new[100:]
    assert mannwhitneyu(early, late).pvalue < 1e-6
    assert np.median(late) / np.median(early) < 0.95  # a "regression" of more than 5%
    stats = pairs.analyse([math.log(n / b) for b, n in zip(base, new, strict=True)])
    assert stats is not None
    assert pairs.answer(stats) == "unchanged"
    assert stats.low < 1 < stats.high


def test_pairs_find_a_five_percent_slowdown_through_the_same_drift() -> None:
    speed = machine(200, seed=3)
    base, new = halves(speed, 0.95, seed=4)
    stats = pairs.analyse([math.log(n / b) for b, n in zip(base, new, strict=True)])
    assert stats is not None
    assert pairs.answer(stats) == "regression"
    assert stats.low < 0.95 < stats.high


def test_the_paired_interval_covers_the_true_effect_at_about_its_confidence() -> None:
    misses = 0
    runs = 300
    for seed in range(runs):
        base, new = halves(machine(60, seed), 0.97, seed + 10_000)
        stats = pairs.analyse([math.log(n / b) for b, n in zip(base, new, strict=True)], confidence=0.95)
        assert stats is not None
        misses += not stats.low <= 0.97 <= stats.high
    assert misses / runs < 0.09  # 5% expected; a broken interval misses far more


def test_an_undecided_interval_says_what_it_could_detect_and_how_many_pairs_would_settle_it() -> None:
    stats = pairs.analyse([0.04, -0.05, 0.06, -0.03, 0.01, 0.02, -0.06, 0.05, -0.02, 0.0])
    assert stats is not None
    assert pairs.answer(stats) is None
    assert pairs.detectable(stats) > pairs.THRESHOLD
    needed = pairs.units_needed(stats)
    assert needed is not None and needed > stats.n


def test_benjamini_hochberg_adjusts_upwards_and_keeps_the_smallest_p_smallest() -> None:
    adjusted = pairs.adjust([0.001, 0.02, 0.04, 0.5])
    assert adjusted[0] == pytest.approx(0.004)
    assert all(a >= p for a, p in zip(adjusted, [0.001, 0.02, 0.04, 0.5], strict=True))


# --- topping up and confirming, with sides that answer from a script --------------------------------


class ScriptedSide:
    """A side's case process that answers each half from ``throughput(half_index)``, times a factor
    of its own (the speed a process happens to have, which differs from one start to the next)."""

    def __init__(self, throughput: Callable[[int], float], counter: list[int], factor: float = 1.0) -> None:
        self.throughput = throughput
        self.counter = counter  # halves served by this side so far, over every launch
        self.factor = factor
        self.clock = 0.0

    def request(self, message: dict[str, Any] | None, timeout: float) -> dict[str, Any]:
        assert message is not None and message["op"] == "trial" and message["windows"] == 2
        assert message["steps_per_window"] >= 1 and message["rewarm"] == ab.REWARM_STEPS
        value = self.throughput(self.counter[0]) * self.factor
        self.counter[0] += 1
        self.clock += 0.1
        return {"status": "ok", "start": self.clock, "window_s": [0.05, 0.05], "local_window_s": [0.05, 0.05],
                "window_throughput": [value, value], "steps": 2, "step_time_ms": [10.0, 10.0],
                "step_source": "per_step"}

    def stop(self) -> None:
        pass


def scripted_run(base: Callable[[int], float], new: Callable[[int], float], process_sd: float = 0.0,
                 launch_seconds: float = 0.0, **settings: Any) -> ab._CaseRun:
    """A case whose sides answer from scripted throughputs; with ``launch_seconds``, a clock that
    moves that much for every launch (the stages' deadlines read it)."""
    params = CaseParams.model_validate({"model": "mlp"})
    case = Case(id="c", params=params)
    chosen = ab.settings_from(5, **{"max_time": 1e9, **settings})
    states = {label: CaseState(case, Path("unused.log")) for label in ("base", "new")}
    counters = {"base": [0], "new": [0]}
    rng = np.random.default_rng(99)

    clock = [0.0]

    def launch() -> tuple[dict[str, Any], Callable[[], None]]:
        clock[0] += launch_seconds
        factors = np.exp(rng.normal(0, process_sd, 2)) if process_sd else (1.0, 1.0)
        workers = {"base": ScriptedSide(base, counters["base"], float(factors[0])),
                   "new": ScriptedSide(new, counters["new"], float(factors[1]))}
        return workers, lambda: None

    return ab._CaseRun(case, chosen, launch, states, 0.0, pairs.pair_orders(1000, 5), ab._Silent(),
                       clock=lambda: clock[0])


def noisy(factor: float, sd: float, seed: int, burst: tuple[int, int, float] | None = None) -> Callable[[int], float]:
    rng = np.random.default_rng(seed)
    draws = rng.normal(0, sd, 100_000)

    def at(i: int) -> float:
        slow = burst[2] if burst is not None and burst[0] <= i < burst[1] else 1.0
        return 1000 * factor * slow * math.exp(draws[i])

    return at


def run_case(run: ab._CaseRun) -> dict[str, Any]:
    first = run.stage("initial")
    if first.answer in ("regression", "improvement") and run.settings.confirm:
        run.stage("confirmation")
    return ab._verdict(run)


def test_quiet_identical_sides_stop_at_the_first_look_as_unchanged() -> None:
    run = scripted_run(noisy(1.0, 0.005, 1), noisy(1.0, 0.005, 2), min_launches=8)
    found = run_case(run)
    assert found["verdict"] == "unchanged"
    assert [(s.launches, s.pairs) for s in run.stages] == [(8, 80)]
    assert "8 launches of 10 pairs" in found["message"]


def test_noisy_launches_are_topped_up_in_steps_until_they_answer() -> None:
    run = scripted_run(noisy(1.0, 0.05, 3), noisy(1.0, 0.05, 4), process_sd=0.02, min_launches=6, check_every=2,
                       max_launches=60)
    found = run_case(run)
    assert found["verdict"] == "unchanged"
    assert run.stages[0].launches > 6
    assert (run.stages[0].launches - 6) % 2 == 0


def test_a_regression_is_confirmed_by_fresh_launches_before_it_counts() -> None:
    run = scripted_run(noisy(1.0, 0.02, 5), noisy(0.9, 0.02, 6), min_launches=8)
    found = run_case(run)
    assert found["verdict"] == "regression"
    assert [s.kind for s in run.stages] == ["initial", "confirmation"]
    assert [s.answer for s in run.stages] == ["regression", "regression"]
    assert f"confirmed by {run.stages[1].launches} fresh launches" in found["message"]
    assert found["launches"] == sum(s.launches for s in run.stages)


def test_one_burst_of_noise_does_not_fail_the_build() -> None:
    # The new side is slowed for its first 80 halves (another tenant), then is as fast as the base:
    # the first set flags it, the fresh set does not confirm it.
    run = scripted_run(noisy(1.0, 0.01, 7), noisy(1.0, 0.01, 8, burst=(0, 80, 0.85)), min_launches=8)
    found = run_case(run)
    assert run.stages[0].answer == "regression"
    assert run.stages[1].answer != "regression"
    assert found["verdict"] == "inconclusive"
    assert "not confirmed" in found["message"]


def test_a_process_that_happens_to_be_slow_is_not_taken_for_the_code() -> None:
    # Identical code whose processes differ by 10% from one start to the next (as measured on this
    # machine): every pair of one launch shares its processes' speeds, so the pairs alone would
    # call it a change; over launches the interval covers it.
    run = scripted_run(noisy(1.0, 0.03, 11), noisy(1.0, 0.03, 12), process_sd=0.1, min_launches=8,
                       max_launches=12)
    found = run_case(run)
    assert found["verdict"] == "inconclusive"
    per_pair = pairs.analyse(run.log_ratios)
    assert per_pair is not None and found["low"] < 1 < found["high"]
    assert (found["high"] - found["low"]) > (per_pair.high - per_pair.low)


def test_launches_that_run_out_of_budget_are_inconclusive_and_say_what_they_could_detect() -> None:
    run = scripted_run(noisy(1.0, 0.3, 9), noisy(0.97, 0.3, 10), process_sd=0.05, min_launches=8, max_launches=10)
    found = run_case(run)
    assert found["verdict"] == "inconclusive"
    assert run.stages[0].stop_reason == "max_launches" and run.stages[0].launches == 10
    assert found["detectable"] > 0.03
    assert "could flag a change of" in found["message"]


def swinging(effect: float) -> Callable[[int], float]:
    """A new side ``effect`` (log) from the base on average, 5% above it in one launch and 5% below
    it in the next (10 halves a launch): an estimate of ``effect`` that a few launches cannot settle."""
    return lambda i: 1000 * math.exp(effect + (0.05 if (i // 10) % 2 else -0.05))


def test_a_set_stops_before_a_launch_that_would_end_past_its_deadline() -> None:
    # Launches of 10 s, a deadline of 55 s: after 5 launches (50 s) a sixth would end at 60 s.
    run = scripted_run(lambda i: 1000.0, swinging(0.0), launch_seconds=10.0, min_launches=3, max_launches=24,
                       max_time=1e9)
    record = run.stage("initial", deadline=55.0)
    assert (record.launches, record.stop_reason, record.answer, record.extended) == (5, "max_time", None, False)
    assert record.deadline_s == 55.0 and record.measured_s == 50.0
    found = ab._verdict(run)
    assert found["verdict"] == "inconclusive" and "this case's 55 s ran out: --max-time" in found["message"]


def test_a_suspected_change_may_go_on_past_its_deadline_but_not_without_end() -> None:
    # The same swings about a 3% slowdown: undecided at the deadline, with its estimate beyond the
    # 2% threshold. It goes on up to 1.5 times its deadline (82.5 s: a 9th launch would end at 90).
    run = scripted_run(lambda i: 1000.0, swinging(-0.03), launch_seconds=10.0, min_launches=3, max_launches=24,
                       max_time=1e9)
    record = run.stage("initial", deadline=55.0)
    assert (record.launches, record.stop_reason, record.answer, record.extended) == (8, "max_time", None, True)
    assert record.deadline_s == 82.5
    assert "extended for a suspected change" in ab._verdict(run)["message"]


def test_a_short_deadline_still_lets_a_set_reach_its_first_look() -> None:
    # The pool is nearly spent (a deadline of 5 s), but a set that stops before it can look says
    # nothing: it takes min_launches launches, unless the case's own max_time has passed.
    run = scripted_run(noisy(1.0, 0.3, 9), noisy(0.97, 0.3, 10), launch_seconds=10.0, min_launches=4,
                       max_time=1e9)
    assert run.stage("initial", deadline=5.0).launches == 4
    run = scripted_run(noisy(1.0, 0.3, 9), noisy(0.97, 0.3, 10), launch_seconds=10.0, min_launches=4, max_time=25.0)
    assert run.stage("initial", deadline=5.0).launches == 3


def test_the_run_budget_gives_each_case_its_share_of_what_is_left() -> None:
    budget = ab.Budget(total=130.0, cases=2)
    assert budget.share() == 65.0
    budget.spend(40.0)  # the first case answered early: the second may use what it left
    assert budget.share() == 90.0
    budget = ab.Budget(total=195.0, cases=3)
    budget.spend(115.0)  # a flagged case and its confirmation took more than their share
    assert budget.share() == 40.0
    budget.spend(60.0)
    assert budget.share() == 20.0
    budget.spend(30.0)  # the last case's first look took longer than the pool had left
    assert budget.share() == 0.0 and budget.cases == 0


def test_a_flag_that_does_not_survive_the_correction_across_cases_becomes_inconclusive() -> None:
    params = CaseParams.model_validate({"model": "mlp"})
    params = Case(id="c", params=params).params_json()
    records = [ab.ABCaseRecord.model_validate({"id": f"c{i}", "params": params, "verdict": "regression" if i == 0
                                               else "unchanged", "message": "m", "p": p})
               for i, p in enumerate([0.004, 0.3, 0.5, 0.6, 0.7])]
    ab._adjust(records, 0.99)
    assert records[0].verdict == "inconclusive"
    assert records[0].p_adjusted == pytest.approx(0.02)
    assert "adjusted p" in records[0].message


# --- end to end: sides as directories and as git revisions ----------------------------------------

MODEL = '''
import os
import torch.nn as nn

open(os.path.join(os.getcwd(), "imported-{side}"), "w").close()
with open(os.path.join(os.getcwd(), "parents-{side}"), "a") as log:  # one line per process: parent, itself
    log.write(f"{{os.getppid()}} {{os.getpid()}}\\n")
{extra}


def make(**kwargs):
    return nn.Sequential(nn.Flatten(), *[nn.Linear(64, 64) for _ in range({depth})], nn.Linear(64, 10))
'''

SUITE = """
name: abtest
defaults:
  batch_size: 16
  optimizer: sgd
  data: synthetic
  measure: {warmup_steps: 2, window_time: 0.01}
  timeout: 120
matrix:
  model:
    - {import: "abmodel:make", input_shape: [64], label: user}
"""

FAST = ["--pairs-per-launch", "3", "--min-launches", "3", "--max-launches", "4", "--max-time", "60",
        "--order-seed", "11", "--quiet"]


def side(folder: Path, name: str, depth: int, extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "abmodel.py").write_text(MODEL.format(side=name, depth=depth, extra=extra), encoding="utf-8")
    return folder


def test_ab_runs_each_side_from_its_own_directory_and_writes_both_results(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    a, b = side(tmp_path / "a", "a", 1), side(tmp_path / "b", "b", 24)
    out = tmp_path / "out"
    result = bench("ab", suite, "--base", a, "--new", b, "--out", out, *FAST, cwd=tmp_path, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    # Each side imported its own module, in its own directory.
    assert (a / "imported-a").exists() and (b / "imported-b").exists()
    assert not (a / "imported-b").exists() and not (b / "imported-a").exists()
    doc = ABDoc.model_validate(json.loads((out / "ab.json").read_text(encoding="utf-8")))
    case = doc.cases[0]
    assert doc.run.status == "complete" and doc.settings.order_seed == 11
    # A model 24 times deeper is far slower: no amount of noise on this machine hides that.
    assert case.verdict == "regression" and result.returncode == 1
    assert case.ratio is not None and case.ratio < 0.5
    # One case: the whole pool (--max-time 60) is its share; its confirmation may take as long again.
    assert doc.settings.budget_s == 60.0
    assert [s.deadline_s for s in case.stages] == [60.0] * len(case.stages) and len(case.stages) == 2
    assert len(case.log_ratios) == len(case.base_first) == len(case.launch_of_pair) == len(case.stage_of_pair)
    assert len(case.launch_ratios) == case.launches == sum(s.launches for s in case.stages)
    for label in ("base", "new"):
        side_doc = ResultsDoc.model_validate(json.loads((out / label / "results.json").read_text(encoding="utf-8")))
        assert side_doc.cases[0].status == "ok"
        # Every half of every pair is one trial of that side.
        assert len(side_doc.cases[0].trials or []) == len(case.log_ratios)
    assert "regression" in (out / "ab.md").read_text(encoding="utf-8")
    html = (out / "ab.html").read_text(encoding="utf-8")
    assert 'id="view-ab"' in html and "confirmation" in html


def processes(folder: Path, name: str) -> list[tuple[str, str]]:
    """(parent, pid) of every process that imported that side's model, in order."""
    lines = (folder / f"parents-{name}").read_text(encoding="utf-8").splitlines()
    return [(parent, pid) for parent, pid in (line.split() for line in lines)]


def parents(folder: Path, name: str) -> list[str]:
    return [parent for parent, _ in processes(folder, name)]


ONE_SET = ["--pairs-per-launch", "2", "--min-launches", "3", "--max-launches", "3", "--no-confirm", "--quiet"]


def test_by_default_every_launch_is_one_process_that_builds_both_sides_each_from_its_own_code(tmp_path: Path) -> None:
    # A process's speed here is a draw of its own: two models in one process share it, so it
    # cancels in every pair; a fresh process per launch, forked from the run's one server.
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    a, b = side(tmp_path / "a", "a", 1), side(tmp_path / "b", "b", 1)
    result = bench("ab", suite, "--base", a, "--new", b, "--out", tmp_path / "out", *ONE_SET, cwd=tmp_path,
                   timeout=300)
    assert result.returncode in (0, 1), result.stderr
    doc = ABDoc.model_validate(json.loads((tmp_path / "out" / "ab.json").read_text(encoding="utf-8")))
    assert doc.settings.start == "shared" and doc.cases[0].start is None and doc.cases[0].launches == 3
    base, new = processes(a, "a"), processes(b, "b")
    assert len(base) == len(new) == 3
    assert base == new  # the same process imported both sides' modules, each from its own folder
    assert len({pid for _, pid in base}) == 3 and len({parent for parent, _ in base}) == 1
    assert not (a / "imported-b").exists() and not (b / "imported-a").exists()


def test_separate_processes_fork_both_sides_from_a_fresh_server_in_every_launch(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    a, b = side(tmp_path / "a", "a", 1), side(tmp_path / "b", "b", 1)
    result = bench("ab", suite, "--base", a, "--new", b, "--out", tmp_path / "out", "--separate-processes", *ONE_SET,
                   cwd=tmp_path, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    doc = ABDoc.model_validate(json.loads((tmp_path / "out" / "ab.json").read_text(encoding="utf-8")))
    assert doc.settings.start == "server" and doc.settings.pairs_per_launch == 2
    base, new = processes(a, "a"), processes(b, "b")
    assert len(base) == len(new) == 3
    assert not {pid for _, pid in base} & {pid for _, pid in new}  # a process per side
    assert parents(a, "a") == parents(b, "b") and len(set(parents(a, "a"))) == 3  # a fresh server per launch


# Importing a module of this name twice in one process fails, as a registry that refuses a second
# registration of one name would.
ONCE = """
import builtins
if getattr(builtins, "abmodel_registered", False):
    raise RuntimeError("abmodel is registered already")
builtins.abmodel_registered = True
"""


def test_sides_that_cannot_share_a_process_fall_back_to_a_process_each_and_say_why(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    a, b = side(tmp_path / "a", "a", 1, ONCE), side(tmp_path / "b", "b", 1, ONCE)
    out = tmp_path / "out"
    result = bench("ab", suite, "--base", a, "--new", b, "--out", out, *ONE_SET, cwd=tmp_path, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    doc = ABDoc.model_validate(json.loads((out / "ab.json").read_text(encoding="utf-8")))
    case = doc.cases[0]
    assert doc.settings.start == "shared" and case.start == "server"
    assert case.verdict not in ("failed", "skipped") and case.launches == 3
    assert case.fallback is not None and "registered already" in case.fallback
    assert "a process of its own" in case.message
    assert "registered already" in (out / "ab.md").read_text(encoding="utf-8")


def test_a_side_that_fails_in_a_process_of_its_own_too_fails_the_case_naming_that_side(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    a = side(tmp_path / "a", "a", 1)
    b = side(tmp_path / "b", "b", 1, 'raise RuntimeError("the new code is broken")')
    out = tmp_path / "out"
    result = bench("ab", suite, "--base", a, "--new", b, "--out", out, *ONE_SET, cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr
    case = ABDoc.model_validate(json.loads((out / "ab.json").read_text(encoding="utf-8"))).cases[0]
    assert case.verdict == "failed" and case.error is not None and case.error.startswith("new:")
    assert "the new code is broken" in case.error


def test_a_side_built_in_a_shared_process_imports_its_own_file_and_leaves_no_module_behind(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from bench.session import SideCode

    monkeypatch.chdir(tmp_path)  # building a side enters its directory

    for name in ("a", "b"):
        (tmp_path / name / "pkg").mkdir(parents=True)
        (tmp_path / name / "pkg" / "__init__.py").write_text("", encoding="utf-8")
        (tmp_path / name / "pkg" / "which.py").write_text(f"SIDE = {name!r}\n", encoding="utf-8")
    built = []
    for name in ("a", "b"):
        code = SideCode(name, str(tmp_path / name))

        def factory() -> Any:
            import importlib

            return importlib.import_module("pkg.which")

        built.append(code.build(factory))
        assert "pkg" not in sys.modules and "pkg.which" not in sys.modules
        assert str(tmp_path / name) not in sys.path
    assert [m.SIDE for m in built] == ["a", "b"]


def test_a_side_under_another_interpreter_starts_a_fresh_one_in_every_launch(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    a, b = side(tmp_path / "a", "a", 1), side(tmp_path / "b", "b", 1)
    # Another path to this interpreter: bench cannot tell it from another installation.
    other = tmp_path / "python"
    other.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n', encoding="utf-8")
    other.chmod(0o755)
    out = tmp_path / "out"
    result = bench("ab", suite, "--base", a, "--new", b, "--new-python", other, "--out", out, *ONE_SET,
                   cwd=tmp_path, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    doc = ABDoc.model_validate(json.loads((out / "ab.json").read_text(encoding="utf-8")))
    assert doc.new.python == str(other) and doc.cases[0].launches == 3 and doc.settings.start == "interpreters"
    # Each side's process is an interpreter of its own, started by bench itself, every launch.
    base, new = parents(a, "a"), parents(b, "b")
    assert len(base) == len(new) == 3
    assert len(set(base + new)) == 1


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout.strip()


def test_ab_compares_two_git_revisions_and_removes_their_checkouts(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    side(repo, "any", 1)
    (repo / "suite.yaml").write_text(SUITE, encoding="utf-8")
    git(repo, "init", "-q")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "add", ".")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "shallow")
    side(repo, "any", 1)
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "same again", "--allow-empty")
    first, second = git(repo, "rev-parse", "HEAD~1"), git(repo, "rev-parse", "HEAD")
    out = tmp_path / "out"
    result = bench("ab", "suite.yaml", "--base", "HEAD~1", "--new", "HEAD", "--out", out, *FAST, cwd=repo, timeout=300)
    assert result.returncode in (0, 1), result.stderr
    doc = ABDoc.model_validate(json.loads((out / "ab.json").read_text(encoding="utf-8")))
    assert (doc.base.revision, doc.new.revision) == (first, second)
    assert doc.cases[0].verdict in ("unchanged", "inconclusive", "regression", "improvement")
    assert git(repo, "worktree", "list").count("\n") == 0  # only the repository's own tree is left
    # The revisions' checkouts imported their own copies, not the working tree.
    assert not (repo / "imported-any").exists()


@pytest.mark.parametrize(("base", "new", "message"), [
    ("no-such-dir", "b", "--base no-such-dir: no such directory"),
    ("a", "no-such-revision", "--new no-such-revision: no such directory"),
])
def test_a_side_that_does_not_exist_is_refused_with_one_line_and_nothing_run(
        tmp_path: Path, base: str, new: str, message: str) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    side(tmp_path / "a", "a", 1)
    side(tmp_path / "b", "b", 1)
    result = bench("ab", suite, "--base", base, "--new", new, "--out", tmp_path / "out", *FAST, cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr_lines) == 1 and message in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_suite_whose_model_is_missing_on_one_side_is_refused_before_anything_runs(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    side(tmp_path / "a", "a", 1)
    (tmp_path / "b").mkdir()
    result = bench("ab", suite, "--base", "a", "--new", "b", "--out", tmp_path / "out", *FAST, cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr_lines) == 1
    assert f"{tmp_path / 'b'} (the side's directory" in result.stderr and "model" in result.stderr
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "a" / "imported-a").exists()


def test_aa_saves_a_calibration_that_compare_reads(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    side(tmp_path / "a", "a", 1)
    out = tmp_path / "out"
    saved = tmp_path / "calibration.json"
    result = bench("aa", suite, "--side", "a", "--out", out, "--save", saved, *FAST, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    calibration = json.loads(saved.read_text(encoding="utf-8"))
    assert calibration["kind"] == "calibration" and calibration["cases"][0]["id"] == "user"
    assert calibration["cases"][0]["pairs"] > 0 and calibration["cases"][0]["launches"] >= 3
    compared = bench("compare", out / "base", out / "new", "--calibration", saved, cwd=tmp_path)
    assert compared.returncode in (0, 1), compared.stderr
    assert "unpaired" in compared.stdout
    broken = bench("compare", out / "base", out / "new", "--calibration", suite, cwd=tmp_path)
    assert broken.returncode == 2 and len(broken.stderr_lines) == 1 and "calibration" in broken.stderr


def test_an_interpreter_that_cannot_import_bench_is_refused_before_anything_runs(tmp_path: Path) -> None:
    suite = tmp_path / "suite.yaml"
    suite.write_text(SUITE, encoding="utf-8")
    side(tmp_path / "a", "a", 1)
    result = bench("ab", suite, "--base", "a", "--new", "a", "--new-python", "/bin/false", "--out", tmp_path / "out",
                   *FAST, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr_lines == ["bench: /bin/false: cannot import bench (no output); install bench into that "
                                   "environment"]
    assert not (tmp_path / "out").exists()


def test_a_revision_side_runs_from_the_same_subfolder_of_its_checkout(tmp_path: Path) -> None:
    from bench import sides

    repo = tmp_path / "repo"
    (repo / "sub").mkdir(parents=True)
    (repo / "sub" / "x.txt").write_text("x", encoding="utf-8")
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    with sides.open_sides("HEAD", "HEAD", base_python="python", new_python="python", cwd=repo / "sub") as (b, n):
        assert b.directory.name == "sub" and (b.directory / "x.txt").exists()
        assert b.directory != n.directory and b.revision == n.revision
        checkout = b.directory.parent
    assert not checkout.exists()
    assert git(repo, "worktree", "list").count("\n") == 0
