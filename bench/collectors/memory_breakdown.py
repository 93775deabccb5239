"""Memory by category: the bytes of parameters, gradients, optimizer state and activations of one
training step, and the step's peak, measured on one extra, untimed step after measurement.

What each category counts (bytes of this process; under FSDP2 the local shards of DTensors):

- parameters: ``model.parameters()``, each memory region once (tied weights, views of one flat
  buffer), ``numel * element_size``.
- gradients: their ``.grad`` after the step. ``optimizer.step`` leaves them alive; the next step's
  ``zero_grad(set_to_none=True)`` frees them.
- optimizer state: every tensor in ``optimizer.state`` (momentum buffers, Adam's ``exp_avg`` and
  ``exp_avg_sq``) *including* the scalar ``step`` tensors Adam keeps per parameter (4 bytes each,
  in host memory unless the optimizer is capturable or fused): they are tensors the optimizer
  keeps, and torch's memory profiler counts them as optimizer state too, so both measures agree.
- activations: what the forward pass saves for backward, seen by ``saved_tensors_hooks`` (whose
  pack returns the tensor itself, so nothing lives longer than it would), each storage's full
  ``nbytes`` once. Parameters are not activations (a weight saved by a matrix product, or an
  FSDP2 unsharded weight, is a view of an ``nn.Parameter``), and neither are the *inputs*: tensors
  without autograd history handed to the modules the training loop calls itself (the batch to the
  model, the targets to the loss). Inputs are counted in ``other``. With ``grad_accum`` micro-
  batches, each micro-batch's activations are freed by its backward, so the figure is the largest
  micro-batch's.
- peak: on CUDA the caching allocator's ``max_memory_allocated`` over the step (reset just
  before it). On a CPU, torch's memory profiler (``torch.profiler._memory_profiler``, the analysis
  behind ``export_memory_timeline``) replays the step's allocations and frees as a timeline of live
  tensor bytes; the peak is its largest total. It is a private module: a failure leaves the peak
  null with the reason in ``notes``.
- other: peak minus the four categories, clamped at 0. The categories are not all alive at the
  same moment (activations are freed while gradients appear), so ``other`` is a lower bound of
  what else was live at the peak: inputs, temporaries, workspaces.

Cost (the wall time ``after()`` adds, step included; torch 2.14, one thread, batch 64, medians of
5 on a shared 2-core machine): mlp 0.07 s with SGD and 0.13 s with Adam, cnn 0.16 s with SGD and
0.32 s with Adam (plain steps take 2-3 ms and 15-20 ms). Nearly all of it is the memory profiler:
profiling with Python stacks, then its data-flow analysis, which grows with the number of
operators (Adam's update adds many). The hooks add microseconds per saved tensor or module call.
A compiled mlp's first measurement took 1.4 s (later ones 0.06 s): a one-time cost of running the
compiled code under the hooks and the profiler together; torch logs no recompilation.
On CUDA there is no profiler, so the cost is one step.

Under DDP each step all-reduces, so every rank runs exactly ``EXTRA_STEPS`` steps, whatever fails
before or after them, once ``everyone_ready`` says all ranks can.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from bench.collectors import CaseContext, Collector, native_logs_silenced
from bench.records import MemoryCategories

if TYPE_CHECKING:
    import torch

# One step serves every measure: the hooks only record integers, so they change neither what is
# freed nor when, and the profiler around the same step sees the same allocations.
EXTRA_STEPS = 1


def local(t: torch.Tensor) -> torch.Tensor:
    """This rank's part of a tensor: the local shard of a DTensor (FSDP2), else the tensor."""
    to_local = getattr(t, "to_local", None)
    return to_local() if callable(to_local) else t


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    """Bytes of tensors, each memory region once: a tensor tied to another, or a second view of the
    same elements, adds nothing. A freed storage (FSDP2 resizes them to 0) holds nothing."""
    seen: set[tuple[Any, ...]] = set()
    total = 0
    for t in map(local, tensors):
        storage = t.untyped_storage()
        if storage.nbytes() == 0:
            continue
        region = (t.device, storage.data_ptr(), t.storage_offset(), t.numel(), t.dtype)
        if region not in seen:
            seen.add(region)
            total += t.numel() * t.element_size()
    return total


def parameters_bytes(model: Any) -> int:
    return tensor_bytes(model.parameters())


def gradients_bytes(model: Any) -> int:
    return tensor_bytes(p.grad for p in model.parameters() if p.grad is not None)


