"""Backward kernel of the fused scan: reverse walk over chunks, states recomputed from the forward's checkpoints.

With a_t = exp(dt_t A), b_t = dt_t B_t u_t and h_t = a_t h_{t-1} + b_t, the adjoint g_t = dLoss/dh_t obeys
    g_t = a_{t+1} g_{t+1} + local_t,   g_{L-1} = local_{L-1} + grad_last_state,
    local_t = C_t dy_t + grad_entropy_t dH/dh_t + grad_halt_t halt_weight + grad_channel_mean_t / D,
    dH/dh_t = 2 h_t (S2_t / S1_t - log h_t^2) / S1_t   (0 where h_t = 0 or S1_t = 0),
where dy_t = grad_out_t silu(z_t) (grad_out_t without z); and, using a_t h_{t-1} = h_t - b_t (no division),
    d dt_t = sum_n g_t ((h_t - b_t) A + B_t u_t),   dA = sum_{b,t} g_t (h_t - b_t) dt_t,
    du_t = sum_n g_t dt_t B_t + dy_t Dskip,   dB_t = sum_{d in group} g_t dt_t u_t,   dC_t = sum_{d in group} dy_t h_t,
    ddelta = d dt sigmoid(delta + delta_bias) under softplus (d dt otherwise),   ddelta_bias = sum_{b,t} ddelta,
    dz = grad_out y sigmoid(z) (1 + z (1 - sigmoid(z))),   dDskip = sum_{b,t} dy u,
    dhalt_weight = sum_{b,t} grad_halt_t h_t,   dhalt_bias = sum_{b,t} grad_halt_t,   dinitial_state = a_0 g_0.
Within a chunk g comes from a reverse associative scan over (a_{t+1}, local_t), a_{t+1} from a second load of
delta shifted by one step; the carry between chunks is a_0 g_0 of the later chunk. Reductions over batch or over
the channels of a group are written as per-program partials and summed afterwards in a fixed order.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from .common import (
    check_chunk_size, contiguous, launch_device, linear_recurrence, load_scan_parameters, program_tile,
    scan_blocks, softplus,
)
from ..contract import ScanArgs, ScanCotangents, ScanGrads, ScanSaved, tensor_fields
from .scan_forward import chunk_states


@triton.jit
def _scan_bwd_kernel(
    grad_out_ptr, grad_entropy_ptr, grad_halt_ptr, grad_last_ptr, grad_mean_ptr,
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, halt_weight_ptr, ckpt_ptr, sums_ptr,
    du_ptr, ddelta_ptr, dz_ptr, dinit_ptr,
    dA_part_ptr, dD_part_ptr, dbias_part_ptr, dhw_part_ptr, dB_part_ptr, dC_part_ptr,
    dim, length, dstate, n_groups, dim_per_group, n_chunks,
    HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, WITH_MEAN: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    b, g, n_blocks, block, d, mask_d, n, mask_n, mask_dn, dn = program_tile(dim_per_group, dstate, BLOCK_D, BLOCK_N)

    A, halt_weight, d_skip, delta_bias = load_scan_parameters(
        A_ptr, halt_weight_ptr, D_ptr, delta_bias_ptr, d, mask_d, dn, mask_dn
    )
    inv_dim = 1.0 / dim
    carry = tl.load(grad_last_ptr + b * dim * dstate + dn, mask=mask_dn, other=0.0)
    acc_dA = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    acc_dhw = tl.zeros((BLOCK_D, BLOCK_N), dtype=tl.float32)
    acc_dD = tl.zeros((BLOCK_D,), dtype=tl.float32)
    acc_dbias = tl.zeros((BLOCK_D,), dtype=tl.float32)

    steps = tl.arange(0, CHUNK)
    for i in range(n_chunks):
        c = n_chunks - 1 - i
        h0 = tl.load(ckpt_ptr + (b * n_chunks + c) * dim * dstate + dn, mask=mask_dn, other=0.0)
        t = c * CHUNK + steps
        mask_t = t < length
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        row = (b * dim + d)[:, None] * length + t[None, :]
        bc_row = ((b * n_groups + g) * dstate + n)[:, None] * length + t[None, :]
        u, x, dt, b_t, _, inp, hs = chunk_states(
            u_ptr, delta_ptr, B_ptr, A, delta_bias, h0, row, bc_row, mask_dt, mask_nt, SOFTPLUS
        )
        c_t = tl.load(C_ptr + bc_row, mask=mask_nt, other=0.0).to(tl.float32)
        grad_out = tl.load(grad_out_ptr + row, mask=mask_dt, other=0.0).to(tl.float32)
        if HAS_Z:
            z = tl.load(z_ptr + row, mask=mask_dt, other=0.0).to(tl.float32)
            gate = tl.sigmoid(z)
            y = tl.sum(hs * c_t[None, :, :], axis=1) + d_skip[:, None] * u
            dy = grad_out * z * gate
            dz = grad_out * y * gate * (1.0 + z * (1.0 - gate))
            tl.store(dz_ptr + row, dz.to(dz_ptr.dtype.element_ty), mask=mask_dt)
        else:
            dy = grad_out

        grad_entropy = tl.load(grad_entropy_ptr + b * length + t, mask=mask_t, other=0.0)
        grad_halt = tl.load(grad_halt_ptr + b * length + t, mask=mask_t, other=0.0)
        s1 = tl.load(sums_ptr + b * 2 * length + t, mask=mask_t, other=0.0)
        s2 = tl.load(sums_ptr + (b * 2 + 1) * length + t, mask=mask_t, other=0.0)
        inv_s1 = tl.where(s1 > 0.0, 1.0 / tl.where(s1 > 0.0, s1, 1.0), 0.0)
        e = hs * hs
        positive = e > 0.0
        log_e = tl.log(tl.where(positive, e, 1.0))
        d_entropy = tl.where(positive, 2.0 * hs * ((s2 * inv_s1)[None, None, :] - log_e) * inv_s1[None, None, :], 0.0)
        local = (c_t[None, :, :] * dy[:, None, :] + grad_entropy[None, None, :] * d_entropy
                 + grad_halt[None, None, :] * halt_weight[:, :, None])
        if WITH_MEAN:  # s_t = mean_d h_t: every real channel gets grad_channel_mean_t / D
            grad_mean = tl.load(grad_mean_ptr + (b * length + t[None, :]) * dstate + n[:, None], mask=mask_nt,
                                other=0.0)
            local += tl.where(mask_d[:, None, None], grad_mean[None, :, :] * inv_dim, 0.0)

        # a_{t+1} inside the chunk; 1 at the chunk's last step (the carry holds what comes later) and past L.
        mask_next = mask_d[:, None] & ((steps + 1 < CHUNK) & (t + 1 < length))[None, :]
        x_next = tl.load(delta_ptr + row + 1, mask=mask_next, other=0.0).to(tl.float32) + delta_bias[:, None]
        if SOFTPLUS:
            dt_next = softplus(x_next)
        else:
            dt_next = x_next
        decay_next = tl.exp(tl.where(mask_next, dt_next, 0.0)[:, None, :] * A[:, :, None])
        prod, acc = tl.associative_scan((decay_next, local), axis=2, combine_fn=linear_recurrence, reverse=True)
        adj = acc + prod * carry[:, :, None]
        dt_first = tl.sum(tl.where(steps[None, :] == 0, dt, 0.0), axis=1)
        carry = tl.exp(dt_first[:, None] * A) * tl.sum(tl.where(steps[None, None, :] == 0, adj, 0.0), axis=2)

        prev = hs - inp  # a_t h_{t-1}
        ddt = tl.sum(adj * (prev * A[:, :, None] + b_t[None, :, :] * u[:, None, :]), axis=1)
        if SOFTPLUS:
            ddelta = ddt * tl.sigmoid(x)
        else:
            ddelta = ddt
        ddelta = tl.where(mask_dt, ddelta, 0.0)
        du = tl.sum(adj * b_t[None, :, :], axis=1) * dt + dy * d_skip[:, None]
        tl.store(du_ptr + row, du.to(du_ptr.dtype.element_ty), mask=mask_dt)
        tl.store(ddelta_ptr + row, ddelta.to(ddelta_ptr.dtype.element_ty), mask=mask_dt)

        bc_part = ((b * n_blocks + block) * dstate + n)[:, None] * length + t[None, :]
        tl.store(dB_part_ptr + bc_part, tl.sum(adj * (dt * u)[:, None, :], axis=0), mask=mask_nt)
        tl.store(dC_part_ptr + bc_part, tl.sum(hs * dy[:, None, :], axis=0), mask=mask_nt)
        acc_dA += tl.sum(adj * prev * dt[:, None, :], axis=2)
        acc_dhw += tl.sum(hs * grad_halt[None, None, :], axis=2)
        acc_dD += tl.sum(dy * u, axis=1)
        acc_dbias += tl.sum(ddelta, axis=1)

    tl.store(dinit_ptr + b * dim * dstate + dn, carry, mask=mask_dn)
    tl.store(dA_part_ptr + b * dim * dstate + dn, acc_dA, mask=mask_dn)
    tl.store(dhw_part_ptr + b * dim * dstate + dn, acc_dhw, mask=mask_dn)
    tl.store(dD_part_ptr + b * dim + d, acc_dD, mask=mask_d)
    tl.store(dbias_part_ptr + b * dim + d, acc_dbias, mask=mask_d)


def scan_backward(args: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads:
    """Fused backward on canonical inputs (pna_kernels/contract.py; made contiguous here).

    cot.grad_out: (batch, D, L); grad_entropy, grad_halt: (batch, L); grad_last_state: (batch, D, N);
    grad_channel_mean: (batch, L, N) when args.with_channel_mean; saved: the checkpoints and entropy sums of
    scan_forward with the same chunk_size. Returns the gradient of every input, in its dtype and shape.
    """
    chunk_size = args.chunk_size
    check_chunk_size(chunk_size)
    u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state = contiguous(
        *(getattr(args, name) for name in tensor_fields(ScanArgs))
    )
    batch, dim, length = u.shape
    n_groups, dstate = B.shape[1], B.shape[2]
    grad_out, grad_entropy, grad_halt, grad_last_state, grad_mean, checkpoints, entropy_sums = contiguous(
        cot.grad_out.to(u.dtype), cot.grad_entropy.float(), cot.grad_halt.float(), cot.grad_last_state.float(),
        cot.grad_channel_mean.float(), saved.checkpoints, saved.entropy_sums,
    )
    dim_per_group = dim // n_groups
    n_chunks = triton.cdiv(length, chunk_size)
    if checkpoints.shape != (batch, n_chunks, dim, dstate):
        raise ValueError(f"checkpoints: expected shape {(batch, n_chunks, dim, dstate)} for chunk_size={chunk_size}, "
                         f"got {tuple(checkpoints.shape)}")
    if args.with_channel_mean and grad_mean.shape != (batch, length, dstate):
        raise ValueError(f"grad_channel_mean: expected shape {(batch, length, dstate)}, got {tuple(grad_mean.shape)}")
    block_d, block_n, num_warps = scan_blocks(dim_per_group, dstate, chunk_size)
    blocks_per_group = triton.cdiv(dim_per_group, block_d)
    device = u.device

    def empty(*shape: int, dtype: torch.dtype = torch.float32) -> Tensor:
        return torch.empty(*shape, dtype=dtype, device=device)

    du, ddelta = empty(batch, dim, length, dtype=u.dtype), empty(batch, dim, length, dtype=delta.dtype)
    dz = None if z is None else empty(batch, dim, length, dtype=z.dtype)
    dinit = empty(batch, dim, dstate)
    dA_part, dhw_part = empty(batch, dim, dstate), empty(batch, dim, dstate)
    dD_part, dbias_part = empty(batch, dim), empty(batch, dim)
    dB_part = empty(batch, n_groups, blocks_per_group, dstate, length)
    dC_part = empty(batch, n_groups, blocks_per_group, dstate, length)
    with launch_device(u):
        _scan_bwd_kernel[(batch, n_groups, blocks_per_group)](
            grad_out, grad_entropy, grad_halt, grad_last_state, grad_halt if grad_mean.numel() == 0 else grad_mean,
            u, delta, A, B, C, D, u if z is None else z, delta_bias, halt_weight, checkpoints, entropy_sums,
            du, ddelta, du if dz is None else dz, dinit,
            dA_part, dD_part, dbias_part, dhw_part, dB_part, dC_part,
            dim, length, dstate, n_groups, dim_per_group, n_chunks,
            HAS_Z=z is not None, SOFTPLUS=args.delta_softplus, WITH_MEAN=args.with_channel_mean,
            BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=chunk_size, num_warps=num_warps,
        )
    # torch.sum over a dimension is a fixed-order reduction (no atomics): bitwise equal on repeat.
    return ScanGrads(
        u=du,
        delta=ddelta,
        A=dA_part.sum(0).to(A.dtype),
        B=dB_part.sum(2).to(B.dtype),
        C=dC_part.sum(2).to(C.dtype),
        D=dD_part.sum(0).to(D.dtype),
        z=dz,
        delta_bias=dbias_part.sum(0).to(delta_bias.dtype),
        halt_weight=dhw_part.sum(0).to(halt_weight.dtype),
        halt_bias=grad_halt.sum().to(halt_bias.dtype).reshape(halt_bias.shape),
        initial_state=dinit.to(initial_state.dtype),
    )
