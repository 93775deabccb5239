"""Shared fixtures: run the CLI as a user does (a subprocess), write suite files, and one real
`bench run` of the smoke suite that every test reading real output shares."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
SUITES = DATA / "suites"
# Small user models for the import-path tests (`usermodels:raising`, ...). The folder is on
# sys.path here, for runs made inside the test process, and on PYTHONPATH for the CLI.
USER_MODELS = Path(__file__).resolve().parent / "models"
if str(USER_MODELS) not in sys.path:
    sys.path.insert(0, str(USER_MODELS))

# Budgets small enough that a case measures for a fraction of a second.
TINY = ["--set", "measure.max_time=0.3", "--set", "measure.min_time=0.1", "--set", "measure.warmup_steps=1"]


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str

    @property
    def stderr_lines(self) -> list[str]:
        return self.stderr.splitlines()


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(USER_MODELS), env.get("PYTHONPATH", "")) if p)
    # Rich draws a fixed, wide table without colour codes when it is not on a terminal.
    env["COLUMNS"] = "200"
    env.pop("FORCE_COLOR", None)
    return env


def bench(*args: str | Path, cwd: Path = ROOT, timeout: float = 120) -> Result:
    """Run `python -m bench ARGS` in a fresh interpreter, as a user would from the shell."""
    proc = subprocess.run([sys.executable, "-m", "bench", *map(str, args)], cwd=cwd, env=cli_env(),
                          capture_output=True, text=True, timeout=timeout, check=False)
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def run_bench() -> Any:
    return bench


@pytest.fixture
def write_suite(tmp_path: Path) -> Any:
    """Write YAML text to a suite file under tmp_path and return its path."""

    def write(text: str, name: str = "suite.yaml") -> Path:
        path = tmp_path / name
        path.write_text(text, encoding="utf-8")
        return path

    return write


@dataclass
class SmokeRun:
    result: Result
    out: Path

    @property
    def doc(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads((self.out / "results.json").read_text(encoding="utf-8"))
        return loaded


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> SmokeRun:
    """`bench run suites/smoke.yaml` once, with tiny budgets, shared by every test that reads it."""
    out = tmp_path_factory.mktemp("smoke") / "out"
    result = bench("run", "suites/smoke.yaml", "--out", out, *TINY, timeout=300)
    return SmokeRun(result, out)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked ``cuda`` need a CUDA device; without one they are skipped with the reason."""
    marked = [item for item in items if item.get_closest_marker("cuda") is not None]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device; this machine has none")
    for item in marked:
        item.add_marker(skip)
