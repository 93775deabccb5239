"""What ``bench aa`` learns about a machine, kept for ``bench compare``.

An A/A run (the same code on both sides) measures two things. Its verdicts count false alarms:
any ``regression`` or ``improvement`` there is one. And one side's halves, taken over the few
minutes the run lasted, show how far the machine's speed wandered: two runs made at different
times differ by about that much with no change to the code, so an unpaired comparison cannot tell
a smaller change from the drift. That spread is the *noise floor* of unpaired comparisons; ``bench
compare --calibration FILE`` calls a change within it inconclusive rather than a regression.

The spread is measured on blocks of ``BLOCK`` consecutive halves (about half a second of
measurement each, as long as a trial of ``bench run``): the ratio of their 90th to their 10th
percentile, minus 1.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError

from bench.errors import ResultsError
from bench.records import ABDoc, Environment, NonNeg, Record
from bench.results import atomic_write_text, describe_validation, load_run, now

BLOCK = 5


class CalibrationCase(Record):
    id: str
    verdict: str = Field(description="What the A/A run said: anything but `unchanged`/`inconclusive` is a false alarm.")
    pairs: int = Field(ge=0)
    launches: int = Field(ge=0)
    launch_sd: NonNeg | None = Field(description="Standard deviation of one launch's log ratio (process to process).")
    drift: NonNeg | None = Field(description="Noise floor of unpaired comparisons: the machine's drift over the run.")


class CalibrationDoc(Record):
    schema_version: Literal[1] = 1
    kind: Literal["calibration"] = "calibration"
    created: str
    suite: str
    environment: Environment
    false_alarms: int = Field(ge=0, description="Cases the A/A run called a regression or an improvement.")
    noise_floor: NonNeg | None = Field(description="The largest case's drift: the default for cases not listed.")
    cases: list[CalibrationCase]

    def floor(self, case_id: str) -> float | None:
        """The noise floor for ``case_id``: its own, else the largest measured."""
        own = next((c.drift for c in self.cases if c.id == case_id), None)
        return own if own is not None else self.noise_floor


def spread(values: list[float], block: int = BLOCK) -> float | None:
    """p90/p10 - 1 of the medians of consecutive blocks of ``values``; None with fewer than 5 blocks."""
    import numpy as np

    blocks = [float(np.median(values[i:i + block])) for i in range(0, len(values) - block + 1, block)]
    if len(blocks) < 5:
        return None
    lo, hi = np.percentile(blocks, [10, 90])
    return float(hi / lo - 1) if lo > 0 else None


def from_ab(doc: ABDoc, out_dir: Path) -> CalibrationDoc:
    """The calibration an A/A run in ``out_dir`` supports."""
    import numpy as np

    base = {c.id: c for c in load_run(out_dir / "base").cases}
    cases = []
    for c in doc.cases:
        halves = [t.median for t in sorted(base[c.id].trials or [], key=lambda t: (t.round, t.position))] \
            if c.id in base else []
        launches = list(c.launch_ratios)
        cases.append(CalibrationCase(id=c.id, verdict=c.verdict, pairs=c.pairs, launches=c.launches,
                                     launch_sd=float(np.std(launches, ddof=1)) if len(launches) > 1 else None,
                                     drift=spread(halves)))
    drifts = [c.drift for c in cases if c.drift is not None]
    return CalibrationDoc(created=now(), suite=doc.suite.name, environment=doc.environment,
                          false_alarms=sum(c.verdict in ("regression", "improvement") for c in cases),
                          noise_floor=max(drifts) if drifts else None, cases=cases)


def save(doc: ABDoc, out_dir: Path, path: Path) -> Path:
    calibration = from_ab(doc, out_dir)
    atomic_write_text(path, json.dumps(calibration.model_dump(mode="json"), indent=1, allow_nan=False))
    return path


def load(path: Path) -> CalibrationDoc:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ResultsError(f"{path}: cannot read a calibration file ({exc})") from None
    try:
        return CalibrationDoc.model_validate(data)
    except ValidationError as exc:
        raise ResultsError(f"{path}: not a calibration file written by `bench aa --save`: "
                           f"{describe_validation(exc)}") from None
