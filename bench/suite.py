"""Load a YAML suite, validate it once, and expand its matrix into cases.

The format follows GitHub Actions' matrix: ``defaults`` apply to every case, list-valued ``matrix``
axes expand as a Cartesian product, ``exclude`` removes combinations that match it, and each
``include`` entry extends every original combination it fits without overwriting an axis value, or
else becomes a case of its own. Every error a user can cause is a ``SuiteError`` naming the file
and the key path. Nothing here imports torch.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import functools
import itertools
import json
import math
import operator
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    FiniteFloat,
    SerializerFunctionWrapHandler,
    StrictBool,
    TypeAdapter,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
    model_serializer,
    model_validator,
)
from pydantic_core import PydanticCustomError

from bench import ids
from bench.collectors.config import ProfilerConfig, Profiles
from bench.components import ACTIVATIONS, COMPILE_MODES, LOSSES, OPTIMIZERS, PRECISIONS, TRANSFORMS
from bench.errors import SuiteError
from bench.models import MODELS, TORCHVISION_INPUT, TORCHVISION_PREFIX, check_import_path, torchvision_names
from bench.registry import Registry

MAX_CASES = 100_000
MAX_SUITE_BYTES = 1_000_000


def _in(registry: Registry[Any]) -> Any:
    def check(name: str) -> str:
        if name not in registry:
            raise ValueError(registry.unknown_message(name))
        return name

    return AfterValidator(check)


def _named(value: Any) -> Any:
    """Accept ``"sgd"`` as shorthand for ``{name: "sgd"}``; fold inline options into ``kwargs``."""
    if isinstance(value, str):
        return {"name": value}
    if isinstance(value, Mapping) and "name" in value:
        fixed = {"name", "import", "kwargs", "input_shape", "num_classes", "label"}
        inline = {k: v for k, v in value.items() if k not in fixed}
        if inline:
            out = {k: v for k, v in value.items() if k in fixed}
            out["kwargs"] = {**dict(value.get("kwargs") or {}), **inline}
            return out
    return value


_STRICT = ConfigDict(extra="forbid", frozen=True)


def _no_bool(value: Any) -> Any:
    # YAML reads `yes`/`true` as booleans, which pydantic would take as 1; never mean that.
    if isinstance(value, bool):
        raise ValueError("Input should be a number, not a boolean")
    return value


# A finite real number: ints and floats, and numeric strings such as `1e12`, which YAML 1.1 reads
# as a string when it lacks a dot; booleans, NaN and infinities are refused. (Integer fields are
# strict instead.)
Number = Annotated[FiniteFloat, BeforeValidator(_no_bool)]

# "-" separates the parts of a case id, so a label, one part, has none.
_LABEL = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+=,]{0,63}")


def _check_label(value: str) -> str:
    if not _LABEL.fullmatch(value):
        raise ValueError(f"label {value!r} must be 1 to 64 letters, digits and . _ + = , (starting with a "
                         "letter or digit): it becomes part of case ids")
    return value


# A name for a model, optimizer or data value in case ids and the report, in place of the one
# derived from its options. It is never passed to the model's factory or the optimizer.
Label = Annotated[str, Field(strict=True), AfterValidator(_check_label)]


class ModelConfig(BaseModel):
    """A built-in model by name, a torchvision constructor (``torchvision:resnet18``), or a user's
    factory by import path (``{import: "pkg.module:factory", input_shape: [3, 32, 32]}``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    name: str | None = None
    import_path: str | None = Field(None, alias="import", description="'pkg.module:factory' returning an nn.Module")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="keyword arguments of the model")
    input_shape: tuple[Annotated[int, Field(gt=0)], ...] | None = Field(
        default=None, min_length=1, description="shape of one sample, without the batch dimension")
    num_classes: int = Field(strict=True, default=10, gt=0, description="size of the output layer")
    label: Label | None = Field(default=None, description="names the model in case ids and the report")

    @model_validator(mode="after")
    def _check(self) -> ModelConfig:
        if (self.name is None) == (self.import_path is None):
            raise ValueError("give exactly one of 'name' or 'import'")
        if self.import_path is not None:
            check_import_path(self.import_path)
            if self.input_shape is None:
                raise ValueError("a model given by 'import' needs 'input_shape'")
        elif self.name is not None and self.name.startswith(TORCHVISION_PREFIX):
            tv = self.name[len(TORCHVISION_PREFIX):]
            names = torchvision_names()
            if tv not in names:
                raise ValueError(f"unknown torchvision model {tv!r} (choose from: {', '.join(names)})")
        else:
            builtin = MODELS.get(self.name or "")
            extra = sorted(set(self.kwargs) - builtin.kwargs)
            if extra:
                choices = ", ".join(sorted(builtin.kwargs)) or "none"
                raise ValueError(f"unknown option {extra[0]!r} for model {self.name!r} (choose from: {choices})")
        return self

    @property
    def shape(self) -> tuple[int, ...]:
        if self.input_shape is not None:
            return self.input_shape
        if self.name is not None and self.name.startswith(TORCHVISION_PREFIX):
            return TORCHVISION_INPUT
        return MODELS.get(self.name or "").input_shape

    def id_parts(self) -> ids.IdParts:
        """Named by its factory (``create_model`` of ``timm:create_model``) or its name without
        ``torchvision:``; told apart by its keyword arguments, input shape and class count."""
        if self.import_path is not None:
            group, head = self.import_path, self.import_path.partition(":")[2]
        else:
            assert self.name is not None
            group, head = self.name, self.name.removeprefix(TORCHVISION_PREFIX)
        facets = [ids.facet(k, v) for k, v in sorted(self.kwargs.items())]
        if self.input_shape is not None:
            facets.append(ids.facet("input_shape", list(self.input_shape)))
        facets.append(ids.facet("num_classes", self.num_classes))
        return ids.IdParts(head, group, tuple(facets), self.label)


