"""Case ids a person can read: built from what varies across a suite, inside a mapping-valued
parameter only the options that vary, a `label:` where the suite gives one, never an unset value;
unique and stable, with a note where a suffix was needed. The timm-style suites use a fake
`create_model` (tests/models/faketimm.py), not timm."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import ROOT, bench

from bench import runner
from bench import suite as suite_mod
from bench.errors import SuiteError
from bench.report.model import axis_labels
from bench.worker import build_step

TIMM = """
name: timm
defaults: {{batch_size: 4}}
matrix:
  model:
    - {{import: "faketimm:create_model", kwargs: {{model_name: resnet18, pretrained: false}}, input_shape: [3, 8, 8]}}
    - {{import: "faketimm:create_model", kwargs: {{model_name: vit_tiny_patch16_224, pretrained: false, img_size: 64}},
       input_shape: [3, 8, 8]}}
    - {{import: "faketimm:create_model", kwargs: {{model_name: mobilenetv3_small_100, pretrained: false}},
       input_shape: [3, 8, 8]}}
{extra}
"""


def ids(path: Path, *overrides: str) -> list[str]:
    return [c.id for c in suite_mod.load(path, list(overrides)).cases]


def test_timm_models_by_import_path_are_named_by_the_model_name_and_the_options_that_vary(
        write_suite: Any) -> None:
    # Only model_name (and img_size, for one) varies: the factory's name and pretrained: false,
    # the same everywhere, are left out, and a string that names every model stands alone.
    path = write_suite(TIMM.format(extra=""))
    assert ids(path) == ["resnet18", "vit_tiny_patch16_224-img_size=64", "mobilenetv3_small_100"]


def test_the_shipped_suites_keep_their_ids() -> None:
    # People keep results keyed by these ids: a change to the id rule must not rename them.
    expected = {
        "cnn": ["cnn-sgd-relu-bs64", "cnn-sgd-tanh-bs64", "cnn-sgd-sigmoid-bs64", "cnn-sgd_m0.9-relu-bs64",
                "cnn-sgd_m0.9-tanh-bs64", "cnn-sgd_m0.9-sigmoid-bs64", "cnn-adam-relu-bs64", "cnn-adam-tanh-bs64",
                "mlp-sgd-relu-bs256"],
        "gpu-smoke": ["cuda", "dp", "ddp-cuda-nccl"],
        "gpu-modern": ["bf16-no_compile-cuda", "fp16-no_compile-cuda", "fp32-compile-cuda",
                       "fp32-no_compile-fsdp-cuda-nccl", "bf16-no_compile-fsdp-cuda-nccl"],
        "mlp": [f"{o}-{a}" for o in ("sgd", "sgd_m0.9", "adam", "rmsprop") for a in ("relu", "tanh", "sigmoid")],
        "modern": [f"{m}-{rest}" for m in ("mlp", "cnn") for rest in (
            ["fp32-no_compile-no_channels_last-ga1-no_ckpt-cpu-ws1"]
            + ([f"fp32-no_compile-no_channels_last-ga1-no_ckpt-{mode}-ws{n}" for mode in ("ddp", "fsdp")
                for n in (1, 2)] if m == "cnn" else [])
            + ["fp32-no_compile-no_channels_last-ga1-ckpt-cpu-ws1", "fp32-no_compile-no_channels_last-ga4-no_ckpt-cpu-ws1",
               "fp32-no_compile-channels_last-ga1-no_ckpt-cpu-ws1", "fp32-compile-no_channels_last-ga1-no_ckpt-cpu-ws1",
               "bf16-no_compile-no_channels_last-ga1-no_ckpt-cpu-ws1"])],
        "pipeline": ["syn", "loader_w0_RandomHorizontalFlip_RandomRotation",
                     "loader_w1_RandomHorizontalFlip_RandomRotation"],
        "profile": ["torch", "pyspy"],
        "scaling": [f"{m}-{mode}-ws{n}" for m in ("mlp", "cnn") for mode in ("dp", "ddp") for n in (1, 2, 4, 8)],
        "smoke": ["mlp-sgd", "mlp-adam", "cnn-sgd", "cnn-adam"],
        "torchvision": ["resnet18", "mobilenet_v3_small"],
    }
    assert {p.stem for p in (ROOT / "suites").glob("*.yaml")} == set(expected)
    for name, case_ids in expected.items():
        assert ids(ROOT / "suites" / f"{name}.yaml") == case_ids, name


def test_a_label_names_a_model_optimizer_or_data_value_in_the_id_and_the_report(write_suite: Any) -> None:
    path = write_suite(TIMM.format(extra="""
    - {name: mlp, label: baseline}
  optimizer: [sgd, {name: adam, betas: [0.8, 0.9], label: adam_fast}]
  data: [synthetic, {name: loader, num_workers: 0, label: fakedata}]
