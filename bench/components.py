"""Registries of the small building blocks: optimizers, activations, losses and data transforms.

Each entry knows its name and the keyword arguments it accepts (an optimizer's with their types)
without importing torch, so a suite is validated (and `bench list --components` answers) in
milliseconds; the torch objects are made only inside a worker process by the ``build_*`` functions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bench.registry import Registry

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class OptimizerSpec:
    torch_class: str
    # Every keyword argument of the torch constructor but ``params`` and ``lr`` (a case parameter),
    # with the type a suite may give it: plain Python types, so a suite is checked without torch.
    # torch also takes tensors for some of them, which YAML cannot write. A test compares this
    # table with torch's own signatures, so it cannot drift from the pinned release.
    kwargs: Mapping[str, Any]
    # Short names used in case ids, e.g. momentum 0.9 -> "m0.9".
    abbrev: tuple[tuple[str, str], ...] = ()


_COMMON: dict[str, Any] = {"weight_decay": float, "foreach": bool | None, "maximize": bool, "differentiable": bool}
_ADAM_KW: dict[str, Any] = {**_COMMON, "betas": tuple[float, float], "eps": float, "amsgrad": bool,
                            "capturable": bool, "fused": bool | None}

OPTIMIZERS: Registry[OptimizerSpec] = Registry("optimizer")
OPTIMIZERS.add(
    "sgd",
    OptimizerSpec("SGD", {**_COMMON, "momentum": float, "dampening": float, "nesterov": bool, "fused": bool | None},
                  (("momentum", "m"), ("nesterov", "nag"), ("weight_decay", "wd"), ("dampening", "d"))),
    "stochastic gradient descent (momentum, nesterov, weight_decay, dampening)",
)
_ADAM_AB = (("betas", "b"), ("eps", "eps"), ("weight_decay", "wd"), ("amsgrad", "ams"))
OPTIMIZERS.add("adam", OptimizerSpec("Adam", {**_ADAM_KW, "decoupled_weight_decay": bool}, _ADAM_AB),
               "Adam (betas, eps, weight_decay, amsgrad)")
OPTIMIZERS.add("adamw", OptimizerSpec("AdamW", _ADAM_KW, _ADAM_AB), "AdamW, decoupled weight decay")
OPTIMIZERS.add(
    "rmsprop",
    OptimizerSpec("RMSprop", {**_COMMON, "alpha": float, "eps": float, "momentum": float, "centered": bool,
                              "capturable": bool},
                  (("alpha", "a"), ("momentum", "m"), ("centered", "c"), ("weight_decay", "wd"))),
    "RMSprop (alpha, eps, momentum, centered, weight_decay)",
)
OPTIMIZERS.add(
    "adagrad",
    OptimizerSpec("Adagrad", {**_COMMON, "lr_decay": float, "initial_accumulator_value": float, "eps": float,
                              "fused": bool | None},
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


# The choices of the training axes (bench.training builds them), listed by `bench list --components`.
PRECISIONS: Registry[str] = Registry("precision")
PRECISIONS.add("fp32", "float32", "no autocast (default)")
PRECISIONS.add("bf16", "bfloat16", "bfloat16 autocast over forward and loss (fsdp: FSDP2 mixed-precision policy)")
PRECISIONS.add("fp16", "float16", "float16 autocast with a gradient scaler; CUDA only (skipped elsewhere)")

COMPILE_MODES: Registry[str] = Registry("compile mode")
COMPILE_MODES.add("default", "default", "torch.compile's balance of compile time and speed")
COMPILE_MODES.add("reduce-overhead", "reduce-overhead", "CUDA graphs to cut launch overhead (GPU)")
COMPILE_MODES.add("max-autotune", "max-autotune", "autotuned kernels: longest compile")
COMPILE_MODES.add("max-autotune-no-cudagraphs", "max-autotune-no-cudagraphs", "max-autotune without CUDA graphs")

MODES: Registry[str] = Registry("mode")
MODES.add("cpu", "cpu", "one process on the CPU")
MODES.add("cuda", "cuda", "one process on one GPU")
MODES.add("dp", "dp", "torch.nn.DataParallel over world_size GPUs in one process")
MODES.add("ddp", "ddp", "DistributedDataParallel, world_size ranks through torchrun (gloo on CPU, nccl on GPU)")
MODES.add("fsdp", "fsdp", "FSDP2 fully_shard, world_size ranks through torchrun (gloo with a CPU mesh, nccl on GPU)")


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