class _Named(BaseModel):
    model_config = _STRICT
    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)


def _strict(annotation: Any) -> Any:
    """The pydantic type of a plain Python type in the optimizer table: a float is a ``Number``
    (finite, never a boolean), a boolean is strict (YAML's ``1`` is not ``true``)."""
    if annotation is float:
        return Number
    if annotation is bool:
        return StrictBool
    args = tuple(_strict(a) for a in get_args(annotation))
    if get_origin(annotation) is tuple:
        return tuple[args]  # type: ignore[valid-type]
    if args:  # a union, such as bool | None
        return functools.reduce(operator.or_, args)
    return annotation


@functools.cache
def _options_model(name: str) -> type[BaseModel]:
    """The options of one optimizer as a model, made from the torch-free table on first use (a
    suite pays only for the optimizers it names): a suite's options are checked, and numbers
    written as strings (YAML 1.1 reads `1e-4` as one) converted, before any process starts."""
    spec = OPTIMIZERS.get(name)
    fields: dict[str, Any] = {key: (_strict(kind), None) for key, kind in spec.kwargs.items()}
    return create_model(f"{spec.torch_class}Options", __config__=_STRICT, **fields)


def _option_error(key: str, value: Any, message: str) -> ValidationError:
    """An error located at the option's own key, like the type errors of ``_options_model``."""
    error = PydanticCustomError("optimizer_option", message)
    return ValidationError.from_exception_data("options", [{"type": error, "loc": (key,), "input": value}])


