"""The NVML sampler against a fake ``pynvml``: values and units, UUID mapping, unsupported and
failing metrics, a missing library or driver, and alignment with the step windows' clock."""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

import pytest
import torch
from fakes.fake_pynvml import FakeGpu, FakeNvml, NVMLError_DriverNotLoaded, NVMLError_LibraryNotFound

from bench.collectors import CaseContext, CollectorSet
from bench.collectors import nvml as nvml_mod
from bench.collectors.nvml import (
    NvmlCollector,
    NvmlSampler,
    combine_summaries,
    find_device,
    normalize_uuid,
    summarize,
)
from bench.measure import Measurement
from bench.suite import CaseParams

UUID_A = "GPU-11111111-aaaa-4aaa-8aaa-000000000001"
UUID_B = "GPU-22222222-bbbb-4bbb-8bbb-000000000002"


def _ctx(device: str = "cuda:0", interval: float = 0.01) -> CaseContext:
    params = CaseParams.model_validate({"model": "mlp", "mode": "cuda" if device.startswith("cuda") else "cpu",
                                        "nvml_interval": interval})
    return CaseContext(params=params, device=torch.device(device), out_dir=None, case_id="c", batch=64)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeNvml:
    """Two GPUs in NVML's order; torch's cuda:0 is the second of them (as under
    CUDA_VISIBLE_DEVICES=1), so mapping by index would read the wrong board."""
    nvml = FakeNvml([
        FakeGpu(UUID_A, name="NVIDIA A100-SXM4-80GB", util=5, power_mw=60_000),
        FakeGpu(UUID_B, util=97, mem_used=3 << 30, power_mw=612_500, sm_clock_mhz=1755, temp_c=71,
                energy_step_mj=50_000),
    ])
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    torch_uuids = {0: UUID_B.removeprefix("GPU-")}  # torch reports the UUID without the prefix
    monkeypatch.setattr(nvml_mod, "torch_device_uuid", lambda device: torch_uuids[device.index or 0])
    return nvml


def _run(collector: NvmlCollector, seconds: float = 0.05) -> dict[str, Any]:
    with CollectorSet([collector]):  # guards each call, as the worker does
        time.sleep(seconds)
    return collector.record()


def test_sampler_reads_every_metric_in_the_record_units() -> None:
    nvml = FakeNvml([FakeGpu(UUID_A, util=42, mem_used=1536 << 20, power_mw=250_500, sm_clock_mhz=1410,
                             temp_c=55, energy_mj=7_000)])
    clock = itertools.count(100.0, 0.5)
    sampler = NvmlSampler(nvml, nvml.gpus[0], clock=lambda: next(clock))
    sampler.sample()
    assert sampler.t == [100.0]
    assert {k: v[0] for k, v in sampler.series.items()} == {
        "util": 42.0, "mem_used_mb": 1536.0, "power_w": 250.5, "sm_clock_mhz": 1410.0, "temp_c": 55.0,
        "energy_j": 7.0}
    assert sampler.metric_errors == {}


def test_collector_maps_the_torch_device_to_nvml_by_uuid_not_by_index(fake: FakeNvml) -> None:
    record = _run(NvmlCollector(_ctx("cuda:0")))
    assert record["error"] is None
    assert record["devices"] == [{"device": "cuda:0", "nvml_index": 1, "name": "NVIDIA H100 80GB HBM3",
                                  "uuid": UUID_B}]
    assert set(record["samples"]["util"]) == {97.0}
    assert set(record["samples"]["power_w"]) == {612.5}
    assert set(record["samples"]["mem_used_mb"]) == {3072.0}
    assert record["summary"]["util_mean"] == 97.0
    assert record["summary"]["temp_max_c"] == 71.0
    assert fake.initialised == 0, "NVML is shut down again after the region"


