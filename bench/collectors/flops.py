"""FLOPs of one training step and model FLOPs utilisation (MFU).

``torch.utils.flop_counter.FlopCounterMode`` counts at the dispatcher, so one untimed step after
measurement (forward, backward and optimizer) gives the FLOPs of the operators it has formulas
for: matrix products, convolutions, attention. Elementwise work (activations, the optimizer's
update) is not counted, which is the usual convention for MFU (the PaLM paper's 6N rule also
counts matrix products only). Achieved FLOP/s is FLOPs per sample times the measured median
throughput, and MFU divides it by the device's peak: the suite's ``peak_flops`` if given (any
device, CPU included), else the table below for known GPUs.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from bench.collectors import CaseContext, Collector

if TYPE_CHECKING:
    import torch

T = 1e12
# Peak dense FLOP/s per GPU model and data type, from NVIDIA's datasheets. These are the vendor's
# dense (not 2:4 structured-sparsity) tensor-core numbers, which the datasheets print as half of
# the figure marked "with sparsity"; float32 is the non-tensor-core rate. SXM and PCIe boards of
# one chip differ by clock and power limit, so they are separate rows. A board that is not here
# (H100 NVL, A10G...) has no peak rather than a guessed one: set ``peak_flops`` in the suite.
#   H100 SXM / H200: nvidia.com/en-us/data-center/h100/ and /h200/ datasheets
#   H100 PCIe: H100 datasheet; A100: A100 datasheet (SXM4 and PCIe share the peaks)
#   V100: V100 datasheet (SXM2 and PCIe rows); L4, L40S, A10, T4: their product datasheets
PEAK_FLOPS: tuple[tuple[str, str, dict[str, float]], ...] = (
    (r"H100.*PCIe", "H100 PCIe",
     {"float64": 26 * T, "float32": 51 * T, "tf32": 378 * T, "bfloat16": 756.5 * T, "float16": 756.5 * T}),
    (r"H100.*(HBM3|SXM)", "H100 SXM",
     {"float64": 34 * T, "float32": 67 * T, "tf32": 494.5 * T, "bfloat16": 989.5 * T, "float16": 989.5 * T}),
    (r"H200(?!.*NVL)", "H200 SXM",
     {"float64": 34 * T, "float32": 67 * T, "tf32": 494.5 * T, "bfloat16": 989.5 * T, "float16": 989.5 * T}),
    (r"A100", "A100",
     {"float64": 9.7 * T, "float32": 19.5 * T, "tf32": 156 * T, "bfloat16": 312 * T, "float16": 312 * T}),
    (r"V100.*SXM", "V100 SXM2", {"float64": 7.8 * T, "float32": 15.7 * T, "float16": 125 * T}),
    (r"V100.*PCIe", "V100 PCIe", {"float64": 7 * T, "float32": 14 * T, "float16": 112 * T}),
    (r"L40S", "L40S", {"float32": 91.6 * T, "tf32": 183 * T, "bfloat16": 366.5 * T, "float16": 366.5 * T}),
    (r"\bL4\b", "L4", {"float32": 30.3 * T, "tf32": 60 * T, "bfloat16": 121 * T, "float16": 121 * T}),
    (r"\bA10\b", "A10", {"float32": 31.2 * T, "tf32": 62.5 * T, "bfloat16": 125 * T, "float16": 125 * T}),
    (r"\bT4\b", "T4", {"float32": 8.1 * T, "float16": 65 * T}),
)


def peak_from_table(device_name: str, dtype: str) -> tuple[float | None, str]:
    """The table's peak for a device name as CUDA reports it (``NVIDIA H100 80GB HBM3``) and a
    data type, with a sentence saying where it came from or why there is none."""
    for pattern, model, peaks in PEAK_FLOPS:
        if re.search(pattern, device_name, re.IGNORECASE):
            if dtype in peaks:
                return peaks[dtype], f"table: {model} {dtype} dense (NVIDIA datasheet)"
            return None, f"table: no {dtype} peak for {model}; set peak_flops in the suite"
    return None, f"no peak known for {device_name!r}; set peak_flops in the suite"


def compute_dtype(model: Any) -> str:
    """The data type the model's matrix products run in: its parameters' type, where float32
    matrix products count as TF32 when torch is allowed to use TF32 tensor cores for them."""
    import torch

    dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    name = str(dtype).removeprefix("torch.")
    if name == "float32" and torch.get_float32_matmul_precision() != "highest":
        return "tf32"
    return name


def count_step_flops(step: Any) -> tuple[int, dict[str, int]]:
    """FLOPs of one call of ``step``, in total and per operator."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        step()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return int(counter.get_total_flops()), by_op


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return device.type


class FlopsCollector(Collector):
    name = "flops"
    fields = ("flops_per_step", "flops_per_sample", "achieved_flops", "peak_flops", "mfu", "peak_source",
              "dtype", "devices", "by_op")

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self.flops: int | None = None
        self.by_op: dict[str, int] = {}

    def after(self) -> None:
        if self.ctx.params.mode == "dp":
            # FlopCounterMode is thread-local and DataParallel runs its replicas in threads.
            return self.fail("FLOPs are not counted under DataParallel (its replicas run in other threads)")
        if self.ctx.step is None:
            return self.fail("no training step to count")
        self.flops, self.by_op = count_step_flops(self.ctx.step)

    def result(self) -> dict[str, Any]:
        from bench.measure import median

        assert self.flops is not None
        ctx = self.ctx
        per_sample = self.flops / ctx.samples_per_step
        m = ctx.measurement
        achieved = per_sample * median(m.window_throughput) if m and m.window_seconds else None
        dtype = compute_dtype(ctx.model) if ctx.model is not None else "float32"
        # Under DDP each rank counts its own step, and throughput is the ranks' total, so the
        # peak to compare with is every rank's GPU together.
        devices = ctx.params.world_size if ctx.device.type == "cuda" and ctx.params.mode == "ddp" else 1
        if ctx.params.peak_flops is not None:
            peak: float | None = ctx.params.peak_flops
            source = "suite: peak_flops"
        else:
            peak, source = peak_from_table(device_name(ctx.device), dtype)
        total_peak = peak * devices if peak is not None else None
        mfu = achieved / total_peak if achieved is not None and total_peak else None
        return {"flops_per_step": self.flops, "flops_per_sample": per_sample, "achieved_flops": achieved,
                "peak_flops": total_peak, "mfu": mfu, "peak_source": source, "dtype": dtype,
                "devices": devices, "by_op": self.by_op}
