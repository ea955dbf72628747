"""torch.library custom ops (with fake kernels and autograd) and the public functions built on them."""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .backends import backend_module, chunk_size, resolve_backend
from .validation import check_scan_inputs, check_state_update_inputs


class ScanOutput(NamedTuple):
    """What selective_scan returns.

    out: (batch, D, L) in u's dtype; entropy, halt_logits: (batch, L) float32 (float64 for float64 input);
    last_state: (batch, D, N) in the same dtype, or None unless return_last_state=True.
    """

    out: Tensor
    entropy: Tensor
    halt_logits: Tensor
    last_state: Optional[Tensor]


@torch.library.custom_op("pna::selective_scan_fwd", mutates_args=())
def _scan_fwd(
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Optional[Tensor],
    delta_bias: Tensor, halt_weight: Tensor, halt_bias: Tensor, initial_state: Tensor,
    delta_softplus: bool, backend: str, chunk_size: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    return tuple(
        backend_module(backend).scan_forward(
            u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, delta_softplus, chunk_size
        )
    )


@_scan_fwd.register_fake
def _scan_fwd_fake(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, delta_softplus,
                   backend, chunk_size):
    batch, dim, length = u.shape
    dstate = A.shape[1]
    cdt = A.dtype
    n_chunks = math.ceil(length / chunk_size)
    return (
        u.new_empty(batch, dim, length),
        u.new_empty(batch, length, dtype=cdt),
        u.new_empty(batch, length, dtype=cdt),
        u.new_empty(batch, dim, dstate, dtype=cdt),
        u.new_empty(batch, n_chunks, dim, dstate, dtype=cdt),
        u.new_empty(batch, 2, length, dtype=cdt),
    )


@torch.library.custom_op("pna::selective_scan_bwd", mutates_args=())
def _scan_bwd(
    grad_out: Tensor, grad_entropy: Tensor, grad_halt: Tensor, grad_last_state: Tensor,
    u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Optional[Tensor],
    delta_bias: Tensor, halt_weight: Tensor, halt_bias: Tensor, initial_state: Tensor,
    checkpoints: Tensor, entropy_sums: Tensor, delta_softplus: bool, backend: str, chunk_size: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    grads = backend_module(backend).scan_backward(
        grad_out, grad_entropy, grad_halt, grad_last_state, u, delta, A, B, C, D, z, delta_bias, halt_weight,
        halt_bias, initial_state, checkpoints, entropy_sums, delta_softplus, chunk_size,
    )
    return tuple(u.new_empty(0) if g is None else g for g in grads)


@_scan_bwd.register_fake
def _scan_bwd_fake(grad_out, grad_entropy, grad_halt, grad_last_state, u, delta, A, B, C, D, z, delta_bias,
                   halt_weight, halt_bias, initial_state, checkpoints, entropy_sums, delta_softplus, backend,
                   chunk_size):
    like = (u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state)
    return tuple(u.new_empty(0) if t is None else torch.empty_like(t) for t in like)


def _setup_context(ctx, inputs, output):
    (u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, delta_softplus, backend,
     chunk_size) = inputs
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state,
                          output[4], output[5])
    ctx.delta_softplus, ctx.backend, ctx.chunk_size = delta_softplus, backend, chunk_size
    ctx.has_z = z is not None


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad.contiguous()


def _backward(ctx, grad_out, grad_entropy, grad_halt, grad_last_state, _grad_checkpoints, _grad_sums):
    (u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, checkpoints,
     entropy_sums) = ctx.saved_tensors
    batch, dim, length = u.shape
    grads = torch.ops.pna.selective_scan_bwd(
        _zeros_if_none(grad_out, u),
        _zeros_if_none(grad_entropy, entropy_sums[:, 0]),
        _zeros_if_none(grad_halt, entropy_sums[:, 0]),
        _zeros_if_none(grad_last_state, initial_state),
        u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, checkpoints, entropy_sums,
        ctx.delta_softplus, ctx.backend, ctx.chunk_size,
    )
    grads = list(grads)
    if not ctx.has_z:
        grads[6] = None
    return (*grads, None, None, None)


_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
    *,
    halt_weight: Tensor | None = None,
    halt_bias: Tensor | float | None = None,
    initial_state: Tensor | None = None,
    backend: str = "auto",
    check_finite: bool = True,
) -> ScanOutput:
    """Fused selective scan + per-token state entropy + halt logits, differentiable in every tensor input.

    A superset of mamba-ssm's selective_scan_fn: the first ten arguments mean the same.

    Args:
        u, delta: (batch, D, L); z: (batch, D, L) or None (gate: out = y * silu(z)).
        A: (D, N), real. B, C: (batch, N, L) or (batch, G, N, L) with G dividing D.
        D: (D,) skip weight; delta_bias: (D,); delta_softplus: dt = softplus(delta + delta_bias).
        return_last_state: also return the state after the last step.
        halt_weight: (D, N) and halt_bias: scalar, for g_t = sum halt_weight * h_t + halt_bias (0 if absent).
        initial_state: (batch, D, N) state before the first step (zeros if absent).
        backend: "auto", "reference", "torch", "triton", "cuda" or "cpu" (see pna_kernels.available_backends).
        check_finite: reject NaN/Inf in the activations (parameters are always checked).

    Returns:
        ScanOutput(out, entropy, halt_logits, last_state); entropy H_t = log S1 - S2 / S1 of e = h_t^2 over all
        D*N state entries (natural log, 0 when the state is all zero).
    """
    args = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, halt_weight, halt_bias,
                             initial_state, check_finite)
    name = resolve_backend(backend, u.device, u.dtype, A.shape[1])
    out, entropy, halt, last, _, _ = torch.ops.pna.selective_scan_fwd(
        args.u, args.delta, args.A, args.B, args.C, args.D, args.z, args.delta_bias, args.halt_weight,
        args.halt_bias, args.initial_state, args.delta_softplus, name, chunk_size(name),
    )
    return ScanOutput(out, entropy, halt, last if return_last_state else None)


