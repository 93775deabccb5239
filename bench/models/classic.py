"""The two classic networks of the seed experiments, built with the case's activation."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bench.models.checkpointing import Checkpointed


def _block(checkpoint: bool, *layers: nn.Module) -> list[nn.Module]:
    """One block of layers: as they are, or as one checkpointed unit (activation checkpointing)."""
    return [Checkpointed(nn.Sequential(*layers))] if checkpoint else list(layers)


class MLP(nn.Module):
    """784 -> hidden... -> 10 on 1x28x28 inputs (the classic MNIST multilayer perceptron)."""

    def __init__(self, activation: Callable[[], nn.Module], hidden: list[int], in_features: int = 784,
                 num_classes: int = 10, checkpoint: bool = False) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            # A block is a hidden layer and its activation.
            layers += _block(checkpoint, nn.Linear(width, h), activation())
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.net(x)
        return out


class LeNet(nn.Module):
    """LeNet-style CNN for 3x32x32 inputs: conv 3->6 k5, pool, conv 6->16 k5, pool, fc 400->120->84->10."""

    def __init__(self, activation: Callable[[], nn.Module], num_classes: int = 10, checkpoint: bool = False) -> None:
        super().__init__()
        # Blocks: each convolution with its activation and pooling, each hidden fully connected layer
        # with its activation.
        self.features = nn.Sequential(
            *_block(checkpoint, nn.Conv2d(3, 6, 5), activation(), nn.MaxPool2d(2)),
            *_block(checkpoint, nn.Conv2d(6, 16, 5), activation(), nn.MaxPool2d(2)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), *_block(checkpoint, nn.Linear(16 * 5 * 5, 120), activation()),
            *_block(checkpoint, nn.Linear(120, 84), activation()), nn.Linear(84, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Logits: the loss applies its own (log-)softmax.
        out: torch.Tensor = self.classifier(self.features(x))
        return out
