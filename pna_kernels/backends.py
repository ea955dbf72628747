"""Backend registry and selection.

A backend is a module with the names of the contract in pna_kernels/contract.py, so ops.py can dispatch to any
of them by name:

    CHUNK_SIZE: int
        Steps per chunk; the forward saves the state before every chunk for the backward to recompute from.
    supports(device, dtype, dstate) -> str | None
        None if the backend runs these inputs, else a sentence saying why not.
    scan_forward(args: ScanArgs) -> ScanResult
    scan_backward(args: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads
    state_update(args: StateUpdateArgs) -> StateUpdateResult          (updates args.state in place)

Inputs arrive validated and canonical (validation.py builds them); shapes and dtypes of every field are in the
contract's docstring.
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