"""))
    s = suite_mod.load(path)
    assert [c.id for c in s.cases if c.params.model.name == "mlp"] == [
        "baseline-sgd-syn", "baseline-sgd-fakedata", "baseline-adam_fast-syn", "baseline-adam_fast-fakedata"]
    assert s.cases[0].id == "resnet18-sgd-syn"
    models = [c.params_json()["model"] for c in s.cases[::4]]
    # The report names them by the same rule, with spaces.
    assert axis_labels(models) == ["resnet18", "vit_tiny_patch16_224 img_size=64", "mobilenetv3_small_100", "baseline"]


def test_a_label_is_not_passed_to_the_factory_and_unset_is_left_out_of_the_params(write_suite: Any) -> None:
    path = write_suite("""
name: labelled
defaults: {batch_size: 2}
matrix:
  model:
    - {import: "faketimm:create_model", kwargs: {model_name: resnet18}, input_shape: [3, 4, 4], label: r18}
    - {import: "usermodels:tiny", input_shape: [3, 4, 4]}
""")
    labelled, plain = suite_mod.load(path).cases
    assert labelled.id == "r18" and plain.id == "tiny"
    assert labelled.params.model.kwargs == {"model_name": "resnet18"}
    # create_model takes no `label`: building the step proves it was not passed.
    step, model = build_step(labelled.params, torch.device("cpu"), 2)
    step()
    assert sum(p.numel() for p in model.parameters()) == 3 * 16 * 8 + 8 + 8 * 10 + 10
    assert labelled.params_json()["model"]["label"] == "r18"
    assert "label" not in plain.params_json()["model"]
    assert "label" not in plain.params_json()["optimizer"] and "label" not in plain.params_json()["data"]


def test_inside_a_mapping_only_the_options_that_vary_between_values_of_one_name_are_shown(
        write_suite: Any) -> None:
    path = write_suite("""
name: options
defaults: {model: mlp}
matrix:
  optimizer:
    - {name: sgd, momentum: 0.9, weight_decay: 0.0001}
    - {name: sgd, momentum: 0.9, weight_decay: 0, foreach: false}
    - {name: adam, betas: [0.8, 0.9]}
""")
    # momentum is 0.9 in both sgd values and adam is the only adam: none of that is shown.
    assert ids(path) == ["sgd_wd0.0001", "sgd_wd0-foreach=false", "adam"]
    path = write_suite("""
name: loaders
defaults: {model: mlp}
matrix:
  data:
    - synthetic
    - {name: loader, size: 256}
    - {name: loader, size: 512, prefetch_factor: 4, num_workers: 0}
""")
    assert ids(path) == ["syn", "loader_w0-size=256", "loader_w0-size=512-prefetch_factor=4"]
    path = write_suite("""
name: mlps
matrix:
  model: [{name: mlp, hidden: 64}, {name: mlp, hidden: [64, 32]}, {name: mlp, hidden: 64, depth: 3}]
""")
    assert ids(path) == ["mlp-hidden=64", "mlp-hidden=64,32", "mlp-hidden=64-depth=3"]


def test_an_unset_value_never_shows_in_an_id(write_suite: Any) -> None:
    # include sets threads for the ddp case only; the cpu case's threads are unset (tNone before).
    path = write_suite("""
name: threads
defaults: {model: mlp}
matrix:
  mode: [cpu, ddp]
include:
  - {mode: ddp, threads: 2}
""")
    assert ids(path) == ["cpu", "ddp-t2"]
    # A case that differs only in unset values from the others is named after its model.
    path = write_suite("name: p\ndefaults: {model: cnn}\nmatrix: {profile: [none, torch]}\n")
    assert ids(path) == ["cnn", "torch"]


def test_flags_and_unnamed_settings_read_as_key_and_value(write_suite: Any) -> None:
    path = write_suite("""
name: flags
defaults: {model: mlp, mode: ddp}
matrix:
  static_graph: [false, true]
  measure: [{max_time: 2}, {max_time: 3}]
""")
    # In the order of the case parameters, as every id.
    assert ids(path) == ["measure.max_time=2-no_static_graph", "measure.max_time=3-no_static_graph",
                         "measure.max_time=2-static_graph", "measure.max_time=3-static_graph"]


def test_ids_that_still_read_alike_get_a_suffix_and_a_note_that_says_so(write_suite: Any) -> None:
    # Two loaders whose transforms differ in an option the id does not reach, and a label that
    # reads like another model's name.
    path = write_suite("""