@torch.library.custom_op("pna::selective_state_update", mutates_args=("state",))
def _state_update(
    state: Tensor, x: Tensor, dt: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor, z: Optional[Tensor],
    dt_bias: Tensor, halt_weight: Tensor, halt_bias: Tensor, dt_softplus: bool, backend: str,
) -> tuple[Tensor, Tensor, Tensor]:
    y, entropy, halt = backend_module(backend).state_update(
        state, x, dt, A, B, C, D, z, dt_bias, halt_weight, halt_bias, dt_softplus
    )
    return y, entropy.clone(), halt.clone()


@_state_update.register_fake
def _state_update_fake(state, x, dt, A, B, C, D, z, dt_bias, halt_weight, halt_bias, dt_softplus, backend):
    return torch.empty_like(x), x.new_empty(x.shape[0], dtype=state.dtype), x.new_empty(x.shape[0], dtype=state.dtype)


def selective_state_update(
    state: Tensor,
    x: Tensor,
    dt: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    dt_bias: Tensor | None = None,
    dt_softplus: bool = False,
    *,
    halt_weight: Tensor | None = None,
    halt_bias: Tensor | float | None = None,
    backend: str = "auto",
) -> tuple[Tensor, Tensor, Tensor]:
    """One decode step of the fused op; updates `state` in place (no autograd).

    Args:
        state: (batch, D, N) float32 (float64 for float64 x). x, dt, z: (batch, D). A: (D, N).
        B, C: (batch, N) or (batch, G, N). D, dt_bias: (D,). halt_weight: (D, N); halt_bias: scalar.

    Returns:
        y (batch, D) in x's dtype, entropy (batch,) and halt_logits (batch,) in the state's dtype.
    """
    args = check_state_update_inputs(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, halt_weight, halt_bias)
    name = resolve_backend(backend, x.device, x.dtype, A.shape[1])
    return torch.ops.pna.selective_state_update(
        state, args.x, args.dt, args.A, args.B, args.C, args.D, args.z, args.dt_bias, args.halt_weight,
        args.halt_bias, dt_softplus, name,
    )
