""".github/workflows/bench.yml, the CI example for users: valid against GitHub's workflow schema
(check-jsonschema's vendored copy, offline), free of findings in zizmor's offline audit, pinned by
commit hash, least-privileged, and doing what the README promises."""

from __future__ import annotations

import os
import re
import shutil
import stat
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
    assert len(uses) == 10
    for ref in uses:
        assert re.fullmatch(r"actions/[a-z-]+@[0-9a-f]{40}", ref), ref


def test_permissions_are_empty_by_default_and_granted_per_job(workflow: dict[Any, Any]) -> None:
    assert workflow["permissions"] == {}
    assert workflow["jobs"]["ab"]["permissions"] == {"contents": "read"}
    assert workflow["jobs"]["bench"]["permissions"] == {"contents": "read", "actions": "read"}
    assert workflow["jobs"]["publish"]["permissions"] == {"pages": "write", "id-token": "write"}


def steps_of(workflow: dict[Any, Any], job: str) -> dict[str, dict[str, Any]]:
    return {s.get("name", s.get("uses", "").split("@")[0]): s for s in workflow["jobs"][job]["steps"]}


AB_STEP = "Compare the merge base with the pull request"


def test_pull_requests_run_bench_ab_of_the_merge_base_and_the_head_in_one_job(workflow: dict[Any, Any]) -> None:
    # `on` is YAML 1.1's boolean true for PyYAML.
    triggers = workflow.get("on", workflow.get(True))
    assert set(triggers) == {"pull_request", "push", "workflow_dispatch"}
    ab = workflow["jobs"]["ab"]
    assert ab["if"] == "github.event_name == 'pull_request'"
    steps = steps_of(workflow, "ab")
    checkout = steps["actions/checkout"]["with"]
    # The whole history (the base is checked out into a worktree), and the head itself, so that
    # the merge base is the commit the pull request branched from.
    assert checkout == {"ref": "${{ github.event.pull_request.head.sha }}", "fetch-depth": 0,
                        "persist-credentials": False}
    step = steps[AB_STEP]
    assert step["env"] == {"BASE_REF": "${{ github.base_ref }}"}
    assert 'base=$(git merge-base "origin/$BASE_REF" HEAD)' in step["run"]
    assert 'bench ab suites/smoke.yaml --base "$base" --new HEAD --out bench-out/ab' in step["run"]
    assert 'cat bench-out/ab/ab.md >> "$GITHUB_STEP_SUMMARY"' in step["run"] and 'exit "$status"' in step["run"]
    upload = steps["Upload the results and the report"]
    assert upload["if"] == "always()" and upload["with"]["path"] == "bench-out/"
    # Nothing of the old unpaired gate is left: no `bench compare` against main's stored run.
    assert "bench compare" not in WORKFLOW.read_text()


def test_no_run_script_interpolates_an_expression(workflow: dict[Any, Any]) -> None:
    """`${{ github.base_ref }}` pasted into a script runs whatever a branch name says; every value
    reaches a script through `env:` instead."""
    scripts = [step["run"] for job in workflow["jobs"].values() for step in job["steps"] if "run" in step]
    assert len(scripts) == 6
    for script in scripts:
        assert "${{" not in script, script


