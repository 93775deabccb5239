"""How a case's training axes shape its step: precision (autocast, a gradient scaler, FSDP2's
mixed-precision policy), ``torch.compile``, channels_last, gradient accumulation and the FSDP2
wrapper. ``bench.worker.build_step`` assembles the step from these pieces; ``bench.session``
compiles before warm-up.

``precision_skip_reason`` runs in the coordinator too (before any process starts), so this module
imports torch only inside the functions that need it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from bench.suite import CaseParams


def precision_skip_reason(precision: str, device_type: str, bf16_supported: bool = True) -> str | None:
    """Why a device cannot run a precision, or None. fp16 is CUDA's: on a CPU, float16 autocast
    has few fast kernels and no gradient scaler worth timing, so bf16 is the CPU's
    reduced precision."""
    if precision == "fp16" and device_type != "cuda":
        return "precision fp16 needs CUDA (autocast with a gradient scaler); on a CPU use bf16"
    if precision == "bf16" and not bf16_supported:
        return "precision bf16: this GPU does not support bfloat16"
    return None


def check_precision(params: CaseParams, device: torch.device) -> None:
    """Raise Skip when the case's device cannot run its precision."""
    import torch

    from bench.worker import Skip

    bf16 = device.type != "cuda" or torch.cuda.is_bf16_supported()
    reason = precision_skip_reason(params.precision, device.type, bf16)
    if reason is not None:
        raise Skip(reason)


def dtype(precision: str) -> torch.dtype | None:
    """The reduced dtype of a precision; None for fp32."""
    import torch

    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)


def autocast(params: CaseParams, device: torch.device) -> Callable[[], contextlib.AbstractContextManager[Any]]:
    """The context around forward and loss: autocast to the case's precision, or nothing (fp32,
    and fsdp, whose mixed-precision policy casts parameters and inputs itself)."""
    import torch

    reduced = dtype(params.precision)
    if reduced is None or params.mode == "fsdp":
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=reduced)


def grad_scaler(params: CaseParams, device: torch.device) -> torch.amp.GradScaler | None:
    """fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none."""
    import torch

    if params.precision != "fp16" or device.type != "cuda":
        return None
    return torch.amp.GradScaler(device.type)


def to_channels_last(model: torch.nn.Module, params: CaseParams) -> torch.nn.Module:
    """The model's 4-D weights in channels_last (NHWC) layout; the inputs follow in bench.data."""
    import torch

    return model.to(memory_format=torch.channels_last) if params.channels_last else model


def compile_model(model: torch.nn.Module, params: CaseParams) -> torch.nn.Module:
    """The model under torch.compile, or as it is. Compilation itself is lazy (the first call);
    ``bench.session`` makes that call before the warm-up and times it as ``compile_s``."""
    import torch

    if not params.compile.enabled:
        return model
    try:
        compiled: torch.nn.Module = torch.compile(model, **params.compile.options())  # type: ignore[assignment]
    except Exception as exc:  # an unknown backend, options the backend refuses
        from bench.worker import describe_error

        raise CompileFailed(f"torch.compile failed: {describe_error(exc)}") from exc
    return compiled


def graph_breaks() -> int | None:
    """Graph breaks dynamo met so far in this process, where torch exposes the count (its
    counters are not a public API; None where they are missing)."""
    try:
        from torch._dynamo.utils import counters
    except ImportError:
        return None
    try:
        return int(sum(counters["graph_break"].values()))
    except (KeyError, TypeError, AttributeError):
        return None


class CompileFailed(Exception):
    """torch.compile could not compile the case's model; the message is the compiler's."""


def compiler_error(exc: BaseException) -> bool:
    """Whether an error of a compiled model's first step came from dynamo or its backend (their
    exceptions share one base class), not from the model's own code."""
    try:
        from torch._dynamo.exc import TorchDynamoException
    except ImportError:
        return True
    return isinstance(exc, TorchDynamoException)


def fsdp_wrapper(params: CaseParams, device: torch.device, world_size: int) -> Callable[[torch.nn.Module], torch.nn.Module]:
    """FSDP2: ``fully_shard`` each top-level child that has parameters, then the root (torchtitan
    shards each block, so a block's parameters are gathered just before it runs and freed after),
    on a one-dimensional device mesh over all ranks: an explicit CPU mesh under gloo, CUDA under
    nccl. The mixed-precision policy casts parameters to the case's precision for compute and
    reduces gradients in fp32."""
    import torch
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device.type, (world_size,))
    reduced = dtype(params.precision)
    policy = MixedPrecisionPolicy(param_dtype=reduced, reduce_dtype=torch.float32) if reduced else MixedPrecisionPolicy()
    options: dict[str, Any] = {"mesh": mesh, "mp_policy": policy}
    if params.reshard_after_forward is not None:
        options["reshard_after_forward"] = params.reshard_after_forward

    def wrap(model: torch.nn.Module) -> torch.nn.Module:
        for child in list(model.children()):
            if any(True for _ in child.parameters()):
                fully_shard(child, **options)
        fully_shard(model, **options)  # in place: the model's class becomes an FSDPModule
        return model

    return wrap


def sync_context(model: torch.nn.Module, last: bool) -> contextlib.AbstractContextManager[Any]:
    """Gradient synchronisation for one micro-batch: only the last of a step's micro-batches
    all-reduces (DDP's ``no_sync``) or reduce-scatters (FSDP2's ``set_requires_gradient_sync``)
    gradients; the earlier ones accumulate locally, which is what gradient accumulation saves."""
    from torch.nn.parallel import DistributedDataParallel

    inner = getattr(model, "_orig_mod", model)  # under torch.compile, the module it wraps
    if isinstance(inner, DistributedDataParallel):
        return contextlib.nullcontext() if last else inner.no_sync()
    setter = getattr(inner, "set_requires_gradient_sync", None)
    if setter is not None:  # an FSDP2 module
        setter(last)
    return contextlib.nullcontext()
