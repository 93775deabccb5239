"""Typed records of a results file: what a run produced, validated once where it enters (the
writer building a case from a worker's message, a loader reading a file), read by attribute
everywhere after.

``bench/results.schema.json`` is generated from these models (``python -m bench.records``); a
test fails when the committed file and the models differ.

Within a schema version, additions are optional fields: each model keeps keys it does not know
(``extra="allow"``), so a newer writer's additions survive a round trip through an older reader.
A key removed or changing meaning needs a new ``SCHEMA_VERSION`` (history in ``bench.results``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

SCHEMA_PATH = Path(__file__).with_name("results.schema.json")

NonNeg = Annotated[float, Field(ge=0)]
Positive = Annotated[float, Field(gt=0)]


class Record(BaseModel):
    """Base of every record: strict types (a number written as text is an error, not a number),
    finite numbers only (JSON has no NaN; a missing value is null), unknown keys kept."""

    model_config = ConfigDict(extra="allow", allow_inf_nan=False, strict=True)

    def extra(self, key: str, default: Any = None) -> Any:
        """A key that this version of the model does not declare (an addition by a newer writer)."""
        return (self.model_extra or {}).get(key, default)


# --- the run ---------------------------------------------------------------------------------


class SuiteInfo(Record):
    name: str = Field(description="The suite's name (its `name:` key).")
    path: str = Field(description="The suite file the run was started with.")
    source: dict[str, Any] = Field(description="The suite as written (after YAML parsing), for provenance.")


class RunInfo(Record):
    started: str = Field(description="When the run started (ISO 8601, UTC).")
    finished: str | None = Field(description="When the run ended; null while it is running.")
    status: Literal["running", "complete", "interrupted"] = Field(
        description="`running` while cases are still being measured, `interrupted` after Ctrl-C or SIGTERM.")
    argv: list[str] = Field(description="The command line that started the run.")
    overrides: list[str] = Field(default_factory=list, description="`--set KEY=VALUE` overrides, in order.")
    only: str | None = Field(default=None, description="The `--only` pattern, if any.")
    nnodes: int = Field(default=1, ge=1, description="Nodes of a multi-node run (1 otherwise).")
    resumed: list[str] = Field(default_factory=list, description="When `--resume` continued the run, each time.")
    resumed_on_other_machine: bool = Field(
        default=False, description="A resume ran on a machine with another fingerprint: cases mix two machines.")


class GitInfo(Record):
    commit: str = Field(description="HEAD of the repository the run was started in.")
    dirty: bool = Field(default=False, description="The work tree had uncommitted changes to tracked files.")


class GpuInfo(Record):
    name: str = Field(description="The device name torch reports.")
    index: int | None = Field(default=None, description="CUDA device index.")
    memory_mb: float | None = Field(default=None, description="Total device memory in MiB.")
    uuid: str | None = Field(default=None, description="Device UUID (matches NVML's).")


class Environment(Record):
    """The machine and software a run was measured on; ``bench.environment.fingerprint`` picks the
    facts that change timings."""

    python: str = Field(description="Python version.")
    torch: str | None = Field(description="torch version, null if the probe failed.")
    cuda: str | None = Field(default=None, description="CUDA version torch was built with.")
    cpu_model: str | None = Field(description="CPU model name.")
    cores_logical: int | None = Field(description="Logical CPUs of the machine.")
    cores_available: int | None = Field(default=None, description="CPUs this process may run on (affinity).")
    hostname: str = Field(description="Host name (not part of the fingerprint: CI runners are fresh hosts).")
    time: str = Field(description="When the environment was read (ISO 8601).")
    gpus: list[GpuInfo] = Field(description="CUDA devices visible to torch.")
    git: GitInfo | None = Field(default=None, description="The commit the run was started from, if in git.")
    torch_threads: int | None = Field(default=None, description="torch's default intra-op threads.")
    cudnn: int | None = Field(default=None, description="cuDNN version.")


# --- one case --------------------------------------------------------------------------------


class Throughput(Record):
    median: Positive = Field(description="Median training samples per second (all ranks together).")
    mean: Positive | None = Field(default=None, description="Mean of the same samples.")
    ci95: list[NonNeg | None] = Field(min_length=2, max_length=2,
        description="[low, high] of the median's 95% interval; [null, null] where too few samples give none. "
                    "What it covers is named by `interval`.")
    ci_rel_half_width: NonNeg | None = Field(default=None, description="Half the interval's width over the median.")
    ci_target: NonNeg | None = Field(default=None, description="The `measure.target_ci` asked for.")
    ci_target_met: bool | None = Field(default=None, description="Whether the interval reached the target.")
    unit: Literal["samples/s"] = "samples/s"
    per_repeat: list[Positive] | None = Field(default=None, description="Each repeat process's median (`repeats`).")
    interval: str | None = Field(
        default=None, description="What `median` and `ci95` are and what the interval covers: in version 2, the "
                                  "median of trial medians with an order-statistic interval over trials; in version 1, "
                                  "windows of one stretch (within-run precision only).")
    trials: int | None = Field(default=None, ge=0, description="Trials the estimate rests on.")


class StepTime(Record):
    p50: NonNeg = Field(description="Median step time, ms.")
    p95: NonNeg = Field(description="95th percentile, ms.")
    p99: NonNeg | None = None
    mean: NonNeg | None = None
    min: NonNeg | None = None
    max: NonNeg | None = None
    source: str | None = Field(default=None, description="`per_step` (timed steps) or `window_mean` (CUDA).")


class RelativeThroughput(Record):
    """A case's throughput over the machine-speed reference's throughput in the same round: the
    drift common to both cancels, so runs made at different times compare on it."""

    median: Positive = Field(description="Median over rounds of the per-round ratio.")
    ci95: list[Positive] = Field(min_length=2, max_length=2, description="95% order-statistic interval over rounds.")
    trials: int = Field(ge=1, description="Rounds the ratio rests on.")
    unit: str = "x reference"
    source: Literal["case", "round", "mixed"] | None = Field(
        default=None, description="Where the references were measured (the trials' `reference_source`): `case`, "
                                  "in the case's own process; `round`, in the reference's own process; `mixed`, "
                                  "both. Ratios of different sources are not comparable: `bench compare` and "
                                  "`bench history` compare relative throughput only between equal sources. "
                                  "Null in results written before companions, which are `round`.")


class Metrics(Record):
    throughput: Throughput
    step_time_ms: StepTime
    peak_rss_mb: NonNeg = Field(description="Peak resident memory of the case's process(es), MiB.")
    threads: int = Field(ge=1, description="torch intra-op threads of the case (per rank).")
    windows: int = Field(ge=1, description="Timed windows.")
    steps: int = Field(ge=1, description="Timed steps.")
    steps_per_window: int | None = Field(default=None, ge=1)
    measured_s: NonNeg | None = Field(default=None, description="Seconds inside timed windows.")
    warmup_s: NonNeg | None = None
    build_s: NonNeg | None = Field(default=None, description="Seconds to build the model, optimizer and data.")
    compile_s: NonNeg | None = Field(
        default=None, description="`compile`: seconds of the first step, where torch.compile compiles, before the "
                                  "warm-up (the slowest rank's); null when not compiled.")
    graph_breaks: int | None = Field(
        default=None, ge=0, description="`compile`: graph breaks dynamo reported while compiling; null when not "
                                        "compiled or torch does not expose the count.")
    stop_reason: str | None = Field(default=None, description="`target_ci` or `max_time`.")
    batch_per_process: int | None = Field(default=None, ge=1)
    cuda_peak_allocated_mb: NonNeg | None = None
    cuda_peak_reserved_mb: NonNeg | None = None
    repeats: int | None = Field(default=None, ge=1)
    throughput_per_rank: list[NonNeg] | None = None
    rank_skew: float | None = Field(default=None, description="Fastest rank's throughput over the slowest's, minus 1.")
    peak_rss_mb_per_rank: list[NonNeg] | None = None
    cuda_peak_allocated_mb_per_rank: list[NonNeg] | None = None
    trials: int | None = Field(default=None, ge=0, description="Trials measured (rounds the case took part in).")
    trimmed_windows: int | None = Field(default=None, ge=0, description="Windows dropped as warm-up inside trials.")
    unstable: bool | None = Field(default=None, description="Some trial drifted beyond 10% inside itself.")
    relative: RelativeThroughput | None = Field(
        default=None, description="Throughput over the reference's in the same round (null without a reference).")


class Samples(Record):
    window_throughput: list[Positive] = Field(description="Samples/s of each timed window, in time order.")
    window_s: list[Positive] = Field(description="Seconds of each window (the slowest rank's under DDP).")
    step_time_ms: list[NonNeg] = Field(description="Per-step times (thinned to at most 2,000, evenly).")
    window_start_s: list[float] = Field(default_factory=list, description="Window starts after `clock_origin`.")
    local_window_s: list[NonNeg] = Field(default_factory=list, description="This process's own window times.")
    clock_origin: float | None = Field(default=None, description="perf_counter time of the first window.")
    window_repeat: list[int] | None = Field(default=None, description="Which repeat process each window is from.")
    window_trial: list[int] | None = Field(default=None, description="Index into `trials` of each window.")


class TrialRecord(Record):
    """One trial: a case's turn in one round, the unit of inference."""

    round: int = Field(ge=0, description="The round it ran in (counted over the whole run).")
    position: int = Field(ge=0, description="Its index in that round's order.")
    start_s: float = Field(description="When it started, seconds after the case's first trial.")
    repeat: int = Field(default=0, ge=0, description="Which of the case's processes ran it (`repeats`).")
    median: Positive = Field(description="Median throughput of its windows after the warm-up trimmed.")
    trimmed: int = Field(default=0, ge=0, description="Leading windows dropped as warm-up.")
    drift: float = Field(default=0.0, description="Relative change between the trial's own segments.")
    stable: bool = Field(default=True, description="Whether that change is within 10%.")
    windows: list[Positive] = Field(description="Per-window throughput, samples/s, warm-up included.")
    reference: Positive | None = Field(
        default=None, description="The machine-speed reference's throughput in the same round, samples/s.")
    reference_source: Literal["case", "round"] | None = Field(
        default=None, description="Where `reference` was measured: `case`, in the case's own process right after "
                                  "this trial (a CPU case's companion); `round`, in the reference's own process "
                                  "in the same round. Null without a reference, or in results written before "
                                  "companions, which are `round`.")


