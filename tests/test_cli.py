"""The command line as a user runs it: a subprocess, real files, exit codes and output."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, SmokeRun, bench, cli_env

from bench.cli import build_parser

SMOKE_IDS = ["mlp-sgd", "mlp-adam", "cnn-sgd", "cnn-adam"]


def test_run_on_the_smoke_suite_prints_the_table_and_both_paths(smoke_run: SmokeRun) -> None:
    result, out = smoke_run.result, smoke_run.out
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stdout.splitlines()
    assert f"results: {out / 'results.json'}" in lines
    assert f"report:  {out / 'report.html'}" in lines
    table = result.stdout.split("results:")[0]
    for case_id in SMOKE_IDS:
        row = next(line for line in table.splitlines() if f" {case_id} " in line)
        assert " ok " in row
    assert "samples/s" in table
    assert (out / "results.json").is_file()
    html = (out / "report.html").read_text(encoding="utf-8")
    assert all(case_id in html for case_id in SMOKE_IDS)
    # Progress goes to stderr, one line per finished case.
    assert "running 4 case(s) of 'smoke'" in result.stderr


def test_run_exits_1_when_a_case_fails_and_writes_under_reports_by_default(tmp_path: Path) -> None:
    suite = tmp_path / "fail.yaml"
    suite.write_text("""
name: fail
defaults: {measure: {warmup_steps: 1, min_time: 0.1, max_time: 0.3, window_time: 0.01}, timeout: 60}
matrix:
  model:
    - {import: "usermodels:tiny", input_shape: [3, 4, 4]}
    - {import: "usermodels:raising", input_shape: [3, 4, 4]}
""", encoding="utf-8")
    result = bench("run", suite, "--quiet", cwd=tmp_path, timeout=300)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    folders = list((tmp_path / "reports").iterdir())
    assert len(folders) == 1 and folders[0].name.startswith("fail-")
    doc = json.loads((folders[0] / "results.json").read_text(encoding="utf-8"))
    assert [(c["id"], c["status"]) for c in doc["cases"]] == [("tiny", "ok"), ("raising", "failed")]
    assert (folders[0] / "report.html").is_file()
    failed_row = next(line for line in result.stdout.splitlines() if " raising " in line)
    assert "failed" in failed_row


def test_validate_reports_the_case_count() -> None:
    result = bench("validate", "suites/cnn.yaml")
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "suites/cnn.yaml: ok, suite 'cnn' expands to 9 case(s)\n", "")


def test_list_prints_the_case_ids_and_honours_only_and_set() -> None:
    result = bench("list", "suites/cnn.yaml", "--only", "tanh")
    assert (result.returncode, result.stdout.split()) == (0, ["cnn-sgd-tanh-bs64", "cnn-sgd_m0.9-tanh-bs64",
                                                             "cnn-adam-tanh-bs64"])
    result = bench("list", "suites/smoke.yaml", "--set", "batch_size=8")
    assert result.stdout.split() == SMOKE_IDS


def test_list_components_names_every_building_block() -> None:
    result = bench("list", "--components")
    assert result.returncode == 0
    out = result.stdout
    for header in ("models:", "optimizers:", "activations:", "losses:", "transforms:"):
        assert header in out.splitlines()
    listed = {line.split()[0] for line in out.splitlines() if line.startswith("  ")}
    assert {"mlp", "cnn", "torchvision:NAME", "sgd", "adam", "adamw", "rmsprop", "adagrad", "relu", "sigmoid",
            "tanh", "gelu", "silu", "leaky_relu", "elu", "cross_entropy", "mse", "RandomHorizontalFlip",
            "RandomRotation"} <= listed


@pytest.mark.parametrize(("args", "message"), [
    (["run"], "give a suite file"),
    (["list"], "list: give a suite file or --components"),
    (["run", "suites/smoke.yaml", "--bogus"], "unrecognized arguments: --bogus"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_usage_errors_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = bench(*args)
    assert result.returncode == 2
    assert len(result.stderr_lines) == 1
    assert result.stderr_lines[0].startswith("bench: ")
    assert message in result.stderr_lines[0]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def test_every_command_and_option_has_help_text() -> None:
    parser = build_parser()
    commands = _subcommands(parser)
    assert {"run", "validate", "list", "report"} <= set(commands)
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    summaries = {a.dest: a.help for a in action._choices_actions}
    for name, sub in commands.items():
        assert summaries.get(name), f"'bench {name}' has no one-line help in 'bench --help'"
        assert sub.description, f"'bench {name}' has no description in 'bench {name} --help'"
        for arg in sub._actions:
            if isinstance(arg, argparse._HelpAction):
                continue
            assert arg.help, f"'bench {name}' option {arg.option_strings or arg.dest} has no help"


def test_help_lists_every_command_and_each_command_help_exits_0() -> None:
    result = bench("--help")
    assert result.returncode == 0
    for name in _subcommands(build_parser()):
        assert f"    {name} " in result.stdout
    run_help = bench("run", "--help")
    assert run_help.returncode == 0
    assert "--set KEY=VALUE" in run_help.stdout and "--only PATTERN" in run_help.stdout


HEAVY = ("torch", "torchvision", "pandas", "plotly", "scipy")
PROBE = """
import json, sys
from bench.cli import main
try:
    code = main(sys.argv[1:])