def test_dataparallel_samples_every_gpu_it_replicates_on_and_sums_their_power_and_energy(
        fake: FakeNvml, monkeypatch: pytest.MonkeyPatch) -> None:
    # torch's cuda:0 is NVML's device 1 and cuda:1 is NVML's device 0.
    uuids = {0: UUID_B.removeprefix("GPU-"), 1: UUID_A.removeprefix("GPU-")}
    monkeypatch.setattr(nvml_mod, "torch_device_uuid", lambda device: uuids[device.index or 0])
    params = CaseParams.model_validate({"model": "mlp", "mode": "dp", "world_size": 2, "nvml_interval": 0.01})
    ctx = CaseContext(params=params, device=torch.device("cuda:0"), out_dir=None, case_id="c", batch=128)
    collector = NvmlCollector(ctx)
    with CollectorSet([collector]):
        origin = time.perf_counter()
        time.sleep(0.05)
    ctx.measurement = Measurement(batch_size=128, steps_per_window=1, window_start=[origin],
                                  window_seconds=[0.04])
    record = collector.record()
    assert record["error"] is None
    assert [(d["device"], d["nvml_index"]) for d in record["devices"]] == [("cuda:0", 1), ("cuda:1", 0)]
    first, second = (d["summary"] for d in record["per_device"])
    assert (first["util_mean"], first["power_mean_w"]) == (97.0, 612.5)
    assert (second["util_mean"], second["power_mean_w"]) == (5.0, 60.0)
    summary = record["summary"]
    assert summary["devices"] == 2
    assert summary["util_mean"] == 51.0 and summary["util_max"] == 97.0
    assert summary["power_mean_w"] == 672.5
    assert set(record["samples"]["util"]) == {97.0}, "the time series is the first device's"


def test_a_case_summary_over_gpus_sums_what_adds_up_and_leaves_an_incomplete_sum_null() -> None:
    a = {"util_mean": 90.0, "util_max": 99.0, "power_mean_w": 600.0, "sm_clock_mean_mhz": 1900.0,
         "mem_used_max_mb": 3000.0, "temp_max_c": 70.0, "energy_j": 1200.0, "energy_source": "counter",
         "energy_per_sample_j": 0.5, "span_s": 2.0, "samples": 10}
    b = {**a, "util_mean": 70.0, "util_max": 80.0, "power_mean_w": 400.0, "mem_used_max_mb": 5000.0,
         "energy_j": 800.0, "energy_per_sample_j": 0.25, "span_s": 2.1, "samples": 11}
    both = combine_summaries([a, b])
    assert both == {"util_mean": 80.0, "util_max": 99.0, "power_mean_w": 1000.0, "sm_clock_mean_mhz": 1900.0,
                    "mem_used_max_mb": 5000.0, "temp_max_c": 70.0, "energy_j": 2000.0, "energy_source": "counter",
                    "energy_per_sample_j": 0.75, "span_s": 2.1, "samples": 10, "devices": 2}
    partial = combine_summaries([a, {**b, "power_mean_w": None, "energy_j": None, "energy_per_sample_j": None,
                                     "energy_source": None}])
    assert (partial["power_mean_w"], partial["energy_j"], partial["energy_per_sample_j"]) == (None, None, None)
    assert partial["energy_source"] == "mixed"
    assert combine_summaries([a]) == {**a, "devices": 1}


def test_uuids_match_with_or_without_the_gpu_prefix_and_in_any_case() -> None:
    assert normalize_uuid("GPU-ABCD-12") == normalize_uuid(b"abcd-12") == "abcd-12"
    nvml = FakeNvml([FakeGpu(UUID_A), FakeGpu(UUID_B)])
    handle, info = find_device(nvml, UUID_A.removeprefix("GPU-").upper())
    assert handle is nvml.gpus[0] and info["nvml_index"] == 0


def test_a_device_nvml_does_not_know_is_an_error_naming_the_uuids_it_sees(fake: FakeNvml,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nvml_mod, "torch_device_uuid", lambda device: "99999999-0000")
    record = _run(NvmlCollector(_ctx()))
    assert record["error"] == f"LookupError: no NVML device has UUID 99999999-0000 (NVML sees: {UUID_A}, {UUID_B})"
    assert record["samples"] is None
    assert fake.initialised == 0


def test_an_unsupported_metric_is_null_with_its_reason_and_asked_only_once(fake: FakeNvml) -> None:
    fake.gpus[1].unsupported = {"power", "energy"}
    record = _run(NvmlCollector(_ctx()))
    assert record["error"] is None
    n = len(record["samples"]["t"])
    assert n >= 2
    assert record["samples"]["power_w"] == [None] * n
    assert record["samples"]["energy_j"] == [None] * n
    assert record["metric_errors"] == {"power_w": "not supported on this device (NVML: Not Supported)",
                                       "energy_j": "not supported on this device (NVML: Not Supported)"}
    assert fake.calls["power"] == 1 and fake.calls["energy"] == 1
    assert fake.calls["utilization"] == n
    assert record["summary"]["power_mean_w"] is None
    assert record["summary"]["energy_j"] is None and record["summary"]["energy_source"] is None
    assert set(record["samples"]["util"]) == {97.0}


def test_a_metric_that_fails_now_and_then_keeps_being_asked_and_counts_its_gaps(fake: FakeNvml) -> None:
    fake.gpus[1].failing = {"temperature"}
    record = _run(NvmlCollector(_ctx()))
    n = len(record["samples"]["t"])
    assert fake.calls["temperature"] == n
    assert record["metric_errors"]["temp_c"] == f"NVML: GPU is lost ({n} sample(s) missing)"


