"""Input pipelines of a case: synthetic tensors made once on the device, or a DataLoader over
torchvision's FakeData with the case's transforms."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from bench.components import build_transform
from bench.suite import CaseParams

Batch = tuple[torch.Tensor, torch.Tensor]


def _targets(labels: torch.Tensor, loss: str, num_classes: int) -> torch.Tensor:
    if loss == "mse":
        # MSE compares logits with one-hot rows of the same shape.
        return torch.nn.functional.one_hot(labels, num_classes).float()
    return labels


def _layout(params: CaseParams) -> torch.memory_format:
    # channels_last (NHWC) inputs beside a channels_last model; otherwise the default layout.
    return torch.channels_last if params.channels_last else torch.contiguous_format


def make_batches(params: CaseParams, device: torch.device, batch_size: int,
                 generator: torch.Generator) -> Callable[[], Batch]:
    """A function returning the next (inputs, targets) batch on ``device``."""
    shape = params.model.shape
    classes = params.model.num_classes
    if params.data.name == "synthetic":
        x = torch.randn((batch_size, *shape), generator=generator).to(device).contiguous(memory_format=_layout(params))
        y = _targets(torch.randint(0, classes, (batch_size,), generator=generator), params.loss, classes).to(device)
        batch = (x, y)
        return lambda: batch
    return _loader_batches(params, device, batch_size)


def _loader_batches(params: CaseParams, device: torch.device, batch_size: int) -> Callable[[], Batch]:
    from torchvision import datasets, transforms

    cfg = params.data
    chain = [transforms.PILToTensor(), transforms.ConvertImageDtype(torch.float32)]
    chain += [build_transform(t.name, t.kwargs) for t in cfg.transforms]
    shape = params.model.shape
    dataset = datasets.FakeData(size=cfg.size, image_size=shape, num_classes=params.model.num_classes,
                                transform=transforms.Compose(chain), random_offset=params.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, drop_last=True,
        num_workers=cfg.num_workers, pin_memory=cfg.pin_memory and device.type == "cuda",
        persistent_workers=cfg.persistent_workers and cfg.num_workers > 0,
        prefetch_factor=cfg.prefetch_factor if cfg.num_workers > 0 else None,
    )
    if len(loader) == 0:
        raise ValueError(f"data.size ({cfg.size}) is smaller than one batch ({batch_size})")
    non_blocking = cfg.pin_memory and device.type == "cuda"
    layout = _layout(params)
    state: dict[str, Iterator[Batch]] = {"it": iter(loader)}

    def next_batch() -> Batch:
        # Starting a new epoch is part of the input pipeline's real cost, so it stays in the timing.
        try:
            x, y = next(state["it"])
        except StopIteration:
            state["it"] = iter(loader)
            x, y = next(state["it"])
        y = _targets(y, params.loss, params.model.num_classes)
        # The layout change is part of the pipeline's cost, as it would be in training.
        x = x.to(device, non_blocking=non_blocking).contiguous(memory_format=layout)
        return x, y.to(device, non_blocking=non_blocking)

    return next_batch
