"""User models (by import path) that misbehave on one DDP rank, for the fault tests."""

from __future__ import annotations

import os
import signal
import time

from torch import nn


class _OnRank(nn.Module):
    def __init__(self, action: str, rank: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, 10))
        self.action = action
        self.rank = rank
        self.calls = 0

    def forward(self, x):  # type: ignore[no-untyped-def]
        self.calls += 1
        if int(os.environ.get("RANK", "0")) == self.rank and self.calls > 2:
            if self.action == "raise":
                raise RuntimeError(f"planted failure on rank {self.rank}")
            if self.action == "hang":
                time.sleep(3600)
            if self.action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
        return self.net(x)


def misbehaving(action: str = "raise", rank: int = 1) -> nn.Module:
    return _OnRank(action, rank)
