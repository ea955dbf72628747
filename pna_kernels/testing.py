"""Random inputs and the float64-oracle parity checks shared by the tests and the benchmarks, at two levels.

One input builder, `random_scan_inputs`, gives a dict of selective_scan's tensor inputs. The public level
(`run_scan`, `scan_with_grads`, `assert_matches_oracle`, `assert_state_update_matches_oracle`,
`assert_decode_loop_matches_scan`) calls pna_kernels.selective_scan / selective_state_update with a backend name.
The contract level (`scan_args`, `assert_kernels_match_oracle`, `assert_kernel_step_matches_oracle`,
`assert_kernel_decode_loop_matches_scan`, ...) calls a backend's scan_forward / scan_backward / state_update (or
any function with the same contract, e.g. kernels under host emulation) with pna_kernels.contract objects, so a
test can choose the chunk size. The oracle at both levels is the reference backend run in float64 on the same
(already rounded) inputs.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import torch
from torch import Tensor

from .contract import (
    ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult, compute_dtype,
    fields_of, tensor_fields,
)

# Relative tolerance of a backend against the float64 oracle, by input dtype (mamba-ssm's tiers).
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}

SCAN_INPUT_NAMES = tensor_fields(ScanArgs)  # the tensor inputs, in the contract's order


def random_scan_inputs(
    batch: int,
    dim: int,
    length: int,
    dstate: int,
    groups: int = 1,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
    seed: int = 0,
    with_z: bool = True,
    with_initial_state: bool = True,
    grouped_bc: bool = True,
    delta_softplus: bool = True,
) -> dict[str, Tensor]:
    """Inputs for selective_scan with realistic scales: A = -(n+1)-like negative decays, softplus-range deltas.

    Activations (u, delta, B, C, z) are in `dtype`; parameters (A, D, delta_bias, halt_weight, halt_bias) and
    initial_state in float32 (float64 when dtype is float64). B and C are (batch, groups, N, L) if grouped_bc
    else (batch, N, L) (then groups must be 1). For a scan without softplus (delta_softplus=False) delta and
    delta_bias are made positive, so the state decays and the scan stays well conditioned.
    """
    gen = torch.Generator(device="cpu").manual_seed(seed)
    pdt = torch.float64 if dtype == torch.float64 else torch.float32

    def rand(*shape: int, scale: float = 1.0, shift: float = 0.0, dt: torch.dtype = dtype) -> Tensor:
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * scale + shift).to(dt).to(device)

    bc_shape = (batch, groups, dstate, length) if grouped_bc else (batch, dstate, length)
    if not grouped_bc and groups != 1:
        raise ValueError(f"groups: ungrouped B/C need groups == 1, got {groups}")
    inputs = {
        "u": rand(batch, dim, length),
        "delta": rand(batch, dim, length, scale=0.5, shift=-1.0),
        "A": -(torch.rand(dim, dstate, generator=gen, dtype=torch.float64) * 2 + 0.1).to(pdt).to(device),
        "B": rand(*bc_shape),
        "C": rand(*bc_shape),
        "D": rand(dim, dt=pdt),
        "z": rand(batch, dim, length) if with_z else None,
        "delta_bias": rand(dim, scale=0.3, dt=pdt),
        "halt_weight": rand(dim, dstate, scale=0.2, dt=pdt),
        "halt_bias": rand(1, dt=pdt).reshape(()),
        "initial_state": rand(batch, dim, dstate, dt=pdt) if with_initial_state else None,
    }
    if not delta_softplus:
        inputs["delta"] = torch.nn.functional.softplus(inputs["delta"].double()).to(dtype)
        inputs["delta_bias"] = inputs["delta_bias"].abs()
    return inputs


@dataclasses.dataclass(frozen=True)
class ScanCase:
    """The shape and options of one parity case: batch, D (dim), L (length), N (dstate), G (groups) B/C groups,
    grouped B/C (batch, G, N, L) or ungrouped (batch, N, L), gate z, initial state, softplus on delta, and whether
    the channel mean is asked."""

    batch: int
    dim: int
    length: int
    dstate: int
    groups: int = 1
    grouped: bool = True
    with_z: bool = True
    with_init: bool = True
    softplus: bool = True
    with_channel_mean: bool = True

    def inputs(self, dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
               seed: int | None = None) -> dict[str, Tensor | None]:
        """random_scan_inputs of this case (seeded by the shape unless `seed` is given)."""
        return random_scan_inputs(self.batch, self.dim, self.length, self.dstate, groups=self.groups, dtype=dtype,
                                  device=device, seed=self.length + self.dim + self.dstate if seed is None else seed,
                                  with_z=self.with_z, with_initial_state=self.with_init, grouped_bc=self.grouped,
                                  delta_softplus=self.softplus)


def run_scan(x: dict[str, Tensor | None], backend: str, delta_softplus: bool = True, **options):
    """pna_kernels.selective_scan on the inputs of random_scan_inputs (return_last_state on); `options` are
    selective_scan's keyword arguments (return_channel_mean, check_finite, ...)."""
    from . import selective_scan  # the public op; imported here so this module loads without the ops

    return selective_scan(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x.get("D"), x.get("z"), x.get("delta_bias"), delta_softplus,
        True, halt_weight=x.get("halt_weight"), halt_bias=x.get("halt_bias"), initial_state=x.get("initial_state"),
        backend=backend, **options,
    )