class CollectorRecord(Record):
    error: str | None = Field(default=None, description="Why the collector could not run; null when it ran.")


class NvmlRecord(CollectorRecord):
    devices: list[dict[str, Any]] | None = None
    samples: dict[str, list[float | None]] | None = Field(
        default=None, description="Time series: t, util, power_w, sm_clock_mhz, mem_used_mb, temp_c.")
    summary: dict[str, Any] | None = None
    per_device: list[dict[str, Any]] | None = None
    metric_errors: dict[str, str] | None = None


class TopOp(Record):
    name: str
    self_cpu_ms: NonNeg | None = None
    self_cuda_ms: NonNeg | None = None
    calls: int | None = Field(default=None, ge=0)


class TorchProfilerRecord(CollectorRecord):
    top_ops: list[TopOp] | None = None
    traces: list[str] | None = Field(default=None, description="Trace files, relative to the results folder.")


class PyspyRecord(CollectorRecord):
    flamegraph: str | None = None
    speedscope: str | None = None


class FlopsRecord(CollectorRecord):
    """FLOPs of one training step (torch's FlopCounterMode with bench's corrections) and the rate
    achieved while measuring; all null, with ``error`` naming the operator, when the count is
    impossible (backward/forward outside 1-3, or MFU above 1)."""

    flops_per_step: int | None = Field(default=None, ge=0)
    forward_flops: int | None = Field(default=None, ge=0, description="Forward (and loss) FLOPs per step.")
    backward_flops: int | None = Field(default=None, ge=0, description="Backward FLOPs per step.")
    flops_per_sample: NonNeg | None = None
    achieved_flops: NonNeg | None = None
    peak_flops: NonNeg | None = None
    mfu: NonNeg | None = Field(default=None, description="Model FLOPs utilisation; older files may hold values above 1.")


