"""`bench` started exactly as a user starts it: the installed console script, in a folder that holds
their own model and suite, with no PYTHONPATH. The other CLI tests run `python -m bench`, which puts
the folder on the import path by itself, or set PYTHONPATH: neither would see a console script that
cannot import the user's model.

The folder also holds files named like modules of Python and of bench (`json.py`, `bench.py`) that
raise when imported: the folder is searched after everything else, so the harness never imports
them, in the CLI, the case processes, torchrun or the DDP ranks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import Result

MODEL = """\
from torch import nn


def make(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(28 * 28, num_classes))
"""

SUITE = """\
name: mine
defaults:
  batch_size: 8
  timeout: 120
  measure: {warmup_steps: 1, window_time: 0.02}
matrix:
  mode: [cpu]
  model:
    - {import: "mymodel:make", input_shape: [1, 28, 28], num_classes: 10}
    - {import: "pkg.models:build", input_shape: [1, 28, 28], num_classes: 10}
include:
  - {model: {import: "mymodel:make", input_shape: [1, 28, 28], num_classes: 10}, mode: ddp, world_size: 2,
     backend: gloo}
"""

CASE_IDS = ["make-cpu-ws1", "build-cpu-ws1", "make-ddp-ws2-gloo"]
TINY = ["--set", "measure.max_time=0.3", "--set", "measure.min_time=0.1"]
# Python 3.10 ignores PYTHONSAFEPATH, so the processes bench starts there still put the folder
# first on their path (see bench.userpath): the traps would fire.
TRAPS = {"json.py", "bench.py"} if sys.version_info >= (3, 11) else set()


def console_script() -> Path:
    """The `bench` that `pip install` put beside this interpreter (or first on PATH)."""
    beside = Path(sys.executable).with_name("bench")
    if beside.exists():
        return beside
    found = shutil.which("bench")
    if found is None:
        pytest.skip("the bench console script is not installed (pip install -e .)")
    return Path(found)


def user_env() -> dict[str, str]:
    """A user's shell: no PYTHONPATH, so only the installed package says where bench is and nothing
    says where the user's model is."""
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["COLUMNS"] = "200"
    env.pop("FORCE_COLOR", None)
    return env


def run_console(folder: Path, *args: str, timeout: float = 300) -> Result:
    proc = subprocess.run([str(console_script()), *args], cwd=folder, env=user_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's folder: a module, a package in a subfolder, a suite, and the traps."""
    root = tmp_path_factory.mktemp("user")
    (root / "mymodel.py").write_text(MODEL, encoding="utf-8")
    (root / "pkg").mkdir()
    (root / "pkg" / "__init__.py").write_text("", encoding="utf-8")
    (root / "pkg" / "models.py").write_text(MODEL.replace("def make", "def build"), encoding="utf-8")
    (root / "suite.yaml").write_text(SUITE, encoding="utf-8")
    for name in TRAPS:
        (root / name).write_text(f"raise RuntimeError('{name} of the user folder was imported')\n", encoding="utf-8")
    return root


@dataclass
class UserRun:
    result: Result
    cases: dict[str, dict[str, Any]]


@pytest.fixture(scope="module")
def user_run(folder: Path) -> UserRun:
    """`bench run suite.yaml` once in the folder: two CPU cases and one DDP case on two ranks."""
    result = run_console(folder, "run", "suite.yaml", "--out", "out", "--quiet", *TINY)
    results = folder / "out" / "results.json"
    doc = json.loads(results.read_text(encoding="utf-8")) if results.exists() else {"cases": []}
    return UserRun(result, {case["id"]: case for case in doc["cases"]})


def test_validate_finds_a_model_in_the_folder_bench_runs_in(folder: Path) -> None:
    result = run_console(folder, "validate", "suite.yaml")
    assert (result.returncode, result.stdout, result.stderr) == (
        0, "suite.yaml: ok, suite 'mine' expands to 3 case(s)\n", "")


def test_list_names_the_cases_of_models_in_the_folder(folder: Path) -> None:
    result = run_console(folder, "list", "suite.yaml")
    assert (result.returncode, result.stdout.split(), result.stderr) == (0, CASE_IDS, "")


def test_run_measures_a_module_and_a_package_of_the_folder_on_the_cpu(user_run: UserRun) -> None:
    assert user_run.result.returncode == 0, user_run.result.stderr
    for case_id in CASE_IDS[:2]:
        case = user_run.cases[case_id]
        assert (case["status"], case["error"]) == ("ok", None)
        assert case["metrics"]["throughput"]["median"] > 0


def test_run_measures_a_model_of_the_folder_in_every_ddp_rank(user_run: UserRun) -> None:
    case = user_run.cases["make-ddp-ws2-gloo"]
    assert (case["status"], case["error"]) == ("ok", None)
    assert [rank["rank"] for rank in case["ranks"]] == [0, 1]


@pytest.mark.skipif(not TRAPS, reason="Python 3.10 ignores PYTHONSAFEPATH")
def test_files_of_the_folder_named_like_python_or_bench_modules_are_never_imported(
        folder: Path, user_run: UserRun) -> None:
    assert {p.name for p in folder.glob("*.py")} >= TRAPS
    assert user_run.result.returncode == 0, user_run.result.stderr
    assert "was imported" not in user_run.result.stdout + user_run.result.stderr
    assert [case["status"] for case in user_run.cases.values()] == ["ok"] * len(CASE_IDS)


def test_a_module_found_nowhere_is_refused_with_where_bench_looked_and_pythonpath(folder: Path) -> None:
    (folder / "elsewhere.yaml").write_text(SUITE.replace("mymodel:make", "othermodel:make"), encoding="utf-8")
    result = run_console(folder, "validate", "elsewhere.yaml")
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "bench: elsewhere.yaml: matrix.model[0]: cannot resolve module 'othermodel' of 'othermodel:make': "
        f"no module 'othermodel' in {folder.resolve()} (the directory bench runs in, which is on the import path) "
        "nor elsewhere on the import path; for code in another directory, add that directory to PYTHONPATH"]