def relative_error(got: Tensor, want: Tensor) -> float:
    """||got - want|| / max(||want||, tiny), in float64; NaN anywhere gives inf."""
    got64, want64 = got.detach().to(torch.float64).cpu(), want.detach().to(torch.float64).cpu()
    if not torch.isfinite(got64).all():
        return float("inf")
    return float((got64 - want64).norm() / want64.norm().clamp_min(1e-30))


def assert_close_rel(name: str, got: Tensor, want: Tensor, rtol: float) -> None:
    """Assert ||got - want|| / ||want|| <= rtol with a message naming the tensor and the error."""
    assert got.shape == want.shape, f"{name}: shape {tuple(got.shape)} != {tuple(want.shape)}"
    err = relative_error(got, want)
    assert err <= rtol, f"{name}: relative error {err:.3e} > {rtol:.1e}"


SCAN_OUTPUT_NAMES = ("out", "entropy", "halt_logits", "last_state")
CHANNEL_MEAN = "channel_mean"


def output_names(with_channel_mean: bool) -> tuple[str, ...]:
    """The differentiable outputs of selective_scan that the parity checks compare."""
    return SCAN_OUTPUT_NAMES + ((CHANNEL_MEAN,) if with_channel_mean else ())


def cotangents(batch: int, dim: int, length: int, dstate: int, device: str | torch.device = "cpu",
               seed: int = 7, with_channel_mean: bool = False) -> tuple[Tensor, ...]:
    """Random float64 weights for (out, entropy, halt_logits, last_state[, channel_mean]) in a scalar loss."""
    gen = torch.Generator().manual_seed(seed)
    shapes = ((batch, dim, length), (batch, length), (batch, length), (batch, dim, dstate))
    if with_channel_mean:
        shapes += ((batch, length, dstate),)
    return tuple(torch.randn(*s, generator=gen, dtype=torch.float64).to(device) for s in shapes)


