# SPDX-License-Identifier: MIT
"""bn1d.torch with bfloat16 and float16 tensors, beyond the parity sweep
(test_torch_parity_16bit.py): models converted in 16-bit, autograd's retain_graph and
create_graph, float16 overflow, float64 parameters with 16-bit inputs. The oracle is torch 1.13
in float64 on the same 16-bit values."""

import copy

import numpy as np
import pytest
import torch

import bn1d.torch as bt
from test_torch_parity_16bit import _ulps


class _Scale(torch.nn.Module):
    def __init__(self, features):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.rand(features) + 0.5)

    def forward(self, x):
        return x * self.weight


def _oracle(x, module):
    """torch float64 batch norm (training) of x with module's weight and bias."""
    w = None if module.weight is None else module.weight.detach().double()
    b = None if module.bias is None else module.bias.detach().double()
    return torch.nn.functional.batch_norm(x.detach().double(), None, None, w, b, True)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_converted_16bit_model_trains(dtype):
    """A pure 16-bit model converted to bn1d: the gradients reach the layers before the batch
    norm, and the batch norm's own gradients are 16-bit tensors one rounding from float64.
    (torch 1.13 has no float16 Linear on the CPU: a per-feature scale stands before it.)"""
    torch.manual_seed(3)
    model = torch.nn.Sequential(_Scale(5), torch.nn.BatchNorm1d(5)).to(dtype)
    model = bt.convert(model)
    assert isinstance(model[1], bt.BatchNorm1d)
    x = torch.randn(16, 5).to(dtype)
    h = model[0](x).detach().requires_grad_()
    y = model[1](h)
    gy = torch.randn_like(y)
    y.backward(gy)
    assert h.grad.dtype == dtype and model[1].weight.grad.dtype == dtype
    hd = h.detach().double().requires_grad_()
    w = model[1].weight.detach().double().requires_grad_()
    torch.nn.functional.batch_norm(hd, None, None, w, model[1].bias.detach().double(),
                                   True).backward(gy.double())
    assert _ulps(h.grad, hd.grad).max() <= 1
    assert _ulps(model[1].weight.grad, w.grad).max() <= 1
    model.zero_grad()
    model(x).sum().backward()
    assert model[0].weight.grad is not None and model[0].weight.grad.dtype == dtype


@pytest.mark.parametrize("pure", [False, True])
def test_retain_graph_and_no_second_derivative_in_bfloat16(pure):
    m = bt.BatchNorm1d(3)
    if pure:
        m = m.bfloat16()
    x = torch.randn(8, 3, 2).bfloat16().requires_grad_()
    y = m(x)
    g = torch.randn_like(y)
    y.backward(g, retain_graph=True)
    first = x.grad.clone()
    y.backward(g)
    assert torch.equal(x.grad, first + first)
    x.grad = None
    (gx,) = torch.autograd.grad(m(x), x, g, create_graph=True)
    assert gx.dtype == torch.bfloat16
    with pytest.raises(RuntimeError, match="no second derivative"):
        gx.float().sum().backward()


def test_float16_overflow_rounds_to_inf():
    """Outputs past float16's range are ±inf, as IEEE rounding of the float64 result says."""
    m = bt.BatchNorm1d(2).half()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([60000.0, 1.0]))
    x = torch.tensor([[-1.0, 0.0], [0.0, 1.0], [5.0, 2.0]]).half()
    y = m(x)
    want = _oracle(x, m)
    assert torch.isinf(want.half()).any()  # the case tests what it says
    assert torch.equal(torch.isinf(y), torch.isinf(want.half()))
    assert _ulps(y, want).max() <= 1


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_float64_parameters_with_16bit_input(dtype):
    """A float64 module takes 16-bit inputs too (mixed), which torch 1.13 refuses; the running
    statistics stay float64."""
    m = bt.BatchNorm1d(3).double()
    x = torch.randn(10, 3).to(dtype).requires_grad_()
    y = m(x)
    assert y.dtype == dtype and m.running_mean.dtype == torch.float64
    assert _ulps(y, _oracle(x, m)).max() <= 1
    np.testing.assert_allclose(m.running_mean.numpy(), 0.1 * x.detach().double().mean(0).numpy(),
                               rtol=1e-12, atol=1e-15)
    y.sum().backward()
    assert x.grad.dtype == dtype and m.weight.grad.dtype == torch.float64


def test_other_16bit_pairs_are_value_errors_that_change_nothing():
    m = bt.BatchNorm1d(3).half()
    before = copy.deepcopy(m.state_dict())
    with pytest.raises(ValueError, match="expected a float16 input .*got bfloat16"):
        m(torch.randn(4, 3).bfloat16())
    for key, value in m.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("weight_dtype, buffer_dtype", [
    (torch.bfloat16, torch.float32), (torch.float16, torch.float32),
    (torch.float32, torch.float64)])
def test_parameters_and_buffers_of_different_dtypes_are_an_error(weight_dtype, buffer_dtype):
    # torch 1.13 refuses such modules; bn1d.torch names the dtypes instead of rounding silently.
    m = bt.BatchNorm1d(3)
    m.weight.data = m.weight.data.to(weight_dtype)
    m.bias.data = m.bias.data.to(weight_dtype)
    m.running_mean = m.running_mean.to(buffer_dtype)
    m.running_var = m.running_var.to(buffer_dtype)
    before = copy.deepcopy(m.state_dict())
    x = torch.randn(4, 3).to(weight_dtype if weight_dtype != torch.float32 else torch.float32)
    with pytest.raises(ValueError, match=f"weight {weight_dtype}.*running_mean {buffer_dtype}"):
        m(x)
    for key, value in m.state_dict().items():
        assert torch.equal(value, before[key]), key
