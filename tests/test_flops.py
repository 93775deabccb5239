"""FLOP counts against analytic ones, operator by operator (convolutions plain, grouped, depthwise
and transposed; linear layers; attention), forward and backward, with and without the gradients
of inputs and weights; and the FLOPs collector's refusal to report a count or an MFU that cannot
be right."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from bench.collectors import CaseContext
from bench.collectors import flops as flops_mod
from bench.collectors.flops import FlopsCollector, StepFlops, count_step_flops, implausible
from bench.measure import Measurement
from bench.suite import CaseParams
from bench.worker import build_step


def _step(module: nn.Module, x: torch.Tensor) -> Callable[[], None]:
    return lambda: module(x).sum().backward()


def _conv_forward(n: int, out_positions: int, c_out: int, c_in: int, groups: int, kernel: int) -> int:
    """2 FLOPs per multiply-add: each output value sums c_in/groups * kernel products."""
    return 2 * n * out_positions * c_out * (c_in // groups) * kernel


# (name, layer, input shape, FLOPs of the forward pass worked out by hand)
CONVS = [
    ("plain", lambda: nn.Conv2d(8, 16, 3, padding=1), (4, 8, 10, 10), _conv_forward(4, 100, 16, 8, 1, 9)),
    ("strided", lambda: nn.Conv2d(8, 16, 3, stride=2), (4, 8, 11, 11), _conv_forward(4, 25, 16, 8, 1, 9)),
    ("grouped", lambda: nn.Conv2d(8, 16, 3, padding=1, groups=4), (4, 8, 10, 10),
     _conv_forward(4, 100, 16, 8, 4, 9)),
    ("depthwise", lambda: nn.Conv2d(16, 16, 3, padding=1, groups=16), (4, 16, 10, 10),
     _conv_forward(4, 100, 16, 16, 16, 9)),
    ("conv1d_depthwise", lambda: nn.Conv1d(6, 12, 5, groups=6), (2, 6, 20), _conv_forward(2, 16, 12, 6, 6, 5)),
    # A transposed convolution applies the whole kernel at each *input* position: 5x5 of them here,
    # each input channel feeding c_out/groups output channels.
    ("transposed", lambda: nn.ConvTranspose2d(8, 4, 3, stride=2), (2, 8, 5, 5), 2 * 2 * 25 * 8 * 4 * 9),
    ("transposed_grouped", lambda: nn.ConvTranspose2d(8, 12, 3, stride=2, padding=1, groups=4), (2, 8, 5, 5),
     2 * 2 * 25 * 8 * (12 // 4) * 9),
]


@pytest.mark.parametrize(("name", "make", "shape", "forward"), CONVS, ids=[c[0] for c in CONVS])
@pytest.mark.parametrize(("input_grad", "weight_grad"), [(True, True), (False, True), (True, False)],
                         ids=["both_gradients", "weight_gradient_only", "input_gradient_only"])
def test_a_convolution_counts_its_forward_once_more_for_each_gradient_asked_for(
        name: str, make: Callable[[], nn.Module], shape: tuple[int, ...], forward: int,
        input_grad: bool, weight_grad: bool) -> None:
    torch.manual_seed(0)
    conv = make()
    conv.weight.requires_grad_(weight_grad)
    x = torch.randn(shape, requires_grad=input_grad)
    counted = count_step_flops(_step(conv, x))
    # The backward pass's output_mask asks for the input gradient and the weight gradient only
    # where they are needed; each costs what the forward did (the bias gradient is a sum).
    assert counted.forward == forward
    assert counted.backward == forward * (input_grad + weight_grad)
    assert counted.by_op == {"aten.convolution": forward, "aten.convolution_backward": counted.backward}


def test_the_depthwise_convolution_of_the_issue_counts_18_9_mflops_of_backward() -> None:
    # 64 channels, 3x3, batch 8 of 32x32: torch 2.14 counts 613.4 MFLOPs of backward here.
    conv = nn.Conv2d(64, 64, 3, padding=1, groups=64, bias=False)
    counted = count_step_flops(_step(conv, torch.randn(8, 64, 32, 32, requires_grad=True)))
    assert counted.forward == 9_437_184
    assert counted.backward == 18_874_368
    assert counted.backward_ratio == 2.0


@pytest.mark.parametrize(("make", "shape"), [
    (lambda: nn.Conv2d(8, 16, 3, padding=1), (2, 8, 7, 7)),
    (lambda: nn.ConvTranspose2d(8, 4, 3, stride=2), (2, 8, 7, 7)),
    (lambda: nn.Conv3d(2, 4, 3), (2, 2, 6, 6, 6)),
], ids=["conv2d", "transposed", "conv3d"])
def test_where_torchs_formula_is_right_the_count_is_torchs(make: Callable[[], nn.Module],
                                                           shape: tuple[int, ...]) -> None:
    # torch is right for every convolution with groups=1; the fix must not change those counts.
    conv = make()
    x = torch.randn(shape, requires_grad=True)
    with FlopCounterMode(display=False) as torch_counter:
        _step(conv, x)()
    ours = count_step_flops(_step(conv, x))
    assert ours.total == torch_counter.get_total_flops()
    assert ours.by_op == {str(op): n for op, n in torch_counter.get_flop_counts()["Global"].items()}


@pytest.mark.parametrize("input_grad", [False, True], ids=["data_input", "input_needs_gradient"])
def test_a_linear_layer_counts_2_n_in_out_forward_and_once_more_per_gradient(input_grad: bool) -> None:
    layer = nn.Linear(20, 30)
    x = torch.randn(5, 20, requires_grad=input_grad)
    counted = count_step_flops(_step(layer, x))
    assert counted.forward == 2 * 5 * 20 * 30
    assert counted.backward == 2 * 5 * 20 * 30 * (1 + input_grad)


@pytest.mark.parametrize("grad", [True, False], ids=["training", "no_grad"])
def test_attention_counts_its_two_products_forward_and_five_backward(grad: bool) -> None:
    # torch's convention for fused attention: forward Q@K^T and P@V; backward recomputes Q@K^T and
    # forms dP = dO@V^T, dV = P^T@dO, dQ = dS@K, dK = dS^T@Q. A CPU runs its own fused kernel,
    # which torch's table lacks (it counted 0).
    b, h, s_q, s_k, d = 2, 3, 12, 20, 8
    q = torch.randn(b, h, s_q, d, requires_grad=grad)
    k = torch.randn(b, h, s_k, d, requires_grad=grad)
    v = torch.randn(b, h, s_k, d, requires_grad=grad)
    product = 2 * b * h * s_q * s_k * d
    if grad:
        counted = count_step_flops(lambda: F.scaled_dot_product_attention(q, k, v).sum().backward())
        assert (counted.forward, counted.backward) == (2 * product, 5 * product)
    else:
        with torch.no_grad():
            counted = count_step_flops(lambda: F.scaled_dot_product_attention(q, k, v))
        assert (counted.forward, counted.backward) == (2 * product, 0)


def test_a_depthwise_separable_network_counts_its_analytic_flops() -> None:
    params = CaseParams.model_validate({"model": {"import": "usermodels:separable", "input_shape": [3, 8, 8]},
                                        "batch_size": 4})
    step, _ = build_step(params, torch.device("cpu"), 4)
    n, positions = 4, 64
    layers = [  # (forward FLOPs, gradients the backward pass computes)
        (_conv_forward(n, positions, 16, 3, 1, 9), 1),    # its input is the data: weight gradient only
        (_conv_forward(n, positions, 16, 16, 16, 9), 2),  # depthwise
        (_conv_forward(n, positions, 32, 16, 1, 1), 2),   # pointwise
        (2 * n * 32 * 64 * 10, 2),                        # linear
    ]
    counted = count_step_flops(step)
    assert counted.forward == sum(f for f, _ in layers)
    assert counted.backward == sum(f * grads for f, grads in layers)


# ---------------------------------------------------------------------------------------------
# The collector refuses what cannot be right


def _ctx(model: dict[str, Any] | str = "mlp", **overrides: Any) -> CaseContext:
    params = CaseParams.model_validate({"model": model, "batch_size": 4, **overrides})
    step, module = build_step(params, torch.device("cpu"), 4)
    return CaseContext(params=params, device=torch.device("cpu"), out_dir=None, case_id="case", step=step,
                       model=module, batch=4)


def _record(ctx: CaseContext, throughput: float) -> dict[str, Any]:
    """The FLOPs collector's record of a case whose every window ran at ``throughput`` samples/s."""
    collector = FlopsCollector(ctx)
    collector.after()
    seconds = ctx.samples_per_step / throughput
    ctx.measurement = Measurement(batch_size=ctx.samples_per_step, steps_per_window=1,
                                  window_start=[0.0, seconds, 2 * seconds], window_seconds=[seconds] * 3)
    return collector.record()