def optimizer_state_tensors(optimizer: Any) -> Iterator[torch.Tensor]:
    """Every tensor the optimizer keeps per parameter (scalar ``step`` tensors included)."""
    import torch

    for state in optimizer.state.values():
        for value in state.values():
            if isinstance(value, torch.Tensor):
                yield value


def optimizer_state_bytes(optimizer: Any) -> int:
    return tensor_bytes(optimizer_state_tensors(optimizer))


@dataclass
class MicroBatch:
    """What one forward pass saved for backward (bytes by storage) and the storages of its inputs.
    Kept per micro-batch: a storage freed by one micro-batch's backward may be reused by the next."""

    saved: dict[tuple[Any, int], int] = field(default_factory=dict)
    inputs: set[tuple[Any, int]] = field(default_factory=set)

    def activations_bytes(self) -> int:
        return sum(nbytes for key, nbytes in self.saved.items() if key not in self.inputs)


@dataclass
class SavedTensors:
    """Storages saved for backward during a step, per micro-batch (a call of the model by the
    training loop starts one), parameters and inputs set apart."""

    model: Any
    parameters: set[tuple[Any, int]] = field(default_factory=set)
    micro_batches: list[MicroBatch] = field(default_factory=list)
    depth: int = 0  # how many module calls are running: 0 outside the model and the loss

    def __post_init__(self) -> None:
        for p in self.model.parameters():
            self.parameters.add(_storage_key(local(p)))

    def _current(self) -> MicroBatch:
        if not self.micro_batches:  # a forward that did not start with the model's own call
            self.micro_batches.append(MicroBatch())
        return self.micro_batches[-1]

    def entered(self, module: Any, args: tuple[Any, ...]) -> None:
        import torch

        if self.depth == 0:
            if module is self.model:
                self.micro_batches.append(MicroBatch())
            # What the loop hands a module and autograd knows nothing of is input data: the batch
            # to the model, the targets to the loss.
            for value in args:
                if isinstance(value, torch.Tensor) and value.grad_fn is None and not value.requires_grad:
                    self._current().inputs.add(_storage_key(value))
        self.depth += 1

    def left(self, *_: Any) -> None:
        self.depth -= 1

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        import torch

        # A weight saved by a matrix product is a view (its transpose) of the parameter; under
        # FSDP2 the parameter is the gathered, unsharded one, outside ``parameters``.
        base = t._base if t._base is not None else t
        if not isinstance(base, torch.nn.Parameter):
            key = _storage_key(t)
            if key not in self.parameters:
                # The size now: FSDP2 frees gathered storages once they are no longer needed.
                self._current().saved[key] = t.untyped_storage().nbytes()
        return t  # the tensor itself: it lives exactly as long as without the hook

    def activations_bytes(self) -> int:
        return max((batch.activations_bytes() for batch in self.micro_batches), default=0)


def _storage_key(t: torch.Tensor) -> tuple[Any, int]:
    return t.device, t.untyped_storage().data_ptr()


@contextmanager
def watching_saved_tensors(model: Any) -> Iterator[SavedTensors]:
    """Record, for the duration, what every forward pass saves for backward."""
    import torch
    from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook

    saved = SavedTensors(model)
    handles = [register_module_forward_pre_hook(saved.entered),
               register_module_forward_hook(saved.left)]
    try:
        with torch.autograd.graph.saved_tensors_hooks(saved.pack, lambda t: t):
            yield saved
    finally:
        for h in handles:
            h.remove()


@dataclass(frozen=True)
class ProfiledPeak:
    """The largest total of live tensor bytes in a memory-profiler timeline, and that total by the
    profiler's own category (``PARAMETER``, ``GRADIENT``, ``ACTIVATION``, ``INPUT``... and
    ``None`` for what it could not place)."""

    peak_bytes: int
    by_category: dict[str, int]


def profiled_peak(prof: Any, device: str = "cpu") -> ProfiledPeak:
    """The peak of a ``torch.profiler.profile`` run with ``profile_memory``, ``record_shapes`` and
    ``with_stack`` (the memory profiler needs all three)."""
    from torch.profiler._memory_profiler import _CATEGORY_TO_INDEX, MemoryProfileTimeline

    # Each row is the live bytes at one timestamp: index 0 is memory the profiler knows no tensor
    # for, then one column per category in _CATEGORY_TO_INDEX's order.
    _, sizes = MemoryProfileTimeline(prof._memory_profile())._coalesce_timeline(device)
    if not sizes:
        raise ValueError("the memory profiler's timeline is empty")
    row = max(sizes, key=sum)
    names = ["unknown", *(getattr(c, "name", str(c)) for c in _CATEGORY_TO_INDEX)]
    return ProfiledPeak(peak_bytes=int(sum(row)), by_category={n: int(b) for n, b in zip(names, row, strict=True)})


