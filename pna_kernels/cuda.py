"""The "cuda" backend: fused CUDA kernels from csrc/cuda, compiled just in time on first use.

pip cannot build the extension (it builds in an isolated environment without torch), so the first call that needs
it builds it with torch.utils.cpp_extension.load (nvcc + ninja) for the visible GPU's architecture (or
TORCH_CUDA_ARCH_LIST) into torch's extension cache (TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions);
later processes reuse the cached build. That needs a CUDA build of torch, a visible GPU and nvcc (CUDA_HOME or on
PATH); supports() says in a sentence which of these is missing, or what the build reported.

The kernels keep the state and every sum in float32; activations may be float32, float16 or bfloat16. Every
reduction (entropy and halt sums over channel blocks, dB/dC over channels, parameter gradients over batch rows)
runs in a fixed order without atomics, so results are bitwise reproducible on a given GPU.

Shapes follow the backend contract in pna_kernels/backends.py.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path
from types import ModuleType

import torch

from .backends import kernel_source_dir
from .validation import MAX_STATE_DIM

# Steps per chunk; must equal kChunk in csrc/cuda/scan_common.cuh (the binding checks it). 16 keeps the
# backward's recomputed chunk of states, (16 + 1) * N floats per channel, in shared memory for N up to 256.
CHUNK_SIZE = 16
DTYPES = (torch.float32, torch.float16, torch.bfloat16)

SOURCE_DIR = kernel_source_dir("cuda")
BINDINGS = "bindings.cpp"
EXTENSION_NAME = "pna_cuda_kernels"
NVCC_FLAGS = ("-O3", "-std=c++17")


def kernel_sources() -> list[Path]:
    """The CUDA kernel files of csrc/cuda (every *.cu), sorted."""
    return sorted(SOURCE_DIR.glob("*.cu"))


def find_nvcc() -> str | None:
    """Path of the nvcc that torch's extension builder would use (CUDA_HOME/bin/nvcc, else nvcc on PATH)."""
    from torch.utils.cpp_extension import CUDA_HOME

    if CUDA_HOME is not None and (Path(CUDA_HOME) / "bin" / "nvcc").is_file():
        return str(Path(CUDA_HOME) / "bin" / "nvcc")
    return shutil.which("nvcc")


def _missing_toolchain() -> str | None:
    """Why the extension cannot be built here, before trying; None if it can be tried."""
    if torch.version.cuda is None:
        return "the installed torch is a CPU-only build (torch.version.cuda is None); install a CUDA build of torch"
    if not torch.cuda.is_available():
        return "no CUDA GPU is visible (torch.cuda.is_available() is False)"
    if find_nvcc() is None:
        return "nvcc was not found (set CUDA_HOME or put nvcc on PATH) to build the kernels in csrc/cuda"
    if not (SOURCE_DIR / BINDINGS).is_file() or not kernel_sources():
        return f"its CUDA sources are not in {SOURCE_DIR} (reinstall pna: pip install -e . from a source checkout)"
    return None


@functools.cache
def _build() -> tuple[ModuleType | None, str | None]:
    """(extension, None) once the kernels are built, or (None, why not); tried once per process."""
    missing = _missing_toolchain()
    if missing is not None:
        return None, missing
    from torch.utils import cpp_extension

    try:
        module = cpp_extension.load(
            name=EXTENSION_NAME,
            sources=[str(SOURCE_DIR / BINDINGS), *map(str, kernel_sources())],
            extra_cflags=["-O3"],
            extra_cuda_cflags=list(NVCC_FLAGS),
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()] or [type(exc).__name__]
        errors = [line for line in lines if "error" in line.lower()] or lines[-3:]
        return None, f"building the CUDA kernels in {SOURCE_DIR} failed: {' | '.join(errors[:3])}"
    return module, None


def extension() -> ModuleType:
    """The compiled extension (built on the first call); RuntimeError saying why if it cannot be built."""
    module, reason = _build()
    if module is None:
        raise RuntimeError(f"pna_kernels cuda backend: {reason}")
    return module


def supports(device: torch.device, dtype: torch.dtype, dstate: int) -> str | None:
    """None for CUDA tensors of float32/float16/bfloat16 with 1 <= N <= 256 once the extension has built, else why
    not, in a sentence. The first call on a machine builds the extension (a minute or two, then cached on disk)."""
    if device.type != "cuda":
        return f"it runs on CUDA tensors only, got device {device}"
    if dtype == torch.float64:
        return "the kernels keep state and sums in float32; use the 'reference' or 'cpu' backend for float64"
    if dtype not in DTYPES:
        return f"inputs must be float32, float16 or bfloat16, got {dtype}"
    if not 1 <= dstate <= MAX_STATE_DIM:
        return f"it supports state sizes 1 <= N <= {MAX_STATE_DIM}, got {dstate}"
    return _build()[1]


def scan_forward(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, delta_softplus,
                 chunk_size):
    """Fused forward: (out, entropy, halt_logits, last_state, checkpoints, entropy_sums).

    u, delta, z: (batch, D, L) and B, C: (batch, G, N, L) in the input dtype; A, halt_weight: (D, N), D,
    delta_bias: (D,), halt_bias: (), initial_state: (batch, D, N) in float32. Returns out (batch, D, L) in u's
    dtype; entropy, halt_logits (batch, L), last_state (batch, D, N), checkpoints (batch, ceil(L / chunk_size),
    D, N) and entropy_sums (batch, 2, L) in float32.
    """
    return tuple(extension().scan_forward(
        u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, delta_softplus, chunk_size
    ))


def scan_backward(grad_out, grad_entropy, grad_halt, grad_last_state, u, delta, A, B, C, D, z, delta_bias,
                  halt_weight, halt_bias, initial_state, checkpoints, entropy_sums, delta_softplus, chunk_size):
    """Fused backward: gradients (du, ddelta, dA, dB, dC, dD, dz or None, ddelta_bias, dhalt_weight, dhalt_bias,
    dinitial_state), each in the shape and dtype of its input. grad_out: (batch, D, L); grad_entropy, grad_halt:
    (batch, L); grad_last_state: (batch, D, N); the rest as in scan_forward and its outputs."""
    return tuple(extension().scan_backward(
        grad_out.to(u.dtype).contiguous(), grad_entropy.float().contiguous(), grad_halt.float().contiguous(),
        grad_last_state.float().contiguous(), u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias,
        initial_state, checkpoints, entropy_sums, delta_softplus, chunk_size,
    ))


def state_update(state, x, dt, A, B, C, D, z, dt_bias, halt_weight, halt_bias, dt_softplus):
    """One decode step: (y (batch, D) in x's dtype, entropy (batch,), halt_logits (batch,) float32); state
    (batch, D, N) float32 is updated in place. x, dt, z: (batch, D); B, C: (batch, G, N)."""
    return tuple(extension().state_update(
        state, x, dt, A, B, C, D, z, dt_bias, halt_weight, halt_bias, dt_softplus
    ))
