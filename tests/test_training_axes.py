"""The training axes (precision, compile, channels_last, grad_accum, activation_checkpointing) and
mode fsdp: how each changes the step, checked in this process on the smallest models, and every
one end to end through `bench run` on the CPU, fsdp at world size 2 over gloo beside ddp in the
scaling analysis. Bad values are in the corpus of tests/data/bad/suites (exit 2, one line)."""

from __future__ import annotations

import json
import textwrap
import typing
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import bench
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from bench import training
from bench.components import MODES
from bench.launch import Cluster, skip_reason
from bench.models import build_model
from bench.models.checkpointing import Checkpointed
from bench.records import ResultsDoc
from bench.scaling import analyze
from bench.suite import Case, CaseParams, Mode, case_ids, dump_params
from bench.worker import Skip, build_step

TINY = ["--set", "measure.max_time=0.6", "--set", "measure.min_time=0.1", "--set", "measure.warmup_steps=1",
        "--set", "measure.min_rounds=2", "--set", "measure.trial_time=0.1", "--set", "measure.window_time=0.02"]


def params(**kwargs: Any) -> CaseParams:
    kwargs.setdefault("model", {"name": "mlp", "kwargs": {"hidden": 8}})
    kwargs.setdefault("batch_size", 4)
    return CaseParams.model_validate(kwargs)


def forward_outputs(module: torch.nn.Module) -> list[torch.Tensor]:
    """The outputs of each call of ``module``, as it is called."""
    seen: list[torch.Tensor] = []
    module.register_forward_hook(lambda m, args, out: seen.append(out))
    return seen


# --- in this process: what each axis does to the step ------------------------------------------


def test_bf16_runs_forward_and_loss_under_autocast_while_the_weights_stay_fp32() -> None:
    step, model = build_step(params(precision="bf16"), torch.device("cpu"), 4)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    outputs = forward_outputs(head)
    step()
    assert outputs[0].dtype == torch.bfloat16
    assert head.weight.dtype == torch.float32


def test_fp32_runs_without_autocast() -> None:
    step, model = build_step(params(), torch.device("cpu"), 4)
    head = [m for m in model.modules() if isinstance(m, torch.nn.Linear)][-1]
    outputs = forward_outputs(head)
    step()
    assert outputs[0].dtype == torch.float32


def test_fp16_on_a_cpu_is_skipped_with_the_reason() -> None:
    with pytest.raises(Skip, match="precision fp16 needs CUDA"):
        build_step(params(precision="fp16"), torch.device("cpu"), 4)


def test_a_gpu_without_bfloat16_cannot_run_bf16_and_fp16_needs_cuda() -> None:
    assert training.precision_skip_reason("bf16", "cuda", bf16_supported=False) == \
        "precision bf16: this GPU does not support bfloat16"
    assert training.precision_skip_reason("fp16", "cuda") is None
    assert training.precision_skip_reason("fp16", "cpu") is not None
    assert training.precision_skip_reason("bf16", "cpu") is None


def test_fp16_fsdp_on_cpus_is_skipped_before_any_rank_starts() -> None:
    case = Case("c", params(mode="fsdp", world_size=2, precision="fp16", device="cpu"))
    reason = skip_reason(case, Cluster(), cores=8, gpus=0)
    assert reason is not None and "fp16 needs CUDA" in reason


def test_channels_last_converts_the_model_and_its_inputs() -> None:
    step, model = build_step(params(model="cnn", channels_last=True), torch.device("cpu"), 4)
    conv = next(m for m in model.modules() if isinstance(m, torch.nn.Conv2d))
    inputs: list[torch.Tensor] = []
    conv.register_forward_pre_hook(lambda m, args: inputs.append(args[0]))
    step()
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()
    assert inputs[0].is_contiguous(memory_format=torch.channels_last)
    assert not inputs[0].is_contiguous()


def test_grad_accum_runs_its_micro_batches_then_one_optimizer_step() -> None:
    step, model = build_step(params(grad_accum=3), torch.device("cpu"), 4)
    forwards = forward_outputs(model)
    steps: list[int] = []
    handle = register_optimizer_step_post_hook(lambda opt, a, k: steps.append(1))
    try:
        step()
        step()
    finally:
        handle.remove()
    assert len(forwards) == 6
    assert len(steps) == 2


