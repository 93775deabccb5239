"""The pieces of a case's own process: the device it runs on, its threads, and one training step
built from its parameters (``bench.session`` measures it in trials). The forkserver preloads this
module (and so torch), so a case costs a fork, not a fresh interpreter and torch import, while
still sharing no state with other cases."""

from __future__ import annotations

import resource
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

import torch

from bench.components import build_loss, build_optimizer
from bench.data import make_batches
from bench.environment import available_cores
from bench.models import build_model
from bench.suite import LAUNCHED_MODES, CaseParams


class Skip(Exception):
    """The case cannot run on this machine (no GPU, too few GPUs...); not a failure."""


def describe_error(exc: BaseException) -> str:
    from bench.training import CompileFailed

    if isinstance(exc, CompileFailed):
        return str(exc)  # a sentence of its own, the compiler's error inside
    if isinstance(exc, torch.OutOfMemoryError):
        return "out of memory: " + " ".join(str(exc).split())[:500]
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}"[:2000] if text else type(exc).__name__


def select_device(params: CaseParams, local_rank: int = 0) -> torch.device:
    """The device a (rank of a) case runs on; raises Skip when this machine cannot run it."""
    launched = params.mode in LAUNCHED_MODES
    if params.mode == "cpu" or (launched and params.device == "cpu"):
        return torch.device("cpu")
    if launched and params.device is None and not torch.cuda.is_available():
        return torch.device("cpu")  # ddp and fsdp pick GPUs where there are some, else gloo on CPU
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if params.mode == "dp":
        if count < params.world_size:
            raise Skip(f"DataParallel over {params.world_size} GPU(s) needs {params.world_size} CUDA devices; "
                       f"this machine has {count}")
        return torch.device("cuda:0")
    if count == 0:
        raise Skip(f"mode {params.mode!r} needs CUDA, and this machine has no CUDA device")
    if launched:
        return torch.device(f"cuda:{local_rank}")
    device = torch.device(params.device or "cuda:0")
    if (device.index or 0) >= count:
        raise Skip(f"device {params.device!r} asked for, but this machine has {count} CUDA device(s)")
    return device


def set_threads(threads: int) -> int:
    torch.set_num_threads(threads)
    return torch.get_num_threads()


Mark = Callable[[str], None]


def _no_mark(phase: str) -> None:
    """The timed steps' mark: nothing (a call per phase, tens of nanoseconds against milliseconds)."""


class TrainingStep:
    """One training step, callable: ``grad_accum`` micro-batches of ``batch_size``, each a batch
    fetch, a forward and loss (under autocast at reduced precision) and a backward, then one
    optimizer step. ``mark(phase)`` is called at the end of each phase ("optimizer" for
    zero_grad, "data", "forward", "loss", "backward", then "optimizer" again): the step anatomy
    (``bench.collectors.anatomy``) timestamps them on extra steps; the measured steps mark nothing.
    One body serves both, so the anatomy times the very code that was measured."""

    def __init__(self, params: CaseParams, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                 loss_fn: torch.nn.Module, next_batch: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                 device: torch.device) -> None:
        from bench import training

        self.model = model
        self.optimizer = optimizer
        self.loss_fn = loss_fn
        self.next_batch = next_batch
        self.autocast = training.autocast(params, device)
        self.scaler = training.grad_scaler(params, device)
        self.micro = params.grad_accum
        self.sync_context = training.sync_context  # looked up once, not on every step
        # Gradient synchronisation on (the default) or off for every micro-batch: the anatomy
        # compares backward with and without it to find the communication backward did not hide.
        self.synchronise = True

    def __call__(self, mark: Mark = _no_mark) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        mark("optimizer")
        for i in range(self.micro):
            x, y = self.next_batch()
            mark("data")
            with self.sync_context(self.model, last=self.synchronise and i == self.micro - 1):
                with self.autocast():
                    out = self.model(x)
                    mark("forward")
                    loss = self.loss_fn(out, y)
                    mark("loss")
                if self.micro > 1:
                    loss = loss / self.micro  # the mean over the step's samples, as one large batch
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
                mark("backward")
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        mark("optimizer")


def build_step(params: CaseParams, device: torch.device, batch_size: int,
               wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
               ) -> tuple[TrainingStep, torch.nn.Module]:
    """The case's training step (``TrainingStep``) and its model. ``wrap`` puts the model in
    DataParallel, DDP or FSDP2; the model is compiled last, around the wrapper, as torch.compile
    expects (DDP's graph splits at buckets)."""
    from bench import training

    training.check_precision(params, device)
    generator = torch.Generator().manual_seed(params.seed)
    torch.manual_seed(params.seed)
    model = build_model(params.model.name, params.model.import_path, params.model.kwargs,
                        params.activation, params.model.num_classes,
                        checkpointing=params.activation_checkpointing).to(device)
    model = training.to_channels_last(model, params)
    model.train()
    if wrap is not None:
        model = wrap(model)
    # The optimizer holds the wrapped model's parameters: FSDP2 replaces them with shards.
    optimizer = build_optimizer(params.optimizer.name, params.optimizer.kwargs, model.parameters(), params.lr)
    model = training.compile_model(model, params)
    loss_fn = build_loss(params.loss).to(device)
    next_batch = make_batches(params, device, batch_size, generator)
    return TrainingStep(params, model, optimizer, loss_fn, next_batch, device), model


def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (ru_maxrss is in KiB on Linux). It includes
    the preloaded torch libraries, as a real training process would."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


Wrapper = Callable[[torch.nn.Module], torch.nn.Module]


def single_process_setup(params: CaseParams) -> tuple[torch.device, int, Wrapper | None, int, list[str]]:
    """Device, batch per step, model wrapper, threads and warnings of a cpu, cuda or dp case;
    raises Skip when this machine cannot run it."""
    if params.mode in LAUNCHED_MODES:
        raise ValueError(f"{params.mode} cases run through torch.distributed.run (bench.ddp_worker), not here")
    device = select_device(params)
    cores = available_cores()
    threads = set_threads(params.threads or cores)
    warnings: list[str] = []
    if threads > cores:
        warnings.append(f"{threads} threads on {cores} cores: oversubscribed, expect noisy timings")
    wrap: Wrapper | None = None
    batch = params.batch_size
    if params.mode == "dp":
        ids = list(range(params.world_size))
        wrap = lambda m: torch.nn.DataParallel(m, device_ids=ids)  # noqa: E731
        # DataParallel splits one input batch across GPUs: weak scaling keeps batch_size per GPU.
        batch = params.batch_size * params.world_size if params.scaling == "weak" else params.batch_size
    return device, batch, wrap, threads, warnings


def probe_environment() -> dict[str, Any]:
    """The torch side of the environment fingerprint, read in a worker so the CLI never imports torch."""
    gpus = []
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            gpus.append({"index": i, "name": props.name, "memory_mb": props.total_memory // 2**20,
                         "uuid": str(getattr(props, "uuid", "")) or None})
    return {
        "torch": str(torch.__version__),
        "cuda": str(torch.version.cuda) if torch.version.cuda else None,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "cuda_available": torch.cuda.is_available(),
        "gpus": gpus,
        "torch_threads": torch.get_num_threads(),
    }


def probe_main(conn: Connection) -> None:
    try:
        conn.send(probe_environment())
    finally:
        conn.close()