class MemoryRecord(CollectorRecord):
    cuda_peak_allocated_mb: NonNeg | None = None
    cuda_peak_reserved_mb: NonNeg | None = None
    host_peak_rss_mb: NonNeg | None = None
    host_peak_rss_sum_mb: NonNeg | None = None
    processes: list[dict[str, Any]] | None = None


class PhaseTimes(Record):
    """Milliseconds per training step in each phase: means over the anatomy's extra steps (means,
    not medians, so that the parts add up to the whole). ``other_ms`` is the rest of each step
    (the loop between steps, hooks): ``step_ms`` is exactly the sum of the six."""

    data_ms: NonNeg = Field(description="Fetching the batch (and, on CUDA, copying it to the device).")
    forward_ms: NonNeg = Field(description="The model's forward pass.")
    loss_ms: NonNeg = Field(description="The loss function.")
    backward_ms: NonNeg = Field(description="Backward, with the gradient communication it waits for under DDP.")
    optimizer_ms: NonNeg = Field(description="zero_grad and the optimizer step (and the gradient scaler's).")
    other_ms: NonNeg = Field(description="The rest of the step.")
    step_ms: Positive = Field(description="Start to start of consecutive anatomy steps; the sum of the phases.")
    communication_ms: NonNeg | None = Field(
        default=None, description="Distributed: time per step with a collective in flight (their union), "
                                  "from a profiled window of extra steps; null for one process.")
    exposed_communication_ms: NonNeg | None = Field(
        default=None, description="Distributed: backward's time with gradient synchronisation minus without "
                                  "(no_sync), on alternating steps: the communication backward did not hide, waiting "
                                  "for slower ranks included.")


