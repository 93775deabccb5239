"""GPU telemetry through NVML (nvidia-ml-py's ``pynvml``): utilisation, memory used, power, SM
clock, temperature and the energy counter of the case's GPU, sampled in a background thread.

Why by UUID: NVML numbers GPUs in PCI order and ignores ``CUDA_VISIBLE_DEVICES``, so CUDA's
``cuda:1`` may be NVML's device 3; the UUID is the one name both agree on.

Why ``time.perf_counter``: the step windows are timed on it (CLOCK_MONOTONIC on Linux), so
``samples.t`` is in seconds from the case's ``samples.clock_origin`` and a report can overlay GPU
utilisation on throughput without guessing an offset.

Where NVML cannot run (no library, no driver: a CPU machine) the record says why, once, and every
field is null; where one metric is unsupported (MIG, older boards) that metric is null and
``metric_errors`` says why. Nothing is made up.
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bench.collectors import CaseContext, Collector
from bench.collectors.sampling import PeriodicSampler

if TYPE_CHECKING:
    import torch

# NVML's own utilisation counter averages over 1/6 s to 1 s depending on the board, so sampling
# much faster than the default 0.2 s repeats values rather than adding detail.
SERIES = ("util", "mem_used_mb", "power_w", "sm_clock_mhz", "temp_c", "energy_j")
MAX_SAMPLES = 5000


def load_nvml() -> Any:
    """The ``pynvml`` module (a function so that tests can hand in a fake through sys.modules)."""
    return importlib.import_module("pynvml")


def torch_device_uuid(device: torch.device) -> str:
    import torch

    return str(torch.cuda.get_device_properties(device).uuid)


def normalize_uuid(uuid: str | bytes) -> str:
    """``GPU-8f3c...`` (NVML) and ``8f3c...`` (torch) name the same device."""
    text = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
    text = text.strip().strip("\0").lower()
    for prefix in ("gpu-", "mig-"):
        text = text.removeprefix(prefix)
    return text


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def find_device(nvml: Any, uuid: str) -> tuple[Any, dict[str, Any]]:
    """The NVML handle whose UUID matches, with its name; MIG instances are searched too."""
    want = normalize_uuid(uuid)
    seen: list[str] = []
    for i in range(nvml.nvmlDeviceGetCount()):
        handle = nvml.nvmlDeviceGetHandleByIndex(i)
        candidates = [handle]
        try:
            for j in range(nvml.nvmlDeviceGetMaxMigDeviceCount(handle)):
                try:
                    candidates.append(nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, j))
                except nvml.NVMLError:
                    continue  # an empty MIG slot
        except (nvml.NVMLError, AttributeError):
            pass  # not MIG-capable, or MIG off
        for h in candidates:
            found = _text(nvml.nvmlDeviceGetUUID(h))
            seen.append(found)
            if normalize_uuid(found) == want:
                return h, {"nvml_index": i, "name": _text(nvml.nvmlDeviceGetName(h)), "uuid": found}
    raise LookupError(f"no NVML device has UUID {uuid} (NVML sees: {', '.join(seen) or 'none'})")


def _readers(nvml: Any) -> dict[str, Callable[[Any], float]]:
    return {
        "util": lambda h: float(nvml.nvmlDeviceGetUtilizationRates(h).gpu),
        "mem_used_mb": lambda h: nvml.nvmlDeviceGetMemoryInfo(h).used / 2**20,
        "power_w": lambda h: nvml.nvmlDeviceGetPowerUsage(h) / 1000,                # mW
        "sm_clock_mhz": lambda h: float(nvml.nvmlDeviceGetClockInfo(h, nvml.NVML_CLOCK_SM)),
        "temp_c": lambda h: float(nvml.nvmlDeviceGetTemperature(h, nvml.NVML_TEMPERATURE_GPU)),
        "energy_j": lambda h: nvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000,  # mJ since driver load
    }


class NvmlSampler:
    """Reads every metric of one device per call; a metric that NVML does not support on this
    device is asked once, then left null with the reason."""

    def __init__(self, nvml: Any, handle: Any, clock: Callable[[], float] = time.perf_counter) -> None:
        self.nvml = nvml
        self.handle = handle
        self.clock = clock
        self.readers = _readers(nvml)
        self.t: list[float] = []
        self.series: dict[str, list[float | None]] = {name: [] for name in SERIES}
        self.metric_errors: dict[str, str] = {}
        self._failures: dict[str, int] = {}

    def sample(self) -> None:
        t = self.clock()
        for name, read in self.readers.items():
            value: float | None = None
            if name not in self.metric_errors or name in self._failures:
                try:
                    value = read(self.handle)
                except self.nvml.NVMLError_NotSupported as exc:
                    self.metric_errors[name] = f"not supported on this device (NVML: {exc})"
                except self.nvml.NVMLError as exc:  # transient (GPU busy resetting...): skip this sample
                    n = self._failures[name] = self._failures.get(name, 0) + 1
                    self.metric_errors[name] = f"NVML: {exc} ({n} sample(s) missing)"
            self.series[name].append(value)
        self.t.append(t)


def _bracket(t: list[float], begin: float, end: float) -> tuple[int, int]:
    """Indices of the last sample at or before ``begin`` and the first at or after ``end``, so the
    selected samples cover the whole window even when it is shorter than the interval."""
    lo = max([i for i, x in enumerate(t) if x <= begin], default=0)
    hi = min([i for i, x in enumerate(t) if x >= end], default=len(t) - 1)
    return lo, max(lo, hi)


def _mean(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return sum(real) / len(real) if real else None


def _max(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return max(real) if real else None


def summarize(t: list[float], series: dict[str, list[float | None]], window: tuple[float, float] | None,
              throughput: float | None) -> dict[str, Any]:
    """Means and maxima over the samples that cover the measured windows, and the energy: from
    the driver's counter where it has one, else the integral of the power samples."""
    lo, hi = _bracket(t, *window) if window else (0, len(t) - 1)
    part = {k: v[lo:hi + 1] for k, v in series.items()}
    span = t[hi] - t[lo] if t else 0.0
    energy: float | None = None
    source = None
    e_first, e_last = (part["energy_j"][0], part["energy_j"][-1]) if part["energy_j"] else (None, None)
    if e_first is not None and e_last is not None and hi > lo:
        energy, source = e_last - e_first, "counter"
    else:
        power = part["power_w"]
        pairs = [(t[lo + i], p) for i, p in enumerate(power) if p is not None]
        if len(pairs) >= 2:
            energy = sum((b[0] - a[0]) * (a[1] + b[1]) / 2 for a, b in itertools.pairwise(pairs))
            source = "power_integral"
    per_sample = None
    if energy is not None and span > 0 and throughput:
        # Mean power over the covered span divided by samples per second: joules per sample.
        per_sample = energy / span / throughput
    return {
        "util_mean": _mean(part["util"]),
        "util_max": _max(part["util"]),
        "power_mean_w": _mean(part["power_w"]),
        "sm_clock_mean_mhz": _mean(part["sm_clock_mhz"]),
        "mem_used_max_mb": _max(part["mem_used_mb"]),
        "temp_max_c": _max(part["temp_c"]),
        "energy_j": energy,
        "energy_source": source,
        "energy_per_sample_j": per_sample,
        "span_s": span,
        "samples": hi - lo + 1 if t else 0,
    }


