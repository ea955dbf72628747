"""Backend registry and selection.

A backend is a module with the same four names, so ops.py can dispatch to any of them:

    CHUNK_SIZE: int
        Steps per chunk; the forward saves the state before every chunk for the backward to recompute from.
    supports(device, dtype, dstate) -> str | None
        None if the backend runs these inputs, else a sentence saying why not.
    scan_forward(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, delta_softplus,
                 chunk_size) -> (out, entropy, halt_logits, last_state, checkpoints, entropy_sums)
    scan_backward(grad_out, grad_entropy, grad_halt, grad_last_state, u, delta, A, B, C, D, z, delta_bias,
                  halt_weight, halt_bias, initial_state, checkpoints, entropy_sums, delta_softplus, chunk_size)
        -> (du, ddelta, dA, dB, dC, dD, dz or None, ddelta_bias, dhalt_weight, dhalt_bias, dinitial_state)
    state_update(state, x, dt, A, B, C, D, z, dt_bias, halt_weight, halt_bias, dt_softplus)
        -> (y, entropy, halt_logits), updating state (batch, D, N) in place.

Inputs arrive in the canonical form of validation.ScanArgs: contiguous, B and C (batch, G, N, L), parameters
(A, D, delta_bias, halt_weight, halt_bias, initial_state) in the compute dtype (float32, or float64 for float64
inputs), every optional one but z materialised. Outputs: out (batch, D, L) in u's dtype; entropy, halt_logits
(batch, L), last_state (batch, D, N), checkpoints (batch, ceil(L / chunk_size), D, N) and entropy_sums
(batch, 2, L) holding S1 = sum h^2 and S2 = sum h^2 log h^2 of every step, all in the compute dtype.
Gradients come back in the dtype and shape of their input.
"""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType

import torch

BACKENDS: dict[str, str] = {
    "reference": "pna_kernels.reference",
    "torch": "pna_kernels.parallel",
    "triton": "pna_kernels.triton",
    "cuda": "pna_kernels.cuda",
    "cpu": "pna_kernels.cpu",
}
AUTO_ORDER: dict[str, tuple[str, ...]] = {
    "cuda": ("cuda", "triton", "torch"),
    "cpu": ("cpu", "torch"),
}


def kernel_source_dir(kind: str) -> Path:
    """Where the native sources of `kind` ("cpu" or "cuda") are: inside the installed package (a wheel carries
    them, see setup.py) or, for an editable install, csrc/ of the source checkout."""
    packaged = Path(__file__).resolve().parent / "csrc" / kind
    return packaged if packaged.is_dir() else Path(__file__).resolve().parent.parent / "csrc" / kind


def backend_module(name: str) -> ModuleType:
    """Import the module behind a backend name."""
    if name not in BACKENDS:
        raise ValueError(f"backend: expected one of {sorted(BACKENDS)} or 'auto', got {name!r}")
    return importlib.import_module(BACKENDS[name])


def unsupported_reason(name: str, device: torch.device, dtype: torch.dtype, dstate: int) -> str | None:
    """Why backend `name` cannot run these inputs, or None if it can."""
    try:
        module = backend_module(name)
    except ImportError as exc:  # an optional dependency (triton) is missing
        return f"it could not be imported ({exc})"
    return module.supports(device, dtype, dstate)


@torch._dynamo.assume_constant_result
def chunk_size(name: str) -> int:
    """The chunk size of a backend (a constant, so torch.compile need not trace the import)."""
    return backend_module(name).CHUNK_SIZE


@torch._dynamo.assume_constant_result
def resolve_backend(name: str, device: torch.device, dtype: torch.dtype, dstate: int) -> str:
    """Turn 'auto' (or the PNA_BACKEND environment variable) into a concrete backend that runs these inputs."""
    if name == "auto":
        name = os.environ.get("PNA_BACKEND", "auto")
    if name == "auto":
        for candidate in AUTO_ORDER.get(device.type, ("torch",)):
            if unsupported_reason(candidate, device, dtype, dstate) is None:
                return candidate
        return "reference"
    backend_module(name)  # raises a ValueError naming `backend` for unknown names
    reason = unsupported_reason(name, device, dtype, dstate)
    if reason is not None:
        raise ValueError(f"backend: {name!r} cannot run {dtype} inputs with N={dstate} on {device}: {reason}")
    return name


def available_backends(device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32, dstate: int = 16) -> list[str]:
    """Names of the backends that can run inputs of this device, dtype and state size here."""
    device = torch.device(device)
    return [n for n in BACKENDS if unsupported_reason(n, device, dtype, dstate) is None]