class RankPhaseTimes(PhaseTimes):
    rank: int = Field(ge=0)


class AnatomyRecord(CollectorRecord):
    """Where a step's time goes, measured on extra steps after the measured region (never inside
    it), with timestamps at phase boundaries (CUDA events on a GPU)."""

    phases: PhaseTimes | None = Field(default=None, description="This case's (the slowest rank's) phases.")
    steps: int | None = Field(default=None, ge=0, description="Anatomy steps the phases are means over.")
    timing: Literal["timestamps", "cuda_events"] | None = None
    measured_step_ms: Positive | None = Field(
        default=None, description="The mean step of each measured window, median over every trial's windows "
                                  "(all rounds) of this process: what ``phases.step_ms`` compares with.")
    cost_s: NonNeg | None = Field(default=None, description="Wall time the anatomy added to the case.")
    ranks: list[RankPhaseTimes] | None = Field(default=None, description="Every rank's phases (distributed).")
    slowest_rank: int | None = Field(default=None, ge=0, description="The rank with the longest step.")
    notes: list[str] = Field(default_factory=list, description="What the phases cannot show for this case.")


class MemoryCategories(Record):
    """Bytes of one process's training state by category, after a step."""

    parameters_bytes: int = Field(ge=0, description="The model's parameters (this rank's shards under FSDP).")
    gradients_bytes: int = Field(ge=0, description="Their gradients after backward.")
    optimizer_state_bytes: int = Field(ge=0, description="Tensors the optimizer keeps (momentum, Adam's moments).")
    activations_bytes: int | None = Field(
        default=None, ge=0, description="Tensors saved for backward by the forward pass, parameters excluded.")
    other_bytes: int | None = Field(
        default=None, ge=0, description="The rest of the step's peak: temporaries, workspaces, inputs.")
    peak_bytes: int | None = Field(default=None, ge=0, description="Peak of live tensor bytes over one step.")
    peak_source: str | None = Field(default=None, description="What measured the peak.")
    cuda_allocated_bytes: int | None = Field(default=None, ge=0, description="CUDA: the caching allocator's peak allocated.")
    cuda_reserved_bytes: int | None = Field(default=None, ge=0, description="CUDA: the caching allocator's peak reserved.")


class RankMemoryCategories(MemoryCategories):
    rank: int = Field(ge=0)


class MemoryBreakdownRecord(CollectorRecord):
    """Memory by category, measured on an extra step after the measured region."""

    categories: MemoryCategories | None = None
    ranks: list[RankMemoryCategories] | None = Field(default=None, description="Every rank's (distributed).")
    notes: list[str] = Field(default_factory=list)


class KernelTime(Record):
    """One GPU kernel (or copy, or memset) name's time in a trace."""

    name: str = Field(description="The kernel's name as the trace has it (demangled, template arguments and all).")
    type: Literal["compute", "communication", "memory", "other"] = Field(
        description="HTA's classes: `communication` an NCCL kernel, `memory` a memcpy/memset, `compute` the rest "
                    "but for names with Memcpy or Sync, which are `other`.")
    total_us: NonNeg = Field(description="Sum of its durations over the trace, microseconds.")
    count: int = Field(ge=1, description="How many times it ran in the trace.")


