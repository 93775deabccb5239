"""Suite loading: matrix expansion with GitHub Actions' exclude/include semantics, defaults,
overrides, case selection and ids, and every class of bad input through the CLI."""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, bench

from bench import suite as suite_mod
from bench.errors import SuiteError
from bench.models import check_import_path

BAD = ROOT / "tests" / "data" / "bad" / "suites_core"  # the core classes; tests/test_bad_input.py has the rest


def combos(s: suite_mod.Suite, *keys: str) -> list[tuple[Any, ...]]:
    """The cases as tuples of readable parameter values, in case order."""
    out = []
    for case in s.cases:
        row = []
        for key in keys:
            value = getattr(case.params, key)
            if key == "optimizer":  # as the ids of these suites read it: sgd, sgd_m0.9
                value = "_".join([value.name, *(f"m{v:g}" for v in value.kwargs.values())])
            row.append(value)
        out.append(tuple(row))
    return out


def test_matrix_expands_as_a_cartesian_product_in_axis_order(write_suite: Any) -> None:
    path = write_suite("""
name: product
defaults: {model: mlp}
matrix:
  optimizer: [sgd, adam]
  activation: [relu, tanh, gelu]
""")
    s = suite_mod.load(path)
    assert combos(s, "optimizer", "activation") == [
        ("sgd", "relu"), ("sgd", "tanh"), ("sgd", "gelu"),
        ("adam", "relu"), ("adam", "tanh"), ("adam", "gelu"),
    ]
    assert s.name == "product"
    assert s.path == str(path)


def test_exclude_removes_every_combination_it_partially_matches(write_suite: Any) -> None:
    path = write_suite("""
name: excl
defaults: {model: mlp}
matrix:
  optimizer: [sgd, adam]
  activation: [relu, sigmoid]
  batch_size: [8, 16]
exclude:
  - {optimizer: adam, activation: sigmoid}
""")
    s = suite_mod.load(path)
    got = combos(s, "optimizer", "activation", "batch_size")
    assert len(got) == 6
    assert ("adam", "sigmoid", 8) not in got
    assert ("adam", "sigmoid", 16) not in got
    assert ("sgd", "sigmoid", 16) in got


def test_exclude_matches_an_optimizer_with_options_only_when_the_options_match(write_suite: Any) -> None:
    path = write_suite("""
name: excl
defaults: {model: mlp}
matrix:
  optimizer: [sgd, {name: sgd, momentum: 0.9}]
  activation: [relu, tanh]
exclude:
  - {optimizer: {name: sgd, momentum: 0.9}, activation: tanh}
""")
    assert combos(suite_mod.load(path), "optimizer", "activation") == [
        ("sgd", "relu"), ("sgd", "tanh"), ("sgd_m0.9", "relu")]


def test_include_follows_github_actions_semantics(write_suite: Any) -> None:
    # GitHub's documented example, with fruit -> optimizer, animal -> activation, color ->
    # batch_size and shape -> lr: an entry extends every original combination it fits without
    # overwriting an original value, may overwrite a value an earlier include added, and else
    # becomes a new case; a later include never extends a case that an include created.
    path = write_suite("""
name: gh
defaults: {model: mlp, batch_size: 4}
matrix:
  optimizer: [sgd, adam]
  activation: [tanh, relu]
include:
  - {batch_size: 8}
  - {batch_size: 16, activation: tanh}
  - {optimizer: sgd, lr: 0.5}
  - {optimizer: adagrad}
  - {optimizer: adagrad, activation: tanh}
""")
    s = suite_mod.load(path)
    assert combos(s, "optimizer", "activation", "batch_size", "lr") == [
        ("sgd", "tanh", 16, 0.5),
        ("sgd", "relu", 8, 0.5),
        ("adam", "tanh", 16, 0.01),
        ("adam", "relu", 8, 0.01),
        ("adagrad", "relu", 4, 0.01),   # new case: defaults fill what it does not name
        ("adagrad", "tanh", 4, 0.01),   # new case: did not extend the adagrad case above
    ]


def test_include_never_overwrites_an_original_axis_value(write_suite: Any) -> None:
    path = write_suite("""
name: gh
defaults: {model: mlp}
matrix:
  optimizer: [sgd]
  activation: [relu]
include:
  - {optimizer: sgd, activation: tanh, batch_size: 7}
""")
    # It names activation tanh, which would overwrite relu: so it becomes a case of its own.
    assert combos(suite_mod.load(path), "optimizer", "activation", "batch_size") == [
        ("sgd", "relu", 64), ("sgd", "tanh", 7)]


