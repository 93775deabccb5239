"""Activation checkpointing (``activation_checkpointing: true``): a wrapped module keeps only its
input for backward and recomputes its activations there, trading compute for memory.

Non-reentrant checkpointing (``use_reentrant=False``) is torch's recommended form: it works when the
block's input does not require grad (the first block sees the data batch) and composes with
DDP, FSDP2 and torch.compile.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint


class Checkpointed(nn.Module):
    """``inner``, its activations recomputed in backward instead of stored."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.inner(*args, **kwargs)  # nothing to save for backward: run it plainly
        return checkpoint(self.inner, *args, use_reentrant=False, **kwargs)


def checkpoint_children(model: nn.Module) -> int:
    """Wrap each top-level child that has parameters (an activation alone is cheaper to recompute
    than to wrap); returns how many were wrapped. The model's ``forward`` reaches its children by
    attribute, so replacing them keeps it working."""
    wrapped = 0
    for name, child in list(model.named_children()):
        if any(True for _ in child.parameters()):
            setattr(model, name, Checkpointed(child))
            wrapped += 1
    return wrapped