class RankTraceAnalysis(Record):
    """HTA's trace-only analyses of one rank's GPU timeline: the profiled steps of one trace file."""

    rank: int = Field(ge=0, description="The rank the trace names (its `distributedInfo`), else its file's index.")
    trace: str = Field(description="The trace file analysed, relative to the results folder.")
    span_us: Positive = Field(
        description="From the first GPU event's start to the last one's end, microseconds: the whole the three "
                    "parts below divide (HTA's `kernel_time`).")
    compute_us: NonNeg = Field(description="Time some compute kernel ran (the union over streams), microseconds.")
    non_compute_us: NonNeg = Field(
        description="Time the GPU was busy with no compute kernel running: communication and memory copies "
                    "not hidden under computation, microseconds.")
    idle_us: NonNeg = Field(description="Time no GPU event ran on any stream, microseconds.")
    compute_pct: NonNeg = Field(description="`compute_us` over `span_us`, percent.")
    non_compute_pct: NonNeg = Field(description="`non_compute_us` over `span_us`, percent.")
    idle_pct: NonNeg = Field(description="`idle_us` over `span_us`, percent.")
    idle_host_wait_us: NonNeg = Field(
        description="Gaps on a stream before a kernel launched only after the previous one had finished: the "
                    "host did not queue work fast enough. Summed over streams, so it can exceed `idle_us`.")
    idle_kernel_wait_us: NonNeg = Field(
        description="Gaps on a stream under `kernel_wait_threshold_us` before a kernel queued in time: the cost "
                    "of launching many small kernels back to back. Summed over streams.")
    idle_other_us: NonNeg = Field(
        description="The other gaps on a stream (a kernel queued in time but waiting, e.g. for an event of another "
                    "stream's all-reduce). Summed over streams.")
    comm_comp_overlap_pct: NonNeg | None = Field(
        default=None, description="Of the time communication kernels ran (their union), the percentage during "
                                  "which a compute kernel ran too (rounded to 2 decimals where "
                                  "HTA computed it); null with no communication kernel.")
    kernels: list[KernelTime] = Field(default_factory=list, description="The kernels with the most time, most first.")


class TraceAnalysisRecord(CollectorRecord):
    """Holistic Trace Analysis (HTA) of the GPU traces of ``profile: torch``, made by the
    coordinator after the case (``bench.trace_analysis``): where the GPU's time went during the
    profiled steps. All figures null, with ``error`` saying why, when the traces hold no GPU
    kernel or cannot be read."""

    source: Literal["hta", "bench"] | None = Field(
        default=None, description="Which code produced the figures: the HolisticTraceAnalysis package, or bench's "
                                  "own pandas code with HTA's definitions where that package is missing or failed.")
    ranks: list[RankTraceAnalysis] | None = Field(default=None, description="One entry per trace with GPU events.")
    kernel_wait_threshold_us: NonNeg | None = Field(
        default=None, description="Gaps shorter than this count as kernel wait (HTA's `consecutive_kernel_delay`).")
    cost_s: NonNeg | None = Field(default=None, description="Wall time the analysis took in the coordinator.")
    notes: list[str] = Field(default_factory=list, description="What the figures leave out (a trace without GPU "
                                                               "events, why HTA was not used).")