def test_include_applies_after_exclude(write_suite: Any) -> None:
    path = write_suite("""
name: gh
defaults: {model: mlp}
matrix:
  optimizer: [sgd, adam]
exclude:
  - {optimizer: adam}
include:
  - {optimizer: adam, batch_size: 3}
""")
    assert combos(suite_mod.load(path), "optimizer", "batch_size") == [("sgd", 64), ("adam", 3)]


def test_an_include_that_repeats_a_case_adds_nothing(write_suite: Any) -> None:
    path = write_suite("""
name: gh
defaults: {model: mlp}
matrix:
  optimizer: [sgd]
include:
  - {optimizer: adagrad}
  - {optimizer: adagrad}
""")
    assert [c.id for c in suite_mod.load(path).cases] == ["sgd", "adagrad"]


def test_defaults_apply_to_every_case_and_the_matrix_overrides_them(write_suite: Any) -> None:
    path = write_suite("""
name: d
defaults:
  model: cnn
  batch_size: 32
  lr: 0.1
  loss: mse
  measure: {max_time: 2, min_time: 0.5}
  timeout: 30
matrix:
  lr: [0.2, 0.3]
""")
    s = suite_mod.load(path)
    assert [c.params.lr for c in s.cases] == [0.2, 0.3]
    for case in s.cases:
        p = case.params
        assert (p.model.name, p.batch_size, p.loss, p.timeout) == ("cnn", 32, "mse", 30)
        assert (p.measure.max_time, p.measure.min_time) == (2, 0.5)
        # Keys the suite does not set keep their documented defaults.
        assert (p.measure.warmup_steps, p.measure.target_ci, p.optimizer.name, p.mode) == (10, 0.01, "sgd", "cpu")


def test_set_overrides_a_parameter_in_every_case_including_includes() -> None:
    s = suite_mod.load(ROOT / "suites" / "cnn.yaml", ["batch_size=16", "lr=0.5"])
    assert {(c.params.batch_size, c.params.lr) for c in s.cases} == {(16, 0.5)}
    assert len(s.cases) == 9


def test_set_with_a_dotted_key_changes_one_nested_setting_and_keeps_the_rest() -> None:
    s = suite_mod.load(ROOT / "suites" / "cnn.yaml", ["measure.max_time=2"])
    for case in s.cases:
        m = case.params.measure
        assert (m.max_time, m.min_time, m.warmup_steps, m.target_ci) == (2, 1.0, 10, 0.01)


def test_set_can_add_an_optimizer_option_through_its_name() -> None:
    s = suite_mod.load(ROOT / "suites" / "smoke.yaml", ["optimizer=sgd", "optimizer.momentum=0.5"])
    assert [c.id for c in s.cases] == ["mlp", "cnn"]
    assert [(c.params.optimizer.name, c.params.optimizer.kwargs) for c in s.cases] == [("sgd", {"momentum": 0.5})] * 2


def test_optimizer_options_are_checked_against_their_types_and_numbers_in_strings_are_converted(
        write_suite: Any) -> None:
    # YAML 1.1 reads `1e-4` (no dot) as a string; torch would fail on it when the case runs.
    path = write_suite("""
name: x
defaults: {model: mlp}
matrix:
  optimizer: [{name: sgd, weight_decay: 1e-4, nesterov: true, momentum: 1}, {name: adam, betas: [0.8, 0.9]}]
""")
    kwargs = [c.params.optimizer.kwargs for c in suite_mod.load(path).cases]
    assert kwargs == [{"weight_decay": 1e-4, "nesterov": True, "momentum": 1.0}, {"betas": (0.8, 0.9)}]
    assert isinstance(kwargs[0]["weight_decay"], float)


@pytest.mark.parametrize(("option", "where", "message"), [
    ("{name: sgd, momentum: fast}", "matrix.optimizer[0].momentum", "Input should be a valid number"),
    ("{name: sgd, kwargs: {momentum: fast}}", "matrix.optimizer[0].kwargs.momentum", "Input should be a valid number"),
    ("{name: sgd, momentum: true}", "matrix.optimizer[0].momentum", "Input should be a number, not a boolean"),
    ("{name: sgd, momentum: .nan}", "matrix.optimizer[0].momentum", "Input should be a finite number"),
    ("{name: sgd, nesterov: 1}", "matrix.optimizer[0].nesterov", "Input should be a valid boolean"),
    ("{name: adam, betas: [0.9]}", "matrix.optimizer[0].betas[1]", "required item is missing"),
    ("{name: adam, lr: 0.1}", "matrix.optimizer[0].lr", "set the learning rate with the case parameter 'lr'"),
    ("{name: adamw, decoupled_weight_decay: true}", "matrix.optimizer[0].decoupled_weight_decay",
     "unknown option 'decoupled_weight_decay' for optimizer 'adamw' (choose from: amsgrad, betas, capturable, "
     "differentiable, eps, foreach, fused, maximize, weight_decay)"),
])
def test_an_optimizer_option_of_the_wrong_type_or_name_is_refused_at_its_key(
        write_suite: Any, option: str, where: str, message: str) -> None:
    path = write_suite(f"name: x\ndefaults: {{model: mlp}}\nmatrix:\n  optimizer: [{option}]\n")
    with pytest.raises(SuiteError) as info:
        suite_mod.load(path)
    assert info.value.path == where
    assert info.value.message.startswith(message), info.value.message