def scan_with_grads(x: dict[str, Tensor | None], backend: str, delta_softplus: bool,
                    cot: tuple[Tensor, ...]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Outputs of pna_kernels.selective_scan(**x, backend) (return_last_state=True, and return_channel_mean=True
    when cot has a fifth, channel-mean cotangent) and the gradients of sum(output * cotangent) with respect to
    every input of x that is not None."""
    names = output_names(len(cot) > len(SCAN_OUTPUT_NAMES))
    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items() if v is not None}
    res = run_scan(leaves, backend, delta_softplus, return_channel_mean=CHANNEL_MEAN in names)
    outputs = tuple(getattr(res, n) for n in names)
    grads = torch.autograd.grad(outputs, tuple(leaves.values()), tuple(c.to(r.dtype) for c, r in zip(cot, outputs)))
    return dict(zip(names, outputs)), dict(zip(leaves, grads))


def oracle_with_grads(x: dict[str, Tensor | None], delta_softplus: bool,
                      cot: tuple[Tensor, ...]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """scan_with_grads of the float64 oracle on the same (already rounded) inputs."""
    x64 = {k: None if v is None else v.double() for k, v in x.items()}
    return scan_with_grads(x64, "reference", delta_softplus, cot)


def assert_matches_oracle(x: dict[str, Tensor | None], backend: str, delta_softplus: bool, rtol: float,
                          with_channel_mean: bool = False) -> None:
    """Every output (the channel mean too if asked) and every input gradient of `backend` within rtol of the
    float64 oracle on the same inputs, and in the dtype of the input it belongs to."""
    batch, dim, length = x["u"].shape
    cot = cotangents(batch, dim, length, x["A"].shape[1], x["u"].device, with_channel_mean=with_channel_mean)
    got_out, got_grad = scan_with_grads(x, backend, delta_softplus, cot)
    want_out, want_grad = oracle_with_grads(x, delta_softplus, cot)
    for name in output_names(with_channel_mean):
        assert_close_rel(name, got_out[name], want_out[name], rtol)
    assert got_out["out"].dtype == x["u"].dtype
    assert set(got_grad) == set(want_grad)
    for name, want in want_grad.items():
        assert got_grad[name].dtype == x[name].dtype, f"d{name}: dtype {got_grad[name].dtype}"
        assert_close_rel(f"d{name}", got_grad[name], want, rtol)


def decode_inputs(x: dict[str, Tensor | None], t: int) -> dict[str, Tensor | None]:
    """Step t of scan inputs in selective_state_update's layout: x, dt, z (batch, D); B, C (batch, G, N)."""
    return {"x": x["u"][..., t], "dt": x["delta"][..., t], "z": None if x["z"] is None else x["z"][..., t],
            "B": x["B"][..., t], "C": x["C"][..., t]}


def state_update_inputs(x: dict[str, Tensor | None], t: int) -> dict[str, Tensor | None]:
    """selective_state_update's tensor arguments by name for step t of random_scan_inputs' dict: the state a
    clone of x's initial state (zeros without one), (batch, D, N); the step's activations as decode_inputs; the
    parameters x's (dt_bias = delta_bias)."""
    batch, dim, _ = x["u"].shape
    state = x["initial_state"]
    state = (torch.zeros(batch, dim, x["A"].shape[1], dtype=compute_dtype(x["u"].dtype), device=x["u"].device)
             if state is None else state.clone())
    return {"state": state, **decode_inputs(x, t), "A": x["A"], "D": x["D"], "dt_bias": x["delta_bias"],
            "halt_weight": x["halt_weight"], "halt_bias": x["halt_bias"]}


def assert_state_update_matches_oracle(x: dict[str, Tensor | None], t: int, backend: str, dt_softplus: bool,
                                       rtol: float) -> None:
    """One decode step of `backend` (state_update_inputs(x, t)): y, entropy, halt_logits, channel_mean and the
    updated state within rtol of the reference backend's step in float64, y in x's dtype."""
    from . import reference, selective_state_update  # imported here so this module loads without the ops

    kw = state_update_inputs(x, t)
    want_args = _float64(state_update_args(x, t, dt_softplus))
    got = selective_state_update(**kw, dt_softplus=dt_softplus, return_channel_mean=True, backend=backend)
    want = reference.state_update(want_args)
    for name, g in zip(fields_of(StateUpdateResult), got, strict=True):
        assert_close_rel(name, g, getattr(want, name), rtol)
    assert got[0].dtype == kw["x"].dtype
    assert_close_rel("state", kw["state"], want_args.state, rtol)


def assert_decode_loop_matches_scan(x: dict[str, Tensor | None], backend: str, rtol: float) -> None:
    """Decoding x one step at a time with selective_state_update (from x["initial_state"], softplus on) gives the
    full scan's out, entropy, halt_logits, channel mean and last state, on the same backend: out within rtol, the
    float32 (or float64) sums and state within the tier of their own dtype."""
    from . import selective_state_update  # the public op

    full = run_scan(x, backend, True, return_channel_mean=True)
    state = state_update_inputs(x, 0)["state"]
    steps = [selective_state_update(**{**state_update_inputs(x, t), "state": state}, dt_softplus=True,
                                    return_channel_mean=True, backend=backend) for t in range(x["u"].shape[-1])]
    ys, entropies, halts, means = (torch.stack(parts, -1) for parts in zip(*steps))
    state_rtol = RTOL[state.dtype]
    assert_close_rel("out", ys, full.out, rtol)
    assert_close_rel("channel_mean", means.transpose(1, 2), full.channel_mean, state_rtol)
    assert_close_rel("entropy", entropies, full.entropy, state_rtol)
    assert_close_rel("halt_logits", halts, full.halt_logits, state_rtol)
    assert_close_rel("last_state", state, full.last_state, state_rtol)


# ---------------------------------------------------------------------------------------------------------------
# Contract level: a backend's module functions (or anything with their signatures) on pna_kernels.contract objects.

ScanForward = Callable[[ScanArgs], ScanResult]
ScanBackward = Callable[[ScanArgs, ScanSaved, ScanCotangents], ScanGrads]
StateStep = Callable[[StateUpdateArgs], StateUpdateResult]


def scan_args(x: dict[str, Tensor | None], delta_softplus: bool, chunk_size: int,
              with_channel_mean: bool = True) -> ScanArgs:
    """The canonical contract inputs (validation.check_scan_inputs) of random_scan_inputs' dict: B, C grouped
    (batch, G, N, L), absent parameters as zeros, everything contiguous."""
    from .validation import check_scan_inputs

    return check_scan_inputs(**x, delta_softplus=delta_softplus, check_finite=False, chunk_size=chunk_size,
                             with_channel_mean=with_channel_mean)


def scan_cotangents(args: ScanArgs, seed: int = 7) -> ScanCotangents:
    """Random float64 weights of every output in a scalar loss (grad_channel_mean the empty (0,) tensor when the
    channel mean is not asked), on args' device."""
    gen = torch.Generator().manual_seed(seed)
    batch, dim, length = args.u.shape
    dstate = args.A.shape[1]
    shapes = {"grad_out": (batch, dim, length), "grad_entropy": (batch, length), "grad_halt": (batch, length),
              "grad_last_state": (batch, dim, dstate),
              "grad_channel_mean": (batch, length, dstate) if args.with_channel_mean else (0,)}
    return ScanCotangents(**{n: torch.randn(*s, generator=gen, dtype=torch.float64).to(args.u.device)
                             for n, s in shapes.items()})


def _float64(obj):
    """A contract object with every floating tensor field in float64 (a copy; flags kept)."""
    return type(obj)(**{n: (v.detach().double().clone() if isinstance(v, Tensor) and v.is_floating_point() else v)
                        for n, v in ((n, getattr(obj, n)) for n in fields_of(type(obj)))})


def kernel_oracle(args: ScanArgs, cot: ScanCotangents) -> tuple[ScanResult, ScanGrads]:
    """The reference backend's forward and backward in float64 on the same inputs and cotangents."""
    from . import reference

    args64 = _float64(args)
    result = reference.scan_forward(args64)
    return result, reference.scan_backward(args64, result.saved, _float64(cot))


def assert_kernels_match_oracle(forward: ScanForward, backward: ScanBackward, args: ScanArgs,
                                rtol: float) -> ScanResult:
    """A backend's forward (every public output, the channel mean when asked, the empty (0,) tensor when not) and
    backward (every gradient, in its input's dtype) within rtol of kernel_oracle; returns the forward's result."""
    cot = scan_cotangents(args)
    want, want_grads = kernel_oracle(args, cot)
    got = forward(args)
    for name in SCAN_OUTPUT_NAMES:
        assert_close_rel(name, getattr(got, name), getattr(want, name), rtol)
    assert got.out.dtype == args.u.dtype
    if args.with_channel_mean:
        assert got.channel_mean.dtype == compute_dtype(args.u.dtype)
        assert_close_rel(CHANNEL_MEAN, got.channel_mean, want.channel_mean, rtol)
    else:
        assert got.channel_mean.shape == (0,)
    grads = backward(args, got.saved, cot)
    assert (grads.z is None) == (args.z is None)
    for name in tensor_fields(ScanArgs):
        if getattr(args, name) is not None:
            g = getattr(grads, name)
            assert g.dtype == getattr(args, name).dtype, f"d{name}: dtype {g.dtype}"
            assert_close_rel(f"d{name}", g, getattr(want_grads, name), rtol)
    return got


def state_update_args(x: dict[str, Tensor | None], t: int, dt_softplus: bool) -> StateUpdateArgs:
    """The canonical decode-step inputs (validation.check_state_update_inputs) of state_update_inputs(x, t)."""
    from .validation import check_state_update_inputs

    return check_state_update_inputs(**state_update_inputs(x, t), dt_softplus=dt_softplus, check_finite=False)


def assert_kernel_step_matches_oracle(step: StateStep, args: StateUpdateArgs, rtol: float) -> None:
    """One decode step (updating args.state): y, entropy, halt_logits, channel_mean and the new state within rtol
    of the reference backend's step in float64, y in x's dtype."""
    from . import reference

    args64 = _float64(args)
    want = reference.state_update(args64)
    got = step(args)
    assert got.y.dtype == args.x.dtype
    for name in fields_of(StateUpdateResult):
        assert_close_rel(name, getattr(got, name), getattr(want, name), rtol)
    assert_close_rel("state", args.state, args64.state, rtol)


def with_non_finite_state(args, value: float):
    """args (ScanArgs or StateUpdateArgs) with entry [0, 0, 0] of the (initial) state set to `value` (NaN, or a
    finite number whose square overflows float32); batch row 0 must then get NaN entropy, the others stay
    finite."""
    name = "initial_state" if isinstance(args, ScanArgs) else "state"
    state = getattr(args, name).clone()
    state[0, 0, 0] = value
    return dataclasses.replace(args, **{name: state})


def assert_non_finite_state_gives_nan_entropy(forward: ScanForward, step: StateStep, x: dict[str, Tensor | None],
                                              chunk_size: int, value: float) -> None:
    """A state entry of batch row 0 set to `value` (see with_non_finite_state) gives row 0 NaN entropy in the scan
    (at the first step) and in the decode step; row 1 stays finite. x needs batch >= 2."""
    entropy = forward(with_non_finite_state(scan_args(x, True, chunk_size), value)).entropy
    assert torch.isnan(entropy[0, 0]) and torch.isfinite(entropy[1]).all(), entropy
    entropy = step(with_non_finite_state(state_update_args(x, 0, True), value)).entropy
    assert torch.isnan(entropy[0]) and torch.isfinite(entropy[1]), entropy


def assert_kernel_decode_loop_matches_scan(forward: ScanForward, step: StateStep, x: dict[str, Tensor | None],
                                           chunk_size: int, rtol: float) -> None:
    """Decoding x one step at a time (softplus on, from x's initial state) gives the scan's out, entropy, halt
    logits, channel mean and last state, on the same backend's functions."""
    full = forward(scan_args(x, True, chunk_size))
    state = state_update_args(x, 0, True).state
    steps = [step(dataclasses.replace(state_update_args(x, t, True), state=state)) for t in range(x["u"].shape[-1])]
    assert_close_rel("out", torch.stack([s.y for s in steps], -1), full.out, rtol)
    for name in ("entropy", "halt_logits"):
        assert_close_rel(name, torch.stack([getattr(s, name) for s in steps], -1), getattr(full, name), rtol)
    assert_close_rel(CHANNEL_MEAN, torch.stack([s.channel_mean for s in steps], 1), full.channel_mean, rtol)
    assert_close_rel("last_state", state, full.last_state, rtol)


def run_kernels(forward: ScanForward, backward: ScanBackward, args: ScanArgs,
                cot: ScanCotangents) -> tuple[ScanResult, ScanGrads]:
    """One forward and backward of a backend's functions."""
    result = forward(args)
    return result, backward(args, result.saved, cot)


def assert_bitwise_equal(first: tuple, second: tuple) -> None:
    """Two tuples of contract objects (e.g. run_kernels') hold bitwise-equal tensors, field by field."""
    for a, b in zip(first, second, strict=True):
        for name in fields_of(type(a)):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or torch.equal(x, y), name