def combine_summaries(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """One summary for a case over several GPUs (DataParallel, or DDP's ranks): utilisation and
    clock averaged, maxima of maxima, and power, energy and energy per sample summed, since each
    device's share is divided by the case's global throughput. A sum with a missing part is null:
    a partial total would read as the whole."""

    def total(key: str) -> float | None:
        values: list[float | None] = [s.get(key) for s in summaries]
        real = [v for v in values if v is not None]
        return sum(real) if len(real) == len(values) else None

    sources = {s.get("energy_source") for s in summaries}
    return {
        "util_mean": _mean([s.get("util_mean") for s in summaries]),
        "util_max": _max([s.get("util_max") for s in summaries]),
        "power_mean_w": total("power_mean_w"),
        "sm_clock_mean_mhz": _mean([s.get("sm_clock_mean_mhz") for s in summaries]),
        "mem_used_max_mb": _max([s.get("mem_used_max_mb") for s in summaries]),
        "temp_max_c": _max([s.get("temp_max_c") for s in summaries]),
        "energy_j": total("energy_j"),
        "energy_source": sources.pop() if len(sources) == 1 else "mixed",
        "energy_per_sample_j": total("energy_per_sample_j"),
        "span_s": _max([s.get("span_s") for s in summaries]),
        "samples": min((int(s.get("samples") or 0) for s in summaries), default=0),
        "devices": len(summaries),
    }


def _round(values: list[float | None], digits: int) -> list[float | None]:
    return [None if v is None else round(v, digits) for v in values]


class NvmlCollector(Collector):
    """Samples every GPU the case's process drives: its device, or under DataParallel each of the
    ``world_size`` devices it replicates the model on (DDP ranks sample their own, and the launcher
    joins them). ``samples`` is the first device's time series, ``per_device`` each device's
    summary, ``summary`` the case's (``combine_summaries``)."""

    name = "nvml"
    fields = ("devices", "samples", "summary", "per_device", "metric_errors", "interval_s")

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self._nvml: Any = None
        self._samplers: list[NvmlSampler] = []
        self._thread: PeriodicSampler | None = None
        self.devices: list[dict[str, Any]] = []

    def _torch_devices(self) -> list[torch.device]:
        import torch

        if self.ctx.params.mode == "dp":
            return [torch.device("cuda", i) for i in range(self.ctx.params.world_size)]
        return [self.ctx.device]

    def _sample(self) -> None:
        for sampler in self._samplers:
            sampler.sample()

    def start(self) -> None:
        try:
            nvml = load_nvml()
        except ImportError as exc:
            return self.fail(f"NVML unavailable: nvidia-ml-py is not installed ({exc})")
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            return self.fail(f"NVML unavailable: {exc}")
        self._nvml = nvml
        try:
            if self.ctx.device.type != "cuda":
                return self.fail(f"the case runs on {self.ctx.device.type}: no GPU to sample")
            for device in self._torch_devices():
                handle, info = find_device(nvml, torch_device_uuid(device))
                self.devices.append({"device": str(device), **info})
                self._samplers.append(NvmlSampler(nvml, handle))
            self._thread = PeriodicSampler(self._sample, self.ctx.params.nvml_interval, "bench-nvml")
            self._thread.start()
        finally:
            if self._thread is None:
                self._shutdown()

    def _shutdown(self) -> None:
        if self._nvml is not None:
            nvml, self._nvml = self._nvml, None
            with contextlib.suppress(nvml.NVMLError):
                nvml.nvmlShutdown()

    def stop(self) -> None:
        try:
            if self._thread is not None:
                self._thread.stop()
                if self._thread.error is not None:
                    err = self._thread.error
                    self.fail(f"sampling failed: {type(err).__name__}: {err}")
        finally:
            self._shutdown()

    def result(self) -> dict[str, Any]:
        assert self._samplers and self._samplers[0].t
        m = self.ctx.measurement
        first = self._samplers[0]
        origin = m.window_start[0] if m and m.window_start else first.t[0]
        window = (m.window_start[0], m.window_start[-1] + m.window_seconds[-1]) if m and m.window_start else None
        throughput = None
        if m and m.window_seconds:
            from bench.measure import median

            throughput = median(m.window_throughput)
        per_device = [{"device": info["device"], "uuid": info["uuid"],
                       "summary": summarize(s.t, s.series, window, throughput)}
                      for info, s in zip(self.devices, self._samplers, strict=True)]
        step = -(-len(first.t) // MAX_SAMPLES)  # thin long series evenly, keeping at most MAX_SAMPLES
        energy0 = next((e for e in first.series["energy_j"] if e is not None), 0.0)
        samples: dict[str, list[float | None]] = {"t": _round([x - origin for x in first.t[::step]], 4)}
        for name in SERIES:
            values = first.series[name][::step]
            if name == "energy_j":  # the counter counts since the driver loaded; start it at zero
                values = [None if v is None else v - energy0 for v in values]
            samples[name] = _round(values, 2)
        errors: dict[str, str] = {}
        for info, s in zip(self.devices, self._samplers, strict=True):
            for metric, why in s.metric_errors.items():
                errors.setdefault(metric, why if len(self._samplers) == 1 else f"{info['device']}: {why}")
        return {"devices": self.devices, "samples": samples,
                "summary": combine_summaries([d["summary"] for d in per_device]), "per_device": per_device,
                "metric_errors": errors, "interval_s": self.ctx.params.nvml_interval}
