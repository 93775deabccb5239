""".github/workflows/bench.yml, the CI example for users: valid against GitHub's workflow schema
(check-jsonschema's vendored copy, offline), free of findings in zizmor's offline audit, pinned by
commit hash, least-privileged, and doing what the README promises."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
WORKFLOW = ROOT / ".github" / "workflows" / "bench.yml"


def tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[test]'")
    return path


@pytest.fixture(scope="module")
def workflow() -> dict[Any, Any]:
    loaded: dict[Any, Any] = yaml.safe_load(WORKFLOW.read_text())
    return loaded


def test_workflow_validates_against_the_github_workflow_schema() -> None:
    proc = subprocess.run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "ok -- validation done" in proc.stdout


def test_workflow_has_no_finding_in_zizmors_offline_audit() -> None:
    proc = subprocess.run([tool("zizmor"), "--offline", "--persona", "pedantic", "--format", "plain", str(WORKFLOW)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "No findings to report" in proc.stdout + proc.stderr


def test_every_action_is_pinned_by_a_full_commit_hash(workflow: dict[Any, Any]) -> None:
    uses = [step["uses"] for job in workflow["jobs"].values() for step in job["steps"] if "uses" in step]
    assert len(uses) == 7
    for ref in uses:
        assert re.fullmatch(r"actions/[a-z-]+@[0-9a-f]{40}", ref), ref


def test_permissions_are_empty_by_default_and_granted_per_job(workflow: dict[Any, Any]) -> None:
    assert workflow["permissions"] == {}
    assert workflow["jobs"]["bench"]["permissions"] == {"contents": "read", "actions": "read"}
    assert workflow["jobs"]["publish"]["permissions"] == {"pages": "write", "id-token": "write"}


def test_workflow_compares_with_main_writes_the_summary_and_publishes_history(workflow: dict[Any, Any]) -> None:
    # `on` is YAML 1.1's boolean true for PyYAML.
    triggers = workflow.get("on", workflow.get(True))
    assert set(triggers) == {"pull_request", "push", "workflow_dispatch"}
    steps = {s.get("name", s.get("uses", "")): s for s in workflow["jobs"]["bench"]["steps"]}
    assert "bench run suites/smoke.yaml --out bench-out/new" in steps["Run the smoke suite"]["run"]
    compare = steps["Compare with main"]
    assert compare["if"] == "github.event_name == 'pull_request'"
    assert "bench compare bench-out/base bench-out/new --markdown bench-out/compare.md" in compare["run"]
    assert '>> "$GITHUB_STEP_SUMMARY"' in compare["run"] and 'exit "$status"' in compare["run"]
    assert steps["Upload the reports"]["if"] == "always()"
    assert "bench history bench-history --out site/trend.html" in steps["Add the results to the history"]["run"]
    assert workflow["jobs"]["publish"]["needs"] == "bench"
    assert workflow["jobs"]["publish"]["environment"]["name"] == "github-pages"
