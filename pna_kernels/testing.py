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