@pytest.mark.parametrize(("override", "where", "message"), [
    ("colour=red", "--set colour", "unknown parameter 'colour' (choose from: model, optimizer"),
    ("batch_size=abc", "--set batch_size", "valid integer"),
    ("batch_size=0", "--set batch_size", "greater than 0"),
    ("measure.bogus=1", "--set measure.bogus", "unknown key"),
    ("measure.max_time=abc", "--set measure.max_time", "valid number"),
    ("measure.max_time.x=1", "--set measure.max_time.x", "'max_time' is not a mapping"),
    ("batch_size.x=1", "--set batch_size", "is not a mapping (int), so it has no key 'x'"),
    ("nokey", "--set nokey", "expected key=value"),
    ("optimizer.momentum=fast", "--set optimizer.momentum", "valid number"),
    ("optimizer.warp=1", "--set optimizer.warp", "unknown option 'warp' for optimizer 'sgd'"),
])
def test_a_bad_override_names_the_set_option_and_the_key(override: str, where: str, message: str) -> None:
    with pytest.raises(SuiteError) as info:
        suite_mod.load(ROOT / "suites" / "smoke.yaml", [override])
    assert info.value.path == where
    assert message in info.value.message


def test_only_selects_by_substring_or_by_glob() -> None:
    s = suite_mod.load(ROOT / "suites" / "cnn.yaml")
    assert [c.id for c in s.select("adam").cases] == ["cnn-adam-relu-bs64", "cnn-adam-tanh-bs64"]
    assert [c.id for c in s.select("*m0.9*").cases] == [
        "cnn-sgd_m0.9-relu-bs64", "cnn-sgd_m0.9-tanh-bs64", "cnn-sgd_m0.9-sigmoid-bs64"]
    assert [c.id for c in s.select("mlp-*").cases] == ["mlp-sgd-relu-bs256"]
    assert s.select(None) is s
    with pytest.raises(SuiteError, match="no case id matches 'zzz'"):
        s.select("zzz")


def test_the_cnn_suite_gives_readable_ids_from_the_parameters_that_vary() -> None:
    s = suite_mod.load(ROOT / "suites" / "cnn.yaml")
    # mode (always cpu), loss and lr do not vary, so they are not in the ids.
    assert [c.id for c in s.cases] == [
        "cnn-sgd-relu-bs64",
        "cnn-sgd-tanh-bs64",
        "cnn-sgd-sigmoid-bs64",
        "cnn-sgd_m0.9-relu-bs64",
        "cnn-sgd_m0.9-tanh-bs64",
        "cnn-sgd_m0.9-sigmoid-bs64",
        "cnn-adam-relu-bs64",
        "cnn-adam-tanh-bs64",
        "mlp-sgd-relu-bs256",
    ]


def test_case_ids_are_stable_across_loads() -> None:
    first = [c.id for c in suite_mod.load(ROOT / "suites" / "cnn.yaml").cases]
    second = [c.id for c in suite_mod.load(ROOT / "suites" / "cnn.yaml").cases]
    assert first == second


def test_case_ids_stay_unique_when_two_labels_coincide(write_suite: Any) -> None:
    # 0.1 and 0.10000001 both print as lr0.1.
    path = write_suite("""
name: clash
defaults: {model: mlp}
matrix:
  lr: [0.1, 0.10000001, 0.2]
""")
    ids = [c.id for c in suite_mod.load(path).cases]
    assert ids == ["lr0.1", "lr0.1-2", "lr0.2"]


def test_a_suite_with_a_single_case_is_named_after_its_model(write_suite: Any) -> None:
    path = write_suite("name: one\nmatrix: {model: [cnn]}\n")
    assert [c.id for c in suite_mod.load(path).cases] == ["cnn"]


