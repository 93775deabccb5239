"""Registries of the small building blocks: optimizers, activations, losses and data transforms.

Each entry knows its name and the keyword arguments it accepts without importing torch, so a suite
is validated (and `bench list --components` answers) in milliseconds; the torch objects are made
only inside a worker process by the ``build_*`` functions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class OptimizerSpec:
    torch_class: str
    kwargs: frozenset[str]
    # Short names used in case ids, e.g. momentum 0.9 -> "m0.9".
    abbrev: tuple[tuple[str, str], ...] = ()


_COMMON = {"weight_decay", "foreach", "maximize", "differentiable"}

OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")
OPTIMIZERS.add(
    "sgd",
    OptimizerSpec("SGD", frozenset(_COMMON | {"momentum", "dampening", "nesterov", "fused"}),
                  (("momentum", "m"), ("nesterov", "nag"), ("weight_decay", "wd"), ("dampening", "d"))),
    "stochastic gradient descent (momentum, nesterov, weight_decay, dampening)",
)
_ADAM_KW = frozenset(_COMMON | {"betas", "eps", "amsgrad", "capturable", "fused"})
_ADAM_AB = (("betas", "b"), ("eps", "eps"), ("weight_decay", "wd"), ("amsgrad", "ams"))
OPTIMIZERS.add("adam", OptimizerSpec("Adam", _ADAM_KW, _ADAM_AB), "Adam (betas, eps, weight_decay, amsgrad)")
OPTIMIZERS.add("adamw", OptimizerSpec("AdamW", _ADAM_KW, _ADAM_AB), "AdamW, decoupled weight decay")
OPTIMIZERS.add(
    "rmsprop",
    OptimizerSpec("RMSprop", frozenset(_COMMON | {"alpha", "eps", "momentum", "centered", "capturable"}),
                  (("alpha", "a"), ("momentum", "m"), ("centered", "c"), ("weight_decay", "wd"))),
    "RMSprop (alpha, eps, momentum, centered, weight_decay)",
)
OPTIMIZERS.add(
    "adagrad",
    OptimizerSpec("Adagrad", frozenset(_COMMON | {"lr_decay", "initial_accumulator_value", "eps", "fused"}),
                  (("lr_decay", "lrd"), ("weight_decay", "wd"))),
    "Adagrad (lr_decay, weight_decay, initial_accumulator_value, eps)",
)

ACTIVATIONS: Registry[str] = Registry("activation")
for _name, _cls in [("relu", "ReLU"), ("sigmoid", "Sigmoid"), ("tanh", "Tanh"), ("gelu", "GELU"),
                    ("silu", "SiLU"), ("leaky_relu", "LeakyReLU"), ("elu", "ELU")]:
    ACTIVATIONS.add(_name, _cls, f"torch.nn.{_cls}")

LOSSES: Registry[str] = Registry("loss")
LOSSES.add("cross_entropy", "CrossEntropyLoss", "cross-entropy on logits with integer class targets")
LOSSES.add("mse", "MSELoss", "mean squared error between logits and one-hot targets")

# Transforms run on tensors (after the image is converted), so every entry must accept a tensor.
TRANSFORMS: Registry[str] = Registry("transform")
for _t, _doc in [
    ("RandomHorizontalFlip", "p"), ("RandomVerticalFlip", "p"), ("RandomRotation", "degrees"),
    ("RandomResizedCrop", "size, scale, ratio"), ("RandomCrop", "size, padding"), ("CenterCrop", "size"),
    ("Resize", "size"), ("ColorJitter", "brightness, contrast, saturation, hue"),
    ("Normalize", "mean, std"), ("RandomErasing", "p, scale, ratio"), ("GaussianBlur", "kernel_size, sigma"),
    ("RandomAffine", "degrees, translate, scale"), ("RandomGrayscale", "p"), ("Pad", "padding"),
]:
    TRANSFORMS.add(_t, _t, f"torchvision.transforms.{_t}({_doc})")


def build_optimizer(name: str, kwargs: dict[str, Any], params: Any, lr: float) -> torch.optim.Optimizer:
    import torch

    cls = getattr(torch.optim, OPTIMIZERS.get(name).torch_class)
    args = dict(kwargs)
    if "betas" in args:
        args["betas"] = tuple(args["betas"])
    optimizer: torch.optim.Optimizer = cls(params, lr=lr, **args)
    return optimizer


def build_activation(name: str) -> torch.nn.Module:
    import torch

    module: torch.nn.Module = getattr(torch.nn, ACTIVATIONS.get(name))()
    return module


def build_loss(name: str) -> torch.nn.Module:
    import torch

    module: torch.nn.Module = getattr(torch.nn, LOSSES.get(name))()
    return module


def build_transform(name: str, kwargs: dict[str, Any]) -> Any:
    from torchvision import transforms

    return getattr(transforms, TRANSFORMS.get(name))(**kwargs)
