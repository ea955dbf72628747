"""torch.library custom ops (with fake kernels and autograd) and the public functions built on them.

The ops are the only place where the contract's dataclasses (pna_kernels/contract.py) become positional
arguments: each op takes the fields of its input dataclasses in field order, then the backend name, and returns
the fields of its result dataclass in order; the schema is built from the fields (contract.op_schema), so a new
input or output is one field in contract.py.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from .backends import backend_module, chunk_size, resolve_backend
from .contract import (
    COTANGENT_OF, ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult,
    fields_of, flatten, new_scan_grads, new_scan_result, new_state_update_result, op_schema, scan_result_shapes,
    replace, tensor_fields, unflatten,
)
from .validation import check_flag, check_scan_inputs, check_state_update_inputs

BACKEND_ARG = (("backend", "str"),)
SCAN_TENSORS = tensor_fields(ScanArgs)
SCAN_FLAGS = tuple(n for n in fields_of(ScanArgs) if n not in SCAN_TENSORS)
_N_ARGS, _N_SAVED = len(fields_of(ScanArgs)), len(fields_of(ScanSaved))


class ScanOutput(NamedTuple):
    """What selective_scan returns.

    out: (batch, D, L) in u's dtype; entropy, halt_logits: (batch, L) float32 (float64 for float64 input);
    last_state: (batch, D, N) in the same dtype, or None unless return_last_state=True;
    channel_mean: s_t = mean over d of h_t[d, :], (batch, L, N) in the same dtype, or None unless
    return_channel_mean=True.
    """

    out: Tensor
    entropy: Tensor
    halt_logits: Tensor
    last_state: Optional[Tensor]
    channel_mean: Optional[Tensor] = None


def _unaliased(outputs: tuple[Tensor, ...], inputs: tuple) -> tuple[Tensor, ...]:
    """The outputs, each cloned if it shares memory with an input or an earlier output (a custom op's outputs
    must be fresh tensors)."""
    seen = {t.untyped_storage().data_ptr() for t in inputs if isinstance(t, Tensor) and t.numel()}
    fresh = []
    for t in outputs:
        if t.numel() and t.untyped_storage().data_ptr() in seen:
            t = t.clone()
        if t.numel():
            seen.add(t.untyped_storage().data_ptr())
        fresh.append(t)
    return tuple(fresh)


def _grads_flat(grads: ScanGrads, like: Tensor) -> tuple[Tensor, ...]:
    """ScanGrads as the op returns them: an absent gradient (dz without z) as an empty (0,) tensor."""
    return tuple(like.new_empty(0) if g is None else g for g in flatten(grads))


# --- forward -----------------------------------------------------------------------------------------------------


def _scan_fwd_impl(*flat):
    args, backend = unflatten(ScanArgs, flat[:-1]), flat[-1]
    return _unaliased(flatten(backend_module(backend).scan_forward(args)), flat)


_scan_fwd = torch.library.custom_op(
    "pna::selective_scan_fwd", _scan_fwd_impl, mutates_args=(),
    schema=op_schema((ScanArgs,), ScanResult, extra=BACKEND_ARG),
)


@_scan_fwd.register_fake
def _scan_fwd_fake(*flat):
    return flatten(new_scan_result(unflatten(ScanArgs, flat[:-1])))


# --- backward ----------------------------------------------------------------------------------------------------


def _split_bwd(flat: tuple) -> tuple[ScanArgs, ScanSaved, ScanCotangents, str]:
    args = unflatten(ScanArgs, flat[:_N_ARGS])
    saved = unflatten(ScanSaved, flat[_N_ARGS:_N_ARGS + _N_SAVED])
    return args, saved, unflatten(ScanCotangents, flat[_N_ARGS + _N_SAVED:-1]), flat[-1]


def _scan_bwd_impl(*flat):
    args, saved, cot, backend = _split_bwd(flat)
    grads = backend_module(backend).scan_backward(args, saved, cot)
    return _unaliased(_grads_flat(grads, args.u), flat)


_scan_bwd = torch.library.custom_op(
    "pna::selective_scan_bwd", _scan_bwd_impl, mutates_args=(),
    schema=op_schema((ScanArgs, ScanSaved, ScanCotangents), ScanGrads, extra=BACKEND_ARG),
)


@_scan_bwd.register_fake
def _scan_bwd_fake(*flat):
    args = _split_bwd(flat)[0]
    return _grads_flat(new_scan_grads(args), args.u)


def _setup_context(ctx, inputs, output):
    args, result = unflatten(ScanArgs, inputs[:-1]), unflatten(ScanResult, output)
    ctx.save_for_backward(*flatten(args, SCAN_TENSORS), *flatten(result.saved))
    ctx.flags = {n: getattr(args, n) for n in SCAN_FLAGS}
    ctx.backend = inputs[-1]


def _backward(ctx, *grads):
    tensors = ctx.saved_tensors
    args = unflatten(ScanArgs, tensors[:len(SCAN_TENSORS)], SCAN_TENSORS, **ctx.flags)
    saved = unflatten(ScanSaved, tensors[len(SCAN_TENSORS):])
    incoming = dict(zip(fields_of(ScanResult), grads))
    shapes = scan_result_shapes(args)
    cot = ScanCotangents(**{
        c: args.u.new_zeros(*shapes[o]) if incoming[o] is None else incoming[o].contiguous()
        for o, c in COTANGENT_OF.items()
    })
    flat = torch.ops.pna.selective_scan_bwd(*flatten(args), *flatten(saved), *flatten(cot), ctx.backend)
    got = unflatten(ScanGrads, flat)
    per_input = {n: getattr(got, n) for n in SCAN_TENSORS}
    if args.z is None:
        per_input["z"] = None
    return (*(per_input.get(n) for n in fields_of(ScanArgs)), None)  # flags and backend get none


_scan_fwd.register_autograd(_backward, setup_context=_setup_context)


# --- decode step -------------------------------------------------------------------------------------------------


def _state_update_impl(*flat):
    args, backend = unflatten(StateUpdateArgs, flat[:-1]), flat[-1]
    return _unaliased(flatten(backend_module(backend).state_update(args)), flat)


_state_update = torch.library.custom_op(
    "pna::selective_state_update", _state_update_impl, mutates_args=("state",),
    schema=op_schema((StateUpdateArgs,), StateUpdateResult, extra=BACKEND_ARG, mutated=("state",)),
)


@_state_update.register_fake
def _state_update_fake(*flat):
    return flatten(new_state_update_result(unflatten(StateUpdateArgs, flat[:-1])))


# --- public functions --------------------------------------------------------------------------------------------


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
    return_channel_mean: bool = False,
    backend: str = "auto",
    check_finite: bool = True,
) -> ScanOutput:
    """Fused selective scan + per-token state entropy + halt logits, differentiable in every tensor input.

    A superset of mamba-ssm's selective_scan_fn: the first ten arguments mean the same (for its exact return
    convention use pna_kernels.selective_scan_fn).

    Args:
        u, delta: (batch, D, L); z: (batch, D, L) or None (gate: out = y * silu(z)).
        A: (D, N), real. B, C: (batch, N, L), (batch, G, N, L) with G dividing D, or constant (D, N) (expanded to
            (batch, D, N, L) groups, so a constant B or C costs memory like a per-step one).
        D: (D,) skip weight; delta_bias: (D,); delta_softplus: dt = softplus(delta + delta_bias).
        return_last_state: also return the state after the last step.
        halt_weight: (D, N) and halt_bias: scalar, for g_t = sum halt_weight * h_t + halt_bias (0 if absent).
        initial_state: (batch, D, N) state before the first step (zeros if absent).
        return_channel_mean: also return s_t = mean over d of h_t[d, :], (batch, L, N), differentiable; the fused
            backends compute it in the same pass without storing every state.
        backend: "auto", "reference", "torch", "triton", "cuda" or "cpu" (see pna_kernels.available_backends).
        check_finite: reject NaN/Inf in every tensor input (reads the data: a device sync on a GPU).
            check_finite=False skips every value check, parameters included, so the call never synchronises.
        Flags accept True/False or 1/0; anything else is a ValueError naming the flag.

    Returns:
        ScanOutput(out, entropy, halt_logits, last_state, channel_mean); entropy H_t = log S1 - S2 / S1 of
        e = h_t^2 over all D*N state entries (natural log, 0 when the state is all zero, NaN when it is not
        finite).
    """
    return_last_state = check_flag("return_last_state", return_last_state)
    return_channel_mean = check_flag("return_channel_mean", return_channel_mean)
    args = check_scan_inputs(u, delta, A, B, C, D, z, delta_bias, delta_softplus, halt_weight, halt_bias,
                             initial_state, check_finite, with_channel_mean=return_channel_mean)
    name = resolve_backend(backend, args.u.device, args.u.dtype, args.A.shape[1])
    args = replace(args, chunk_size=chunk_size(name))
    res = unflatten(ScanResult, torch.ops.pna.selective_scan_fwd(*flatten(args), name))
    return ScanOutput(res.out, res.entropy, res.halt_logits, res.last_state if return_last_state else None,
                      res.channel_mean if return_channel_mean else None)


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    """mamba-ssm's selective_scan_fn, call for call: swap `from mamba_ssm.ops.selective_scan_interface import
    selective_scan_fn` for `from pna_kernels import selective_scan_fn`.

    Same arguments (u, delta, z (batch, D, L); A (D, N) real; B, C (batch, N, L), (batch, G, N, L) or constant
    (D, N); D, delta_bias (D,)) and the same return: `out` (batch, D, L) in u's dtype, or (out, last_state) with
    last_state (batch, D, N) float32 (float64 for float64 input) when return_last_state. Unlike mamba-ssm the
    gradient through last_state is taken into account. It runs selective_scan with backend="auto" and its
    default value checks (check_finite=True: a device sync; call selective_scan(..., check_finite=False) to
    avoid it).
    """
    res = selective_scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state)
    return (res.out, res.last_state) if res.last_state is not None else res.out


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
    return_channel_mean: bool = False,
    backend: str = "auto",
    check_finite: bool = True,
) -> tuple[Tensor, ...]:
    """One decode step of the fused op; updates `state` in place (no autograd).

    Args:
        state: (batch, D, N) float32 (float64 for float64 x), contiguous, not requiring grad.
        x, dt, z: (batch, D). A: (D, N). B, C: (batch, N) or (batch, G, N). D, dt_bias: (D,).
        halt_weight: (D, N); halt_bias: scalar.
        return_channel_mean: also return s = mean over d of the new state, (batch, N).
        check_finite: reject NaN/Inf in every tensor, the state included (a device sync on a GPU); False checks
            no values and never synchronises.

    Returns:
        (y, entropy, halt_logits): y (batch, D) in x's dtype, entropy (batch,) and halt_logits (batch,) in the
        state's dtype; with return_channel_mean=True a 4-tuple (y, entropy, halt_logits, channel_mean).
    """
    return_channel_mean = check_flag("return_channel_mean", return_channel_mean)
    args = check_state_update_inputs(state, x, dt, A, B, C, D, z, dt_bias, dt_softplus, halt_weight, halt_bias,
                                     check_finite)
    name = resolve_backend(backend, args.x.device, args.x.dtype, args.A.shape[1])
    res = unflatten(StateUpdateResult, torch.ops.pna.selective_state_update(*flatten(args), name))
    return flatten(res) if return_channel_mean else (res.y, res.entropy, res.halt_logits)
