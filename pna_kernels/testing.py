"""Random inputs and comparison helpers shared by the parity tests and the benchmarks."""
from __future__ import annotations

import torch
from torch import Tensor

from .contract import ScanArgs, tensor_fields

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


def assert_state_update_matches_oracle(x: dict[str, Tensor | None], t: int, backend: str, dt_softplus: bool,
                                       rtol: float) -> None:
    """One decode step of `backend` from x["initial_state"] with step t of the scan inputs x: y, entropy,
    halt_logits, channel_mean and the updated state within rtol of the float64 oracle, y in x's dtype."""
    from . import selective_state_update  # the public op; imported here so this module loads without the ops
    from .reference import selective_state_update_ref

    step = decode_inputs(x, t)
    state = x["initial_state"].clone()
    state64 = x["initial_state"].double()
    got = selective_state_update(
        state, step["x"], step["dt"], x["A"], step["B"], step["C"], x["D"], step["z"], x["delta_bias"], dt_softplus,
        halt_weight=x["halt_weight"], halt_bias=x["halt_bias"], return_channel_mean=True, backend=backend,
    )
    as64 = {k: None if v is None else v.double() for k, v in (*x.items(), *step.items())}  # step wins
    want = selective_state_update_ref(
        state64, as64["x"], as64["dt"], as64["A"], as64["B"], as64["C"], as64["D"], as64["z"], as64["delta_bias"],
        dt_softplus, as64["halt_weight"], as64["halt_bias"],
    )
    for name, g, w in zip(("y", "entropy", "halt_logits", "channel_mean"), got, (*want, state64.mean(dim=1))):
        assert_close_rel(name, g, w, rtol)
    assert got[0].dtype == step["x"].dtype
    assert_close_rel("state", state, state64, rtol)


def assert_decode_loop_matches_scan(x: dict[str, Tensor | None], backend: str, rtol: float) -> None:
    """Decoding x one step at a time with selective_state_update (from x["initial_state"], softplus on) gives the
    full scan's out, entropy, halt_logits, channel mean and last state, on the same backend: out within rtol, the
    float32 (or float64) sums and state within the tier of their own dtype."""
    from . import selective_state_update  # the public op

    full = run_scan(x, backend, True, return_channel_mean=True)
    state = x["initial_state"].clone()
    steps = []
    for t in range(x["u"].shape[-1]):
        step = decode_inputs(x, t)
        steps.append(selective_state_update(
            state, step["x"], step["dt"], x["A"], step["B"], step["C"], x["D"], step["z"], x["delta_bias"], True,
            halt_weight=x["halt_weight"], halt_bias=x["halt_bias"], return_channel_mean=True, backend=backend,
        ))
    ys, entropies, halts, means = (torch.stack(parts, -1) for parts in zip(*steps))
    state_rtol = RTOL[state.dtype]
    assert_close_rel("out", ys, full.out, rtol)
    assert_close_rel("channel_mean", means.transpose(1, 2), full.channel_mean, state_rtol)
    assert_close_rel("entropy", entropies, full.entropy, state_rtol)
    assert_close_rel("halt_logits", halts, full.halt_logits, state_rtol)
    assert_close_rel("last_state", state, full.last_state, state_rtol)