class Collectors(Record):
    """One record per collector that was asked for or always runs; others may be added (kept)."""

    nvml: NvmlRecord | None = None
    torch_profiler: TorchProfilerRecord | None = None
    pyspy: PyspyRecord | None = None
    flops: FlopsRecord | None = None
    memory: MemoryRecord | None = None
    anatomy: AnatomyRecord | None = None
    memory_breakdown: MemoryBreakdownRecord | None = None
    trace_analysis: TraceAnalysisRecord | None = Field(
        default=None, description="HTA's analyses of the torch profiler's GPU traces (CUDA cases with `profile: torch`).")

    @model_serializer(mode="wrap")
    def _only_present(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # A collector that did not run for a case has no key, as the writer has always done.
        data: dict[str, Any] = handler(self)
        return {k: v for k, v in data.items() if v is not None}

    def get(self, name: str) -> CollectorRecord | dict[str, Any] | None:
        """The record of a collector by name (declared or an addition)."""
        value = getattr(self, name, None) if name in type(self).model_fields else self.extra(name)
        return value

    def items(self) -> list[tuple[str, CollectorRecord | dict[str, Any]]]:
        names = [*type(self).model_fields, *(self.model_extra or {})]
        return [(n, v) for n in names if (v := self.get(n)) is not None]


class RankRecord(Record):
    rank: int = Field(ge=0)
    local_rank: int | None = None
    host: str | None = None
    device: str | None = None
    throughput_median: NonNeg | None = None
    peak_rss_mb: NonNeg | None = None
    warnings: list[str] = Field(default_factory=list)
    files: list[str] = Field(default_factory=list, description="Files this rank's collectors wrote.")
    collector_errors: dict[str, str] = Field(default_factory=dict)


class Params(Record):
    """A case's parameters, as the suite expanded them (``bench.suite.CaseParams``'s JSON). Only the
    keys every reader relies on are declared; the rest are kept as they are."""

    model: dict[str, Any]
    optimizer: dict[str, Any]
    activation: str
    loss: str
    data: dict[str, Any]
    mode: str
    world_size: int = Field(ge=1)
    batch_size: int = Field(ge=1)
    lr: float
    # The training axes; files written before them lack the keys and read as their defaults.
    precision: Literal["fp32", "bf16", "fp16"] = Field(default="fp32", description="Autocast precision.")
    compile: bool | dict[str, Any] = Field(
        default=False, description="false, or the torch.compile options of a compiled case.")
    channels_last: bool = Field(default=False, description="Model and inputs in channels_last layout.")
    grad_accum: int = Field(default=1, ge=1, description="Micro-batches per optimizer step.")
    activation_checkpointing: bool = Field(default=False, description="Activations recomputed in backward.")
    reshard_after_forward: bool | None = Field(default=None, description="fsdp: FSDP2's reshard_after_forward.")

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class CaseRecord(Record):
    id: str = Field(min_length=1, description="The case id, unique within the run.")
    params: Params
    status: Literal["ok", "failed", "skipped"]
    error: str | None = Field(description="Why the case failed or was skipped.")
    traceback: str | None = None
    warnings: list[str] = Field(description="Everything the reader should know about this measurement.")
    started: str = Field(description="When the case started (ISO 8601).")
    duration_s: NonNeg = Field(description="Wall time of the case, build and warm-up included.")
    device: str | None = None
    log: str | None = Field(default=None, description="The case's log file, relative to the results folder.")
    metrics: Metrics | None = Field(description="Null unless the case is ok.")
    samples: Samples | None = Field(description="Raw samples; null unless the case is ok.")
    collectors: Collectors = Field(default_factory=Collectors)
    ranks: list[RankRecord] | None = Field(default=None, description="Per-rank summaries of a DDP case.")
    trials: list[TrialRecord] | None = Field(default=None, description="Every trial, in time order (version 2).")
    backend: str | None = Field(default=None, description="torch.distributed backend of a DDP case.")

    @property
    def ok(self) -> bool:
        return self.status == "ok" and self.metrics is not None

    @property
    def throughput(self) -> float | None:
        return self.metrics.throughput.median if self.metrics is not None else None


class ScalingEntry(Record):
    group: str
    mode: str
    world_size: int = Field(ge=1)
    case_id: str
    baseline_case: str
    scaling: str
    device: str | None = None
    throughput: Positive
    speedup: NonNeg
    efficiency: NonNeg


class ReferenceTrial(Record):
    round: int = Field(ge=0)
    median: Positive = Field(description="The reference's throughput that round, samples/s.")
    index: Positive = Field(description="That throughput over the median of every round's: the round's machine speed.")


class ReferenceInfo(Record):
    """The machine-speed reference measured in every round (``bench.reference``)."""

    description: str = Field(description="What the reference's training step is.")
    params: dict[str, Any] = Field(description="Its case parameters.")
    trial_s: Positive = Field(description="Seconds of its trial in each round.")
    trials: list[ReferenceTrial] = Field(default_factory=list)
    error: str | None = Field(default=None, description="Why it could not be measured (the run goes on without it).")


class RoundsInfo(Record):
    """How the run's rounds went: enough to replay their order."""

    seed: int = Field(description="Seed of the rounds' random order (`bench run --order-seed`).")
    completed: int = Field(ge=0, description="Rounds completed.")
    orders: list[list[str]] = Field(description="The case ids of each round, in the order they ran.")
    estimator: str = Field(description="How a case's estimate and interval come from its trials.")
    reference: ReferenceInfo | None = Field(default=None, description="The machine-speed reference, if measured.")


class EffectRecord(Record):
    """The paired effect of one value of a swept parameter against its baseline value."""

    parameter: str
    value: str = Field(description="The value, as a label.")
    baseline: str = Field(description="The baseline value (the first in the matrix), as a label.")
    ratio: Positive | None = Field(description="Throughput with `value` over with `baseline`; null without 2 rounds.")
    low: Positive | None = Field(description="95% interval of the ratio, over rounds.")
    high: Positive | None = None
    rounds: int = Field(ge=0, description="Rounds the interval rests on (one log ratio per round).")
    pairs: int = Field(ge=0, description="Case pairs that differ in this parameter alone.")
    method: str | None = None
    missing: list[str] = Field(default_factory=list, description="Cells without a counterpart, each said.")


class ResultsDoc(Record):
    """A results file."""

    schema_version: Literal[1, 2] = Field(description="The format version; readers refuse versions they do not know.")
    suite: SuiteInfo
    run: RunInfo
    environment: Environment
    cases: list[CaseRecord]
    scaling: list[ScalingEntry] = Field(default_factory=list, description="Speedup and efficiency of dp/ddp cases.")
    rounds: RoundsInfo | None = Field(default=None, description="The rounds (version 2).")
    effects: list[EffectRecord] = Field(default_factory=list, description="Paired effects of swept parameters.")

    @property
    def trial_based(self) -> bool:
        """Whether intervals come from trials in rounds (version 2) or from one stretch's windows."""
        return self.schema_version >= 2


# --- bench ab ---------------------------------------------------------------------------------


class SideRecord(Record):
    """One side of an A/B run: which code, which interpreter."""

    label: Literal["base", "new"]
    spec: str = Field(description="What `--base`/`--new` named: a directory or a git revision.")
    directory: str = Field(description="The case processes' working directory, first on their import path.")
    revision: str | None = Field(default=None, description="The commit, when the side is a git revision.")
    python: str = Field(description="The interpreter of its case processes.")
    python_version: str | None = None
    torch: str | None = None


class StageRecord(Record):
    """One set of pairs: the first, or the fresh set that confirms a flagged case."""

    kind: Literal["initial", "confirmation"]
    launches: int = Field(ge=0, description="Launches in this set: fresh processes of both sides, each taking pairs.")
    pairs: int = Field(ge=0, description="Pairs measured in this set.")
    answer: Literal["unchanged", "regression", "improvement"] | None = Field(
        description="What this set alone says; null when its budget ran out undecided.")
    ratio: Positive | None = Field(description="Throughput new/base: Hodges-Lehmann over this set's launches.")
    low: Positive | None = None
    high: Positive | None = None
    p: float | None = Field(default=None, ge=0, le=1, description="Wilcoxon signed-rank test of no change.")
    sd: NonNeg | None = Field(default=None, description="Standard deviation of one launch's log ratio.")
    stop_reason: Literal["answer", "max_launches", "max_time"] = Field(description=(
        "`max_time`: the next launch would have ended after `deadline_s`."))
    measured_s: NonNeg = Field(description="Seconds both sides were measured in this set.")
    deadline_s: NonNeg | None = Field(default=None, description=(
        "Seconds this set was allowed: its share of the run's budget, times 1.5 when `extended` (absent in older "
        "files)."))
    extended: bool = Field(default=False, description=(
        "The set's time ran out while its estimate lay beyond the threshold, and it went on (up to 1.5 times its "
        "share) rather than leave a suspected change undecided."))


ABVerdict = Literal["unchanged", "regression", "improvement", "inconclusive", "failed", "skipped"]


class ABCaseRecord(Record):
    """One case of an A/B run: its pairs, in time order, and the verdict they support."""

    id: str
    params: Params
    verdict: ABVerdict
    message: str = Field(description="The verdict in a sentence, with the number of pairs it rests on.")
    error: str | None = Field(default=None, description="Why a case failed or was skipped, naming the side.")
    ratio: Positive | None = Field(default=None, description="Throughput new/base over every launch counted.")
    low: Positive | None = None
    high: Positive | None = None
    confidence: float | None = Field(default=None, gt=0, lt=1)
    p: float | None = Field(default=None, ge=0, le=1, description="Wilcoxon signed-rank p over every launch counted.")
    p_adjusted: float | None = Field(default=None, ge=0, le=1, description="Benjamini-Hochberg across the run's cases.")
    launches: int = Field(default=0, ge=0, description="Launches the verdict rests on (the unit of inference).")
    pairs: int = Field(default=0, ge=0, description="Pairs measured in those launches.")
    detectable: NonNeg | None = Field(
        default=None, description="Inconclusive: the smallest change these pairs could have flagged (0.05 = 5%).")
    launches_needed: int | None = Field(default=None, ge=0,
                                       description="Inconclusive: about how many launches would settle it.")
    stages: list[StageRecord] = Field(default_factory=list)
    log_ratios: list[float] = Field(default_factory=list, description="log(new/base) of every pair, in time order.")
    base_first: list[bool] = Field(default_factory=list, description="Whether the base side ran first, per pair.")
    stage_of_pair: list[int] = Field(default_factory=list, description="Index into `stages` of each pair.")
    launch_of_pair: list[int] = Field(default_factory=list, description="Index into `launch_ratios` of each pair.")
    launch_ratios: list[float] = Field(default_factory=list,
                                       description="log(new/base) of each launch: the median of its pairs'.")
    pair_start_s: list[float] = Field(default_factory=list, description="When each pair started, seconds after the first.")
    start: Literal["shared", "server", "interpreters"] | None = Field(default=None, description=(
        "How this case's launches started, where not as the run's `settings.start`."))
    fallback: str | None = Field(default=None, description=(
        "Why this case ran a process per side: the shared launch failed, naming the side and the error."))


class ABSettings(Record):
    threshold: Positive = Field(description="Changes smaller than this are `unchanged` (0.02 = 2%).")
    confidence: float = Field(gt=0, lt=1)
    pairs_per_launch: int | None = Field(default=None, ge=1, description=(
        "Pairs each launch takes (set in every file bench writes; by default 20 for shared launches, 10 "
        "otherwise)."))
    min_launches: int = Field(ge=2, description="Launches before the first look.")
    check_every: int = Field(ge=1, description="Launches between looks.")
    max_launches: int = Field(ge=2, description="Per set (the first, and a confirmation).")
    max_time: Positive = Field(description=(
        "Seconds of measuring per paired case, start-ups included, pooled over the run (`budget_s`); in files "
        "without `budget_s` (before 2026-12-02's pooled budget), seconds per case and set."))
    budget_s: Positive | None = Field(default=None, description=(
        "The run's measuring time: `max_time` times the cases paired. A case's first set may use what is left "
        "of it divided by the cases left; a confirmation as long as its first set was allowed."))
    half_windows: int = Field(ge=1, description="Windows in each half of a pair.")
    confirm: bool
    order_seed: int
    start: Literal["shared", "server", "interpreters"] | None = Field(default=None, description=(
        "How every launch started its processes: `shared`, one process forked from the run's server that "
        "builds both sides' models, each from its side's code (under one interpreter, the default); "
        "`server`, a process per side, both forked back to back from a fresh server per launch "
        "(`--separate-processes`); `interpreters`, a fresh interpreter per side (the sides run under "
        "different Pythons). Absent in files written before 2026-12-02, whose launches were forks of one "
        "server for the whole run, a process per side."))


class ABDoc(Record):
    """``ab.json``: what ``bench ab`` (or ``bench aa``) measured and concluded."""

    schema_version: Literal[1] = 1
    kind: Literal["ab", "aa"] = Field(description="`aa`: both sides the same code (a calibration).")
    suite: SuiteInfo
    run: RunInfo
    environment: Environment
    base: SideRecord
    new: SideRecord
    settings: ABSettings
    cases: list[ABCaseRecord]


def finite(value: Any) -> Any:
    """JSON has no NaN or Infinity: store them as null so every reader can parse the file."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dump(record: BaseModel) -> dict[str, Any]:
    """A record as JSON-ready data, non-finite numbers as null."""
    from pydantic_core import PydanticSerializationError

    try:
        data: dict[str, Any] = finite(record.model_dump(mode="json", exclude_none=False))
    except PydanticSerializationError as exc:
        # Ctrl-C (or SIGTERM, which the CLI turns into it) landing inside a custom serializer
        # reaches us wrapped in pydantic's error: unwrapped, the run stops and saves as it should,
        # instead of crashing with exit 1.
        if isinstance(exc.__cause__, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    return data


def json_schema() -> dict[str, Any]:
    schema = ResultsDoc.model_json_schema()
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": "https://bench.invalid/results.schema.json",
            "title": "bench results file",
            "description": "results.json written by `bench run`; generated from bench/records.py "
                           "(python -m bench.records). Version history: bench/results.py.",
            **{k: v for k, v in schema.items() if k != "title"}}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=1, sort_keys=False) + "\n"


if __name__ == "__main__":
    SCHEMA_PATH.write_text(schema_text(), encoding="utf-8")
    print(f"wrote {SCHEMA_PATH}")
