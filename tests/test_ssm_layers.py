"""The S6 block's own autograd pieces (channel-first projections and the shifted multiply-add depthwise conv)
against the PyTorch layers they replace, values and float64 gradients."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pna.models.ssm import _causal_depthwise_conv, _channels_to_rows, _rows_to_channels


def _leaf(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_rows_to_channels_is_a_transposed_linear(bias):
    torch.manual_seed(0)
    x, w = _leaf(3, 7, 5), _leaf(4, 5)
    b = _leaf(4) if bias else None
    torch.testing.assert_close(_rows_to_channels(x, w, b), F.linear(x, w, b).transpose(1, 2))
    assert torch.autograd.gradcheck(lambda *a: _rows_to_channels(*a), (x, w, b))


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_channels_to_rows_is_a_linear_of_the_transpose(bias):
    torch.manual_seed(1)
    y, w = _leaf(3, 5, 7), _leaf(4, 5)
    b = _leaf(4) if bias else None
    torch.testing.assert_close(_channels_to_rows(y, w, b), F.linear(y.transpose(1, 2), w, b))
    assert torch.autograd.gradcheck(lambda *a: _channels_to_rows(*a), (y, w, b))


@pytest.mark.parametrize("k,length", [(4, 9), (4, 2), (1, 5), (3, 3)], ids=["k4-L9", "k4-L2-shorter", "k1", "k3-L3"])
def test_causal_depthwise_conv_matches_conv1d(k, length):
    torch.manual_seed(2)
    dim = 6
    u, w, b = _leaf(2, dim, length), _leaf(dim, k), _leaf(dim)
    want = F.conv1d(u, w[:, None, :], b, padding=k - 1, groups=dim)[..., :length]
    torch.testing.assert_close(_causal_depthwise_conv(u, w, b), want)
    assert torch.autograd.gradcheck(_causal_depthwise_conv, (u, w, b))