def test_a_ten_thousand_case_matrix_expands_with_unique_ids(write_suite: Any) -> None:
    path = write_suite(f"""
name: big
defaults: {{model: mlp}}
matrix:
  batch_size: {list(range(1, 26))}
  seed: {list(range(20))}
  optimizer: [sgd, adam, adamw, rmsprop, adagrad]
  activation: [relu, tanh, sigmoid, gelu]
""")
    s = suite_mod.load(path)
    assert len(s.cases) == 10_000
    assert len({c.id for c in s.cases}) == 10_000
    assert s.cases[0].id == "sgd-relu-bs1-seed0"
    assert s.cases[-1].id == "adagrad-gelu-bs25-seed19"


def test_a_matrix_over_the_case_limit_is_refused_before_expansion(write_suite: Any) -> None:
    path = write_suite(f"""
name: huge
defaults: {{model: mlp}}
matrix:
  batch_size: {list(range(1, 101))}
  seed: {list(range(1001))}
""")
    with pytest.raises(SuiteError) as info:
        suite_mod.load(path)
    assert info.value.path == "matrix"
    assert "expands to 100100 cases (limit 100000)" in info.value.message


def test_an_unknown_torchvision_model_lists_the_torchvision_models() -> None:
    # In-process: checking torchvision names imports torchvision, which costs seconds in a new process.
    with pytest.raises(SuiteError) as info:
        suite_mod.load(BAD / "unknown_torchvision_model.yaml")
    assert info.value.path == "matrix.model[0]"
    assert info.value.message.startswith("unknown torchvision model 'resnet9000' (choose from: alexnet, ")
    assert "resnet18," in info.value.message


