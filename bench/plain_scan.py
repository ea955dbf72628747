"""A plain mamba-style selective scan in Triton (no entropy, no halt logits, no checkpoints): the baseline for
the goal "the fused op is within 1.2x of a plain scan".

It uses the same scheme as the fused Triton forward -- one program per (batch, group, block of channels), a
(BLOCK_D, BLOCK_N, CHUNK) tile per chunk of time, an associative scan inside the chunk and the state carried
between chunks -- so the ratio between the two measures what the entropy and halt sums cost, not a difference
in tiling. Forward only.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from pna_kernels.triton.common import linear_recurrence, program_tile

CHUNK = 32
TILE_ELEMENTS = 4096


@triton.jit
def _plain_scan_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, out_ptr, last_ptr,
    dim, length, dstate, n_groups, dim_per_group,
    HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    CHUNK: tl.constexpr,
):
    b, g, _, _, d, mask_d, n, mask_n, mask_dn, dn = program_tile(dim_per_group, dstate, BLOCK_D, BLOCK_N)
    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0)
    d_skip = tl.load(D_ptr + d, mask=mask_d, other=0.0)
    delta_bias = tl.load(delta_bias_ptr + d, mask=mask_d, other=0.0)
    h = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    steps = tl.arange(0, CHUNK)
    for c in range(tl.cdiv(length, CHUNK)):
        t = c * CHUNK + steps
        mask_t = t < length
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        row = (b * dim + d)[:, None] * length + t[None, :]
        bc_row = ((b * n_groups + g) * dstate + n)[:, None] * length + t[None, :]
        u = tl.load(u_ptr + row, mask=mask_dt, other=0.0).to(tl.float32)
        dt = tl.load(delta_ptr + row, mask=mask_dt, other=0.0).to(tl.float32) + delta_bias[:, None]
        if SOFTPLUS:
            dt = tl.where(dt > 20.0, dt, tl.log(1.0 + tl.exp(tl.minimum(dt, 20.0))))
        dt = tl.where(mask_dt, dt, 0.0)  # padded steps: decay 1, input 0, so the state passes through
        b_t = tl.load(B_ptr + bc_row, mask=mask_nt, other=0.0).to(tl.float32)
        c_t = tl.load(C_ptr + bc_row, mask=mask_nt, other=0.0).to(tl.float32)
        decay = tl.exp(dt[:, None, :] * A[:, :, None])
        inp = (dt * u)[:, None, :] * b_t[None, :, :]
        prod, acc = tl.associative_scan((decay, inp), axis=2, combine_fn=linear_recurrence)
        hs = prod * h[:, :, None] + acc
        y = tl.sum(hs * c_t[None, :, :], axis=1) + d_skip[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + row, mask=mask_dt, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + row, y.to(out_ptr.dtype.element_ty), mask=mask_dt)
        h = tl.sum(tl.where(steps[None, None, :] == CHUNK - 1, hs, 0.0), axis=2)
    tl.store(last_ptr + b * dim * dstate + dn, h, mask=mask_dn)


def plain_selective_scan(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Tensor | None, delta_bias: Tensor,
    delta_softplus: bool,
) -> tuple[Tensor, Tensor]:
    """out (batch, D, L) in u's dtype and last_state (batch, D, N) float32 of the plain selective scan.

    u, delta, z: (batch, D, L) contiguous; B, C: (batch, G, N, L) contiguous in u's dtype; A (D, N), D and
    delta_bias (D,) float32. The state starts at zero.
    """
    batch, dim, length = u.shape
    n_groups, dstate = B.shape[1], B.shape[2]
    dim_per_group = dim // n_groups
    block_n = triton.next_power_of_2(dstate)
    block_d = max(1, min(triton.next_power_of_2(dim_per_group), TILE_ELEMENTS // (block_n * CHUNK)))
    out = torch.empty_like(u)
    last = torch.empty(batch, dim, dstate, dtype=torch.float32, device=u.device)
    grid = (batch, n_groups, triton.cdiv(dim_per_group, block_d))
    _plain_scan_kernel[grid](
        u, delta, A, B, C, D, u if z is None else z, delta_bias, out, last,
        dim, length, dstate, n_groups, dim_per_group,
        HAS_Z=z is not None, SOFTPLUS=delta_softplus, BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=CHUNK,
    )
    return out, last
