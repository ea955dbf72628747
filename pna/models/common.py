"""What every model returns, shared by the SSM and the Transformer."""
from __future__ import annotations

from typing import NamedTuple, Optional

from torch import Tensor, nn


class ModelOutput(NamedTuple):
    """A teacher-forced forward pass.

    logits (B, L, V); halt_logits (B, L) and entropy (B, L): the model's (its last layer's) halt logit and state
    entropy (natural log); layer_entropy and layer_halt_logits (n_layers, B, L): every layer's; channel_mean: the
    last layer's s_t = mean over channels of h_t, (B, L, N) float32, None for the Transformer (and for the SSM
    unless asked for).
    """

    logits: Tensor
    halt_logits: Tensor
    entropy: Tensor
    layer_entropy: Tensor
    layer_halt_logits: Tensor
    channel_mean: Optional[Tensor] = None


class StepOutput(NamedTuple):
    """One decoding step: logits (B, V), halt_logits (B,), entropy (B,)."""

    logits: Tensor
    halt_logits: Tensor
    entropy: Tensor


def num_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
