"""Scaling analysis: speedup and parallel efficiency of DP, DDP and FSDP2 against world size.

Cases that differ only in ``world_size`` (and ``mode``: dp, ddp and fsdp side by side) form a group. Within a
group, each mode's world_size 1 case is its baseline. With throughput thr (global samples/s):
  speedup    = thr_N / thr_1
  efficiency = speedup / N
For weak scaling (per-rank batch fixed) this is thr_N / (N * thr_1). For strong scaling (global
batch B fixed) the step time is t = B / thr, so t_1 / (N * t_N) is the same number: one formula
serves both, and the ``scaling`` field says which experiment it was.
"""

from __future__ import annotations

import json
from typing import Any

from bench.records import CaseRecord, Params, ScalingEntry

# The parallel modes, in the order the analysis and the Scaling view show them.
SCALING_MODES = ("dp", "ddp", "fsdp")
# Parameters that may differ within one scaling group.
_SCALING_AXES = {"world_size", "mode", "device", "backend"}


def _group_key(params: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in params.items() if k not in _SCALING_AXES}, sort_keys=True)


def _group_label(params: Params) -> str:
    model = params.model.get("name") or params.model.get("import") or "model"
    # The scaling kind is a field of its own (the report shows it beside the group).
    parts = [str(model).removeprefix("torchvision:"), str(params.optimizer.get("name")), params.activation,
             f"bs{params.batch_size}"]
    # The training axes where they are not their defaults, so that groups differing in them read
    # differently (a bf16 group beside an fp32 one).
    if params.precision != "fp32":
        parts.append(params.precision)
    if params.compile:
        parts.append("compiled")
    if params.channels_last:
        parts.append("channels_last")
    if params.grad_accum != 1:
        parts.append(f"ga{params.grad_accum}")
    if params.activation_checkpointing:
        parts.append("ckpt")
    if params.reshard_after_forward is not None:
        parts.append("reshard" if params.reshard_after_forward else "no_reshard")
    return " ".join(parts)


def analyze(cases: list[CaseRecord]) -> list[ScalingEntry]:
    """One entry per ok dp/ddp/fsdp case whose group has a world_size 1 baseline of the same mode."""
    groups: dict[str, list[CaseRecord]] = {}
    for case in cases:
        if not case.ok or case.params.mode not in SCALING_MODES:
            continue
        groups.setdefault(_group_key(case.params.as_dict()), []).append(case)
    out: list[ScalingEntry] = []
    for members in groups.values():
        for mode in SCALING_MODES:
            of_mode = sorted((c for c in members if c.params.mode == mode), key=lambda c: c.params.world_size)
            base = next((c for c in of_mode if c.params.world_size == 1), None)
            if base is None or base.throughput is None:
                continue
            thr_1 = base.throughput
            for c in of_mode:
                n = c.params.world_size
                thr = c.throughput
                assert thr is not None  # ok cases have metrics
                speedup = thr / thr_1
                out.append(ScalingEntry(
                    group=_group_label(c.params), mode=mode, world_size=n, case_id=c.id, baseline_case=base.id,
                    scaling=str(c.params.extra("scaling", "weak")), device=c.device, throughput=thr,
                    speedup=speedup, efficiency=speedup / n))
    return sorted(out, key=lambda e: (e.group, e.mode, e.world_size))
