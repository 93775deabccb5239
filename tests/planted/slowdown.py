"""``tests.planted.slowdown:planted_mlp``: a stack of equal linear blocks whose depth is multiplied by
``BENCH_PLANTED_SLOWDOWN`` (default 1.0). Every part of a training step (forward, backward, the
optimizer's update) grows with the depth, so a factor of 1.10 makes a step about 10% more work and
throughput about 9% lower (1 - 1/1.10); data loading and the loss are the small fixed part."""

from __future__ import annotations

import os

from torch import nn

ENV_VAR = "BENCH_PLANTED_SLOWDOWN"


def factor() -> float:
    value = float(os.environ.get(ENV_VAR, "1.0"))
    if not value > 0:
        raise ValueError(f"{ENV_VAR} must be a positive number, got {value!r}")
    return value


def planted_mlp(width: int = 64, blocks: int = 40, num_classes: int = 10) -> nn.Module:
    # Depth, not width, carries the factor: a block is a fixed amount of work, so 40 blocks
    # times 1.10 is 44 blocks, exactly 10% more.
    depth = max(1, round(blocks * factor()))
    layers: list[nn.Module] = [nn.Flatten(), nn.Linear(width, width)]
    for _ in range(depth):
        layers += [nn.Linear(width, width), nn.ReLU()]
    layers.append(nn.Linear(width, num_classes))
    return nn.Sequential(*layers)
