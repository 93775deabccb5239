"""Every registered building block builds and trains for one step at tiny sizes, and unknown
names are refused with the list of choices."""

from __future__ import annotations

import functools
import inspect
import operator
import typing
from typing import Any

import pytest
import torch
from torch import nn

from bench.components import (
    ACTIVATIONS,
    LOSSES,
    OPTIMIZERS,
    TRANSFORMS,
    build_activation,
    build_loss,
    build_optimizer,
    build_transform,
)
from bench.data import make_batches
from bench.models import MODELS, build_model
from bench.registry import Registry, UnknownName
from bench.suite import CaseParams


def params(**kw: Any) -> CaseParams:
    base: dict[str, Any] = {"model": "mlp", "batch_size": 4}
    base.update(kw)
    return CaseParams.model_validate(base)


def train_one_step(p: CaseParams) -> tuple[nn.Module, torch.Tensor, float]:
    """Build the case's model, optimizer, loss and data; run one step. Returns the model, its
    output on the batch, and how far the parameters moved."""
    torch.manual_seed(0)
    m = p.model
    model = build_model(m.name, m.import_path, m.kwargs, p.activation, m.num_classes)
    optimizer = build_optimizer(p.optimizer.name, p.optimizer.kwargs, model.parameters(), p.lr)
    loss_fn = build_loss(p.loss)
    x, y = make_batches(p, torch.device("cpu"), p.batch_size, torch.Generator().manual_seed(0))()
    before = [q.detach().clone() for q in model.parameters()]
    optimizer.zero_grad(set_to_none=True)
    out = model(x)
    loss = loss_fn(out, y)
    assert torch.isfinite(loss)
    loss.backward()
    optimizer.step()
    moved = sum(float((q.detach() - b).abs().sum()) for q, b in zip(model.parameters(), before, strict=True))
    return model, out, moved


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_updates_the_parameters_in_one_step(name: str) -> None:
    _, out, moved = train_one_step(params(optimizer=name, model={"name": "mlp", "kwargs": {"hidden": 8}}))
    assert out.shape == (4, 10)
    assert moved > 0


def test_optimizer_options_are_passed_through_to_torch() -> None:
    p = params(optimizer={"name": "sgd", "momentum": 0.9, "nesterov": True, "weight_decay": 1e-4})
    model = build_model("mlp", None, {"hidden": 8}, "relu", 10)
    opt = build_optimizer(p.optimizer.name, p.optimizer.kwargs, model.parameters(), 0.05)
    group = opt.param_groups[0]
    assert isinstance(opt, torch.optim.SGD)
    assert (group["momentum"], group["nesterov"], group["weight_decay"], group["lr"]) == (0.9, True, 1e-4, 0.05)
    adam = build_optimizer("adam", {"betas": [0.8, 0.9]}, model.parameters(), 0.01)
    assert adam.param_groups[0]["betas"] == (0.8, 0.9)


def _as_a_suite_writes_it(hint: Any) -> Any:
    """torch's annotation without its tensor forms, which YAML cannot write: what the optimizer
    table in bench.components should say."""
    args = typing.get_args(hint)
    if typing.get_origin(hint) is tuple:
        return tuple[tuple(_as_a_suite_writes_it(a) for a in args)]
    if args:  # a union
        return functools.reduce(operator.or_, [_as_a_suite_writes_it(a) for a in args if a is not torch.Tensor])
    return hint


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_the_optimizer_table_names_every_keyword_of_torchs_constructor_with_its_type(name: str) -> None:
    # Suites are checked against this torch-free table, so it must follow the pinned torch release.
    cls = getattr(torch.optim, OPTIMIZERS.get(name).torch_class)
    hints = typing.get_type_hints(cls.__init__)
    keywords = [k for k in inspect.signature(cls).parameters if k not in ("params", "lr")]
    assert dict(OPTIMIZERS.get(name).kwargs) == {k: _as_a_suite_writes_it(hints[k]) for k in keywords}


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimizer_option_at_torchs_default_passes_validation_and_builds(name: str) -> None:
    cls = getattr(torch.optim, OPTIMIZERS.get(name).torch_class)
    defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items() if k not in ("params", "lr")}
    p = params(optimizer={"name": name, "kwargs": defaults})
    assert p.optimizer.kwargs == defaults
    model = build_model("mlp", None, {"hidden": 8}, "relu", 10)
    optimizer = build_optimizer(name, p.optimizer.kwargs, model.parameters(), 0.01)
    assert isinstance(optimizer, cls)
    assert {k: optimizer.defaults[k] for k in defaults} == defaults


@pytest.mark.parametrize("name", ACTIVATIONS.names())
def test_every_activation_is_built_into_both_classic_models(name: str) -> None:
    cls = type(build_activation(name))
    for model_name in ("mlp", "cnn"):
        model, out, moved = train_one_step(params(model=model_name, activation=name, batch_size=2))
        assert sum(isinstance(mod, cls) for mod in model.modules()) == (1 if model_name == "mlp" else 4)
        assert out.shape == (2, 10)
        assert moved > 0


@pytest.mark.parametrize("name", LOSSES.names())
def test_every_loss_trains_on_logits(name: str) -> None:
    _, out, moved = train_one_step(params(loss=name))
    assert out.shape == (4, 10)
    assert moved > 0