class OptimizerConfig(_Named):
    """An optimizer by name with its keyword arguments (``{name: sgd, momentum: 0.9}``)."""

    name: Annotated[str, _in(OPTIMIZERS)]
    label: Label | None = Field(default=None, description="names the optimizer in case ids and the report")

    @field_validator("kwargs")
    @classmethod
    def _check_kwargs(cls, kwargs: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        name = info.data.get("name")
        if name is None:
            return kwargs  # the unknown name is the error to report
        allowed = OPTIMIZERS.get(name).kwargs
        for key, value in kwargs.items():
            if key == "lr":
                raise _option_error(key, value, "set the learning rate with the case parameter 'lr'")
            if key not in allowed:
                raise _option_error(key, value, f"unknown option {key!r} for optimizer {name!r} "
                                                f"(choose from: {', '.join(sorted(allowed))})")
        # A ValidationError raised in a validator keeps its location: `kwargs.momentum` here.
        checked = _options_model(name).model_validate(kwargs).model_dump(exclude_unset=True)
        return {key: checked[key] for key in kwargs}  # in the order the suite gives them

    def id_parts(self) -> ids.IdParts:
        """Named by its name; an option with a short form reads as ids always have (``sgd_m0.9``),
        any other as ``key=value``."""
        abbrev = dict(OPTIMIZERS.get(self.name).abbrev)
        facets = tuple(ids.facet(k, v, abbrev[k] + ids.short(v), "_") if k in abbrev else ids.facet(k, v)
                       for k, v in sorted(self.kwargs.items()))
        return ids.IdParts(self.name, self.name, facets, self.label)


class TransformConfig(_Named):
    name: Annotated[str, _in(TRANSFORMS)]


class DataConfig(BaseModel):
    """``synthetic``: tensors made once on the device (compute alone). ``loader``: a DataLoader over
    torchvision's FakeData with transforms, so the input pipeline's cost is measured too."""

    model_config = _STRICT
    name: Literal["synthetic", "loader"]
    size: int = Field(strict=True, default=1024, gt=0, description="loader: samples in the FakeData set")
    transforms: tuple[Annotated[TransformConfig, BeforeValidator(_named)], ...] = ()
    num_workers: int = Field(strict=True, default=0, ge=0, le=64)
    pin_memory: bool = False
    persistent_workers: bool = True
    prefetch_factor: int | None = Field(strict=True, default=None, gt=0)
    label: Label | None = Field(default=None, description="names the data in case ids and the report")

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"name": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if self.name == "synthetic" and (self.transforms or self.num_workers):
            raise ValueError("transforms and num_workers apply to data 'loader' only")
        return self

    def id_parts(self) -> ids.IdParts:
        """``syn``, or a loader named by what makes its pipeline (``loader_w2_RandomCrop_pin``:
        workers, transforms, pinned memory) and told apart by its other options."""
        if self.name == "synthetic":
            return ids.IdParts("syn", "syn", (), self.label)
        head = "_".join(["loader", f"w{self.num_workers}", *(t.name for t in self.transforms),
                         *(["pin"] if self.pin_memory else [])])
        transforms = [t.model_dump(mode="json") for t in self.transforms]
        # Their names are in the head already; this tells apart loaders whose transforms differ
        # in options only.
        text = "+".join(t.name + "".join(f".{k}={ids.fmt(v)}" for k, v in sorted(t.kwargs.items()))
                        for t in self.transforms)
        facets = (ids.facet("size", self.size), ids.facet("persistent_workers", self.persistent_workers),
                  ids.facet("prefetch_factor", self.prefetch_factor), ids.facet("transforms", transforms, text))
        return ids.IdParts(head, head, facets, self.label)


class MeasureConfig(BaseModel):
    """How long and how precisely to time a case. A suite runs in rounds: each round gives every
    case one trial of ``trial_time`` seconds, in random order (see bench/rounds.py)."""

    model_config = _STRICT
    warmup_steps: int = Field(strict=True, default=10, ge=0, le=1_000_000,
                              description="untimed steps before the first trial")
    min_time: Number = Field(default=1.0, gt=0, description="seconds measured at least, over all trials")
    max_time: Number = Field(default=10.0, gt=0, description="seconds measured at most, over all trials")
    target_ci: Number = Field(default=0.01, gt=0, lt=1,
                              description="stop once the 95% interval over trials is within this fraction of the median")
    trial_time: Number = Field(default=0.5, gt=0, description="seconds of one trial (one case's turn in a round)")
    min_rounds: int = Field(strict=True, default=6, ge=2, le=100_000,
                            description="trials at least (6 give a distribution-free 95% interval)")
    rounds: int | None = Field(strict=True, default=None, ge=2, le=100_000,
                               description="trials at most (default: as many as max_time allows)")
    window_time: Number = Field(default=0.05, gt=0, description="seconds per timing window inside a trial")
    min_windows: int = Field(strict=True, default=5, ge=1, le=100_000, description="windows per trial at least")

    @model_validator(mode="after")
    def _check(self) -> MeasureConfig:
        if self.min_time > self.max_time:
            raise ValueError(f"min_time ({self.min_time}) exceeds max_time ({self.max_time})")
        if self.rounds is not None and self.rounds < self.min_rounds:
            raise ValueError(f"rounds ({self.rounds}) is below min_rounds ({self.min_rounds})")
        return self

    @property
    def trial_seconds(self) -> float:
        """A trial's length: ``trial_time``, shortened where ``max_time`` would not allow
        ``min_rounds`` trials of it."""
        return min(self.trial_time, self.max_time / self.min_rounds)

    @property
    def max_rounds(self) -> int:
        """Trials a case takes at most (its collector round comes on top)."""
        by_time = max(self.min_rounds, math.ceil(self.max_time / self.trial_seconds - 1e-9))
        return min(by_time, self.rounds) if self.rounds is not None else by_time


# cpu/cuda: one process, one device. dp: torch.nn.DataParallel over world_size GPUs in one process.
# ddp: DistributedDataParallel, fsdp: FSDP2 (fully_shard), each with world_size ranks launched by
# torch.distributed.run.
Mode = Literal["cpu", "cuda", "dp", "ddp", "fsdp"]
# The modes whose ranks torchrun starts (bench.launch, bench.ddp_worker).
LAUNCHED_MODES = ("ddp", "fsdp")



def _compile_shorthand(value: Any) -> Any:
    """``compile: false``, ``true`` or a mapping of options, as a ``CompileConfig``'s fields."""
    if isinstance(value, bool):
        return {"enabled": value}
    if isinstance(value, Mapping):
        if "enabled" in value:
            raise ValueError("write compile: true, false or a mapping of options (mode, fullgraph, dynamic, "
                             "backend), without 'enabled'")
        return {"enabled": True, **value}
    if isinstance(value, CompileConfig):
        return value
    raise ValueError(f"must be true, false or a mapping of torch.compile options (mode, fullgraph, dynamic, "
                     f"backend), not {_kind(value)}")


class CompileConfig(BaseModel):
    """``torch.compile`` of the case's model: ``false`` (default), ``true``, or a mapping of its
    options. A suite writes ``false``/``true`` or the mapping (``_compile_shorthand``), never
    ``enabled``; the model dumps back to that form."""

    model_config = _STRICT
    enabled: bool = Field(default=False, description="whether the model is compiled")
    mode: Annotated[str, _in(COMPILE_MODES)] | None = Field(default=None, description="torch.compile's mode "
                                                                                       "(default: torch's)")
    fullgraph: StrictBool = Field(default=False, description="fail on any graph break instead of splitting")
    dynamic: StrictBool | None = Field(default=None, description="dynamic shapes: true, false or null (torch decides)")
    backend: str = Field(default="inductor", min_length=1, description="torch.compile backend (inductor, aot_eager, eager...)")

    @model_serializer(mode="wrap")
    def _as_written(self, handler: SerializerFunctionWrapHandler) -> Any:
        # Read back as it is written: false, or the options of an enabled compile.
        if not self.enabled:
            return False
        data: dict[str, Any] = handler(self)
        data.pop("enabled", None)
        return data

    def options(self) -> dict[str, Any]:
        """Keyword arguments of ``torch.compile``; unset options are left to torch."""
        out: dict[str, Any] = {"fullgraph": self.fullgraph, "backend": self.backend}
        if self.mode is not None:
            out["mode"] = self.mode
        if self.dynamic is not None:
            out["dynamic"] = self.dynamic
        return out

    def id_parts(self) -> ids.IdParts:
        """``no_compile``, ``compile``, and compiled values told apart by their options
        (``compile-mode=max-autotune``)."""
        if not self.enabled:
            return ids.IdParts("no_compile", "no_compile", ())
        # Options always read key=value (compile-backend=eager): a bare "eager" would not say compile.
        facets = tuple(dataclasses.replace(ids.facet(k, v), alone=None) for k, v in
                       (("mode", self.mode), ("fullgraph", self.fullgraph), ("dynamic", self.dynamic),
                        ("backend", self.backend)))
        return ids.IdParts("compile", "compile", facets)


class CaseParams(BaseModel):
    """Every parameter of one case. Each may be a default, a matrix axis or part of an include."""

    model_config = _STRICT

    model: Annotated[ModelConfig, BeforeValidator(_named)]
    optimizer: Annotated[OptimizerConfig, BeforeValidator(_named)] = OptimizerConfig(name="sgd")
    activation: Annotated[str, _in(ACTIVATIONS)] = "relu"
    loss: Annotated[str, _in(LOSSES)] = "cross_entropy"
    data: DataConfig = DataConfig(name="synthetic")
    # fp32: no autocast. bf16, fp16: autocast over forward and loss (under fsdp, FSDP2's
    # mixed-precision policy instead); fp16 with a gradient scaler, on CUDA only.
    precision: Annotated[str, _in(PRECISIONS)] = Field(default="fp32", description="fp32, bf16 or fp16 (see "
                                                                                     "bench list --components)")
    compile: Annotated[CompileConfig, BeforeValidator(_compile_shorthand)] = Field(default=CompileConfig(), description="torch.compile the model: false, true "
                                                                        "or options (mode, fullgraph, dynamic, backend)")
    channels_last: StrictBool = Field(default=False, description="model and 4-D inputs in channels_last memory format")
    grad_accum: int = Field(strict=True, default=1, ge=1, le=1024,
                            description="micro-batches of batch_size per optimizer step")
    activation_checkpointing: StrictBool = Field(
        default=False, description="recompute activations in backward: each block of a built-in model, each "
                                   "top-level child of any other (unless its factory takes activation_checkpointing)")
    mode: Mode = "cpu"
    world_size: int = Field(strict=True, default=1, ge=1, le=1024)
    device: str | None = Field(default=None, pattern=r"^(cpu|cuda(:\d+)?)$")
    batch_size: int = Field(strict=True, default=64, gt=0, le=1_000_000)
    lr: Number = Field(default=0.01, gt=0)
    threads: int | None = Field(strict=True, default=None, ge=1, le=1024, description="torch intra-op threads; default: all cores")
    seed: int = 0
    repeats: int = Field(strict=True, default=1, ge=1, le=100, description="processes per case; rounds alternate between them, so a "
                                                      "process-level effect (memory layout, clocks) shows in the CI")
    measure: MeasureConfig = MeasureConfig()
    timeout: Number = Field(default=300.0, gt=0, description="seconds a case may take to build and warm up, and "
                                                             "for any one trial or its profilers' extra steps")
    profile: Profiles = Field((), description="profilers to run: none, torch, pyspy or a list")
    profiler: ProfilerConfig = ProfilerConfig()
    nvml_interval: Number = Field(default=0.2, ge=0.01, le=60,
                                 description="seconds between GPU telemetry samples (NVML)")
    peak_flops: Number | None = Field(default=None, gt=0,
                                     description="peak FLOP/s of the device, for MFU; default: built-in GPU table")
    scaling: Literal["weak", "strong"] = Field(
        default="weak", description="weak: batch_size per rank, fixed; strong: batch_size is global, split across ranks")
    backend: Literal["gloo", "nccl"] | None = Field(default=None, description="ddp: process-group backend (default: "
                                                                     "nccl on GPUs, gloo on CPU)")
    bucket_cap_mb: Number | None = Field(default=None, gt=0, description="ddp: gradient bucket size (torch default 25)")
    gradient_as_bucket_view: bool = False
    static_graph: bool = False
    find_unused_parameters: bool = False
    reshard_after_forward: StrictBool | None = Field(
        default=None, description="fsdp: free gathered parameters after forward (torch default true)")


FIELD_ORDER = tuple(CaseParams.model_fields)
_ADAPTERS: dict[str, TypeAdapter[Any]] = {
    name: TypeAdapter(Annotated[f.annotation, f])
    for name, f in CaseParams.model_fields.items()
}
_REQUIRED = {name for name, f in CaseParams.model_fields.items() if f.is_required()}
# Every default, made once: cases share these objects (they are frozen), which keeps expanding a
# large matrix cheap (no per-case copies of default sub-models).
_FIELD_DEFAULTS = {name: f.get_default(call_default_factory=True)
                   for name, f in CaseParams.model_fields.items() if not f.is_required()}


class _CanonicalCache:
    """Canonical JSON of a field value, computed once per distinct object: a 10,000-case matrix
    shares a handful of validated values per axis."""

    def __init__(self) -> None:
        self._memo: dict[tuple[str, int], tuple[Any, str]] = {}

    def __call__(self, key: str, value: Any) -> str:
        hit = self._memo.get((key, id(value)))
        if hit is not None and hit[0] is value:
            return hit[1]
        text = _canonical(key, value)
        self._memo[(key, id(value))] = (value, text)  # holding value keeps its id from being reused
        return text


def check_case(params: CaseParams) -> None:
    """Checks that involve several parameters; raises ValueError with 'key: message'."""
    if params.measure.max_time >= params.timeout:
        raise ValueError(f"timeout: {params.timeout:g} s leaves no time beyond measure.max_time "
                         f"({params.measure.max_time:g} s)")
    if params.mode == "cpu" and params.device not in (None, "cpu"):
        raise ValueError(f"device: {params.device!r} does not fit mode 'cpu'")
    if params.mode == "cuda" and params.device == "cpu":
        raise ValueError("device: 'cpu' does not fit mode 'cuda'")
    if params.world_size > 1 and params.mode in ("cpu", "cuda"):
        raise ValueError(f"world_size: {params.world_size} needs a parallel mode, not {params.mode!r}")
    if params.mode == "dp" and params.device not in (None, "cuda"):
        raise ValueError(f"device: DataParallel runs on GPUs 0..world_size-1; {params.device!r} does not fit")
    if params.mode in LAUNCHED_MODES:
        if params.device not in (None, "cpu", "cuda"):
            raise ValueError(f"device: {params.mode} takes 'cpu' or 'cuda' (each rank uses its own GPU), "
                             f"not {params.device!r}")
        if params.backend == "nccl" and params.device == "cpu":
            raise ValueError("backend: nccl needs CUDA devices; use gloo with device 'cpu'")
    if params.reshard_after_forward is not None and params.mode != "fsdp":
        raise ValueError(f"reshard_after_forward: applies to mode 'fsdp' only, not {params.mode!r}")
    if params.channels_last and len(params.model.shape) != 3:
        shape = "x".join(map(str, params.model.shape))
        raise ValueError(f"channels_last: needs 4-D inputs (batch, channels, height, width); this model's "
                         f"samples are {shape}")
    if params.scaling == "strong" and params.batch_size % params.world_size:
        raise ValueError(f"batch_size: {params.batch_size} cannot be split evenly across world_size "
                         f"{params.world_size} (scaling: strong)")


@dataclass(frozen=True)
class Case:
    id: str
    params: CaseParams
    note: str | None = None  # why the id has a suffix, where it needed one to be unique

    def params_json(self) -> dict[str, Any]:
        return dump_params(self.params)


@dataclass(frozen=True)
class Suite:
    name: str
    path: str
    cases: tuple[Case, ...]
    source: dict[str, Any]

    def select(self, pattern: str | None) -> Suite:
        """Cases whose id matches a glob (``*sgd*``), or contains the text when it has no wildcard."""
        if not pattern:
            return self
        glob = pattern if any(c in pattern for c in "*?[") else f"*{pattern}*"
        chosen = tuple(c for c in self.cases if fnmatch.fnmatchcase(c.id, glob))
        if not chosen:
            raise SuiteError(self.path, "--only", f"no case id matches {pattern!r}")
        return Suite(self.name, self.path, chosen, self.source)


def dump_params(params: CaseParams) -> dict[str, Any]:
    dumped: dict[str, Any] = params.model_dump(mode="json", by_alias=True)
    # An unset label is left out, so the params of a case without one read as they always have.
    for key in ("model", "optimizer", "data"):
        if dumped[key].get("label", "") is None:
            del dumped[key]["label"]
    return dumped


# ---------------------------------------------------------------------------------------------
# Reading YAML safely


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that also rejects duplicate keys (YAML silently keeps the last one)."""


def _mapping_no_duplicates(loader: _StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        try:
            duplicate = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(None, None, f"unhashable key {key!r}", key_node.start_mark) from None
        if duplicate:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _mapping_no_duplicates)


def read_yaml(path: str | Path) -> Any:
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise SuiteError(source, "", "no such file") from None
    except IsADirectoryError:
        raise SuiteError(source, "", "is a directory, not a suite file") from None
    except OSError as exc:
        raise SuiteError(source, "", f"cannot read: {exc.strerror}") from None
    if len(raw) > MAX_SUITE_BYTES:
        raise SuiteError(source, "", f"file is {len(raw)} bytes; suites are limited to {MAX_SUITE_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SuiteError(source, "", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return yaml.load(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else "YAML"
        problem = " ".join(str(exc.problem or exc.context or "invalid YAML").split())
        raise SuiteError(source, where, f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SuiteError(source, "", f"invalid YAML: {' '.join(str(exc).split())}") from None


# ---------------------------------------------------------------------------------------------
# Validation with key paths


def _loc(prefix: str, loc: Iterable[Any]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif str(part).startswith(("function-", "union[")) or part in ("tagged-union",):
            continue
        else:
            path += f".{part}" if path else str(part)
    return path


def _message(err: Mapping[str, Any]) -> str:
    msg = str(err["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        msg = msg.removeprefix(prefix)
    if err["type"] == "extra_forbidden":
        return "unknown key"
    if err["type"] == "missing":
        # A short list (`betas: [0.9]`) misses a position, not a key.
        return "required item is missing" if err["loc"] and isinstance(err["loc"][-1], int) else "required key is missing"
    return msg


def _unknown_parameter(key: str) -> str:
    return f"unknown parameter {key!r} (choose from: {', '.join(FIELD_ORDER)})"


def _validate_field(source: str, path: str, key: str, value: Any) -> Any:
    adapter = _ADAPTERS.get(key)
    if adapter is None:
        raise SuiteError(source, path, _unknown_parameter(key))
    try:
        return adapter.validate_python(value)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise SuiteError(source, _loc(path, _user_loc(value, err["loc"])), _message(err)) from None


def _user_loc(value: Any, loc: Sequence[Any]) -> list[Any]:
    """The key path as the user wrote it, undoing the two shorthands of ``_named``: ``"sgd"`` for
    ``{name: "sgd"}`` (``matrix.optimizer[1]``, not ``matrix.optimizer[1].name``), and options
    beside the name, which it moved into ``kwargs`` (``matrix.optimizer[1].momentum``, not
    ``matrix.optimizer[1].kwargs.momentum``)."""
    path: list[Any] = []
    node = value
    for i, part in enumerate(loc):
        if part == "name" and isinstance(node, str):
            continue
        if part == "kwargs" and isinstance(node, Mapping):
            key = loc[i + 1] if i + 1 < len(loc) else None
            if "kwargs" not in node or (key is not None and key in node):
                continue  # the option was written beside the name
        path.append(part)
        # Locations pydantic adds (validator names) are not in the user's value: skip them.
        inside = (isinstance(node, Mapping) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and part < len(node))
        if inside:
            node = node[part]
    return path


def _canonical(key: str, value: Any) -> str:
    return json.dumps(_ADAPTERS[key].dump_python(value, mode="json", by_alias=True), sort_keys=True)


def _mapping(source: str, path: str, value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SuiteError(source, path, f"must be a mapping, not {_kind(value)}")
    for key in value:
        if not isinstance(key, str):
            raise SuiteError(source, path, f"keys must be strings, not {_kind(key)} {key!r}")
    return value


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "null"}.get(type(value), type(value).__name__)


_TOP_KEYS = ("name", "description", "defaults", "matrix", "exclude", "include")


def load(path: str | Path, overrides: Sequence[str] = ()) -> Suite:
    """Read, validate and expand a suite file. ``overrides`` are ``key=value`` strings
    (``--set``) applied to every case; dotted keys reach into nested settings."""
    source = str(path)
    doc = read_yaml(path)
    if doc is None:
        raise SuiteError(source, "", "the file is empty")
    top = _mapping(source, "", doc)
    for key in top:
        if key not in _TOP_KEYS:
            raise SuiteError(source, key, f"unknown key (choose from: {', '.join(_TOP_KEYS)})")
    name = top.get("name")
    if not isinstance(name, str) or not name.strip():
        raise SuiteError(source, "name", "required: a non-empty string naming the suite")
    if "description" in top and not isinstance(top["description"], str):
        raise SuiteError(source, "description", "must be a string")

    defaults = {k: _validate_field(source, f"defaults.{k}", k, v)
                for k, v in _mapping(source, "defaults", top.get("defaults") or {}).items()}

    axes: dict[str, list[Any]] = {}
    for key, values in _mapping(source, "matrix", top.get("matrix") or {}).items():
        if key not in _ADAPTERS:
            raise SuiteError(source, f"matrix.{key}", _unknown_parameter(key))
        if not isinstance(values, list):
            raise SuiteError(source, f"matrix.{key}", f"must be a list of values, not {_kind(values)}")
        if not values:
            raise SuiteError(source, f"matrix.{key}", "is an empty list")
        axes[key] = [_validate_field(source, f"matrix.{key}[{i}]", key, v) for i, v in enumerate(values)]

    def entries(section: str) -> list[dict[str, Any]]:
        raw = top.get(section) or []
        if not isinstance(raw, list):
            raise SuiteError(source, section, f"must be a list of mappings, not {_kind(raw)}")
        out = []
        for i, entry in enumerate(raw):
            entry = _mapping(source, f"{section}[{i}]", entry)
            if not entry:
                raise SuiteError(source, f"{section}[{i}]", "is empty")
            out.append({k: _validate_field(source, f"{section}[{i}].{k}", k, v) for k, v in entry.items()})
        return out

    excludes = entries("exclude")
    for i, entry in enumerate(excludes):
        for key in entry:
            if key not in axes:
                raise SuiteError(source, f"exclude[{i}].{key}",
                                 f"is not a matrix axis (axes: {', '.join(axes) or 'none'})")
    includes = entries("include")
    if not axes and not includes:
        raise SuiteError(source, "matrix", "is empty: give at least one axis or an include entry")

    total = math.prod(len(v) for v in axes.values()) if axes else 0
    if total + len(includes) > MAX_CASES:
        raise SuiteError(source, "matrix", f"expands to {total + len(includes)} cases (limit {MAX_CASES})")

    combos = _expand(axes, excludes, includes)
    if not combos:
        raise SuiteError(source, "exclude", "removes every combination of the matrix, and no include adds a case")
    sets = _parse_overrides(source, overrides)
    cases = _build_cases(source, defaults, combos, sets)
    return Suite(name=name, path=source, cases=tuple(cases), source=top)


def _expand(axes: dict[str, list[Any]], excludes: list[dict[str, Any]],
            includes: list[dict[str, Any]]) -> list[dict[str, Any]]:
    keys = list(axes)
    canon_axes = [[_canonical(k, v) for v in axes[k]] for k in keys]
    canon_excl = [{k: _canonical(k, v) for k, v in e.items()} for e in excludes]
    combos: list[dict[str, Any]] = []
    canon_combos: list[dict[str, str]] = []
    if keys:
        for idx in itertools.product(*(range(len(axes[k])) for k in keys)):
            canon = {k: canon_axes[j][i] for j, (k, i) in enumerate(zip(keys, idx, strict=True))}
            if any(all(canon[k] == v for k, v in e.items()) for e in canon_excl):
                continue
            combos.append({k: axes[k][i] for k, i in zip(keys, idx, strict=True)})
            canon_combos.append(canon)
    originals = len(combos)
    for entry in includes:
        canon_entry = {k: _canonical(k, v) for k, v in entry.items()}
        fitted = False
        for j in range(originals):
            # An include fits when it agrees with every original axis value it names; it may then
            # add keys (and overwrite keys that an earlier include added), never the axis values.
            if all(canon_combos[j][k] == v for k, v in canon_entry.items() if k in axes):
                fitted = True
                combos[j].update({k: v for k, v in entry.items() if k not in axes})
        if not fitted:
            combos.append(dict(entry))
    return combos


def _parse_overrides(source: str, overrides: Sequence[str]) -> list[tuple[str, list[str], Any]]:
    parsed = []
    for text in overrides:
        key, sep, raw = text.partition("=")
        path = f"--set {key}"
        if not sep or not key:
            raise SuiteError(source, f"--set {text}", "expected key=value")
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            raise SuiteError(source, path, f"cannot parse value {raw!r}") from None
        field, *rest = key.split(".")
        if field not in _ADAPTERS:
            raise SuiteError(source, path, _unknown_parameter(field))
        parsed.append((field, rest, value))
    return parsed


def _group_sets(sets: list[tuple[str, list[str], Any]]) -> dict[str, list[tuple[list[str], Any]]]:
    grouped: dict[str, list[tuple[list[str], Any]]] = {}
    for field, rest, value in sets:
        grouped.setdefault(field, []).append((rest, value))
    return grouped


def _build_cases(source: str, defaults: dict[str, Any], combos: list[dict[str, Any]],
                 sets: list[tuple[str, list[str], Any]]) -> list[Case]:
    params_list: list[CaseParams] = []
    seen: set[tuple[str, ...]] = set()
    canon = _CanonicalCache()
    grouped_sets = _group_sets(sets)
    for combo in combos:
        merged = {**defaults, **combo}
        # All --set keys of one field are applied together and validated once, so that
        # `--set measure.min_time=0.1 --set measure.max_time=0.5` never meets a half-applied state.
        for field, edits in grouped_sets.items():
            path = "--set " + ", ".join(".".join([field, *rest]) for rest, _ in edits)
            value: Any = None
            for rest, raw in edits:
                if not rest:
                    value = raw
                    continue
                if value is None:
                    current = merged.get(field)
                    value = (_ADAPTERS[field].dump_python(current, mode="json", by_alias=True)
                             if current is not None else {})
                    value = json.loads(json.dumps(_named(value) if not isinstance(value, dict) else value))
                if not isinstance(value, dict):
                    value = _named(value)
                if not isinstance(value, dict):
                    raise SuiteError(source, f"--set {field}",
                                     f"is not a mapping ({_kind(value)}), so it has no key {rest[0]!r}")
                node = value
                for part in rest[:-1]:
                    node = node.setdefault(part, {})
                    if not isinstance(node, dict):
                        raise SuiteError(source, path, f"{part!r} is not a mapping")
                node[rest[-1]] = raw
            # The error's own location adds the dotted rest of the key.
            merged[field] = _validate_field(source, f"--set {field}", field, value)
        missing = _REQUIRED - set(merged)
        if missing:
            raise SuiteError(source, "defaults", f"'{sorted(missing)[0]}' is missing: set it in defaults, "
                                                 "matrix or include")
        # Fields were validated one by one above, so the cheap constructor is enough here.
        params = CaseParams.model_construct(_fields_set=set(merged), **{**_FIELD_DEFAULTS, **merged})
        key = tuple(canon(k, getattr(params, k)) for k in FIELD_ORDER)
        if key in seen:
            continue  # an include that repeats an existing combination
        seen.add(key)
        params_list.append(params)
    _check_labels(source, params_list, canon)
    named = case_ids(params_list, canon)
    for (case_id, _), params in zip(named, params_list, strict=True):
        try:
            check_case(params)
        except ValueError as exc:
            # The case id names the combination; the message names the parameter.
            raise SuiteError(source, f"case {case_id}", str(exc)) from None
    return [Case(i, p, note) for (i, note), p in zip(named, params_list, strict=True)]


def _check_labels(source: str, params_list: Sequence[CaseParams], canon: Callable[[str, Any], str]) -> None:
    """A label names one value: the same label on two different values would make one id for
    two cases."""
    for key in ("model", "optimizer", "data"):
        seen: dict[str, str] = {}
        for p in params_list:
            value = getattr(p, key)
            if value.label is None:
                continue
            c = canon(key, value)
            if seen.setdefault(value.label, c) != c:
                raise SuiteError(source, f"{key}.label", f"{value.label!r} names two different {key} values; "
                                                         "give each its own label")


# ---------------------------------------------------------------------------------------------
# Case ids

_ID_PREFIX = {"world_size": "ws", "batch_size": "bs", "lr": "lr", "threads": "t", "seed": "seed",
              "timeout": "to", "grad_accum": "ga"}
# A flag's name in ids where the parameter's own is long: ckpt / no_ckpt.
_FLAG_NAME = {"activation_checkpointing": "ckpt", "reshard_after_forward": "reshard"}


def _id_parts(key: str, value: BaseModel) -> ids.IdParts:
    """A named configuration describes itself; any other (``measure``, ``profiler``) is an unnamed
    mapping whose fields read ``measure.max_time=2``."""
    describe = getattr(value, "id_parts", None)
    if describe is not None:
        parts: ids.IdParts = describe()
        return parts
    fields = value.model_dump(mode="json")
    return ids.IdParts("", "", tuple(ids.facet(k, v, f"{key}.{k}={ids.fmt(v)}") for k, v in fields.items()))


def _scalar_label(key: str, value: Any) -> str:
    if value is None or value == ():
        return ""  # unset (the default applies): nothing to show
    if isinstance(value, bool):
        name = _FLAG_NAME.get(key, key)
        return name if value else f"no_{name}"
    if key in _ID_PREFIX:
        return _ID_PREFIX[key] + ids.short(value)
    return ids.short(value)


def case_ids(params_list: Sequence[CaseParams],
             canon: Callable[[str, Any], str] | None = None) -> list[tuple[str, str | None]]:
    """Each case's id and, where a suffix made it unique, a note saying so (see ``bench.ids``)."""
    if not params_list:
        return []
    canon = canon or _CanonicalCache()
    varying = [k for k in FIELD_ORDER
               if len({canon(k, getattr(p, k)) for p in params_list}) > 1]
    labels: dict[tuple[str, str], str] = {}
    # The model's labels are made even where it does not vary: a case whose varying parameters
    # all add nothing (unset values) is named after its model, as is a suite of one case.
    for key in varying if "model" in varying else [*varying, "model"]:
        distinct = {canon(key, getattr(p, key)): getattr(p, key) for p in params_list}
        if all(isinstance(v, BaseModel) for v in distinct.values()):
            texts = ids.mapping_labels([_id_parts(key, v) for v in distinct.values()])
        else:
            texts = [ids.clean(_scalar_label(key, v)) for v in distinct.values()]
        labels.update(zip(((key, c) for c in distinct), texts, strict=True))
    bases = []
    for p in params_list:
        parts = [labels[(k, canon(k, getattr(p, k)))] for k in varying]
        bases.append("-".join(part for part in parts if part) or labels[("model", canon("model", p.model))])
    return ids.unique(bases)