def test_every_suite_the_workflow_runs_exists_and_validates(workflow: dict[Any, Any]) -> None:
    from bench import suite as suite_mod

    scripts = " ".join(step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"])
    suites = set(re.findall(r"\bsuites/[\w.-]+\.yaml\b", scripts))
    assert suites == {"suites/smoke.yaml"}
    for path in suites:
        assert len(suite_mod.load(str(ROOT / path), []).cases) == 4


def test_main_runs_the_suite_keeps_its_results_and_publishes_the_history(workflow: dict[Any, Any]) -> None:
    assert workflow["jobs"]["bench"]["if"] == "github.event_name != 'pull_request'"
    steps = steps_of(workflow, "bench")
    assert "bench run suites/smoke.yaml --out bench-out/new" in steps["Run the smoke suite"]["run"]
    assert steps["Upload the reports"]["if"] == "always()"
    assert "bench history bench-history --out site/trend.html" in steps["Add the results to the history"]["run"]
    assert steps["Keep the results"]["with"] == {"name": "bench-results", "path": "bench-out/new/results.json"}
    assert workflow["jobs"]["publish"]["needs"] == "bench"
    assert workflow["jobs"]["publish"]["environment"]["name"] == "github-pages"


# A stand-in for `bench`: records its arguments, writes the summary unless told not to, and exits
# with the code it is given.
FAKE_BENCH = """#!/bin/sh
printf '%s\\n' "$@" > "$FAKE_ARGS"
if [ "$FAKE_EXIT" != 2 ]; then mkdir -p bench-out/ab && echo "A/B summary" > bench-out/ab/ab.md; fi
exit "$FAKE_EXIT"
"""


def git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True,
                          timeout=30).stdout.strip()


@pytest.fixture
def pr_checkout(tmp_path: Path) -> tuple[Path, str]:
    """A clone as the workflow's checkout leaves it: the pull request's head checked out, main
    moved on since the branch point, and origin/main known. Returns it and the branch point."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "branch point")
    fork = git(repo, "rev-parse", "HEAD")
    git(repo, "checkout", "-q", "-b", "feature")
    git(repo, "commit", "-q", "--allow-empty", "-m", "the pull request")
    git(repo, "checkout", "-q", "main")
    git(repo, "commit", "-q", "--allow-empty", "-m", "main moves on")
    git(repo, "update-ref", "refs/remotes/origin/main", "main")
    git(repo, "checkout", "-q", "--detach", "feature")
    return repo, fork


def run_ab_step(workflow: dict[Any, Any], repo: Path, base_ref: str, fake_exit: int) -> subprocess.CompletedProcess[str]:
    bin_dir = repo.parent / "bin"
    bin_dir.mkdir(exist_ok=True)
    fake = bin_dir / "bench"
    fake.write_text(FAKE_BENCH, encoding="utf-8")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "BASE_REF": base_ref,
           "GITHUB_STEP_SUMMARY": str(repo.parent / "summary.md"), "FAKE_ARGS": str(repo.parent / "args"),
           "FAKE_EXIT": str(fake_exit)}
    script = steps_of(workflow, "ab")[AB_STEP]["run"]
    # GitHub runs a `run:` script with `bash -e {0}`.
    return subprocess.run(["bash", "-e", "-c", script], cwd=repo, env=env, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.mark.parametrize("code", [0, 1, 2])
def test_the_ab_step_runs_bench_ab_on_the_merge_base_and_keeps_its_exit_code(
        workflow: dict[Any, Any], pr_checkout: tuple[Path, str], code: int) -> None:
    repo, fork = pr_checkout
    proc = run_ab_step(workflow, repo, "main", code)
    assert proc.returncode == code, proc.stderr
    args = (repo.parent / "args").read_text().splitlines()
    assert args == ["ab", "suites/smoke.yaml", "--base", fork, "--new", "HEAD", "--out", "bench-out/ab"]
    summary = repo.parent / "summary.md"
    # The summary is appended when bench ab wrote one (a bad input, exit 2, writes none here).
    assert (summary.read_text() if summary.exists() else None) == (None if code == 2 else "A/B summary\n")


def test_a_branch_name_that_is_shell_code_is_not_run(workflow: dict[Any, Any], pr_checkout: tuple[Path, str]) -> None:
    repo, _ = pr_checkout
    # A valid git branch name.
    proc = run_ab_step(workflow, repo, "x$(touch${IFS}pwned)", 0)
    assert proc.returncode != 0 and "origin/x$(touch${IFS}pwned)" in proc.stderr
    assert not (repo / "pwned").exists() and not (repo.parent / "args").exists()
