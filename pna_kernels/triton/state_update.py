"""Decode step: advance the state by one token in place, with y, state entropy and halt logit."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import contiguous, launch_device, program_tile, softplus, state_blocks, x_log_x
from ..contract import StateUpdateArgs, StateUpdateResult
from .entropy import combine_channel_sums, combine_partials


@triton.jit
def _state_update_kernel(
    state_ptr, x_ptr, dt_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, dt_bias_ptr, halt_weight_ptr,
    y_ptr, part_ptr, mean_part_ptr,
    dim, dstate, n_groups, dim_per_group,
    HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
):
    b, g, n_blocks, block, d, mask_d, n, mask_n, mask_dn, dn = program_tile(dim_per_group, dstate, BLOCK_D, BLOCK_N)

    x = tl.load(x_ptr + b * dim + d, mask=mask_d, other=0.0).to(tl.float32)
    dt = tl.load(dt_ptr + b * dim + d, mask=mask_d, other=0.0).to(tl.float32)
    dt += tl.load(dt_bias_ptr + d, mask=mask_d, other=0.0)
    if SOFTPLUS:
        dt = softplus(dt)
    dt = tl.where(mask_d, dt, 0.0)
    bc = (b * n_groups + g) * dstate + n
    b_n = tl.load(B_ptr + bc, mask=mask_n, other=0.0).to(tl.float32)
    c_n = tl.load(C_ptr + bc, mask=mask_n, other=0.0).to(tl.float32)
    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0)
    h = tl.load(state_ptr + b * dim * dstate + dn, mask=mask_dn, other=0.0)
    h = tl.exp(dt[:, None] * A) * h + (dt * x)[:, None] * b_n[None, :]
    tl.store(state_ptr + b * dim * dstate + dn, h, mask=mask_dn)
    tl.store(mean_part_ptr + (b * n_blocks + block) * dstate + n, tl.sum(h, axis=0), mask=mask_n)

    y = tl.sum(h * c_n[None, :], axis=1) + tl.load(D_ptr + d, mask=mask_d, other=0.0) * x
    if HAS_Z:
        z = tl.load(z_ptr + b * dim + d, mask=mask_d, other=0.0).to(tl.float32)
        y = y * z * tl.sigmoid(z)
    tl.store(y_ptr + b * dim + d, y.to(y_ptr.dtype.element_ty), mask=mask_d)

    e = h * h
    halt_weight = tl.load(halt_weight_ptr + dn, mask=mask_dn, other=0.0)
    part = part_ptr + (b * n_blocks + block) * 3
    tl.store(part, tl.sum(tl.sum(e, axis=1), axis=0))
    tl.store(part + 1, tl.sum(tl.sum(x_log_x(e), axis=1), axis=0))
    tl.store(part + 2, tl.sum(tl.sum(h * halt_weight, axis=1), axis=0))


def state_update(args: StateUpdateArgs) -> StateUpdateResult:
    """One decode step on canonical inputs (pna_kernels/contract.py); args.state is updated in place.

    state: (batch, D, N) float32, contiguous; x, dt, z: (batch, D) float16/bfloat16/float32; B, C: (batch, G, N)
    in x's dtype; A, halt_weight: (D, N), D, dt_bias: (D,), halt_bias: (), float32.
    Returns y (batch, D) in x's dtype and, in float32, entropy and halt_logits (batch,) and channel_mean (batch, N)
    = the mean over D of the new state.
    """
    state = args.state
    if state.dtype != torch.float32 or not state.is_contiguous():
        raise ValueError(f"state: expected a contiguous float32 tensor, got {state.dtype}, "
                         f"contiguous={state.is_contiguous()}")
    x, dt, A, B, C, D, z, dt_bias, halt_weight, halt_bias = contiguous(
        args.x, args.dt, args.A, args.B, args.C, args.D, args.z, args.dt_bias, args.halt_weight, args.halt_bias
    )
    batch, dim = x.shape
    n_groups, dstate = B.shape[1], B.shape[2]
    dim_per_group = dim // n_groups
    block_d, block_n = state_blocks(dim_per_group, dstate)
    blocks_per_group = triton.cdiv(dim_per_group, block_d)
    n_blocks = n_groups * blocks_per_group
    y = torch.empty(batch, dim, dtype=x.dtype, device=x.device)
    partials = torch.empty(batch, n_blocks, 3, 1, dtype=torch.float32, device=x.device)
    mean_partials = torch.empty(batch, n_blocks, dstate, dtype=torch.float32, device=x.device)
    with launch_device(x):
        _state_update_kernel[(batch, n_groups, blocks_per_group)](
            state, x, dt, A, B, C, D, x if z is None else z, dt_bias, halt_weight, y, partials, mean_partials,
            dim, dstate, n_groups, dim_per_group,
            HAS_Z=z is not None, SOFTPLUS=args.dt_softplus, BLOCK_D=block_d, BLOCK_N=block_n,
        )
    _, entropy, halt = combine_partials(partials, halt_bias)
    return StateUpdateResult(y=y, entropy=entropy[:, 0], halt_logits=halt[:, 0],
                             channel_mean=combine_channel_sums(mean_partials, dim))
