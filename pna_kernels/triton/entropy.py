"""Combine per-program partial sums into state entropy and halt logits, in a fixed order (no atomics)."""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import launch_device

BLOCK_L = 256


@triton.jit
def _combine_partials_kernel(
    part_ptr, halt_bias_ptr, sums_ptr, entropy_ptr, halt_ptr,
    n_blocks, length,
    BLOCK_L: tl.constexpr,
):
    b = tl.program_id(0).to(tl.int64)
    t = tl.program_id(1) * BLOCK_L + tl.arange(0, BLOCK_L)
    mask = t < length
    s1 = tl.zeros((BLOCK_L,), dtype=tl.float32)
    s2 = tl.zeros((BLOCK_L,), dtype=tl.float32)
    halt = tl.zeros((BLOCK_L,), dtype=tl.float32)
    for k in range(n_blocks):
        base = part_ptr + (b * n_blocks + k) * 3 * length
        s1 += tl.load(base + t, mask=mask, other=0.0)
        s2 += tl.load(base + length + t, mask=mask, other=0.0)
        halt += tl.load(base + 2 * length + t, mask=mask, other=0.0)
    tl.store(sums_ptr + b * 2 * length + t, s1, mask=mask)
    tl.store(sums_ptr + (b * 2 + 1) * length + t, s2, mask=mask)
    # 0 for an all-zero state; NaN when the state is non-finite or its energy overflows (NaN or infinite sums;
    # x - x is 0 only for finite x), never a finite number.
    zero = s1 == 0.0
    s1_safe = tl.where(zero, 1.0, s1)
    entropy = tl.log(s1_safe) - s2 / s1_safe
    entropy = tl.where((entropy - entropy) == 0.0, entropy, float("nan"))
    tl.store(entropy_ptr + b * length + t, tl.where(zero, 0.0, entropy), mask=mask)
    tl.store(halt_ptr + b * length + t, halt + tl.load(halt_bias_ptr), mask=mask)


def combine_partials(partials: Tensor, halt_bias: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Sum per-program partials over programs, block 0 first, and finish entropy and halt logits.

    partials: (batch, n_blocks, 3, L) float32 holding each program's sum h^2, sum h^2 log h^2 and
    sum halt_weight * h per token; halt_bias: () float32.
    Returns entropy_sums (batch, 2, L), entropy H = log S1 - S2 / S1 (0 where S1 == 0, NaN where it is not finite)
    (batch, L) and
    halt_logits (batch, L), all float32.
    """
    batch, n_blocks, _, length = partials.shape
    sums = torch.empty(batch, 2, length, dtype=torch.float32, device=partials.device)
    entropy = torch.empty(batch, length, dtype=torch.float32, device=partials.device)
    halt = torch.empty(batch, length, dtype=torch.float32, device=partials.device)
    block_l = min(BLOCK_L, triton.next_power_of_2(length))
    with launch_device(partials):
        _combine_partials_kernel[(batch, triton.cdiv(length, block_l))](
            partials, halt_bias, sums, entropy, halt, n_blocks, length, BLOCK_L=block_l,
        )
    return sums, entropy, halt


def combine_channel_sums(partials: Tensor, dim: int) -> Tensor:
    """The channel mean from per-program sums over channels: partials (batch, n_blocks, ...) summed over the
    blocks in a fixed order (torch.sum over a dimension uses no atomics) and divided by D."""
    return partials.sum(1) / dim
