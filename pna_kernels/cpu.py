"""The "cpu" backend: fused C++17/OpenMP kernels from csrc/cpu, compiled just in time on first use.

The extension is built once per process with torch.utils.cpp_extension.load (ninja) into torch's extension cache
(TORCH_EXTENSIONS_DIR, by default ~/.cache/torch_extensions), which later processes reuse. The kernels compute in
float32 or float64; float16 and bfloat16 activations are upcast to float32 here before the call and `out` and
the activation gradients are cast back. Work is split over (batch row, block of 16 channels) with OpenMP, using
torch.get_num_threads() threads; every cross-item sum runs in a fixed order, so on a given machine results are
bitwise identical from run to run and for any thread count (across machines they may differ in the last bits:
the hot loops are compiled for baseline x86-64, AVX2 and AVX-512 and the CPU picks one).

Shapes follow the backend contract in pna_kernels/backends.py.
"""
from __future__ import annotations

import functools
from types import ModuleType

import torch
from torch import Tensor

from .backends import kernel_source_dir
from .reference import compute_dtype
from .validation import FLOAT_DTYPES, MAX_STATE_DIM

CHUNK_SIZE = 64

SOURCE_DIR = kernel_source_dir("cpu")
SOURCES = ("bindings.cpp", "scan_forward.cpp", "scan_backward.cpp", "state_update.cpp")
EXTENSION_NAME = "pna_cpu_kernels"
# No -march=native, so a build cached on one machine runs on any other (csrc/cpu/scan_common.h multiversions the
# hot loops for AVX2 and AVX-512 instead). -fno-trapping-math lets GCC vectorise the selects in vector_math.h
# (nothing here reads floating-point exception flags); -ffp-contract=fast fuses a * b + c where the CPU has FMA.
# The sources are C++17; the language standard is the one torch's headers ask for.
COMPILE_FLAGS = ("-O3", "-fno-trapping-math", "-ffp-contract=fast", "-fopenmp")