except SystemExit as exc:
    code = exc.code
heavy = [m for m in HEAVY if m in sys.modules]
sys.stderr.write("\\nPROBE " + json.dumps({"code": code, "heavy": heavy}) + "\\n")
""".replace("HEAVY", repr(HEAVY))


@pytest.mark.parametrize(("args", "code", "error"), [
    (["--help"], 0, ""),
    (["validate", "suites/cnn.yaml"], 0, ""),
    (["list", "suites/cnn.yaml"], 0, ""),
    (["list", "--components"], 0, ""),
    # Refused by validation itself (not before it, as a missing file would be): the whole check of
    # a suite, optimizer options included, runs without torch.
    (["run", "tests/data/bad/suites_core/unknown_optimizer.yaml"], 2, "matrix.optimizer[1]: unknown optimizer"),
    (["validate", "tests/data/bad/suites/optimizer_option_wrong_type.yaml"], 2,
     "matrix.optimizer[1].momentum: Input should be a valid number"),
])
def test_help_validate_and_list_do_not_import_heavy_libraries(args: list[str], code: int, error: str) -> None:
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], cwd=ROOT, env=cli_env(), capture_output=True,
                          text=True, timeout=60, check=False)
    probe = json.loads(proc.stderr.rsplit("PROBE ", 1)[1])
    assert (probe["code"], probe["heavy"]) == (code, [])
    assert error in proc.stderr


def test_python_dash_m_bench_and_the_console_script_agree() -> None:
    script = Path(sys.executable).with_name("bench")
    if not script.exists():
        pytest.skip("console script not installed next to this interpreter")
    result = subprocess.run([str(script), "list", "suites/smoke.yaml"], cwd=ROOT, env=cli_env(),
                            capture_output=True, text=True, timeout=60, check=False)
    assert (result.returncode, result.stdout.split()) == (0, SMOKE_IDS)
    assert os.access(script, os.X_OK)


def test_every_bench_command_of_the_gpu_smoke_script_is_one_the_cli_accepts() -> None:
    # The script runs only where a GPU is lent (rarely): an option renamed here must not first
    # fail there, costing the lent machine's minutes.
    import shlex

    script = (ROOT / "scripts" / "gpu-smoke.sh").read_text(encoding="utf-8").replace("\\\n", " ")
    commands = [shlex.split(line.strip())[3:] for line in script.splitlines()
                if line.strip().startswith("python3 -m bench ")]
    assert len(commands) >= 3
    for argv in commands:
        args = build_parser().parse_args(argv)  # argparse exits (status 2) on an unknown option
        assert callable(args.func), argv