def test_grad_accum_gradients_are_the_mean_over_the_steps_samples() -> None:
    # Three micro-batches of the same synthetic batch: the accumulated gradient equals one batch's.
    three_step, _ = build_step(params(grad_accum=3), torch.device("cpu"), 4)
    single_step, _ = build_step(params(), torch.device("cpu"), 4)
    grads: dict[str, list[torch.Tensor]] = {}
    for name, run in (("three", three_step), ("single", single_step)):
        captured: list[torch.Tensor] = []
        hook = register_optimizer_step_pre_hook(
            lambda opt, a, k, out=captured: out.extend(p.grad.clone() for g in opt.param_groups for p in g["params"]))
        try:
            run()
        finally:
            hook.remove()
        grads[name] = captured
    for a, b in zip(grads["three"], grads["single"], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_builtin_models_checkpoint_each_block() -> None:
    mlp = build_model("mlp", None, {"hidden": 8, "depth": 3}, "relu", 10, checkpointing=True)
    cnn = build_model("cnn", None, {}, "relu", 10, checkpointing=True)
    assert sum(isinstance(m, Checkpointed) for m in mlp.modules()) == 3
    assert sum(isinstance(m, Checkpointed) for m in cnn.modules()) == 4
    plain = build_model("mlp", None, {"hidden": 8}, "relu", 10)
    assert not any(isinstance(m, Checkpointed) for m in plain.modules())


def test_a_checkpointed_block_runs_its_forward_again_in_backward() -> None:
    step, model = build_step(params(activation_checkpointing=True), torch.device("cpu"), 4)
    block = next(m for m in model.modules() if isinstance(m, Checkpointed)).inner
    calls: list[int] = []
    original = block.forward

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)  # (module hooks do not fire in the recomputation, so count here)
        out: torch.Tensor = original(x)
        return out

    block.forward = counted  # type: ignore[method-assign]
    step()
    assert len(calls) == 2  # forward, and the recomputation in backward


def test_a_user_model_has_its_top_level_children_with_parameters_checkpointed() -> None:
    model = build_model(None, "usermodels:two_blocks", {}, "relu", 10, checkpointing=True)
    assert isinstance(model.first, Checkpointed) and isinstance(model.head, Checkpointed)
    assert not isinstance(model.act, Checkpointed)


def test_a_user_factory_that_takes_activation_checkpointing_does_its_own() -> None:
    model = build_model(None, "usermodels:own_checkpointing", {}, "relu", 10, checkpointing=True)
    assert model.own_checkpointing is True
    assert not any(isinstance(m, Checkpointed) for m in model.modules())


def test_ddp_synchronises_gradients_on_the_last_micro_batch_only(tmp_path: Path) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        calls: list[int] = []

        def wrap(model: torch.nn.Module) -> torch.nn.Module:
            ddp = DDP(model)

            # Unannotated: DDP compares the annotation with dist.GradBucket, and postponed
            # annotations are strings.
            def hook(state, bucket):  # type: ignore[no-untyped-def]
                calls.append(bucket.index())
                fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
                fut.set_result(bucket.buffer())
                return fut

            ddp.register_comm_hook(None, hook)
            return ddp

        step, model = build_step(params(mode="ddp", grad_accum=4), torch.device("cpu"), 4, wrap)
        forwards = forward_outputs(model)
        step()
        assert len(forwards) == 4
        buckets = len(set(calls))
        assert len(calls) == buckets  # one all-reduce per bucket, in the fourth micro-batch alone
    finally:
        dist.destroy_process_group()