@functools.cache
def _build() -> tuple[ModuleType | None, str | None]:
    """(extension, None) once the kernels are built, or (None, why not); tried once per process."""
    missing = [name for name in SOURCES if not (SOURCE_DIR / name).is_file()]
    if missing:
        return None, f"its C++ sources {missing} are not in {SOURCE_DIR} (reinstall pna: pip install -e . from a source checkout)"
    from torch.utils import cpp_extension

    try:
        module = cpp_extension.load(
            name=EXTENSION_NAME,
            sources=[str(SOURCE_DIR / name) for name in SOURCES],
            extra_cflags=list(COMPILE_FLAGS),
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except (RuntimeError, OSError, ImportError) as exc:
        lines = str(exc).strip().splitlines() or [type(exc).__name__]
        first_error = next((line for line in lines if "error:" in line), lines[-1])  # the compiler's first complaint
        return None, (
            f"building the C++/OpenMP kernels in {SOURCE_DIR} failed ({first_error.strip()}); "
            "it needs a C++17 compiler with OpenMP (g++ or clang++ with libomp, found via $CXX or on PATH) and "
            "ninja (pip install ninja); or pick backend='torch'"
        )
    return module, None


def extension() -> ModuleType:
    """The compiled extension (built on the first call); RuntimeError saying what failed if it cannot be built."""
    module, reason = _build()
    if module is None:
        raise RuntimeError(f"pna_kernels cpu backend: {reason}")
    return module


def supports(device: torch.device, dtype: torch.dtype, dstate: int) -> str | None:
    """None for CPU tensors of any float dtype with N <= 256 once the extension has built, else why not.

    float32 and float64 run natively; float16 and bfloat16 inputs run in float32 (upcast before the kernels, `out`
    and the input gradients cast back). Calling it builds the extension (about 30 s the first time on a machine,
    then cached on disk).
    """
    if device.type != "cpu":
        return f"it runs on CPU tensors only, got device {device}"
    if dtype not in FLOAT_DTYPES:
        return f"it needs a floating dtype, got {dtype}"
    if not 1 <= dstate <= MAX_STATE_DIM:
        return f"it supports state sizes 1 <= N <= {MAX_STATE_DIM}, got {dstate}"
    return _build()[1]


def _compute(t: Tensor | None, cdt: torch.dtype) -> Tensor | None:
    return None if t is None else t.to(cdt).contiguous()


def scan_forward(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state, delta_softplus,
                 chunk_size):
    """Fused forward: (out, entropy, halt_logits, last_state, checkpoints, entropy_sums).

    u, delta, z: (batch, D, L); B, C: (batch, G, N, L); the rest as in pna_kernels/backends.py. Returns
    out (batch, D, L) in u's dtype; entropy, halt_logits (batch, L), last_state (batch, D, N), checkpoints
    (batch, ceil(L / chunk_size), D, N), entropy_sums (batch, 2, L) in the compute dtype.
    """
    cdt = compute_dtype(u.dtype)
    batch, dim, length = u.shape
    dstate = A.shape[1]
    new = functools.partial(torch.empty, dtype=cdt, device=u.device)
    out = new(batch, dim, length)
    entropy, halt = new(batch, length), new(batch, length)
    last_state = new(batch, dim, dstate)
    checkpoints = new(batch, -(-length // chunk_size), dim, dstate)
    entropy_sums = new(batch, 2, length)
    extension().scan_forward_out(
        _compute(u, cdt), _compute(delta, cdt), A, _compute(B, cdt), _compute(C, cdt), D, _compute(z, cdt),
        delta_bias, halt_weight, halt_bias, initial_state, delta_softplus, chunk_size, torch.get_num_threads(),
        out, entropy, halt, last_state, checkpoints, entropy_sums,
    )
    return out.to(u.dtype), entropy, halt, last_state, checkpoints, entropy_sums


def scan_backward(grad_out, grad_entropy, grad_halt, grad_last_state, u, delta, A, B, C, D, z, delta_bias,
                  halt_weight, halt_bias, initial_state, checkpoints, entropy_sums, delta_softplus, chunk_size):
    """Fused backward: gradients (du, ddelta, dA, dB, dC, dD, dz or None, ddelta_bias, dhalt_weight, dhalt_bias,
    dinitial_state), each in the shape and dtype of its input."""
    cdt = compute_dtype(u.dtype)
    u_c, delta_c, B_c, C_c, z_c = (_compute(t, cdt) for t in (u, delta, B, C, z))
    du, ddelta, dB, dC = (torch.empty_like(t) for t in (u_c, delta_c, B_c, C_c))
    dz = None if z_c is None else torch.empty_like(z_c)
    dA, dD, ddelta_bias, dhalt_weight, dhalt_bias, dinitial_state = (
        torch.empty_like(t) for t in (A, D, delta_bias, halt_weight, halt_bias, initial_state)
    )
    extension().scan_backward_out(
        _compute(grad_out, cdt), _compute(grad_entropy, cdt), _compute(grad_halt, cdt),
        _compute(grad_last_state, cdt), u_c, delta_c, A, B_c, C_c, D, z_c, delta_bias, halt_weight, halt_bias,
        initial_state, checkpoints, entropy_sums, delta_softplus, chunk_size, torch.get_num_threads(),
        du, ddelta, dA, dB, dC, dD, dz, ddelta_bias, dhalt_weight, dhalt_bias, dinitial_state,
    )
    activations = (du.to(u.dtype), ddelta.to(delta.dtype), dA, dB.to(B.dtype), dC.to(C.dtype), dD,
                   None if dz is None else dz.to(z.dtype))
    return (*activations, ddelta_bias, dhalt_weight, dhalt_bias, dinitial_state)


def state_update(state, x, dt, A, B, C, D, z, dt_bias, halt_weight, halt_bias, dt_softplus):
    """One decode step: (y (batch, D) in x's dtype, entropy (batch,), halt_logits (batch,)); state (batch, D, N)
    in the compute dtype is updated in place. x, dt, z: (batch, D); B, C: (batch, G, N)."""
    cdt = compute_dtype(x.dtype)
    batch = x.shape[0]
    y = torch.empty(x.shape, dtype=cdt, device=x.device)
    entropy = torch.empty(batch, dtype=cdt, device=x.device)
    halt = torch.empty(batch, dtype=cdt, device=x.device)
    extension().state_update_out(
        state, _compute(x, cdt), _compute(dt, cdt), A, _compute(B, cdt), _compute(C, cdt), D, _compute(z, cdt),
        dt_bias, halt_weight, halt_bias, dt_softplus, torch.get_num_threads(), y, entropy, halt,
    )
    return y.to(x.dtype), entropy, halt
