"""The "cpu" backend: fused C++17/OpenMP kernels from csrc/cpu, compiled just in time on first use.

The extension is built once per process (pna_kernels/jit.py: torch.utils.cpp_extension.load with ninja, guarded
against locks left by killed builds) into torch's extension cache (TORCH_EXTENSIONS_DIR, by default
~/.cache/torch_extensions), which later processes reuse. The kernels compute in float32 or float64; float16 and
bfloat16 activations are upcast to float32 here before the call and `out` and the activation gradients are cast
back. Work is split over (batch row, block of 16 channels) with OpenMP (the backward takes a batch row's blocks
of one B/C group as one item when there are at least 8 such pairs), using torch.get_num_threads() threads;
every cross-item sum (entropy, halt, channel mean, parameter gradients) runs in a fixed order, so on a given
machine results are bitwise identical from run to run and for any thread count (across machines they may differ
in the last bits: the hot loops are compiled for baseline x86-64, AVX2 and AVX-512 and the CPU picks one).

The module functions follow the backend contract (pna_kernels/contract.py); the extension's entry points take the
same dataclasses (any object with their field names) and return dicts of the result fields.
"""
from __future__ import annotations

import dataclasses
import functools
from types import ModuleType

import torch
from torch import Tensor

from . import jit
from .backends import kernel_source_dir
from .contract import ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult
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
        return None, (f"its C++ sources {missing} are not in {SOURCE_DIR} "
                      "(reinstall pna: pip install -e . from a source checkout)")
    try:
        module = jit.load(EXTENSION_NAME, [str(SOURCE_DIR / name) for name in SOURCES],
                          extra_cflags=list(COMPILE_FLAGS), extra_ldflags=["-fopenmp"], verbose=False)
    except jit.BUILD_ERRORS as exc:
        return None, (
            f"building the C++/OpenMP kernels in {SOURCE_DIR} failed ({jit.first_error(exc)}); "
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


def _activations_in(cdt: torch.dtype, obj, names: tuple[str, ...]) -> dict[str, Tensor | None]:
    """The tensors `names` of a contract dataclass in the compute dtype (a no-op unless they are float16/bfloat16)."""
    return {n: None if getattr(obj, n) is None else getattr(obj, n).to(cdt).contiguous() for n in names}


ACTIVATIONS = ("u", "delta", "B", "C", "z")


def scan_forward(args: ScanArgs) -> ScanResult:
    """Fused forward (shapes in pna_kernels/contract.py): out in u's dtype, everything else in the compute dtype;
    channel_mean (batch, L, N) when args.with_channel_mean, else an empty (0,) tensor."""
    cdt = compute_dtype(args.u.dtype)
    native = dataclasses.replace(args, **_activations_in(cdt, args, ACTIVATIONS))
    result = extension().scan_forward(native, torch.get_num_threads())
    result["out"] = result["out"].to(args.u.dtype)
    return ScanResult(**result)


def scan_backward(args: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads:
    """Fused backward: the gradient of every tensor input, in its shape and dtype (z None when z is None)."""
    cdt = compute_dtype(args.u.dtype)
    native = dataclasses.replace(args, **_activations_in(cdt, args, ACTIVATIONS))
    native_cot = ScanCotangents(**_activations_in(cdt, cot, tuple(f.name for f in dataclasses.fields(cot))))
    if not args.with_channel_mean:  # unread: the empty tensor the kernels expect, whatever was passed
        native_cot = dataclasses.replace(native_cot, grad_channel_mean=torch.empty(0, dtype=cdt))
    grads = extension().scan_backward(native, saved, native_cot, torch.get_num_threads())
    for name in ACTIVATIONS:
        if grads[name] is not None:
            grads[name] = grads[name].to(getattr(args, name).dtype)
    return ScanGrads(**grads)


def state_update(args: StateUpdateArgs) -> StateUpdateResult:
    """One decode step: y (batch, D) in x's dtype; entropy, halt_logits (batch,) and channel_mean (batch, N) of the
    new state in the compute dtype. args.state (batch, D, N), in the compute dtype, is updated in place."""
    cdt = compute_dtype(args.x.dtype)
    native = dataclasses.replace(args, **_activations_in(cdt, args, ("x", "dt", "B", "C", "z")))
    result = extension().state_update(native, torch.get_num_threads())
    result["y"] = result["y"].to(args.x.dtype)
    return StateUpdateResult(**result)
