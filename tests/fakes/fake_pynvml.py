"""A stand-in for nvidia-ml-py's ``pynvml`` with scripted GPUs, for machines without a driver.

It mirrors the parts of the real API the NVML collector uses: the error classes (subclasses of
``NVMLError``, as in pynvml), handles by index, UUIDs with the ``GPU-`` prefix, and the metric
calls in NVML's own units (mW, mJ, bytes). Put an instance in ``sys.modules["pynvml"]``.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from types import SimpleNamespace


class NVMLError(Exception):
    message = "Unknown Error"

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or self.message)


class NVMLError_NotSupported(NVMLError):
    message = "Not Supported"


class NVMLError_LibraryNotFound(NVMLError):
    message = "NVML Shared Library Not Found"


class NVMLError_DriverNotLoaded(NVMLError):
    message = "Driver Not Loaded"


class NVMLError_GpuIsLost(NVMLError):
    message = "GPU is lost"


@dataclass
class FakeGpu:
    uuid: str                                  # as NVML reports it: "GPU-..."
    name: str = "NVIDIA H100 80GB HBM3"
    util: int = 50                             # percent
    mem_used: int = 2 << 30                    # bytes
    power_mw: int = 300_000
    sm_clock_mhz: int = 1980
    temp_c: int = 60
    energy_mj: int = 1_000_000                 # counter since driver load
    energy_step_mj: int = 0                    # added to the counter after each read
    unsupported: set[str] = field(default_factory=set)   # metric call names that raise NotSupported
    failing: set[str] = field(default_factory=set)       # metric call names that raise GpuIsLost


class FakeNvml:
    NVML_CLOCK_SM = 1
    NVML_TEMPERATURE_GPU = 0
    NVMLError = NVMLError
    NVMLError_NotSupported = NVMLError_NotSupported
    NVMLError_LibraryNotFound = NVMLError_LibraryNotFound
    NVMLError_DriverNotLoaded = NVMLError_DriverNotLoaded
    NVMLError_GpuIsLost = NVMLError_GpuIsLost

    def __init__(self, gpus: list[FakeGpu], init_error: NVMLError | None = None) -> None:
        self.gpus = gpus
        self.init_error = init_error
        self.initialised = 0
        self.calls: Counter[str] = Counter()

    def nvmlInit(self) -> None:
        if self.init_error is not None:
            raise self.init_error
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self.initialised -= 1

    def nvmlDeviceGetCount(self) -> int:
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeGpu:
        return self.gpus[index]

    def nvmlDeviceGetUUID(self, gpu: FakeGpu) -> str:
        return gpu.uuid

    def nvmlDeviceGetName(self, gpu: FakeGpu) -> str:
        return gpu.name

    def nvmlDeviceGetMaxMigDeviceCount(self, gpu: FakeGpu) -> int:
        raise NVMLError_NotSupported()

    def _read(self, gpu: FakeGpu, call: str) -> None:
        self.calls[call] += 1
        if call in gpu.unsupported:
            raise NVMLError_NotSupported()
        if call in gpu.failing:
            raise NVMLError_GpuIsLost()

    def nvmlDeviceGetUtilizationRates(self, gpu: FakeGpu) -> SimpleNamespace:
        self._read(gpu, "utilization")
        return SimpleNamespace(gpu=gpu.util, memory=0)

    def nvmlDeviceGetMemoryInfo(self, gpu: FakeGpu) -> SimpleNamespace:
        self._read(gpu, "memory")
        return SimpleNamespace(used=gpu.mem_used, total=80 << 30, free=(80 << 30) - gpu.mem_used)

    def nvmlDeviceGetPowerUsage(self, gpu: FakeGpu) -> int:
        self._read(gpu, "power")
        return gpu.power_mw

    def nvmlDeviceGetClockInfo(self, gpu: FakeGpu, clock: int) -> int:
        self._read(gpu, "clock")
        assert clock == self.NVML_CLOCK_SM
        return gpu.sm_clock_mhz

    def nvmlDeviceGetTemperature(self, gpu: FakeGpu, sensor: int) -> int:
        self._read(gpu, "temperature")
        assert sensor == self.NVML_TEMPERATURE_GPU
        return gpu.temp_c

    def nvmlDeviceGetTotalEnergyConsumption(self, gpu: FakeGpu) -> int:
        self._read(gpu, "energy")
        value = gpu.energy_mj
        gpu.energy_mj += gpu.energy_step_mj
        return value
