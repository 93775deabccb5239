"""Paired effects of a suite's swept parameters: for each value of each parameter, its throughput
against the parameter's baseline value (the first in the suite's order), the other parameters
held equal, as a ratio with a 95% interval over rounds (``bench.trials.effects_by_parameter``).

Why paired: two cases measured in the same round saw nearly the same machine, so their ratio in
that round cancels most of the machine's drift, which the cases' own intervals carry in full.
Cells that cannot be paired (excluded, failed or skipped cases) are listed, never compared with
unlike cases."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from bench import trials as stats
from bench.labels import axis_labels
from bench.records import CaseRecord, EffectRecord


def swept(cases: Sequence[CaseRecord]) -> dict[str, list[str]]:
    """Each parameter whose value differs between cases, with its canonical values in the order
    the cases list them (the suite's matrix order: the first is the baseline)."""
    params = [c.params.as_dict() for c in cases]
    keys: list[str] = []
    for p in params:
        keys.extend(k for k in p if k not in keys)
    out: dict[str, list[str]] = {}
    for key in keys:
        values = list(dict.fromkeys(_canonical(p.get(key)) for p in params))
        if len(values) > 1:
            out[key] = values
    return out


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def effects(cases: Sequence[CaseRecord]) -> list[EffectRecord]:
    """The paired effect of every value of every swept parameter against its baseline."""
    axes = swept(cases)
    if not axes:
        return []
    labels: dict[tuple[str, str], str] = {}
    for key in axes:
        values = [c.params.as_dict().get(key) for c in cases]
        for value, label in zip(values, axis_labels(values), strict=True):
            labels[(key, _canonical(value))] = label
    measured = [c for c in cases if c.ok and c.trials]
    effect_cases = [stats.EffectCase(c.id, {k: _canonical(c.params.as_dict().get(k)) for k in axes},
                                     {t.round: t.median for t in c.trials or []}) for c in measured]
    found = stats.effects_by_parameter(effect_cases, axes)
    out = []
    for e in found:
        parameter = e.parameter
        missing = [_relabel(text, labels) for text in e.missing]
        effect = e.effect
        out.append(EffectRecord(
            parameter=parameter, value=labels[(parameter, str(e.value))], baseline=labels[(parameter, str(e.baseline))],
            ratio=effect.point if effect else None, low=effect.low if effect else None,
            high=effect.high if effect else None, rounds=effect.n_pairs if effect else 0, pairs=e.pairs,
            method=effect.method if effect else None, missing=missing))
    return out


def _relabel(text: str, labels: dict[tuple[str, str], str]) -> str:
    """Missing-cell sentences name canonical JSON values; show the labels people read instead."""
    for (key, canonical), label in sorted(labels.items(), key=lambda kv: -len(kv[0][1])):
        text = text.replace(f"{key}={canonical}", f"{key}={label}")
    return text


def describe(effect: EffectRecord) -> str:
    """``activation: tanh vs relu: -3.1% [-4.0, -2.2] (12 rounds)``, or why there is no figure."""
    head = f"{effect.parameter}: {effect.value} vs {effect.baseline}"
    if effect.ratio is None or effect.low is None or effect.high is None:
        return f"{head}: no paired figure ({'; '.join(effect.missing) or 'fewer than 2 common rounds'})"
    pct = stats.ratio_to_pct
    return (f"{head}: {pct(effect.ratio):+.1f}% [{pct(effect.low):+.1f}, {pct(effect.high):+.1f}] "
            f"({effect.rounds} rounds)")
