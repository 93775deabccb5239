"""User models for the import-path tests: one that works, and one for each way a case can fail.

Each factory is named in a suite as ``{import: "usermodels:NAME", input_shape: [3, 4, 4]}``; the
folder is put on the path by ``tests/conftest.py``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import torch
from torch import nn


class _Tiny(nn.Module):
    def __init__(self, num_classes: int = 10, fail: str | None = None) -> None:
        super().__init__()
        self.fail = fail
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fail == "raise":
            print("user model: about to raise", flush=True)
            raise RuntimeError("boom from a user model")
        if self.fail == "oom":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 64.00 GiB")
        if self.fail == "sleep":
            time.sleep(600)
        if self.fail == "sigkill" or (self.fail == "sigkill_profiled" and torch.autograd.profiler._is_profiler_enabled):
            os.kill(os.getpid(), signal.SIGKILL)
        out: torch.Tensor = self.net(x)
        return out


def tiny(num_classes: int = 10) -> nn.Module:
    """A working model for 3x4x4 inputs."""
    return _Tiny(num_classes)


def raising(num_classes: int = 10) -> nn.Module:
    """Raises RuntimeError in its first forward pass."""
    return _Tiny(num_classes, fail="raise")


def raising_at_build() -> nn.Module:
    raise ValueError("cannot build this model")


def out_of_memory(num_classes: int = 10) -> nn.Module:
    """Raises torch.OutOfMemoryError, as a model too large for its GPU does."""
    return _Tiny(num_classes, fail="oom")


def killed(num_classes: int = 10) -> nn.Module:
    """Its process dies of SIGKILL in the first forward pass (as under the kernel's OOM killer)."""
    return _Tiny(num_classes, fail="sigkill")


def killed_when_profiled(num_classes: int = 10) -> nn.Module:
    """Trains normally, but its process dies of SIGKILL in a step under torch.profiler: the
    collectors' extra work after the last trial (as a native crash there would)."""
    return _Tiny(num_classes, fail="sigkill_profiled")


def sleeping(pid_file: str, num_classes: int = 10) -> nn.Module:
    """Hangs in its first forward pass, after starting a grandchild process (as DataLoader workers
    are) and writing both process ids to ``pid_file``, so a test can check that none is left."""
    child = subprocess.Popen(["sleep", "600"])
    Path(pid_file).write_text(f"{os.getpid()} {child.pid}\n", encoding="utf-8")
    return _Tiny(num_classes, fail="sleep")


def separable(num_classes: int = 10) -> nn.Module:
    """A depthwise-separable network for 3x8x8 inputs (MobileNet's building block): a 3x3
    convolution 3 -> 16, a depthwise 3x3 convolution (16 groups), a pointwise 1x1 convolution
    16 -> 32 and a linear layer 32*8*8 -> num_classes, ReLU between them."""
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.ReLU(),
        nn.Conv2d(16, 32, 1), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 8 * 8, num_classes),
    )


class _TwoBlocks(nn.Module):
    """Two top-level children with parameters and one without, for activation checkpointing."""

    def __init__(self, num_classes: int = 10, own_checkpointing: bool = False) -> None:
        super().__init__()
        self.own_checkpointing = own_checkpointing
        self.first = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 8))
        self.act = nn.ReLU()
        self.head = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(self.act(self.first(x)))
        return out


def two_blocks(num_classes: int = 10) -> nn.Module:
    """No say in activation checkpointing: bench checkpoints its top-level children."""
    return _TwoBlocks(num_classes)


def own_checkpointing(num_classes: int = 10, activation_checkpointing: bool = False) -> nn.Module:
    """Takes ``activation_checkpointing``: it does its own (here: it only records the request)."""
    return _TwoBlocks(num_classes, own_checkpointing=activation_checkpointing)


class _Sleep(torch.autograd.Function):
    """Identity that sleeps a fixed time in forward and another in backward: a step whose phases
    have known lengths, whatever the machine's speed (sleeping takes no CPU)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, x: torch.Tensor, forward_s: float,
                backward_s: float) -> torch.Tensor:
        ctx.backward_s = backward_s  # type: ignore[attr-defined]
        time.sleep(forward_s)
        return x.clone()

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        time.sleep(ctx.backward_s)  # type: ignore[attr-defined]
        return grad, None, None


class _Paced(_Tiny):
    def __init__(self, num_classes: int, forward_ms: float, backward_ms: float) -> None:
        super().__init__(num_classes)
        self.forward_s, self.backward_s = forward_ms / 1000, backward_ms / 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = _Sleep.apply(self.net(x), self.forward_s, self.backward_s)
        return out


def paced(num_classes: int = 10, forward_ms: float = 20.0, backward_ms: float = 30.0) -> nn.Module:
    """A tiny model whose forward sleeps ``forward_ms`` and backward ``backward_ms``."""
    return _Paced(num_classes, forward_ms, backward_ms)
