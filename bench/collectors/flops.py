"""FLOPs of one training step and model FLOPs utilisation (MFU).

``torch.utils.flop_counter.FlopCounterMode`` counts at the dispatcher, so one untimed step after
measurement (forward, backward and optimizer) gives the FLOPs of the operators it has formulas
for: matrix products, convolutions, attention. Elementwise work (activations, normalisation, the
optimizer's update) is not counted, which is the usual convention for MFU (the PaLM paper's 6N rule
also counts matrix products only). Each counted operator is a multiply-add counted as 2 FLOPs over
its dense shapes: padding, masks and causal attention are counted as if dense, so the count is an
upper bound of the useful work of those operators, not a measurement.

torch's table is wrong or silent for some operators; ``_flop_fixes`` below corrects them through
``FlopCounterMode``'s ``custom_mapping`` and keeps torch's formula everywhere else. The step is
counted per phase (forward, backward), and a count whose backward/forward ratio or MFU is
impossible is recorded as the collector's error rather than as a figure.

Achieved FLOP/s is FLOPs per sample times the measured median throughput, and MFU divides it by
the device's peak: the suite's ``peak_flops`` if given (any device, CPU included), else the table
below for known GPUs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.collectors import CaseContext, Collector
from bench.suite import LAUNCHED_MODES

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


# ---------------------------------------------------------------------------------------------
# Counting

# A training step's backward pass costs between one and three times its forward pass in the
# operators counted here: a layer with weights computes its weight gradient (as much as its
# forward product) and, unless its input is the data, its input gradient (as much again); fused
# attention recomputes its scores (2.5 times its forward); activation checkpointing re-runs the
# forward inside backward (3 times for linear layers; a model made mostly of checkpointed attention
# could reach 3.5 and be refused). A ratio outside this band means a formula is wrong (torch's
# grouped-convolution backward gave about 28 for MobileNetV3) or missing, so the count is not
# reported.
BACKWARD_RATIO_BAND = (1.0, 3.0)


def _conv_flops(x_shape: Sequence[int], w_shape: Sequence[int], out_shape: Sequence[int],
                transposed: bool) -> int:
    """Multiply-adds of a convolution, 2 FLOPs each: every spatial position the kernel is applied
    at (the output's; a transposed convolution's input's), for every sample, times the weight's
    size. The weight is ``(C_out, C_in / groups, *kernel)`` (transposed: ``(C_in, C_out / groups,
    *kernel)``), so groups, depthwise included, are counted by its shape."""
    positions = math.prod((x_shape if transposed else out_shape)[2:])
    return 2 * x_shape[0] * positions * math.prod(w_shape)


def _conv_backward_flops(grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor,
                         bias_sizes: Any, stride: Any, padding: Any, dilation: Any, transposed: bool,
                         output_padding: Any, groups: int, output_mask: Sequence[bool], **kwargs: Any) -> int:
    """``aten.convolution_backward``: each product ``x[i] * w[j]`` of the forward pass appears once
    in the input gradient (``grad_out[k] * w[j]``) and once in the weight gradient (``grad_out[k] *
    x[i]``), so each gradient asked for (``output_mask``) costs what the forward did; the bias
    gradient is a sum and not counted. torch 2.14 counts the weight gradient as if ``groups`` were
    1: 64 times too much for a 64-channel depthwise convolution."""
    forward = _conv_flops(x.shape, weight.shape, grad_output.shape, transposed)
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def _flop_fixes() -> dict[Any, Callable[..., int]]:
    """Formulas for the operators torch's table gets wrong or lacks, keyed like it, taking the
    operator's own arguments (torch's ``get_raw``)."""
    import torch
    from torch.utils.flop_counter import flop_registry

    aten = torch.ops.aten
    return {
        aten.convolution_backward: _conv_backward_flops,
        # A CPU runs scaled_dot_product_attention as its own fused kernel, which torch's table does
        # not list (so attention counted 0 on a CPU). Its arguments start like those of the CUDA
        # flash kernel, (query, key, value) forward and (grad_out, query, key, value) backward, so
        # torch's own formulas for that kernel apply.
        aten._scaled_dot_product_flash_attention_for_cpu: flop_registry[aten._scaled_dot_product_flash_attention],
        aten._scaled_dot_product_flash_attention_for_cpu_backward:
            flop_registry[aten._scaled_dot_product_flash_attention_backward],
    }


@dataclass(frozen=True)
class StepFlops:
    """FLOPs of one training step, in total, per operator and per phase."""

    by_op: dict[str, int]
    forward: int
    backward: int
    backward_by_op: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.by_op.values())

    @property
    def backward_ratio(self) -> float | None:
        return self.backward / self.forward if self.forward else None

    def largest(self, by_op: Mapping[str, int]) -> tuple[str, float]:
        """The operator with the most FLOPs in ``by_op`` and its share of them."""
        op = max(by_op, key=lambda k: (by_op[k], k))
        return op, by_op[op] / (sum(by_op.values()) or 1)


def count_step_flops(step: Callable[[], None]) -> StepFlops:
    """FLOPs of one call of ``step``, per operator and per phase: an operator that runs inside the
    autograd engine (``ModuleTracker.is_bw``) belongs to the backward pass, anything else (the
    forward, the loss, the optimizer) to the forward."""
    from torch.utils.flop_counter import FlopCounterMode, flop_registry
    from torch.utils.module_tracker import ModuleTracker

    phase = ModuleTracker()  # only its is_bw is read; it is never entered
    backward: dict[str, int] = {}
    forward: dict[str, int] = {}

    def phased(op: Any, formula: Callable[..., int]) -> Callable[..., int]:
        def count(*args: Any, **kwargs: Any) -> int:
            n = int(formula(*args, **kwargs))
            tally = backward if phase.is_bw else forward
            tally[str(op)] = tally.get(str(op), 0) + n
            return n

        # The formulas in torch's table are already wrapped for their arguments, and ours take
        # the raw ones: either way FlopCounterMode must not wrap them again.
        count._get_raw = True  # type: ignore[attr-defined]
        return count

    table = {**flop_registry, **_flop_fixes()}
    with FlopCounterMode(display=False, custom_mapping={op: phased(op, f) for op, f in table.items()}) as counter:
        step()
    by_op = {str(op): int(n) for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return StepFlops(by_op=by_op, forward=sum(forward.values()), backward=sum(backward.values()),
                     backward_by_op=backward)


def implausible(flops: StepFlops, all_trainable: bool) -> str | None:
    """Why a step's count cannot be right, or None. Below the band is only impossible when every
    parameter is trained: frozen layers compute no weight gradient."""
    ratio = flops.backward_ratio
    if ratio is None:
        if not flops.backward:
            return None
        op, share = flops.largest(flops.backward_by_op)
        return (f"the FLOP count is implausible: {flops.backward} FLOPs of backward and none of forward "
                f"({op} has {share:.0%} of the backward FLOPs)")
    low, high = BACKWARD_RATIO_BAND
    if ratio > high or (ratio < low and all_trainable):
        phase = "backward" if flops.backward_by_op else "forward"
        op, share = flops.largest(flops.backward_by_op or flops.by_op)
        return (f"the FLOP count is implausible: backward is {ratio:.2f} times forward, outside {low:g} "
                f"to {high:g} ({op} has {share:.0%} of the {phase} FLOPs)")
    return None


def device_name(device: torch.device) -> str:
    import torch

    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    return device.type


class FlopsCollector(Collector):
    name = "flops"
    fields = ("flops_per_step", "flops_per_sample", "achieved_flops", "peak_flops", "mfu", "peak_source",
              "dtype", "devices", "by_op", "forward_flops", "backward_flops")

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self.flops: StepFlops | None = None

    def after(self) -> None:
        if self.ctx.params.mode == "dp":
            # FlopCounterMode is thread-local and DataParallel runs its replicas in threads.
            return self.fail("FLOPs are not counted under DataParallel (its replicas run in other threads)")
        if self.ctx.step is None:
            return self.fail("no training step to count")
        flops = count_step_flops(self.ctx.step)
        model = self.ctx.model
        all_trainable = model is not None and all(p.requires_grad for p in model.parameters())
        reason = implausible(flops, all_trainable)
        if reason is not None:
            return self.fail(reason)
        self.flops = flops

    def result(self) -> dict[str, Any]:
        from bench.measure import median

        assert self.flops is not None
        ctx = self.ctx
        total = self.flops.total
        per_sample = total / ctx.samples_per_step
        m = ctx.measurement
        achieved = per_sample * median(m.window_throughput) if m and m.window_seconds else None
        # Under autocast (or FSDP2's policy) matrix products run in the case's precision, whatever
        # the parameters' own type.
        reduced = {"bf16": "bfloat16", "fp16": "float16"}.get(ctx.params.precision)
        dtype = reduced or (compute_dtype(ctx.model) if ctx.model is not None else "float32")
        # Under DDP and FSDP each rank counts its own step, and throughput is the ranks' total, so
        # the peak to compare with is every rank's GPU together.
        devices = ctx.params.world_size if ctx.device.type == "cuda" and ctx.params.mode in LAUNCHED_MODES else 1
        if ctx.params.peak_flops is not None:
            peak: float | None = ctx.params.peak_flops
            source = "suite: peak_flops"
        else:
            peak, source = peak_from_table(device_name(ctx.device), dtype)
        total_peak = peak * devices if peak is not None else None
        mfu = achieved / total_peak if achieved is not None and total_peak else None
        if mfu is not None and mfu > 1:
            # No device beats its peak: either a formula counts too much or the peak is too low.
            op, share = self.flops.largest(self.flops.by_op)
            self.fail(f"MFU of {mfu:.2f} is impossible (above 1): the FLOP count ({op} has {share:.0%} of it) "
                      f"or the peak ({total_peak:.3g} FLOP/s, {source}) is wrong")
            return {}
        return {"flops_per_step": total, "flops_per_sample": per_sample, "achieved_flops": achieved,
                "peak_flops": total_peak, "mfu": mfu, "peak_source": source, "dtype": dtype,
                "devices": devices, "by_op": self.flops.by_op, "forward_flops": self.flops.forward,
                "backward_flops": self.flops.backward}
