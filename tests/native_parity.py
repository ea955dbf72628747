"""Parity of a native backend (cpu, triton, the CUDA kernels under host emulation) with the float64 oracle, called
through the backend contract (pna_kernels/contract.py) directly, the channel mean included.

The oracle is pna_kernels.reference.selective_scan_ref, which returns every state: its channel mean is
states.mean over D, and every gradient comes from autograd through it.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from pna_kernels.contract import (
    ScanArgs, ScanCotangents, ScanGrads, ScanResult, StateUpdateArgs, StateUpdateResult, fields_of, tensor_fields,
)
from pna_kernels.reference import compute_dtype, selective_scan_ref, selective_state_update_ref
from pna_kernels.testing import assert_close_rel, random_scan_inputs

PUBLIC_OUTPUTS = ("out", "entropy", "halt_logits", "last_state", "channel_mean")


def scan_inputs(batch: int, dim: int, length: int, dstate: int, groups: int, grouped: bool, with_z: bool,
                with_init: bool, softplus: bool, dtype: torch.dtype = torch.float32,
                device: str | torch.device = "cpu") -> dict[str, Tensor | None]:
    """random_scan_inputs (seeded by the shape) with B, C in the contract's grouped (batch, G, N, L) form (an
    ungrouped draw gets G = 1); without softplus, delta and delta_bias are made positive so the scan stays
    stable."""
    x = random_scan_inputs(batch, dim, length, dstate, groups=groups, dtype=dtype, device=device,
                           seed=length + dim + dstate, with_z=with_z, with_initial_state=with_init,
                           grouped_bc=grouped)
    if not softplus:
        x["delta"] = F.softplus(x["delta"].double()).to(dtype)
        x["delta_bias"] = x["delta_bias"].abs()
    if not grouped:
        x["B"], x["C"] = x["B"][:, None], x["C"][:, None]
    return x


def scan_args(x: dict[str, Tensor | None], softplus: bool, chunk_size: int,
              with_channel_mean: bool = True) -> ScanArgs:
    """Contract inputs from random_scan_inputs(..., grouped_bc=True): parameters absent there become zeros."""
    batch, dim, length = x["u"].shape
    dstate, cdt = x["A"].shape[1], compute_dtype(x["u"].dtype)
    zeros = {"D": (dim,), "delta_bias": (dim,), "halt_weight": (dim, dstate), "halt_bias": (),
             "initial_state": (batch, dim, dstate)}
    values = {n: x.get(n) for n in tensor_fields(ScanArgs)}
    values.update({n: torch.zeros(shape, dtype=cdt, device=x["u"].device)
                   for n, shape in zeros.items() if values[n] is None})
    values = {n: None if v is None else v.contiguous() for n, v in values.items()}
    return ScanArgs(**values, delta_softplus=softplus, with_channel_mean=with_channel_mean, chunk_size=chunk_size)


def scan_cotangents(args: ScanArgs, seed: int = 7) -> ScanCotangents:
    """Random float64 weights of every output in a scalar loss (grad_channel_mean empty without the output)."""
    gen = torch.Generator().manual_seed(seed)
    batch, dim, length = args.u.shape
    dstate = args.A.shape[1]
    shapes = {"grad_out": (batch, dim, length), "grad_entropy": (batch, length), "grad_halt": (batch, length),
              "grad_last_state": (batch, dim, dstate),
              "grad_channel_mean": (batch, length, dstate) if args.with_channel_mean else (0,)}
    return ScanCotangents(**{n: torch.randn(*s, generator=gen, dtype=torch.float64).to(args.u.device)
                             for n, s in shapes.items()})


def oracle(args: ScanArgs, cot: ScanCotangents) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The float64 oracle's public outputs (channel_mean = states.mean over D) and the gradient of
    sum(output * cotangent) for every tensor input."""
    leaves = {n: getattr(args, n).detach().double().requires_grad_(True)
              for n in tensor_fields(ScanArgs) if getattr(args, n) is not None}
    out, entropy, halt, last, states = selective_scan_ref(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves.get("z"),
        leaves["delta_bias"], args.delta_softplus, leaves["halt_weight"], leaves["halt_bias"], leaves["initial_state"])
    outputs = {"out": out, "entropy": entropy, "halt_logits": halt, "last_state": last,
               "channel_mean": states.mean(dim=2)}
    weights = [cot.grad_out, cot.grad_entropy, cot.grad_halt, cot.grad_last_state, cot.grad_channel_mean]
    names = PUBLIC_OUTPUTS if args.with_channel_mean else PUBLIC_OUTPUTS[:4]
    loss = sum((outputs[n] * w.double()).sum() for n, w in zip(names, weights))
    grads = dict(zip(leaves, torch.autograd.grad(loss, tuple(leaves.values()))))
    return {n: t.detach() for n, t in outputs.items()}, grads