def test_a_missing_nvidia_ml_py_records_null_fields_with_the_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)  # makes `import pynvml` raise ImportError
    record = _run(NvmlCollector(_ctx()), 0)
    assert record["error"].startswith("NVML unavailable: nvidia-ml-py is not installed")
    assert record == {"devices": None, "samples": None, "summary": None, "per_device": None, "metric_errors": None,
                      "interval_s": None, "error": record["error"]}


@pytest.mark.parametrize("error", [NVMLError_LibraryNotFound(), NVMLError_DriverNotLoaded()])
def test_a_missing_driver_records_null_fields_with_nvmls_reason(monkeypatch: pytest.MonkeyPatch,
                                                                error: Exception) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", FakeNvml([], init_error=error))  # type: ignore[arg-type]
    record = _run(NvmlCollector(_ctx()), 0)
    assert record["error"] == f"NVML unavailable: {error}"
    assert record["samples"] is None and record["summary"] is None


def test_the_real_pynvml_without_a_driver_says_why() -> None:
    import pynvml

    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        record = _run(NvmlCollector(_ctx()), 0)
        assert record["error"] == f"NVML unavailable: {exc}"
        assert record["samples"] is None
    else:
        pynvml.nvmlShutdown()
        pytest.skip("this machine has a working NVML")


def test_a_cpu_case_has_no_gpu_to_sample(fake: FakeNvml) -> None:
    record = _run(NvmlCollector(_ctx("cpu")), 0)
    assert record["error"] == "the case runs on cpu: no GPU to sample"
    assert fake.initialised == 0


def test_sample_times_are_seconds_from_the_cases_clock_origin(fake: FakeNvml) -> None:
    ctx = _ctx()
    collector = NvmlCollector(ctx)
    collector.start()
    time.sleep(0.03)
    origin = time.perf_counter()  # the worker's windows are timed on this clock
    time.sleep(0.03)
    collector.stop()
    ctx.measurement = Measurement(batch_size=64, steps_per_window=1, window_start=[origin],
                                  window_seconds=[0.01])
    t = collector.record()["samples"]["t"]
    assert t == sorted(t)
    assert t[0] < 0 < t[-1]
    assert t[0] > -0.2 and t[-1] < 0.2


def test_summary_covers_the_measured_windows_and_takes_energy_from_the_counter() -> None:
    t = [0.0, 1.0, 2.0, 3.0, 4.0]
    series: dict[str, list[float | None]] = {
        "util": [10, 50, 90, 70, 0], "power_w": [100, 200, 200, 200, 100], "energy_j": [0, 150, 350, 550, 700],
        "mem_used_mb": [1, 2, 3, 4, 5], "sm_clock_mhz": [1, 1, 1, 1, 1], "temp_c": [30, 40, 50, 60, 70]}
    s = summarize(t, series, window=(1.0, 3.0), throughput=1000.0)
    assert s["util_mean"] == 70.0 and s["util_max"] == 90.0
    assert s["power_mean_w"] == 200.0 and s["mem_used_max_mb"] == 4 and s["temp_max_c"] == 60
    assert (s["energy_j"], s["energy_source"], s["span_s"], s["samples"]) == (400, "counter", 2.0, 3)
    assert s["energy_per_sample_j"] == pytest.approx(0.2)  # 200 W over 1000 samples/s


def test_summary_integrates_power_where_there_is_no_energy_counter() -> None:
    t = [0.0, 1.0, 2.0, 3.0]
    series: dict[str, list[float | None]] = {
        "util": [0, 0, 0, 0], "power_w": [100, 300, 100, 500], "energy_j": [None] * 4,
        "mem_used_mb": [0] * 4, "sm_clock_mhz": [0] * 4, "temp_c": [0] * 4}
    s = summarize(t, series, window=(0.0, 2.0), throughput=None)
    assert (s["energy_j"], s["energy_source"]) == (400.0, "power_integral")  # 200 J + 200 J
    assert s["energy_per_sample_j"] is None


def test_a_window_shorter_than_the_interval_is_covered_by_the_samples_either_side() -> None:
    t = [0.0, 1.0, 2.0]
    series: dict[str, list[float | None]] = {k: [10.0, 20.0, 30.0] for k in nvml_mod.SERIES}
    s = summarize(t, series, window=(0.3, 0.6), throughput=1.0)
    assert s["samples"] == 2 and s["util_mean"] == 15.0
