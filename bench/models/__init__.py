"""Model registry: built-in networks, any torchvision constructor, or a user's factory by import path.

Everything here that runs at validation time (names, shapes, import-path checks) avoids importing
torch; ``build_model`` is called only inside a worker process.
"""

from __future__ import annotations

import ast
import importlib
import inspect
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench import userpath
from bench.registry import Registry

if TYPE_CHECKING:
    from torch import nn

TORCHVISION_PREFIX = "torchvision:"


@dataclass(frozen=True)
class BuiltinModel:
    input_shape: tuple[int, ...]
    kwargs: frozenset[str]


MODELS: Registry[BuiltinModel] = Registry("model")
MODELS.add("mlp", BuiltinModel((1, 28, 28), frozenset({"hidden", "depth"})),
           "classic MLP 784 -> hidden -> 10 on 1x28x28 (hidden: int or list, depth: layers when hidden is an int)")
MODELS.add("cnn", BuiltinModel((3, 32, 32), frozenset()),
           "LeNet-style CNN for 3x32x32: conv 3->6 k5, pool, conv 6->16 k5, pool, fc 400->120->84->10")

TORCHVISION_INPUT = (3, 224, 224)


def torchvision_names() -> list[str]:
    """Classification models torchvision can build (imports torchvision, so only on demand)."""
    from torchvision import models

    return sorted(models.list_models(module=models))


def check_import_path(path: str) -> None:
    """Raise ValueError unless ``path`` ('pkg.module:factory') names a module that exists and, where
    its source is readable, defines ``factory`` at top level. The module is located, never executed:
    validating a suite must not run a user's code. It is looked for where a case process would
    import it from: the import path, then the directory ``bench`` runs in (see ``bench.userpath``)."""
    module, sep, attr = path.partition(":")
    if not sep or not module or not attr.isidentifier():
        raise ValueError(f"import path {path!r} must look like 'package.module:factory'")
    try:
        spec = userpath.find_spec(module)
    except (ImportError, ValueError) as exc:
        raise ValueError(f"cannot resolve module {module!r} of {path!r}: {exc}") from None
    source = None
    if spec.origin and spec.origin.endswith(".py"):
        try:
            with open(spec.origin, encoding="utf-8") as fh:
                source = fh.read()
        except OSError:
            source = None
    if source is None:
        return
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        raise ValueError(f"module {module!r} of {path!r} has a syntax error at line {exc.lineno}") from None
    if attr not in _top_level_names(tree):
        raise ValueError(f"module {module!r} defines no {attr!r} (import path {path!r})")


def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, (ast.AnnAssign, ast.AugAssign)) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
        elif isinstance(node, (ast.If, ast.Try, ast.With)):
            # Conditional definitions: accept names defined in any branch or except handler.
            stmts: list[ast.stmt] = []
            for child in ast.iter_child_nodes(node):
                if isinstance(child, ast.stmt):
                    stmts.append(child)
                elif isinstance(child, ast.ExceptHandler):
                    stmts.extend(child.body)
            names.update(_top_level_names(ast.Module(body=stmts, type_ignores=[])))
    return names


def import_factory(path: str) -> Any:
    """The factory ``path`` names (in a case process or a DDP rank: this runs the user's module)."""
    module, _, attr = path.partition(":")
    userpath.add_run_dir()
    return getattr(importlib.import_module(module), attr)


def build_model(name: str | None, import_path: str | None, kwargs: dict[str, Any], activation: str,
                num_classes: int, checkpointing: bool = False) -> nn.Module:
    """Make the model of a case (inside the worker process). With ``checkpointing``, a built-in
    model checkpoints each of its blocks; a user's factory that takes ``activation_checkpointing``
    is asked to do its own, and any other model gets each top-level child checkpointed."""
    from bench.components import build_activation
    from bench.models.checkpointing import checkpoint_children

    def act() -> nn.Module:
        return build_activation(activation)

    if import_path is not None:
        factory = import_factory(import_path)
        call_kwargs = dict(kwargs)
        params = inspect.signature(factory).parameters
        # A user's factory opts into the swept activation and class count by naming the parameter.
        if "activation" in params and "activation" not in call_kwargs:
            call_kwargs["activation"] = act
        if "num_classes" in params and "num_classes" not in call_kwargs:
            call_kwargs["num_classes"] = num_classes
        # A factory that takes activation_checkpointing knows its own blocks (kwargs may set it too).
        own = "activation_checkpointing" in params
        if checkpointing and own:
            call_kwargs.setdefault("activation_checkpointing", True)
        model: nn.Module = factory(**call_kwargs)
        if checkpointing and not own:
            checkpoint_children(model)
        return model
    assert name is not None
    if name.startswith(TORCHVISION_PREFIX):
        from torchvision import models

        # weights=None: random initialisation, nothing is downloaded.
        tv: nn.Module = models.get_model(name[len(TORCHVISION_PREFIX):], weights=None,
                                         num_classes=num_classes, **kwargs)
        if checkpointing:
            checkpoint_children(tv)
        return tv
    from bench.models.classic import MLP, LeNet

    if name == "mlp":
        hidden = kwargs.get("hidden", 128)
        if isinstance(hidden, int):
            hidden = [hidden] * int(kwargs.get("depth", 1))
        return MLP(act, list(hidden), num_classes=num_classes, checkpoint=checkpointing)
    if name == "cnn":
        return LeNet(act, num_classes=num_classes, checkpoint=checkpointing)
    MODELS.get(name)  # raises with the list of names
    raise AssertionError(name)