name: clash
defaults: {batch_size: 4}
matrix:
  model: [cnn, {name: mlp, label: cnn}]
""")
    cases = suite_mod.load(path).cases
    assert [(c.id, c.note) for c in cases] == [
        ("cnn", None),
        ("cnn-2", "its parameters read like those of the earlier case 'cnn', hence the suffix -2 "
                  "(a label: on a model, optimizer or data value names it)")]
    # The note travels with the case: bench list and validate print it, the record keeps it.
    result = bench("list", path)
    assert (result.returncode, result.stdout.split()) == (0, ["cnn", "cnn-2"])
    assert result.stderr_lines == [f"bench: note: cnn-2: {cases[1].note}"]
    assert bench("validate", path).stderr_lines == [f"bench: note: cnn-2: {cases[1].note}"]
    record = runner._case_record(cases[1], "2025-01-01T00:00:00+00:00", 1.0, {"warnings": ["slow"]}, None)
    assert record.warnings == [cases[1].note, "slow"]


def test_a_suffix_never_takes_an_id_a_later_case_reads_as(write_suite: Any) -> None:
    path = write_suite("""
name: taken
defaults: {model: mlp}
matrix:
  lr: [0.1, 0.10000001]
include:
  - {lr: 0.2, seed: 1}
""")
    # Suffixes are made in case order, so the same suite always gives the same ids.
    assert ids(path) == ["lr0.1-seed0", "lr0.1-seed0-2", "lr0.2-seed1"]


def test_one_label_on_two_different_values_is_refused(write_suite: Any) -> None:
    path = write_suite("""
name: twice
matrix:
  model: [{name: mlp, label: small}, {name: cnn, label: small}]
""")
    with pytest.raises(SuiteError) as info:
        suite_mod.load(path)
    assert (info.value.path, info.value.message) == (
        "model.label", "'small' names two different model values; give each its own label")


@pytest.mark.parametrize(("value", "where", "message"), [
    ("{name: mlp, label: 'two words'}", "matrix.model[0].label",
     "label 'two words' must be 1 to 64 letters, digits and . _ + = , (starting with a letter or digit)"),
    ("{name: mlp, label: a-b}", "matrix.model[0].label", "label 'a-b' must be 1 to 64"),
    ("{name: mlp, label: 7}", "matrix.model[0].label", "Input should be a valid string"),
    ("{import: 'faketimm:create_model', input_shape: [3, 4, 4], label: ''}", "matrix.model[0].label",
     "label '' must be 1 to 64"),
])
def test_a_bad_label_is_refused_with_its_key_path(write_suite: Any, value: str, where: str, message: str) -> None:
    path = write_suite(f"name: bad\nmatrix:\n  model: [{value}]\n")
    with pytest.raises(SuiteError) as info:
        suite_mod.load(path)
    assert info.value.path == where
    assert info.value.message.startswith(message)


def test_a_transform_takes_no_label(write_suite: Any) -> None:
    path = write_suite("""
name: t
defaults: {model: mlp}
matrix:
  data: [{name: loader, transforms: [{name: RandomRotation, degrees: 10, label: rot}]}]
""")
    with pytest.raises(SuiteError) as info:
        suite_mod.load(path)
    assert (info.value.path, info.value.message) == ("matrix.data[0].transforms[0].label", "unknown key")


def test_the_readmes_timm_example_gives_the_ids_it_states(write_suite: Any) -> None:
    # The README's suite, with the fake create_model in place of timm's.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    block = next(b for b in readme.split("```yaml\n")[1:] if '"timm:create_model"' in b).split("```")[0]
    path = write_suite(block.replace('"timm:create_model"', '"faketimm:create_model"'))
    stated = ["resnet18", "vit_tiny_patch16_224-img_size=64", "mobilenetv3_small_100"]
    assert "the ids are `resnet18`,\n`vit_tiny_patch16_224-img_size=64` and `mobilenetv3_small_100`" in readme
    assert ids(path) == stated


def test_a_minus_sign_inside_a_value_never_reads_as_a_separator(write_suite: Any) -> None:
    # "-" separates the parts of an id; a negative seed keeps the id it always had.
    path = write_suite("name: seeds\ndefaults: {model: mlp}\nmatrix: {seed: [-1, 1]}\n")
    assert ids(path) == ["seed_1", "seed1"]
