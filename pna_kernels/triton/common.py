"""Block-size choice and the small @triton.jit helpers shared by the scan, backward and decode kernels."""
from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl
from torch import Tensor

# Elements of one program's (BLOCK_D, BLOCK_N, chunk) tile, spread over num_warps = tile / 512 warps (at least 4):
# 16 elements of each live fp32 tile per thread. Compiled for sm_90 with CHUNK_SIZE 16 (fp32 and bf16 inputs), the
# forward needs 146-225 registers a thread and no stack; the backward 252-255 registers, with no stack for N = 16
# and 64 and 64-80 bytes of spill stack for N = 4 and 256. Bigger tiles mean fewer D-blocks, so smaller per-block
# partial sums (entropy in the forward, dB and dC in the backward).
SCAN_TILE_ELEMENTS = 4096
# Elements of one decode-step program's (BLOCK_D, BLOCK_N) state tile: 8 a thread over 4 warps, so that a
# memory-bound decode step of one sequence still spreads over D * N / 1024 programs.
STATE_TILE_ELEMENTS = 1024


def launch_device(t: Tensor) -> contextlib.AbstractContextManager:
    """Make t's CUDA device the current one while kernels launch (Triton launches on the current device)."""
    return torch.cuda.device(t.device) if t.device.type == "cuda" else contextlib.nullcontext()


def contiguous(*tensors: Tensor | None) -> tuple[Tensor | None, ...]:
    """The kernels index dense row-major memory: make every tensor contiguous (a no-op for canonical inputs)."""
    return tuple(None if t is None else t.contiguous() for t in tensors)


def check_chunk_size(chunk_size: int) -> None:
    """Chunks are tiles of tl.arange, so their length must be a power of two."""
    if not isinstance(chunk_size, int) or chunk_size < 1 or chunk_size & (chunk_size - 1):
        raise ValueError(f"chunk_size: expected a power of two (a Triton tile length), got {chunk_size!r}")


def scan_blocks(dim_per_group: int, dstate: int, chunk_size: int) -> tuple[int, int, int]:
    """(BLOCK_D, BLOCK_N, num_warps) of the scan kernels.

    BLOCK_N is N padded to a power of two (masked); BLOCK_D channels of one group share a program, as many as fit
    in SCAN_TILE_ELEMENTS together with the chunk, at least one.
    """
    block_n = triton.next_power_of_2(dstate)
    block_d = max(1, min(triton.next_power_of_2(dim_per_group), SCAN_TILE_ELEMENTS // (block_n * chunk_size)))
    num_warps = min(16, max(4, block_d * block_n * chunk_size // 512))
    return block_d, block_n, num_warps


def state_blocks(dim_per_group: int, dstate: int) -> tuple[int, int]:
    """(BLOCK_D, BLOCK_N) of the decode-step kernel."""
    block_n = triton.next_power_of_2(dstate)
    return max(1, min(triton.next_power_of_2(dim_per_group), STATE_TILE_ELEMENTS // block_n)), block_n


@triton.jit
def softplus(x):
    """log(1 + exp(x)) to fp32 relative precision for every x (x above 20 returns x).

    log1p(y) for y = exp(x) as log(w) * y / (w - 1) with w = 1 + y, which cancels the rounding of w; plain
    log(1 + y) would lose all relative precision for x below about -15.
    """
    y = tl.exp(tl.minimum(x, 20.0))
    w = 1.0 + y
    rounded = w == 1.0
    return tl.where(x > 20.0, x, tl.where(rounded, y, tl.log(w) * (y / tl.where(rounded, 1.0, w - 1.0))))


@triton.jit
def linear_recurrence(a1, b1, a2, b2):
    """Compose h -> a1*h + b1 then h -> a2*h + b2: the associative operator of h_t = a_t h_{t-1} + b_t."""
    return a1 * a2, a2 * b1 + b2


@triton.jit
def x_log_x(e):
    """e * log(e) with 0 * log(0) = 0, for e >= 0."""
    positive = e > 0.0
    return tl.where(positive, e * tl.log(tl.where(positive, e, 1.0)), 0.0)


@triton.jit
def program_tile(dim_per_group, dstate, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr):
    """The tile of a program on the grid (batch, group, D-block within the group): batch row b, group g, number of
    D-blocks over all groups, this block's flat index, channels d (BLOCK_D,) with mask_d, state entries n
    (BLOCK_N,) with mask_n, mask_dn (BLOCK_D, BLOCK_N) and the flat (D, N) offsets dn."""
    b = tl.program_id(0).to(tl.int64)
    g = tl.program_id(1).to(tl.int64)
    n_blocks = tl.num_programs(1) * tl.num_programs(2)
    block = g * tl.num_programs(2) + tl.program_id(2)
    d_in_group = tl.program_id(2) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask_d = d_in_group < dim_per_group
    d = g * dim_per_group + d_in_group
    n = tl.arange(0, BLOCK_N)
    mask_n = n < dstate
    mask_dn = mask_d[:, None] & mask_n[None, :]
    dn = d[:, None] * dstate + n[None, :]
    return b, g, n_blocks, block, d, mask_d, n, mask_n, mask_dn, dn


@triton.jit
def load_scan_parameters(A_ptr, halt_weight_ptr, D_ptr, delta_bias_ptr, d, mask_d, dn, mask_dn):
    """The tile's parameters (zero where masked): A and halt_weight (BLOCK_D, BLOCK_N), Dskip and delta_bias
    (BLOCK_D,)."""
    A = tl.load(A_ptr + dn, mask=mask_dn, other=0.0)
    halt_weight = tl.load(halt_weight_ptr + dn, mask=mask_dn, other=0.0)
    d_skip = tl.load(D_ptr + d, mask=mask_d, other=0.0)
    delta_bias = tl.load(delta_bias_ptr + d, mask=mask_d, other=0.0)
    return A, halt_weight, d_skip, delta_bias