def test_an_import_path_may_name_a_factory_defined_in_a_branch_or_except_handler(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "branchy_models.py").write_text(
        "raise SystemExit('validation must not run this module')\n"
        "if True:\n    def in_if(): ...\n"
        "try:\n    import no_such_module_here\nexcept ImportError:\n    def in_handler(): ...\n"
        "with open(__file__):\n    in_with = None\n", encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("in_if", "in_handler", "in_with", "no_such_module_here"):
        check_import_path(f"branchy_models:{name}")
    with pytest.raises(ValueError, match="module 'branchy_models' defines no 'missing'"):
        check_import_path("branchy_models:missing")
    with pytest.raises(ValueError, match=r"must look like 'package\.module:factory'"):
        check_import_path("branchy_models.missing")


def test_an_import_path_resolves_in_the_directory_bench_runs_in_without_running_or_adding_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("raise SystemExit('validation must not run this')\n",
                                                 encoding="utf-8")
    (tmp_path / "pkg" / "models.py").write_text("def make(): ...\n", encoding="utf-8")
    (tmp_path / "single.py").write_text("def make(): ...\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    path_before = list(sys.path)
    check_import_path("pkg.models:make")
    check_import_path("single:make")
    assert sys.path == path_before
    assert "pkg" not in sys.modules
    with pytest.raises(ValueError, match=rf"package 'pkg' \({re.escape(str(tmp_path / 'pkg'))}\) has no module 'nope'"):
        check_import_path("pkg.nope:make")
    with pytest.raises(ValueError, match=r"'single' \(.*single\.py\) is a module, not a package"):
        check_import_path("single.sub:make")


def test_a_user_model_by_import_path_is_checked_without_running_it(write_suite: Any) -> None:
    path = write_suite("""
name: user
matrix:
  model:
    - {import: "usermodels:tiny", input_shape: [3, 4, 4]}
    - {import: "usermodels:raising", input_shape: [3, 4, 4]}
""")
    s = suite_mod.load(path)
    assert [c.id for c in s.cases] == ["tiny", "raising"]
    assert s.cases[0].params.model.shape == (3, 4, 4)


# ---------------------------------------------------------------------------------------------
# Bad input, through the CLI as a user meets it: exit 2, one line naming file and key, no
# traceback, nothing written.

BAD_CASES = [
    ("invalid_yaml", "line 3, column 1", "invalid YAML: expected ',' or ']'"),
    ("tabs", "line 3, column 1", "invalid YAML: found character '\\t' that cannot start any token"),
    ("duplicate_key", "line 5, column 3", "invalid YAML: duplicate key 'optimizer'"),
    ("unknown_top_key", "matrx", "unknown key (choose from: name, description, defaults, matrix, exclude, include)"),
    ("unknown_parameter", "matrix.colour", "unknown parameter 'colour' (choose from: model, optimizer, activation"),
    ("unknown_include_parameter", "include[0].colour", "unknown parameter 'colour'"),
    ("unknown_measure_key", "defaults.measure.maxtime", "unknown key"),
    ("wrong_type", "defaults.batch_size", "Input should be a valid integer"),
    ("axis_not_a_list", "matrix.model", "must be a list of values, not a string"),
    ("unknown_model", "matrix.model[1]", "unknown model 'resnet' (choose from: cnn, mlp)"),
    ("unknown_optimizer", "matrix.optimizer[1]",
     "unknown optimizer 'adamx' (choose from: adagrad, adam, adamw, rmsprop, sgd)"),
    ("unknown_activation", "matrix.activation[1]",
     "unknown activation 'swish' (choose from: elu, gelu, leaky_relu, relu, sigmoid, silu, tanh)"),
    ("unknown_loss", "defaults.loss", "unknown loss 'hinge' (choose from: cross_entropy, mse)"),
    ("unknown_transform", "matrix.data[0].transforms[1]",
     "unknown transform 'RandomTwist' (choose from: CenterCrop, ColorJitter,"),
    ("unknown_optimizer_option", "matrix.optimizer[1].warp",
     "unknown option 'warp' for optimizer 'sgd' (choose from: dampening, differentiable, foreach, fused, "
     "maximize, momentum, nesterov, weight_decay)"),
    ("empty_matrix", "matrix", "is empty"),
    ("empty_axis", "matrix.optimizer", "is an empty list"),
    ("exclude_removes_all", "exclude", "removes every combination"),
    ("exclude_not_an_axis", "exclude[0].activation", "is not a matrix axis (axes: optimizer)"),
    ("zero_batch_size", "matrix.batch_size[1]", "greater than 0"),
    ("negative_batch_size", "include[0].batch_size", "greater than 0"),
    ("import_unresolved", "matrix.model[0]",
     "cannot resolve module 'no_such_pkg_for_bench.mod' of 'no_such_pkg_for_bench.mod:make': no module "
     f"'no_such_pkg_for_bench' in {ROOT} (the directory bench runs in, which is on the import path) nor "
     "elsewhere on the import path; for code in another directory, add that directory to PYTHONPATH"),
    ("import_no_factory", "matrix.model[0]", "module 'usermodels' defines no 'nothing_here'"),
    ("import_without_shape", "matrix.model[0]", "a model given by 'import' needs 'input_shape'"),
    ("missing_model", "defaults", "'model' is missing"),
    ("missing_name", "name", "required: a non-empty string"),
    ("timeout_below_max_time", "case mlp", "timeout: 5 s leaves no time beyond measure.max_time (10 s)"),
]


def assert_refused(result: Any, file: str | Path, where: str | None, message: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr_lines) == 1, result.stderr
    prefix = f"bench: {file}: " + (f"{where}: " if where else "")
    line = result.stderr_lines[0]
    assert line.startswith(prefix), line
    assert message in line[len(prefix):], line
    assert result.stdout == ""


@pytest.mark.parametrize(("name", "where", "message"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_a_bad_suite_is_refused_with_one_line_naming_the_file_and_key(
        name: str, where: str, message: str, tmp_path: Path) -> None:
    file = BAD / f"{name}.yaml"
    rel = file.relative_to(ROOT)
    out = tmp_path / "out"
    result = bench("run", rel, "--out", out)
    assert_refused(result, rel, where, message)
    assert not out.exists()


def test_a_missing_suite_file_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = bench("run", "suites/no_such_suite.yaml", "--out", out)
    assert_refused(result, "suites/no_such_suite.yaml", None, "no such file")
    assert not out.exists()


def test_an_empty_suite_file_is_refused(tmp_path: Path) -> None:
    result = bench("validate", BAD / "empty_file.yaml")
    assert_refused(result, BAD / "empty_file.yaml", None, "the file is empty")


def test_python_object_tags_are_refused_and_never_executed(tmp_path: Path) -> None:
    marker = tmp_path / "executed"
    path = tmp_path / "evil.yaml"
    path.write_text(f'name: evil\nmatrix:\n  model: [!!python/object/apply:os.system ["touch {marker}"]]\n',
                    encoding="utf-8")
    out = tmp_path / "out"
    result = bench("run", path, "--out", out)
    assert_refused(result, path, "line 3, column 11",
                   "could not determine a constructor for the tag 'tag:yaml.org,2002:python/object/apply:os.system'")
    assert not marker.exists()
    assert not out.exists()


def test_validate_and_list_refuse_a_bad_suite_the_same_way() -> None:
    rel = (BAD / "unknown_optimizer.yaml").relative_to(ROOT)
    for command in ("validate", "list"):
        assert_refused(bench(command, rel), rel, "matrix.optimizer[1]", "unknown optimizer 'adamx'")
