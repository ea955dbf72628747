"""The "torch" backend: a vectorised selective scan in plain PyTorch, log-depth over time.

The recurrence h_t = a_t * h_{t-1} + b_t (a_t = exp(dt_t * A), b_t = dt_t * B_t * u_t) is a first-order linear
scan. It is evaluated with Hillis-Steele doubling on the pairs (a, b) -- ceil(log2 L) vectorised steps with the
associative combine (a1, b1), (a2, b2) -> (a1 * a2, a2 * b1 + b2) -- so there is no Python loop over L. Only
products of decays in (0, 1] are formed, never quotients of cumulative decays, so nothing overflows or divides
by an underflowed number.

The scan is an autograd.Function whose backward is the same scan run in the opposite direction
(g_t = dL/dh_t + a_{t+1} g_{t+1}), so autograd stores a and h once instead of every doubling level, and
higher-order gradients work too. Entropy, halt logits and the output are ordinary differentiable PyTorch.

Shapes follow pna_kernels.reference: u, delta, z (batch, D, L); A (D, N); B, C (batch, N, L) or (batch, G, N, L).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from . import reference
from .contract import (
    ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult, compute_dtype,
)
from .reference import discretize_dt, entropy_from_sums, entropy_sums

CHUNK_SIZE = 64


def _doubling_scan(a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
    """h along dim 1 of (batch, L, ...) tensors: h_t = a_t h_{t-1} + b_t with h_{-1} = h0 (batch, ...), or, if
    reverse, h_t = a_t h_{t+1} + b_t with h_L = h0. Hillis-Steele doubling; a and b are left unchanged."""
    length = a.shape[1]
    first = length - 1 if reverse else 0
    b = b.clone()
    b[:, first] += a[:, first] * h0
    b_next = torch.empty_like(b)
    a_buffers = (torch.empty_like(a), torch.empty_like(a))
    step, level = 1, 0
    while step < length:
        # (a_t, b_t) maps the state `step` positions back (ahead, if reverse) to h_t; combining it with the pair
        # `step` further on makes it span 2 * step. Results go to other buffers: in place, a level would read
        # entries it has already overwritten.
        combined = slice(None, -step) if reverse else slice(step, None)
        partner = slice(step, None) if reverse else slice(None, -step)
        kept = slice(-step, None) if reverse else slice(None, step)
        b_next[:, kept] = b[:, kept]
        torch.addcmul(b[:, combined], a[:, combined], b[:, partner], out=b_next[:, combined])
        b, b_next = b_next, b
        if 2 * step < length:  # decays are read again only where a partner 2 * step away exists
            far = slice(None, -2 * step) if reverse else slice(2 * step, None)
            a_next = a_buffers[level % 2]
            torch.mul(a[:, far], a[:, step:-step], out=a_next[:, far])
            a = a_next
        step, level = 2 * step, level + 1
    return b


def _shift(x: Tensor, reverse: bool) -> Tensor:
    """x_{t+1} (x_{t-1} if reverse) along dim 1, zero-padded at the end it runs off."""
    pad = torch.zeros_like(x[:, :1])
    return torch.cat([pad, x[:, :-1]], dim=1) if reverse else torch.cat([x[:, 1:], pad], dim=1)


class _LinearScan(torch.autograd.Function):
    """Differentiable first-order linear recurrence along dim 1 (see _doubling_scan)."""

    @staticmethod
    def forward(ctx, a: Tensor, b: Tensor, h0: Tensor, reverse: bool) -> Tensor:
        h = _doubling_scan(a, b, h0, reverse)
        ctx.save_for_backward(a, h0, h)
        ctx.reverse = reverse
        return h

    @staticmethod
    def backward(ctx, grad_h: Tensor) -> tuple[Tensor, Tensor, Tensor, None]:
        a, h0, h = ctx.saved_tensors
        reverse = ctx.reverse
        # dL/dh_t accumulates from every later step through the decays: a scan the other way round.
        g = _LinearScan.apply(_shift(a, reverse), grad_h, torch.zeros_like(h0), not reverse)
        if reverse:
            h_prev = torch.cat([h[:, 1:], h0[:, None]], dim=1)
            grad_h0 = a[:, -1] * g[:, -1]
        else:
            h_prev = torch.cat([h0[:, None], h[:, :-1]], dim=1)
            grad_h0 = a[:, 0] * g[:, 0]
        return g * h_prev, g, grad_h0, None


def linear_scan(a: Tensor, b: Tensor, h0: Tensor, reverse: bool = False) -> Tensor:
    """All states of h_t = a_t * h_{t-1} + b_t (h_{-1} = h0) along dim 1, differentiable in a, b and h0.

    Args:
        a, b: (batch, L, *rest) decays and inputs; h0: (batch, *rest) state before the first step.
        reverse: run from t = L-1 down to 0 instead (h_t = a_t * h_{t+1} + b_t, h_L = h0).

    Returns:
        h: (batch, L, *rest).
    """
    if a.shape != b.shape:
        raise ValueError(f"b: expected the shape of a {tuple(a.shape)}, got {tuple(b.shape)}")
    if a.dim() < 2 or a.shape[1] == 0:
        raise ValueError(f"a: expected (batch, L, ...) with L >= 1, got {tuple(a.shape)}")
    if h0.shape != a.shape[:1] + a.shape[2:]:
        raise ValueError(f"h0: expected shape {tuple(a.shape[:1] + a.shape[2:])}, got {tuple(h0.shape)}")
    return _LinearScan.apply(a, b, h0, reverse)


def _scan_states(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None,
    z: Tensor | None,
    delta_bias: Tensor | None,
    delta_softplus: bool,
    halt_weight: Tensor | None,
    halt_bias: Tensor | None,
    initial_state: Tensor | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """out (batch, D, L), S1 and S2 (batch, L), halt_logits (batch, L) and states (batch, L, D, N)."""
    dtype_in = u.dtype
    cdt = compute_dtype(dtype_in)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    B4 = B.unsqueeze(1) if B.dim() == 3 else B
    C4 = C.unsqueeze(1) if C.dim() == 3 else C
    u_c = u.to(cdt)
    dt = discretize_dt(delta.to(cdt), None if delta_bias is None else delta_bias.to(cdt), delta_softplus)
    # Time-major (batch, L, D, N) layout, so every doubling step slices whole contiguous blocks.
    dt_t = dt.transpose(1, 2).contiguous()
    # Channel d reads group d // (D // G): split D into (G, D // G) instead of repeating B and C per channel.
    g_b, g_c = B4.shape[1], C4.shape[1]
    dtu = (dt_t * u_c.transpose(1, 2)).view(batch, length, g_b, dim // g_b, 1)
    B_t = B4.to(cdt).permute(0, 3, 1, 2).contiguous().view(batch, length, g_b, 1, dstate)
    C_t = C4.to(cdt).permute(0, 3, 1, 2).contiguous().view(batch, length, g_c, dstate, 1)
    a = torch.exp(dt_t[..., None] * A.to(cdt))
    b = (dtu * B_t).view(batch, length, dim, dstate)
    h0 = (
        initial_state.to(cdt)
        if initial_state is not None
        else torch.zeros(batch, dim, dstate, dtype=cdt, device=u.device)
    )
    states = linear_scan(a, b, h0)
    y = torch.matmul(states.view(batch, length, g_c, dim // g_c, dstate), C_t).view(batch, length, dim)
    y = y.transpose(1, 2)
    if D is not None:
        y = y + D.to(cdt)[:, None] * u_c
    if z is not None:
        y = y * F.silu(z.to(cdt))
    s1, s2 = entropy_sums(states)
    halt = torch.zeros(batch, length, dtype=cdt, device=u.device)
    if halt_weight is not None:
        halt = torch.matmul(states.view(batch, length, dim * dstate), halt_weight.to(cdt).reshape(dim * dstate))
    if halt_bias is not None:
        halt = halt + halt_bias.to(cdt)
    return y.to(dtype_in).contiguous(), s1, s2, halt, states


def selective_scan_parallel(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    halt_weight: Tensor | None = None,
    halt_bias: Tensor | None = None,
    initial_state: Tensor | None = None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Selective scan with state entropy and halt logits, log-depth over time, differentiable by autograd.

    Same arguments and results as pna_kernels.reference.selective_scan_ref: u, delta, z (batch, D, L);
    A (D, N); B, C (batch, N, L) or (batch, G, N, L); D, delta_bias (D,); halt_weight (D, N); halt_bias ();
    initial_state (batch, D, N). Returns out (batch, D, L) in u's dtype, entropy (batch, L),
    halt_logits (batch, L), last_state (batch, D, N) and states (batch, L, D, N), all but `out` in the compute
    dtype (float32, or float64 for float64 input).
    """
    out, s1, s2, halt, states = _scan_states(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus, halt_weight, halt_bias, initial_state
    )
    return out, entropy_from_sums(s1, s2), halt, states[:, -1], states


# ---------------------------------------------------------------------------------------------------------------
# The "torch" backend (contract in pna_kernels/contract.py).


def supports(device: torch.device, dtype: torch.dtype, dstate: int) -> str | None:
    """Plain PyTorch: runs on any device and dtype."""
    return None


def scan_forward(args: ScanArgs) -> ScanResult:
    """Backend forward (pna_kernels.contract). The states (batch, L, D, N) exist only while it runs: the result
    keeps the chunk checkpoints, S1/S2 and, when asked, their mean over D."""
    out, s1, s2, halt, states = _scan_states(**reference.oracle_kwargs(args))
    return reference.result_from_states(args, out, halt, states, s1, s2)


def scan_backward(args: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads:
    """Backend backward (pna_kernels.contract): recompute the parallel scan under autograd."""
    return reference.backward_by_recompute(selective_scan_parallel, args, cot)


def state_update(args: StateUpdateArgs) -> StateUpdateResult:
    """Backend decode step (pna_kernels.contract); updates args.state in place. One step has no time axis to
    parallelise, so it is the reference's."""
    return reference.state_update(args)
