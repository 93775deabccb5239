"""A background thread that calls a function at a fixed interval, shared by the telemetry
collectors (NVML, host memory).

Why a thread and not a process: reading NVML or /proc costs microseconds and releases the GIL
(ctypes calls and file reads do), so a thread that sleeps between samples takes no measurable
time from the training loop, and its timestamps come from the same ``time.perf_counter`` clock
as the step windows, which is what lets a report line the two up.
"""

from __future__ import annotations

import threading
from collections.abc import Callable


class PeriodicSampler:
    """Calls ``sample()`` once at ``start``, every ``interval`` seconds, and once at ``stop``.

    An exception inside ``sample`` stops the sampling and is kept in ``error``; it never reaches
    the thread that is being measured."""

    def __init__(self, sample: Callable[[], None], interval: float, name: str = "bench-sampler") -> None:
        self.sample = sample
        self.interval = interval
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _safe_sample(self) -> bool:
        if self.error is not None:
            return False
        try:
            self.sample()
        except Exception as exc:
            self.error = exc
            return False
        return True

    def _run(self) -> None:
        # Event.wait sleeps without holding the GIL; a late wake-up only shifts one timestamp.
        while not self._stop.wait(self.interval):
            if not self._safe_sample():
                return

    def start(self) -> None:
        self._safe_sample()
        self._thread.start()

    def stop(self) -> None:
        if self._thread.ident is None:  # never started
            return
        self._stop.set()
        self._thread.join()
        self._safe_sample()
