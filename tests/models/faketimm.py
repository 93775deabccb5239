"""A stand-in for ``timm.create_model``, with its calling convention (a model name and options as
keyword arguments), so tests of case ids and labels need no timm: nothing in bench depends on it."""

from __future__ import annotations

from torch import nn

MODELS = {"resnet18": 8, "vit_tiny_patch16_224": 12, "mobilenetv3_small_100": 4}


def create_model(model_name: str, pretrained: bool = False, num_classes: int = 10,
                 img_size: int | None = None) -> nn.Module:
    """A small network whose width depends on ``model_name``; refuses anything timm would not
    take here (pretrained weights would be downloaded)."""
    if pretrained:
        raise ValueError("pretrained weights are not available offline")
    width = MODELS[model_name]
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(width), nn.ReLU(), nn.Linear(width, num_classes))
