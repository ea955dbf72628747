"""The "cuda" backend: fused CUDA kernels from csrc/cuda, compiled just in time on first use.

pip cannot build the extension (it builds in an isolated environment without torch), so the first call that needs
it builds it with torch.utils.cpp_extension.load (nvcc + ninja) for the visible GPU's architecture (or
TORCH_CUDA_ARCH_LIST) into torch's extension cache (TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions);
later processes reuse the cached build. That needs a CUDA build of torch, a visible GPU and nvcc (CUDA_HOME or on
PATH); supports() says in a sentence which of these is missing, or what the build reported.

The kernels keep the state and every sum in float32; activations may be float32, float16 or bfloat16. Every
reduction (entropy and halt sums over channel blocks, dB/dC over channels, parameter gradients over batch rows)
runs in a fixed order without atomics, so results are bitwise reproducible on a given GPU.

The module functions follow the backend contract (pna_kernels/contract.py); the extension's entry points take the
same dataclasses (any object with their field names) and return dicts of the result fields. The kernels' compile-
time limits, CHUNK_SIZE and MAX_STATE_DIM, are defined here (MAX_STATE_DIM in validation.py) and passed to every
compile as -D flags (DEFINES), so no number is mirrored by hand.
"""
from __future__ import annotations

import functools
import shutil
from pathlib import Path
from types import ModuleType

import torch

from . import jit
from .backends import kernel_source_dir
from .contract import ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult
from .cuda_options import DEFAULT
from .validation import MAX_STATE_DIM

# Steps per chunk of the backend's build (cuda_options.DEFAULT, compiled in as PNA_CUDA_CHUNK; a ScanArgs with
# another chunk_size is refused). 16 keeps the backward's recomputed chunk of states, (16 + 1) * N floats per
# channel, in shared memory for N up to 256.
CHUNK_SIZE = DEFAULT.chunk
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# What every compile of csrc/cuda for the backend needs (the extension build, the compile checks): the default
# options' -D flags (cuda_options.KernelOptions.defines).
DEFINES = DEFAULT.defines()

SOURCE_DIR = kernel_source_dir("cuda")
BINDINGS = "bindings.cpp"
EXTENSION_NAME = "pna_cuda_kernels"
NVCC_FLAGS = ("-O3", "-std=c++17", *DEFINES)


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
    try:
        module = jit.load(EXTENSION_NAME, [str(SOURCE_DIR / BINDINGS), *map(str, kernel_sources())],
                          extra_cflags=["-O3", *DEFINES], extra_cuda_cflags=list(NVCC_FLAGS), verbose=False)
    except jit.BUILD_ERRORS as exc:
        return None, f"building the CUDA kernels in {SOURCE_DIR} failed: {jit.first_error(exc)}"
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


def scan_forward(args: ScanArgs) -> ScanResult:
    """Fused forward (shapes in pna_kernels/contract.py): u, delta, z, B, C in float32/float16/bfloat16, the
    parameters and initial_state float32, args.chunk_size == CHUNK_SIZE. Returns out in u's dtype, everything
    else float32; channel_mean (batch, L, N) when args.with_channel_mean, else an empty (0,) tensor."""
    return ScanResult(**extension().scan_forward(args))


def scan_backward(args: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads:
    """Fused backward: the gradient of every tensor input, in its shape and dtype (z None when z is None). The
    cotangents are cast here to what the kernels read: grad_out in u's dtype, the others float32."""
    grad_mean = (cot.grad_channel_mean if args.with_channel_mean
                 else torch.empty(0, dtype=torch.float32, device=args.u.device))  # unread, on the kernels' device
    kernel_cot = ScanCotangents(
        grad_out=cot.grad_out.to(args.u.dtype).contiguous(),
        grad_channel_mean=grad_mean.float().contiguous(),
        **{name: getattr(cot, name).float().contiguous() for name in ("grad_entropy", "grad_halt", "grad_last_state")},
    )
    return ScanGrads(**extension().scan_backward(args, saved, kernel_cot))


def state_update(args: StateUpdateArgs) -> StateUpdateResult:
    """One decode step: y (batch, D) in x's dtype; entropy, halt_logits (batch,) and channel_mean (batch, N) of the
    new state, float32. args.state (batch, D, N) float32 is updated in place."""
    return StateUpdateResult(**extension().state_update(args))