def test_a_backward_count_far_above_forward_is_the_collectors_error_naming_the_operator(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A formula as wrong as torch's for depthwise convolutions: the collector must say so.
    monkeypatch.setattr(flops_mod, "_flop_fixes",
                        lambda: {torch.ops.aten.convolution_backward: lambda *a, **k: 10**12})
    ctx = _ctx({"import": "usermodels:separable", "input_shape": [3, 8, 8]}, peak_flops=1e15)
    record = _record(ctx, 100.0)
    assert record["error"].startswith("the FLOP count is implausible: backward is ")
    assert "outside 1 to 3 (aten.convolution_backward has 100% of the backward FLOPs)" in record["error"]
    assert all(record[k] is None for k in FlopsCollector.fields)


def test_an_mfu_above_one_is_the_collectors_error_never_a_figure() -> None:
    ctx = _ctx(peak_flops=1e3)  # an absurdly low peak: any real step beats it
    record = _record(ctx, 1000.0)
    assert record["error"].startswith("MFU of ")
    assert "is impossible (above 1): the FLOP count (aten." in record["error"]
    assert "or the peak (1e+03 FLOP/s, suite: peak_flops) is wrong" in record["error"]
    assert record["mfu"] is None and record["achieved_flops"] is None and record["flops_per_step"] is None


def test_a_sane_count_records_its_forward_and_backward_flops() -> None:
    ctx = _ctx({"import": "usermodels:separable", "input_shape": [3, 8, 8]}, peak_flops=1e15)
    record = _record(ctx, 100.0)
    assert record["error"] is None
    assert record["flops_per_step"] == record["forward_flops"] + record["backward_flops"]
    assert 1 <= record["backward_flops"] / record["forward_flops"] <= 3
    assert 0 < record["mfu"] < 1


def test_frozen_layers_may_bring_backward_below_forward() -> None:
    # Fine-tuning a head: the frozen layers compute no weight gradient, so backward < forward is
    # right there, and only a ratio above the band is refused.
    low = StepFlops(by_op={"aten.addmm": 100, "aten.mm": 10}, forward=100, backward=10,
                    backward_by_op={"aten.mm": 10})
    assert implausible(low, all_trainable=False) is None
    assert implausible(low, all_trainable=True) == (
        "the FLOP count is implausible: backward is 0.10 times forward, outside 1 to 3 "
        "(aten.mm has 100% of the backward FLOPs)")


def test_the_band_holds_for_every_builtin_and_depthwise_model() -> None:
    for model in ("mlp", "cnn", {"import": "usermodels:separable", "input_shape": [3, 8, 8]}):
        step = _ctx(model).step
        assert step is not None
        counted = count_step_flops(step)
        ratio = counted.backward_ratio
        assert ratio is not None and 1 <= ratio <= 3, (model, ratio)
        assert counted.total == counted.forward + counted.backward
