"""Forward kernel of the fused scan: states, outputs, entropy/halt partial sums and chunk checkpoints in one pass."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from .common import (
    check_chunk_size, contiguous, launch_device, linear_recurrence, load_scan_parameters, program_tile,
    scan_blocks, softplus, x_log_x,
)
from ..contract import ScanArgs, ScanResult, tensor_fields
from .entropy import combine_channel_sums, combine_partials


@triton.jit
def chunk_states(
    u_ptr, delta_ptr, B_ptr, A, delta_bias, h0, row, bc_row, mask_dt, mask_nt,
    SOFTPLUS: tl.constexpr,
):
    """Recompute one chunk: loads u, delta (BLOCK_D, CHUNK) and B (BLOCK_N, CHUNK), returns
    u, x = delta + delta_bias, dt (0 on masked steps), B, the decays exp(dt A) and inputs dt B u
    (BLOCK_D, BLOCK_N, CHUNK) and the states h_t of the chunk starting from h0 (BLOCK_D, BLOCK_N)."""
    u = tl.load(u_ptr + row, mask=mask_dt, other=0.0).to(tl.float32)
    x = tl.load(delta_ptr + row, mask=mask_dt, other=0.0).to(tl.float32) + delta_bias[:, None]
    if SOFTPLUS:
        dt = softplus(x)
    else:
        dt = x
    dt = tl.where(mask_dt, dt, 0.0)
    b_t = tl.load(B_ptr + bc_row, mask=mask_nt, other=0.0).to(tl.float32)
    decay = tl.exp(dt[:, None, :] * A[:, :, None])
    inp = (dt * u)[:, None, :] * b_t[None, :, :]
    prod, acc = tl.associative_scan((decay, inp), axis=2, combine_fn=linear_recurrence)
    h = prod * h0[:, :, None] + acc
    return u, x, dt, b_t, decay, inp, h


@triton.jit
def _scan_fwd_kernel(
    u_ptr, delta_ptr, A_ptr, B_ptr, C_ptr, D_ptr, z_ptr, delta_bias_ptr, halt_weight_ptr, init_ptr,
    out_ptr, ckpt_ptr, last_ptr, part_ptr, mean_part_ptr,
    dim, length, dstate, n_groups, dim_per_group, n_chunks,
    HAS_Z: tl.constexpr, SOFTPLUS: tl.constexpr, WITH_MEAN: tl.constexpr,
    BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr, CHUNK: tl.constexpr,
):
    b, g, n_blocks, block, d, mask_d, n, mask_n, mask_dn, dn = program_tile(dim_per_group, dstate, BLOCK_D, BLOCK_N)

    A, halt_weight, d_skip, delta_bias = load_scan_parameters(
        A_ptr, halt_weight_ptr, D_ptr, delta_bias_ptr, d, mask_d, dn, mask_dn
    )
    h = tl.load(init_ptr + b * dim * dstate + dn, mask=mask_dn, other=0.0)

    steps = tl.arange(0, CHUNK)
    for c in range(n_chunks):
        tl.store(ckpt_ptr + (b * n_chunks + c) * dim * dstate + dn, h, mask=mask_dn)
        t = c * CHUNK + steps
        mask_t = t < length
        mask_dt = mask_d[:, None] & mask_t[None, :]
        mask_nt = mask_n[:, None] & mask_t[None, :]
        row = (b * dim + d)[:, None] * length + t[None, :]
        bc_row = ((b * n_groups + g) * dstate + n)[:, None] * length + t[None, :]
        u, _, _, _, _, _, hs = chunk_states(
            u_ptr, delta_ptr, B_ptr, A, delta_bias, h, row, bc_row, mask_dt, mask_nt, SOFTPLUS
        )
        c_t = tl.load(C_ptr + bc_row, mask=mask_nt, other=0.0).to(tl.float32)
        y = tl.sum(hs * c_t[None, :, :], axis=1) + d_skip[:, None] * u
        if HAS_Z:
            z = tl.load(z_ptr + row, mask=mask_dt, other=0.0).to(tl.float32)
            y = y * z * tl.sigmoid(z)
        tl.store(out_ptr + row, y.to(out_ptr.dtype.element_ty), mask=mask_dt)

        e = hs * hs
        part = part_ptr + (b * n_blocks + block) * 3 * length + t
        tl.store(part, tl.sum(tl.sum(e, axis=1), axis=0), mask=mask_t)
        tl.store(part + length, tl.sum(tl.sum(x_log_x(e), axis=1), axis=0), mask=mask_t)
        tl.store(part + 2 * length, tl.sum(tl.sum(hs * halt_weight[:, :, None], axis=1), axis=0), mask=mask_t)
        if WITH_MEAN:  # this program's sum over its channels, (N, chunk) into (batch, n_blocks, L, N)
            mean_part = mean_part_ptr + ((b * n_blocks + block) * length + t[None, :]) * dstate + n[:, None]
            tl.store(mean_part, tl.sum(hs, axis=0), mask=mask_nt)
        # Masked steps past L keep the state (decay 1, input 0), so the chunk's last column is the carried state.
        h = tl.sum(tl.where(steps[None, None, :] == CHUNK - 1, hs, 0.0), axis=2)
    tl.store(last_ptr + b * dim * dstate + dn, h, mask=mask_dn)


def scan_forward(args: ScanArgs) -> ScanResult:
    """Fused forward on canonical inputs (pna_kernels/contract.py; made contiguous here).

    u, delta, z: (batch, D, L) float16/bfloat16/float32; B, C: (batch, G, N, L) in u's dtype; A, halt_weight:
    (D, N), D, delta_bias: (D,), halt_bias: (), initial_state: (batch, D, N), all float32; args.chunk_size a power
    of two. Returns out (batch, D, L) in u's dtype and, in float32, entropy and halt_logits (batch, L), last_state
    (batch, D, N), channel_mean (batch, L, N) (an empty (0,) tensor unless args.with_channel_mean), checkpoints
    (batch, ceil(L / chunk_size), D, N) (the state before each chunk) and entropy_sums (batch, 2, L).
    """
    chunk_size = args.chunk_size
    check_chunk_size(chunk_size)
    u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state = contiguous(
        *(getattr(args, name) for name in tensor_fields(ScanArgs))
    )
    batch, dim, length = u.shape
    n_groups, dstate = B.shape[1], B.shape[2]
    dim_per_group = dim // n_groups
    n_chunks = triton.cdiv(length, chunk_size)
    block_d, block_n, num_warps = scan_blocks(dim_per_group, dstate, chunk_size)
    blocks_per_group = triton.cdiv(dim_per_group, block_d)
    n_blocks = n_groups * blocks_per_group
    device = u.device

    out = torch.empty(batch, dim, length, dtype=u.dtype, device=device)
    checkpoints = torch.empty(batch, n_chunks, dim, dstate, dtype=torch.float32, device=device)
    last_state = torch.empty(batch, dim, dstate, dtype=torch.float32, device=device)
    partials = torch.empty(batch, n_blocks, 3, length, dtype=torch.float32, device=device)
    mean_partials = torch.empty(batch if args.with_channel_mean else 0, n_blocks, length, dstate,
                                dtype=torch.float32, device=device)
    with launch_device(u):
        _scan_fwd_kernel[(batch, n_groups, blocks_per_group)](
            u, delta, A, B, C, D, u if z is None else z, delta_bias, halt_weight, initial_state,
            out, checkpoints, last_state, partials, partials if mean_partials.numel() == 0 else mean_partials,
            dim, length, dstate, n_groups, dim_per_group, n_chunks,
            HAS_Z=z is not None, SOFTPLUS=args.delta_softplus, WITH_MEAN=args.with_channel_mean,
            BLOCK_D=block_d, BLOCK_N=block_n, CHUNK=chunk_size, num_warps=num_warps,
        )
    entropy_sums, entropy, halt = combine_partials(partials, halt_bias)
    channel_mean = (combine_channel_sums(mean_partials, dim) if args.with_channel_mean
                    else torch.empty(0, dtype=torch.float32, device=device))
    return ScanResult(out=out, entropy=entropy, halt_logits=halt, last_state=last_state, channel_mean=channel_mean,
                      checkpoints=checkpoints, entropy_sums=entropy_sums)
