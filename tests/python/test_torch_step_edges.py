# SPDX-License-Identifier: MIT
"""Edges of bn1d.torch's training step (bn1d.torch.BatchNorm1d and, in one process,
bn1d.torch.SyncBatchNorm) that an independent review found: non-finite inputs, calls that fail
late, valid positions changed by the caller after forward, and arguments SyncBatchNorm refuses.
torch.nn.BatchNorm1d (torch 1.13) is the oracle."""

import pytest
import torch

import bn1d.torch as bt

MODULES = [bt.BatchNorm1d, bt.SyncBatchNorm]


def pair(cls, C=3):
    ours, oracle = cls(C, dtype=torch.float64), torch.nn.BatchNorm1d(C, dtype=torch.float64)
    with torch.no_grad():
        for m in (ours, oracle):
            m.weight.copy_(torch.linspace(0.5, 1.5, C, dtype=torch.float64))
            m.bias.copy_(torch.linspace(-1, 1, C, dtype=torch.float64))
    return ours, oracle


@pytest.mark.parametrize("cls", MODULES)
def test_nan_and_inf_inputs_normalize_as_torch(cls):
    """A NaN or an inf in a channel makes that channel's output NaN, as in torch, and its
    running statistics non-finite (torch: NaN, or inf for the mean of an inf); the other
    channels are untouched. A training step does not raise."""
    x = torch.randn(6, 3, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x[1, 1, 2], x[4, 2, 0] = float("nan"), float("inf")
    ours, oracle = pair(cls)
    torch.testing.assert_close(ours(x), oracle(x), equal_nan=True, rtol=1e-12, atol=1e-12)
    for name in ("running_mean", "running_var"):
        got, want = getattr(ours, name), getattr(oracle, name)
        torch.testing.assert_close(got[:2], want[:2], equal_nan=True, rtol=1e-12, atol=1e-12)
        assert not torch.isfinite(got[2]) and not torch.isfinite(want[2])


@pytest.mark.parametrize("cls", MODULES)
def test_a_forward_that_cannot_save_for_backward_changes_nothing(cls):
    """An inference-mode input cannot be saved for backward: the forward raises and leaves the
    running statistics and the count as they were."""
    with torch.inference_mode():
        x = torch.randn(5, 3, dtype=torch.float64)
    ours, _ = pair(cls)
    before = {k: v.clone() for k, v in ours.state_dict().items()}
    with pytest.raises(RuntimeError, match="Inference tensors"):
        ours(x)
    for key, value in ours.state_dict().items():
        assert torch.equal(value, before[key]), key


@pytest.mark.parametrize("cls", MODULES)
def test_lengths_changed_after_forward_do_not_change_backward(cls):
    """The valid positions are copied at forward: backward uses them, not the caller's buffer."""
    g = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 6, dtype=torch.float64, generator=g, requires_grad=True)
    dy = torch.randn(4, 3, 6, dtype=torch.float64, generator=g)
    lengths = torch.tensor([6, 2, 4, 5])
    ours, _ = pair(cls)
    y = ours(x, lengths=lengths.clone())
    expected, = torch.autograd.grad(y, x, dy, retain_graph=True)
    y = ours(x, lengths=lengths)
    lengths[0] = 1  # the caller reuses its buffer before backward
    got, = torch.autograd.grad(y, x, dy)
    assert torch.equal(got, expected)


def test_sync_batch_norm_refuses_lengths_with_a_4d_input():
    m = bt.SyncBatchNorm(3)
    with pytest.raises(ValueError, match=r"lengths, mask: expected an \(N, C, L\) input, got 4D"):
        m(torch.randn(2, 3, 4, 4), lengths=[4, 3])
    assert int(m.num_batches_tracked) == 0


def test_sync_batch_norm_input_types_and_channels():
    m = bt.SyncBatchNorm(3, affine=False, track_running_stats=False)
    with pytest.raises(TypeError, match="input: expected a torch.Tensor, got list"):
        m([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    with pytest.raises(ValueError, match=r"expected input with 3 channels \(num_features\), got 2"):
        m(torch.randn(4, 2))


def test_sync_batch_norm_counts_sizes_as_the_caller_gave_them():
    """The "more than 1 value per channel" error shows the input's own size, not the (N, C, L)
    view's."""
    with pytest.raises(ValueError, match=r"got input size \[1, 3, 1, 1\]"):
        bt.SyncBatchNorm(3)(torch.randn(1, 3, 1, 1))
