"""Random inputs and comparison helpers shared by the parity tests and the benchmarks."""
from __future__ import annotations

import torch
from torch import Tensor

# Relative tolerance of a backend against the float64 oracle, by input dtype (mamba-ssm's tiers).
RTOL = {torch.float64: 1e-10, torch.float32: 1e-4, torch.bfloat16: 3e-2, torch.float16: 5e-3}

SCAN_INPUT_NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "halt_weight", "halt_bias", "initial_state")


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
) -> dict[str, Tensor]:
    """Inputs for selective_scan with realistic scales: A = -(n+1)-like negative decays, softplus-range deltas.

    Activations (u, delta, B, C, z) are in `dtype`; parameters (A, D, delta_bias, halt_weight, halt_bias) and
    initial_state in float32 (float64 when dtype is float64). B and C are (batch, groups, N, L) if grouped_bc
    else (batch, N, L) (then groups must be 1).
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
    return inputs


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


def cotangents(batch: int, dim: int, length: int, dstate: int, device: str | torch.device = "cpu",
               seed: int = 7) -> tuple[Tensor, ...]:
    """Random float64 weights for (out, entropy, halt_logits, last_state) in a scalar loss."""
    gen = torch.Generator().manual_seed(seed)
    shapes = ((batch, dim, length), (batch, length), (batch, length), (batch, dim, dstate))
    return tuple(torch.randn(*s, generator=gen, dtype=torch.float64).to(device) for s in shapes)


def scan_with_grads(x: dict[str, Tensor | None], backend: str, delta_softplus: bool,
                    cot: tuple[Tensor, ...]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """Outputs of pna_kernels.selective_scan(**x, backend) (return_last_state=True) and the gradients of
    sum(output * cotangent) with respect to every input of x that is not None."""
    from . import selective_scan  # the public op; imported here so this module loads without the ops

    leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items() if v is not None}
    res = selective_scan(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves.get("D"), leaves.get("z"),
        leaves.get("delta_bias"), delta_softplus, True, halt_weight=leaves.get("halt_weight"),
        halt_bias=leaves.get("halt_bias"), initial_state=leaves.get("initial_state"), backend=backend,
    )
    grads = torch.autograd.grad(tuple(res), tuple(leaves.values()), tuple(c.to(r.dtype) for c, r in zip(cot, res)))
    return dict(zip(SCAN_OUTPUT_NAMES, res)), dict(zip(leaves, grads))


def oracle_with_grads(x: dict[str, Tensor | None], delta_softplus: bool,
                      cot: tuple[Tensor, ...]) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """scan_with_grads of the float64 oracle on the same (already rounded) inputs."""
    x64 = {k: None if v is None else v.double() for k, v in x.items()}
    return scan_with_grads(x64, "reference", delta_softplus, cot)


def assert_matches_oracle(x: dict[str, Tensor | None], backend: str, delta_softplus: bool, rtol: float) -> None:
    """Every output and every input gradient of `backend` within rtol of the float64 oracle on the same inputs,
    and in the dtype of the input it belongs to."""
    batch, dim, length = x["u"].shape
    cot = cotangents(batch, dim, length, x["A"].shape[1], x["u"].device)
    got_out, got_grad = scan_with_grads(x, backend, delta_softplus, cot)
    want_out, want_grad = oracle_with_grads(x, delta_softplus, cot)
    for name in SCAN_OUTPUT_NAMES:
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
    halt_logits and the updated state within rtol of the float64 oracle, y in x's dtype."""
    from . import selective_state_update  # the public op; imported here so this module loads without the ops
    from .reference import selective_state_update_ref

    step = decode_inputs(x, t)
    state = x["initial_state"].clone()
    state64 = x["initial_state"].double()
    got = selective_state_update(
        state, step["x"], step["dt"], x["A"], step["B"], step["C"], x["D"], step["z"], x["delta_bias"], dt_softplus,
        halt_weight=x["halt_weight"], halt_bias=x["halt_bias"], backend=backend,
    )
    as64 = {k: None if v is None else v.double() for k, v in (*x.items(), *step.items())}  # step wins
    want = selective_state_update_ref(
        state64, as64["x"], as64["dt"], as64["A"], as64["B"], as64["C"], as64["D"], as64["z"], as64["delta_bias"],
        dt_softplus, as64["halt_weight"], as64["halt_bias"],
    )
    for name, g, w in zip(("y", "entropy", "halt_logits"), got, want):
        assert_close_rel(name, g, w, rtol)
    assert got[0].dtype == step["x"].dtype
    assert_close_rel("state", state, state64, rtol)


def assert_decode_loop_matches_scan(x: dict[str, Tensor | None], backend: str, rtol: float) -> None:
    """Decoding x one step at a time with selective_state_update (from x["initial_state"], softplus on) gives the
    full scan's out, entropy, halt_logits and last state, on the same backend: out within rtol, the float32 (or
    float64) sums and state within the tier of their own dtype."""
    from . import selective_scan, selective_state_update  # the public ops

    full = selective_scan(
        x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True, True,
        halt_weight=x["halt_weight"], halt_bias=x["halt_bias"], initial_state=x["initial_state"], backend=backend,
    )
    state = x["initial_state"].clone()
    steps = []
    for t in range(x["u"].shape[-1]):
        step = decode_inputs(x, t)
        steps.append(selective_state_update(
            state, step["x"], step["dt"], x["A"], step["B"], step["C"], x["D"], step["z"], x["delta_bias"], True,
            halt_weight=x["halt_weight"], halt_bias=x["halt_bias"], backend=backend,
        ))
    ys, entropies, halts = (torch.stack(parts, -1) for parts in zip(*steps))
    state_rtol = RTOL[state.dtype]
    assert_close_rel("out", ys, full.out, rtol)
    assert_close_rel("entropy", entropies, full.entropy, state_rtol)
    assert_close_rel("halt_logits", halts, full.halt_logits, state_rtol)
    assert_close_rel("last_state", state, full.last_state, state_rtol)