class MemoryBreakdownCollector(Collector):
    name = "memory_breakdown"
    fields = ("categories", "ranks", "notes")

    def __init__(self, ctx: CaseContext) -> None:
        super().__init__(ctx)
        self.categories: MemoryCategories | None = None
        self.notes: list[str] = []

    def after(self) -> None:
        ctx = self.ctx
        cuda = ctx.device.type == "cuda"
        with ExitStack() as stack:
            problem: str | None = None
            prof: Any = None
            if ctx.step is None or ctx.model is None or ctx.optimizer is None:
                problem = "no training step, model or optimizer to measure"
            elif not cuda:
                try:
                    prof = stack.enter_context(memory_profiling())
                except Exception as exc:  # the profiler's start-up failing: the categories still count
                    self.notes.append(f"no peak: the profiler could not start ({_one_line(exc)})")
            # Every rank reaches ``everyone_ready`` whatever happened above (see the docstring).
            if not ctx.everyone_ready(problem is None):
                return self.fail(problem or "another rank could not measure memory, so no rank did")
            assert ctx.step is not None
            saved = self._step(stack, ctx.step, cuda)
        self._measure(saved, prof)

    def _step(self, stack: ExitStack, step: Callable[[], None], cuda: bool) -> SavedTensors | None:
        import torch

        saved: SavedTensors | None = None
        if self.ctx.params.mode == "dp":
            # Saved-tensor hooks are per thread, and DataParallel runs its replicas' forward in others.
            self.notes.append("activations are not measured under DataParallel (its replicas run in other threads)")
        else:
            saved = stack.enter_context(watching_saved_tensors(self.ctx.model))
        if cuda:
            torch.cuda.synchronize(self.ctx.device)
            torch.cuda.reset_peak_memory_stats(self.ctx.device)
        for _ in range(EXTRA_STEPS):
            step()
        if cuda:
            torch.cuda.synchronize(self.ctx.device)
        return saved

    def _measure(self, saved: SavedTensors | None, prof: Any) -> None:
        import torch

        ctx = self.ctx
        cats: dict[str, Any] = {
            "parameters_bytes": parameters_bytes(ctx.model),
            "gradients_bytes": gradients_bytes(ctx.model),
            "optimizer_state_bytes": optimizer_state_bytes(ctx.optimizer),
            "activations_bytes": saved.activations_bytes() if saved is not None else None,
        }
        peak: int | None = None
        if ctx.device.type == "cuda":
            peak = int(torch.cuda.max_memory_allocated(ctx.device))
            cats.update(peak_source="cuda_allocator", cuda_allocated_bytes=peak,
                        cuda_reserved_bytes=int(torch.cuda.max_memory_reserved(ctx.device)))
        elif prof is not None:
            try:
                peak = profiled_peak(prof).peak_bytes
                cats["peak_source"] = "torch_memory_profiler"
            except Exception as exc:  # a private analysis: its failure costs the peak, not the record
                self.notes.append(f"no peak: torch's memory profiler failed ({_one_line(exc)})")
        cats["peak_bytes"] = peak
        known = [cats[k] for k in ("parameters_bytes", "gradients_bytes", "optimizer_state_bytes", "activations_bytes")]
        if peak is not None and None not in known:
            rest = peak - sum(known)
            if rest < 0:
                self.notes.append(f"other_bytes clamped at 0: the categories add up to {-rest} bytes more than "
                                  "the peak (they are not all alive at the same moment)")
            cats["other_bytes"] = max(rest, 0)
        self.categories = MemoryCategories.model_validate(cats)

    def result(self) -> dict[str, Any]:
        categories = self.categories.model_dump() if self.categories is not None else None
        return {"categories": categories, "ranks": None, "notes": self.notes}

    def record(self) -> dict[str, Any]:
        # The notes say what a failed measurement still learned; the record has them as a list.
        return {**super().record(), "notes": self.notes}


@contextmanager
def memory_profiling() -> Iterator[Any]:
    """A CPU profile that ``profiled_peak`` can read: the memory profiler needs allocation events,
    shapes and Python stacks (it finds parameters and optimizer state through the Python tracer)."""
    from torch.profiler import ProfilerActivity, profile

    with native_logs_silenced(), profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True,
                                         with_stack=True) as prof:
        yield prof


def _one_line(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:500]