def test_fsdp_turns_gradient_sync_off_for_all_but_the_last_micro_batch() -> None:
    class Sharded(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.sync: list[bool] = []

        def set_requires_gradient_sync(self, value: bool) -> None:
            self.sync.append(value)

    model = Sharded()
    for i in range(3):
        with training.sync_context(model, last=i == 2):
            pass
    assert model.sync == [False, False, True]


def test_compile_happens_before_the_warm_up_and_never_inside_a_trial() -> None:
    from torch._dynamo.utils import counters

    from bench.session import CaseSession

    p = params(compile={"backend": "aot_eager"}, measure={"warmup_steps": 1, "window_time": 0.01})
    session = CaseSession(p, torch.device("cpu"), {}, batch=4, samples_per_step=4, wrap=None, threads=1, warnings=[])
    ready = session.prepare()
    assert ready["compile_s"] > 0
    assert ready["graph_breaks"] == 0
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1
    session.trial(0.05, collect=False)
    assert counters["stats"]["unique_graphs"] == graphs


def test_a_model_that_is_not_compiled_has_no_compile_time() -> None:
    from bench.session import CaseSession

    p = params(measure={"warmup_steps": 1, "window_time": 0.01})
    session = CaseSession(p, torch.device("cpu"), {}, batch=4, samples_per_step=4, wrap=None, threads=1, warnings=[])
    assert "compile_s" not in session.prepare()


# --- the suite side: ids, labels, components ------------------------------------------------------


def test_compile_values_read_as_switches_and_options_in_case_ids() -> None:
    values = [params(compile=False), params(compile=True), params(compile={"mode": "max-autotune"})]
    assert [i for i, _ in case_ids(values)] == ["no_compile", "compile", "compile-mode=max_autotune"]  # "-" separates id parts


def test_compile_reads_back_as_written() -> None:
    assert params().model_dump(mode="json", by_alias=True)["compile"] is False
    assert params(compile=True).model_dump(mode="json", by_alias=True)["compile"] == {
        "mode": None, "fullgraph": False, "dynamic": None, "backend": "inductor"}
    again = CaseParams.model_validate(dump_params(params(compile={"backend": "eager"})))
    assert again.compile.enabled and again.compile.backend == "eager"


def test_new_flags_and_accumulation_have_short_id_parts() -> None:
    values = [params(), params(grad_accum=4, activation_checkpointing=True)]
    assert [i for i, _ in case_ids(values)] == ["ga1-no_ckpt", "ga4-ckpt"]


def test_every_mode_has_a_line_in_the_components_list() -> None:
    assert MODES.names() == sorted(typing.get_args(Mode))


def test_bench_list_components_lists_modes_precisions_and_compile_options() -> None:
    result = bench("list", "--components")
    assert result.returncode == 0, result.stderr
    for line in ("modes:", "  fsdp ", "precisions:", "  bf16 ", "  fp16 ", "compile modes:", "  max-autotune ",
                 "compile: false (default), true, or {mode, fullgraph, dynamic, backend}"):
        assert line in result.stdout


# --- end to end: every axis through `bench run` on the CPU --------------------------------------

SUITE = """\
    name: axes
    defaults:
      model: {name: mlp, hidden: 16}
      batch_size: 8
      threads: 1
      timeout: 120
    include:
      - {lr: 0.01}
      - {precision: bf16}
      - {precision: fp16}
      - {compile: true}
      - {model: cnn, channels_last: true}
      - {grad_accum: 3}
      - {model: cnn, activation_checkpointing: true}
      - {mode: ddp, world_size: 1}
      - {mode: ddp, world_size: 2}
      - {mode: fsdp, world_size: 1}
      - {mode: fsdp, world_size: 2}
      - {mode: fsdp, world_size: 2, precision: bf16, reshard_after_forward: false, grad_accum: 2}
"""


@pytest.fixture(scope="module")
def axes_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Path]:
    folder = tmp_path_factory.mktemp("axes")
    suite = folder / "axes.yaml"
    suite.write_text(textwrap.dedent(SUITE), encoding="utf-8")
    out = folder / "out"
    result = bench("run", suite, "--out", out, *TINY, timeout=600)
    return result, out


def _cases(out: Path) -> dict[str, Any]:
    doc = ResultsDoc.model_validate(json.loads((out / "results.json").read_text(encoding="utf-8")))
    return {_key(c.params.as_dict()): c for c in doc.cases}


def _key(p: dict[str, Any]) -> str:
    """A case by what sets it apart from the baseline (ids are long here, on purpose)."""
    parts = [f"{k}={p[k]}" for k in ("precision", "channels_last", "grad_accum", "activation_checkpointing", "mode",
                                     "world_size", "reshard_after_forward")
             if p[k] != CaseParams.model_fields[k].default]
    if p["compile"]:
        parts.append("compile")
    return ",".join(parts) or "base"


def test_every_axis_runs_end_to_end_on_the_cpu(axes_run: tuple[Any, Path]) -> None:
    result, out = axes_run
    assert result.returncode == 0, result.stderr
    cases = _cases(out)
    assert set(cases) == {"base", "precision=bf16", "precision=fp16", "compile", "channels_last=True",
                          "grad_accum=3", "activation_checkpointing=True", "mode=ddp", "mode=ddp,world_size=2",
                          "mode=fsdp", "mode=fsdp,world_size=2",
                          "precision=bf16,grad_accum=2,mode=fsdp,world_size=2,reshard_after_forward=False"}
    skipped = {k for k, c in cases.items() if c.status == "skipped"}
    assert skipped == {"precision=fp16"}
    assert "precision fp16 needs CUDA" in (cases["precision=fp16"].error or "")
    assert all(c.ok for k, c in cases.items() if k != "precision=fp16"), {k: c.error for k, c in cases.items()}


def test_a_compiled_case_records_its_compile_time_apart_from_its_steps(axes_run: tuple[Any, Path]) -> None:
    result, out = axes_run
    cases = _cases(out)
    compiled = cases["compile"].metrics
    assert compiled is not None and compiled.compile_s is not None and compiled.compile_s > 0
    assert compiled.graph_breaks == 0
    base = cases["base"].metrics
    assert base is not None and base.compile_s is None and base.graph_breaks is None
    # The terminal's summary and the report both show it.
    assert "compile s" in result.stdout
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "compile (s)" in html and "graph breaks" in html


def test_grad_accum_throughput_counts_every_micro_batch(axes_run: tuple[Any, Path]) -> None:
    case = _cases(axes_run[1])["grad_accum=3"]
    assert case.metrics is not None and case.samples is not None
    k = case.metrics.steps_per_window
    assert k is not None
    for thr, seconds in zip(case.samples.window_throughput, case.samples.window_s, strict=True):
        assert thr == pytest.approx(k * 8 * 3 / seconds, rel=1e-9)


