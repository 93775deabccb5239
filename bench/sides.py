"""The two sides of ``bench ab``: which code each runs, from which directory, under which Python.

A side is either a directory (its code is imported from there) or a git revision of the repository
``bench`` runs in, checked out with ``git worktree add --detach`` into a temporary folder that is
removed afterwards. For a revision, the side's directory is the folder of that checkout that
corresponds to the current directory, so a suite run from a subfolder of a repository imports from
the same subfolder on both sides.

Everything here happens before anything is measured: a side that does not exist, a revision that
does not resolve, an interpreter that cannot import bench, or a suite whose model cannot be found
on one side raise ``UsageError`` (exit 2) with nothing run.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.errors import UsageError

GIT_TIMEOUT = 120


@dataclass(frozen=True)
class Side:
    """One side of an A/B run."""

    label: str  # "base" or "new"
    spec: str  # what the user passed: a directory or a revision
    directory: Path  # the case processes' working directory, first on their import path
    python: str  # the interpreter its case processes run under
    probe: dict[str, Any]  # what that interpreter's torch reports (``bench.worker.probe_environment``)
    revision: str | None = None  # the full commit when ``spec`` named a git revision

    def describe(self) -> str:
        what = f"revision {self.spec} ({self.revision[:10]})" if self.revision else f"directory {self.directory}"
        return f"{self.label}: {what}, python {self.python}"


def _git(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=GIT_TIMEOUT,
                          check=False)


def _repository(cwd: Path) -> tuple[Path, Path] | None:
    """The top of the git repository around ``cwd`` and ``cwd`` relative to it, or None."""
    try:
        top = _git(["rev-parse", "--show-toplevel"], cwd)
    except (OSError, subprocess.SubprocessError):
        return None
    if top.returncode != 0:
        return None
    root = Path(top.stdout.strip()).resolve()
    return root, cwd.resolve().relative_to(root)


def resolve_revision(spec: str, cwd: Path) -> str | None:
    """The commit ``spec`` names in the repository around ``cwd``, or None."""
    if _repository(cwd) is None:
        return None
    found = _git(["rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}"], cwd)
    return found.stdout.strip() or None if found.returncode == 0 else None


_PROBE = ("import json, sys; import bench.side_worker; from bench.worker import probe_environment; "
          "print(json.dumps({**probe_environment(), 'python': sys.version.split()[0]}))")


def check_python(python: str) -> tuple[str, dict[str, Any]]:
    """The interpreter's path and its torch's facts, once it has shown that it can import bench
    (its case processes run ``python -m bench.side_worker``)."""
    exe = shutil.which(python) or python
    try:
        probe = subprocess.run([exe, "-c", _PROBE], capture_output=True, text=True, timeout=300, check=False)
    except OSError as exc:
        raise UsageError(f"{python}: cannot run this interpreter ({exc.strerror or exc})") from None
    except subprocess.TimeoutExpired:
        raise UsageError(f"{python}: did not start within 300 s") from None
    if probe.returncode != 0:
        last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
        raise UsageError(f"{python}: cannot import bench ({last}); install bench into that environment") from None
    facts: dict[str, Any] = json.loads(probe.stdout.strip().splitlines()[-1])
    return exe, facts


@contextlib.contextmanager
def open_sides(base: str, new: str, *, base_python: str, new_python: str,
               cwd: Path | None = None) -> Iterator[tuple[Side, Side]]:
    """Both sides ready to run; temporary checkouts of revisions are removed on the way out,
    whatever happens in between (an interrupt included)."""
    here = (cwd or Path.cwd()).resolve()
    pythons = {p: check_python(p) for p in {base_python, new_python}}
    with contextlib.ExitStack() as stack:
        sides = tuple(stack.enter_context(_open(label, spec, *pythons[py], here))
                      for label, spec, py in (("base", base, base_python), ("new", new, new_python)))
        yield sides[0], sides[1]


@contextlib.contextmanager
def _open(label: str, spec: str, python: str, probe: dict[str, Any], cwd: Path) -> Iterator[Side]:
    if not spec:
        raise UsageError(f"--{label}: empty; give a directory or a git revision")
    path = Path(spec).expanduser()
    if not path.is_absolute():
        path = cwd / path
    if path.is_dir():
        yield Side(label, spec, path.resolve(), python, probe)
        return
    repo = _repository(cwd)
    if repo is None:
        raise UsageError(f"--{label} {spec}: no such directory, and {cwd} is not in a git repository "
                         f"(a side is a directory or a git revision)")
    commit = resolve_revision(spec, cwd)
    if commit is None:
        raise UsageError(f"--{label} {spec}: no such directory, and not a revision of the git repository at {repo[0]}")
    root, relative = repo
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-ab-{label}-"))
    checkout = tmp / "tree"
    added = _git(["worktree", "add", "--detach", str(checkout), commit], root)
    try:
        if added.returncode != 0:
            last = (added.stderr.strip().splitlines() or ["no output"])[-1]
            raise UsageError(f"--{label} {spec}: git could not check it out ({last})")
        directory = checkout / relative
        if not directory.is_dir():
            raise UsageError(f"--{label} {spec}: the revision has no folder {relative} (the current directory)")
        yield Side(label, spec, directory, python, probe, commit)
    finally:
        if added.returncode == 0:
            _git(["worktree", "remove", "--force", str(checkout)], root)
        shutil.rmtree(tmp, ignore_errors=True)
        _git(["worktree", "prune"], root)
