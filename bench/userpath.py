"""Where a suite's own model code (``import: "mymodel:make"``) is imported from: the directory
``bench`` runs in, searched after the rest of the import path.

After, not before: a user's file named like a module of the standard library, of an installed
package or of bench itself (``json.py``, ``torch.py``, ``bench.py``) must not replace that module
inside the harness. Searched last, such a file is simply not found under that name; searched
first, it would break bench itself in ways that name neither file.

``bench`` may be started three ways and only one of them, ``python -m bench``, puts its directory
on the path (and first, as Python does for ``-m``); the console script and a ``tox`` environment
do not. So this does not rely on the path it inherits. Validation finds a user's module with the
run directory as an extra, last place to look, leaving ``sys.path`` alone; a process that builds
the model (a case process, a DDP rank on any node) appends the run directory to ``sys.path`` just
before importing the factory, and keeps it there for imports the user's code makes later.

The processes bench starts itself would otherwise get the directory first anyway: the case
server is started with ``python -c`` and torchrun's agent and ranks with ``python -m``, and both
put the working directory at the front of their path before importing torch. ``PYTHONSAFEPATH``
(Python 3.11+; older versions ignore it and keep that behaviour) stops that; each process removes
it again once started, so that Python processes started by a user's code behave as usual.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
from collections.abc import Iterator
from importlib.machinery import ModuleSpec, PathFinder
from pathlib import Path

# The value bench gives PYTHONSAFEPATH (any non-empty value turns it on): a process told so by
# bench can remove it without undoing a user's own setting.
_SAFE_PATH = "PYTHONSAFEPATH"
_BENCH_SET = "set-by-bench"


def run_dir() -> str:
    """The directory ``bench`` runs in. Case processes and DDP ranks inherit it (nothing in bench
    changes directory), so in each of them, on every node, it is the directory of that node's
    ``bench``."""
    return os.getcwd()


# The code directory of a ``bench ab`` side while its suite is validated: searched first, as that
# side's case processes will (``bench.side_worker``).
_side_dir: str | None = None


@contextlib.contextmanager
def side(directory: Path) -> Iterator[None]:
    """Validate a suite as a ``bench ab`` side in ``directory`` will run it: that directory first."""
    global _side_dir
    previous, _side_dir = _side_dir, str(directory)
    try:
        yield
    finally:
        _side_dir = previous


def find_spec(module: str) -> ModuleSpec:
    """Locate ``module`` ('pkg.module') as ``import_module`` would in a case process, without
    executing anything: not the module, nor its parent packages' ``__init__``. Raises
    ModuleNotFoundError with a message that says where it looked."""
    top, *subs = module.split(".")
    if _side_dir is not None:
        spec = PathFinder.find_spec(top, [_side_dir]) or importlib.util.find_spec(top)
        where = f"{_side_dir} (the side's directory, first on its import path)"
    else:
        spec = importlib.util.find_spec(top) or PathFinder.find_spec(top, [run_dir()])
        where = f"{run_dir()} (the directory bench runs in, which is on the import path)"
    if spec is None:
        raise ModuleNotFoundError(
            f"no module {top!r} in {where} "
            f"nor elsewhere on the import path; for code in another directory, add that directory to PYTHONPATH")
    name = top
    for sub in subs:
        locations = spec.submodule_search_locations
        if locations is None:
            raise ModuleNotFoundError(f"{name!r} ({spec.origin}) is a module, not a package")
        spec = PathFinder.find_spec(f"{name}.{sub}", list(locations))
        if spec is None:
            raise ModuleNotFoundError(f"package {name!r} ({', '.join(locations)}) has no module {sub!r}")
        name = f"{name}.{sub}"
    return spec


def add_run_dir() -> None:
    """Append the run directory to ``sys.path`` (once), before importing a user's factory."""
    here = run_dir()
    if here not in sys.path:
        sys.path.append(here)


def safe_path_env() -> dict[str, str]:
    """Environment entries for a Python process bench starts, so that it does not put its working
    directory first on its path; empty when the user set ``PYTHONSAFEPATH`` already."""
    return {} if os.environ.get(_SAFE_PATH) else {_SAFE_PATH: _BENCH_SET}


@contextlib.contextmanager
def safe_path_environ() -> Iterator[None]:
    """``os.environ`` with ``safe_path_env()`` for processes started inside the block (the case
    server, which multiprocessing starts with this process's environment)."""
    added = safe_path_env()
    os.environ.update(added)
    try:
        yield
    finally:
        for key in added:
            os.environ.pop(key, None)


def forget_safe_path() -> None:
    """In a process bench started: remove the ``PYTHONSAFEPATH`` bench set, so that processes the
    user's code starts get the environment they would get outside bench."""
    if os.environ.get(_SAFE_PATH) == _BENCH_SET:
        del os.environ[_SAFE_PATH]