def test_fsdp_global_throughput_is_all_ranks_samples_over_the_slowest_ranks_time(axes_run: tuple[Any, Path]) -> None:
    for key, accum in (("mode=fsdp,world_size=2", 1),
                       ("precision=bf16,grad_accum=2,mode=fsdp,world_size=2,reshard_after_forward=False", 2)):
        case = _cases(axes_run[1])[key]
        assert case.backend == "gloo"
        assert case.ranks is not None and [r.rank for r in case.ranks] == [0, 1]
        assert case.metrics is not None and case.samples is not None
        k = case.metrics.steps_per_window
        assert k is not None
        ranks = case.model_dump()["ranks"]
        for i, thr in enumerate(case.samples.window_throughput):
            slowest = max(r["window_s"][i] for r in ranks)
            assert thr == pytest.approx(2 * k * 8 * accum / slowest, rel=1e-9)


def test_fsdp_is_in_the_scaling_analysis_beside_ddp(axes_run: tuple[Any, Path]) -> None:
    out = axes_run[1]
    doc = json.loads((out / "results.json").read_text(encoding="utf-8"))
    entries = {(e["mode"], e["world_size"]): e for e in doc["scaling"]}
    assert set(entries) == {("ddp", 1), ("ddp", 2), ("fsdp", 1), ("fsdp", 2)}
    assert entries[("fsdp", 1)]["efficiency"] == pytest.approx(1.0)
    assert entries[("fsdp", 2)]["baseline_case"] == entries[("fsdp", 1)]["case_id"]
    assert entries[("fsdp", 2)]["group"] == entries[("ddp", 2)]["group"]
    again = analyze(ResultsDoc.model_validate(doc).cases)
    assert [(e.mode, e.world_size) for e in again] == [("ddp", 1), ("ddp", 2), ("fsdp", 1), ("fsdp", 2)]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "FSDP: throughput" in html and "DDP: throughput" in html


def test_a_compiler_error_fails_the_case_with_the_compilers_message(tmp_path: Path) -> None:
    suite = tmp_path / "bad_backend.yaml"
    suite.write_text("name: c\ndefaults: {model: {name: mlp, hidden: 8}, batch_size: 4, threads: 1}\n"
                     "matrix:\n  compile: [{backend: no_such_backend}]\n", encoding="utf-8")
    out = tmp_path / "out"
    result = bench("run", suite, "--out", out, *TINY)
    assert result.returncode == 1, result.stderr
    case = json.loads((out / "results.json").read_text(encoding="utf-8"))["cases"][0]
    assert case["status"] == "failed"
    assert case["error"].startswith("torch.compile failed: ")
    assert "no_such_backend" in case["error"]


def test_the_modern_suite_sweeps_each_axis_alone_per_model() -> None:
    from bench.suite import load

    suite = load(Path(__file__).resolve().parents[1] / "suites" / "modern.yaml")
    by_model: dict[str, list[CaseParams]] = {}
    for case in suite.cases:
        by_model.setdefault(str(case.params.model.name), []).append(case.params)
    for model, cases in by_model.items():
        single = [p for p in cases if p.mode == "cpu"]
        changed = sorted(_key(dump_params(p)) for p in single)
        assert changed == sorted(["base", "precision=bf16", "compile", "channels_last=True", "grad_accum=4",
                                  "activation_checkpointing=True"]), model
    parallel = sorted((p.mode, p.world_size) for p in by_model["cnn"] if p.mode != "cpu")
    assert parallel == [("ddp", 1), ("ddp", 2), ("fsdp", 1), ("fsdp", 2)]



def test_compile_values_read_as_yes_no_and_options_in_the_report_and_effects() -> None:
    from bench.labels import axis_labels

    enabled = dump_params(params(compile=True))["compile"]
    tuned = dump_params(params(compile={"mode": "max-autotune"}))["compile"]
    assert axis_labels([False, enabled, tuned]) == ["no", "yes", "mode=max-autotune"]
    assert axis_labels([False, enabled]) == ["no", "yes"]


def test_results_written_before_the_training_axes_read_as_their_defaults() -> None:
    from bench.records import Params

    old = Params.model_validate({"model": {"name": "mlp"}, "optimizer": {"name": "sgd"}, "activation": "relu",
                                 "loss": "cross_entropy", "data": {"name": "synthetic"}, "mode": "ddp",
                                 "world_size": 2, "batch_size": 8, "lr": 0.01})
    assert (old.precision, old.compile, old.channels_last, old.grad_accum, old.activation_checkpointing,
            old.reshard_after_forward) == ("fp32", False, False, 1, False, None)
