"""The suite's collector settings, as typed models validated with the rest of the suite.

``bench.suite.CaseParams`` holds one field per setting (``profile``, ``profiler``,
``nvml_interval``, ``peak_flops``); the models and the list of profilers live here, next to the
collectors that use them. Nothing here imports torch.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field

from bench.registry import Registry

# The optional profilers a case may ask for with ``profile:``. NVML telemetry, memory and FLOPs
# are always on: they are cheap and stay out of the timed windows (see the modules).
PROFILERS: Registry[str] = Registry("profiler")
PROFILERS.add("torch", "torch_profiler",
              "torch.profiler on a short window after measurement: top operators, Chrome trace per rank")
PROFILERS.add("pyspy", "pyspy",
              "py-spy samples the case's processes on a window after measurement: flame graph SVG, speedscope JSON")


def _profile_list(value: Any) -> Any:
    """``none`` / ``torch`` / ``[torch, pyspy]``: a single name is a list of one, ``none`` of none."""
    if value is None or value == "none":
        return ()
    if isinstance(value, str):
        return (_known_profiler(value),)  # checked here so that the error names no list index
    return value


def _known_profiler(name: str) -> str:
    if name not in PROFILERS:
        raise ValueError(f"unknown profiler {name!r} (choose from: none, {', '.join(PROFILERS.names())})")
    return name


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


Profiles = Annotated[
    tuple[Annotated[str, AfterValidator(_known_profiler)], ...],
    BeforeValidator(_profile_list),
    AfterValidator(_unique),
]


class ProfilerConfig(BaseModel):
    """Options of the profilers a case turns on with ``profile``. Both profile extra steps after
    measurement, so that turning one on does not change the case's throughput.

    The torch profiler runs ``wait + warmup + active`` steps and records the last ``active`` ones
    (its schedule skips the first steps because their cost is the profiler's own start-up, not
    the model's); py-spy samples steps for ``pyspy_seconds``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    wait: int = Field(default=1, ge=0, le=1000, description="torch: steps run before the profiler starts")
    warmup: int = Field(default=1, ge=0, le=1000, description="torch: steps traced but discarded")
    active: int = Field(default=3, ge=1, le=1000, description="torch: steps recorded")
    record_shapes: bool = Field(default=False, description="torch: record operator input shapes")
    profile_memory: bool = Field(default=False, description="torch: record tensor allocations")
    with_stack: bool = Field(default=False, description="torch: record Python stacks (larger traces)")
    top: int = Field(default=20, ge=1, le=1000, description="torch: operators kept in results.json, by self time")
    pyspy_rate: int = Field(default=100, ge=1, le=10_000, description="py-spy: samples per second")
    pyspy_seconds: float = Field(default=2.0, gt=0, le=600, allow_inf_nan=False,
                                 description="py-spy: seconds of extra steps it samples after measurement")