def assert_scan_matches_oracle(forward: Callable[[ScanArgs], ScanResult],
                               backward: Callable[..., ScanGrads], args: ScanArgs, rtol: float) -> ScanResult:
    """A backend's forward (every public output, the channel mean when asked, the empty (0,) tensor when not) and
    backward (every gradient, in its input's dtype) within rtol of the oracle; returns the forward's result."""
    cot = scan_cotangents(args)
    want, want_grads = oracle(args, cot)
    got = forward(args)
    for name in PUBLIC_OUTPUTS[:4]:
        assert_close_rel(name, getattr(got, name), want[name], rtol)
    assert got.out.dtype == args.u.dtype
    if args.with_channel_mean:
        assert got.channel_mean.dtype == compute_dtype(args.u.dtype)
        assert_close_rel("channel_mean", got.channel_mean, want["channel_mean"], rtol)
    else:
        assert got.channel_mean.shape == (0,)
    grads = backward(args, got.saved, cot)
    assert (grads.z is None) == (args.z is None)
    for name, ref in want_grads.items():
        g = getattr(grads, name)
        assert g.dtype == getattr(args, name).dtype, f"d{name}: dtype {g.dtype}"
        assert_close_rel(f"d{name}", g, ref, rtol)
    return got


def state_update_args(x: dict[str, Tensor | None], t: int, softplus: bool) -> StateUpdateArgs:
    """Step t of scan inputs (from scan_args' canonical form) as a decode step from the initial state (cloned)."""
    a = scan_args(x, softplus, 1)
    return StateUpdateArgs(
        state=a.initial_state.clone(), x=a.u[..., t].contiguous(), dt=a.delta[..., t].contiguous(), A=a.A,
        B=a.B[..., t].contiguous(), C=a.C[..., t].contiguous(), D=a.D,
        z=None if a.z is None else a.z[..., t].contiguous(), dt_bias=a.delta_bias, halt_weight=a.halt_weight,
        halt_bias=a.halt_bias, dt_softplus=softplus)


def assert_state_update_matches_oracle(step: Callable[[StateUpdateArgs], StateUpdateResult], args: StateUpdateArgs,
                                       rtol: float) -> None:
    """y, entropy, halt_logits, channel_mean (mean over D of the new state) and the updated state within rtol of
    the float64 oracle."""
    as64 = {n: None if getattr(args, n) is None else getattr(args, n).double() for n in fields_of(StateUpdateArgs)
            if n != "dt_softplus"}
    want_state = as64["state"].clone()
    y, entropy, halt = selective_state_update_ref(
        want_state, as64["x"], as64["dt"], as64["A"], as64["B"], as64["C"], as64["D"], as64["z"], as64["dt_bias"],
        args.dt_softplus, as64["halt_weight"], as64["halt_bias"])
    got = step(args)
    assert got.y.dtype == args.x.dtype
    for name, ref in (("y", y), ("entropy", entropy), ("halt_logits", halt),
                      ("channel_mean", want_state.mean(dim=1)), ("state", want_state)):
        assert_close_rel(name, args.state if name == "state" else getattr(got, name), ref, rtol)


def with_non_finite_state(args, value: float):
    """args (ScanArgs or StateUpdateArgs) with entry [0, 0, 0] of the (initial) state set to `value` (NaN, or a
    finite number whose square overflows); batch row 0 must then get NaN entropy and the other rows stay finite."""
    name = "initial_state" if isinstance(args, ScanArgs) else "state"
    state = getattr(args, name).clone()
    state[0, 0, 0] = value
    return dataclasses.replace(args, **{name: state})


def assert_decode_loop_matches_scan(forward: Callable[[ScanArgs], ScanResult],
                                    step: Callable[[StateUpdateArgs], StateUpdateResult], x: dict[str, Tensor | None],
                                    chunk_size: int, rtol: float) -> None:
    """Decoding x one step at a time (softplus on, from x's initial state) gives the scan's out, entropy, halt
    logits, channel mean and last state on the same backend."""
    full = forward(scan_args(x, True, chunk_size))
    state = state_update_args(x, 0, True).state
    steps = [step(dataclasses.replace(state_update_args(x, t, True), state=state)) for t in range(x["u"].shape[-1])]
    assert_close_rel("out", torch.stack([s.y for s in steps], -1), full.out, rtol)
    for name in ("entropy", "halt_logits"):
        assert_close_rel(name, torch.stack([getattr(s, name) for s in steps], -1), getattr(full, name), rtol)
    assert_close_rel("channel_mean", torch.stack([s.channel_mean for s in steps], 1), full.channel_mean, rtol)
    assert_close_rel("last_state", state, full.last_state, rtol)


def run_scan(forward: Callable[[ScanArgs], ScanResult], backward: Callable[..., ScanGrads], args: ScanArgs,
             cot: ScanCotangents) -> tuple[ScanResult, ScanGrads]:
    """One forward and backward of a backend."""
    result = forward(args)
    return result, backward(args, result.saved, cot)


def assert_bitwise_equal(first: tuple, second: tuple) -> None:
    """Two tuples of contract dataclasses (e.g. run_scan's) hold bitwise-equal tensors, field by field."""
    for a, b in zip(first, second):
        for field in dataclasses.fields(a):
            x, y = getattr(a, field.name), getattr(b, field.name)
            assert (x is None and y is None) or torch.equal(x, y), field.name


def assert_repeats_bitwise(forward: Callable[[ScanArgs], ScanResult], backward: Callable[..., ScanGrads],
                           args: ScanArgs) -> None:
    """Two runs of a backend's forward and backward give bitwise-equal outputs and gradients."""
    cot = scan_cotangents(args)
    assert_bitwise_equal(run_scan(forward, backward, args, cot), run_scan(forward, backward, args, cot))
