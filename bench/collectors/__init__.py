"""Collectors observe a case without changing what it measures.

The protocol (see ``Collector``): the worker builds every collector the case asks for, enters
them just before the measured region and exits them just after, then calls ``after`` once
measurement is over (for work that must stay out of the timed windows, such as a profiler window
or a FLOP count). ``record()`` returns a JSON-ready dict stored under ``collectors.<name>`` of the
case. A collector that fails records its error; it never raises into the measurement.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from bench.suite import CaseParams


@dataclass
class CaseContext:
    """What a collector may need to know about the case it observes."""

    params: CaseParams
    device: torch.device
    out_dir: str | None          # where files (traces, flame graphs) go; None: do not write files
    case_id: str
    rank: int = 0
    step: Callable[[], None] | None = None        # one training step (for untimed extra work)
    model: Any = None
    extras: dict[str, Any] = field(default_factory=dict)


class Collector:
    """Base class: subclasses override ``start``, ``stop``, ``after`` and ``result``."""

    name = "collector"

    def __init__(self, ctx: CaseContext) -> None:
        self.ctx = ctx
        self.error: str | None = None

    def start(self) -> None:
        """Called just before the measured region."""

    def stop(self) -> None:
        """Called just after the measured region."""

    def after(self) -> None:
        """Called once measurement is over; may run extra, untimed steps."""

    def result(self) -> dict[str, Any] | None:
        return None

    def _guard(self, what: Callable[[], None]) -> None:
        if self.error is not None:
            return
        try:
            what()
        except Exception as exc:  # a collector must never fail the measurement it observes
            self.error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:1000]
            self.traceback = traceback.format_exc()[-4000:]

    def record(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": self.error}
        if self.error is None:
            self._guard(lambda: out.update(self.result() or {}))
            out["error"] = self.error
        return out


class CollectorSet:
    """Runs a list of collectors around the measured region, guarding each one."""

    def __init__(self, collectors: list[Collector]) -> None:
        self.collectors = collectors

    def __enter__(self) -> CollectorSet:
        for c in self.collectors:
            c._guard(c.start)
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        for c in reversed(self.collectors):
            c._guard(c.stop)

    def after(self) -> None:
        for c in self.collectors:
            c._guard(c.after)

    def records(self) -> dict[str, Any]:
        return {c.name: c.record() for c in self.collectors}


def make_collectors(ctx: CaseContext) -> CollectorSet:
    """The collectors a case asks for. Each lives in its own module of this package."""
    return CollectorSet([])