def test_mse_compares_logits_with_one_hot_targets() -> None:
    _, y = make_batches(params(loss="mse"), torch.device("cpu"), 4, torch.Generator().manual_seed(0))()
    assert y.shape == (4, 10)
    assert y.sum(dim=1).tolist() == [1.0] * 4
    _, labels = make_batches(params(), torch.device("cpu"), 4, torch.Generator().manual_seed(0))()
    assert labels.dtype == torch.int64 and labels.shape == (4,)


def test_the_classic_mlp_and_lenet_have_the_textbook_sizes() -> None:
    assert (params(model="mlp").model.shape, params(model="cnn").model.shape) == ((1, 28, 28), (3, 32, 32))
    mlp = build_model("mlp", None, {}, "relu", 10)
    assert sum(q.numel() for q in mlp.parameters()) == 784 * 128 + 128 + 128 * 10 + 10
    deep = build_model("mlp", None, {"hidden": [32, 16]}, "relu", 10)
    assert [m.out_features for m in deep.modules() if isinstance(m, nn.Linear)] == [32, 16, 10]
    repeated = build_model("mlp", None, {"hidden": 8, "depth": 3}, "relu", 10)
    assert [m.out_features for m in repeated.modules() if isinstance(m, nn.Linear)] == [8, 8, 8, 10]
    lenet = build_model("cnn", None, {}, "relu", 10)
    # conv 3->6 k5, conv 6->16 k5, fc 400->120->84->10
    assert sum(q.numel() for q in lenet.parameters()) == 456 + 2416 + 48120 + 10164 + 850
    # Logits: no softmax at the end, the loss applies its own.
    assert not any(isinstance(m, (nn.Softmax, nn.LogSoftmax)) for m in lenet.modules())


@pytest.mark.parametrize("name", MODELS.names())
def test_every_builtin_model_trains_one_step(name: str) -> None:
    _, out, moved = train_one_step(params(model=name, batch_size=2))
    assert out.shape == (2, 10)
    assert moved > 0


def test_a_torchvision_model_builds_by_name_with_random_weights() -> None:
    p = params(model={"name": "torchvision:resnet18", "input_shape": [3, 32, 32], "num_classes": 7}, batch_size=2)
    model, out, moved = train_one_step(p)
    assert type(model).__name__ == "ResNet"
    assert out.shape == (2, 7)
    assert moved > 0


def test_a_user_model_by_import_path_gets_the_case_num_classes() -> None:
    p = params(model={"import": "usermodels:tiny", "input_shape": [3, 4, 4], "num_classes": 3})
    _, out, moved = train_one_step(p)
    assert out.shape == (4, 3)
    assert moved > 0


def test_the_loader_feeds_fake_images_through_the_transforms() -> None:
    p = params(model="cnn", batch_size=8, data={
        "name": "loader", "size": 16,
        "transforms": ["RandomHorizontalFlip", {"name": "RandomRotation", "degrees": 10}]})
    assert [t.name for t in p.data.transforms] == ["RandomHorizontalFlip", "RandomRotation"]
    assert p.data.transforms[1].kwargs == {"degrees": 10}
    next_batch = make_batches(p, torch.device("cpu"), 8, torch.Generator())
    for _ in range(3):  # 16 samples: the third batch starts a new epoch
        x, y = next_batch()
        assert x.shape == (8, 3, 32, 32) and x.dtype == torch.float32
        assert y.shape == (8,)
    _, out, moved = train_one_step(p)
    assert out.shape == (8, 10) and moved > 0


# Arguments each transform needs; a new transform must be added here to be tested.
TRANSFORM_ARGS: dict[str, dict[str, Any]] = {
    "RandomHorizontalFlip": {}, "RandomVerticalFlip": {}, "RandomRotation": {"degrees": 10},
    "RandomResizedCrop": {"size": 32}, "RandomCrop": {"size": 32, "padding": 2}, "CenterCrop": {"size": 32},
    "Resize": {"size": 32}, "ColorJitter": {"brightness": 0.2}, "Normalize": {"mean": [0.5] * 3, "std": [0.2] * 3},
    "RandomErasing": {"p": 1.0}, "GaussianBlur": {"kernel_size": 3}, "RandomAffine": {"degrees": 5},
    "RandomGrayscale": {"p": 1.0}, "Pad": {"padding": 0},
}


def test_every_transform_applies_to_an_image_tensor() -> None:
    assert set(TRANSFORM_ARGS) == set(TRANSFORMS.names())
    image = torch.rand(3, 32, 32)
    for name, kwargs in TRANSFORM_ARGS.items():
        out = build_transform(name, kwargs)(image)
        assert out.shape == (3, 32, 32), name


def test_an_unknown_name_lists_the_choices() -> None:
    with pytest.raises(UnknownName) as info:
        OPTIMIZERS.get("adamx")
    assert str(info.value) == "unknown optimizer 'adamx' (choose from: adagrad, adam, adamw, rmsprop, sgd)"
    assert ACTIVATIONS.names() == ["elu", "gelu", "leaky_relu", "relu", "sigmoid", "silu", "tanh"]
    assert LOSSES.names() == ["cross_entropy", "mse"]
    assert MODELS.names() == ["cnn", "mlp"]


def test_a_name_cannot_be_registered_twice() -> None:
    reg: Registry[int] = Registry("thing")
    reg.add("a", 1, "first")
    with pytest.raises(KeyError, match="thing 'a' registered twice"):
        reg.add("a", 2, "again")
    assert [e.name for e in reg] == ["a"] and reg.get("a") == 1
