"""The CUDA kernels' C interface (csrc/cuda/scan_kernels.h) from Python, without torch's C++ headers.

A KernelLibrary wraps a loaded shared library that exports the extern "C" launchers (the nvcc build of csrc/cuda,
or its host emulation for CPU tests): it mirrors the launcher structs with ctypes, allocates every output and
scratch buffer with torch on the inputs' device, passes data pointers and the current CUDA stream, turns a
launcher's error string into a RuntimeError, and adds up the kernels' per-block / per-row partial sums in a fixed
order (torch sums, deterministic for a given shape). The same code runs the real GPU library and the emulated
one, so the CPU tests exercise this binding too.

The structs are checked against the library's own sizeof (pna_cuda_struct_sizes) when it is loaded.
"""
from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import math
from typing import Any

import torch

from .contract import ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult
from .cuda_options import KernelOptions

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
LAUNCHERS = ("pna_cuda_scan_forward", "pna_cuda_scan_backward", "pna_cuda_state_update")


def c_struct(name: str, ints: tuple[str, ...], pointers: tuple[str, ...]) -> type[ctypes.Structure]:
    """A ctypes mirror of a struct of scan_kernels.h: `ints` int fields, then `pointers` pointer fields."""
    fields = [(n, ctypes.c_int) for n in ints] + [(n, ctypes.c_void_p) for n in pointers]
    return type(name, (ctypes.Structure,), {"_fields_": fields})


SCAN_POINTERS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "halt_weight", "halt_bias", "initial_state")
# In the order scan_kernels.h declares them (pna_cuda_struct_sizes reports their sizes in that order).
C_STRUCTS = {
    "PnaScanArgs": c_struct("PnaScanArgs", ("dtype", "batch", "dim", "length", "dstate", "groups", "delta_softplus",
                                            "with_channel_mean"), SCAN_POINTERS),
    "PnaScanResult": c_struct("PnaScanResult", (), ("out", "entropy", "halt_logits", "last_state", "channel_mean",
                                                    "checkpoints", "entropy_sums", "partials", "channel_partials")),
    "PnaScanSaved": c_struct("PnaScanSaved", (), ("checkpoints", "entropy_sums")),
    "PnaScanCotangents": c_struct("PnaScanCotangents", (), ("grad_out", "grad_entropy", "grad_halt",
                                                            "grad_last_state", "grad_channel_mean")),
    "PnaScanGradParts": c_struct("PnaScanGradParts", (), ("u", "delta", "z", "A_rows", "B_blocks", "C_blocks",
                                                          "D_rows", "delta_bias_rows", "halt_weight_rows",
                                                          "initial_state")),
    "PnaStateUpdateArgs": c_struct("PnaStateUpdateArgs", ("dtype", "batch", "dim", "dstate", "groups", "dt_softplus"),
                                   ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "halt_weight",
                                    "halt_bias")),
    "PnaStateUpdateResult": c_struct("PnaStateUpdateResult", (), ("y", "entropy", "halt_logits", "channel_mean",
                                                                  "partials", "channel_partials")),
}


def fill(name: str, **values: Any) -> ctypes.Structure:
    """A launcher struct: tensors become their data pointers, None a null pointer. The caller must hold a reference
    to every tensor until the launch returns."""
    return C_STRUCTS[name](**{k: (v.data_ptr() if isinstance(v, torch.Tensor) else v) for k, v in values.items()})


def _check(name: str, t: torch.Tensor, device: torch.device, dtype: torch.dtype | None = None) -> None:
    """A raw caller's guard (the ops layer has validated already): device, dtype and contiguity, no data read."""
    if t.device != device:
        raise ValueError(f"{name}: expected a tensor on {device}, got {t.device}")
    if dtype is not None and t.dtype != dtype:
        raise ValueError(f"{name}: expected dtype {dtype}, got {t.dtype}")
    if not t.is_contiguous():
        raise ValueError(f"{name}: must be contiguous")


class KernelLibrary:
    """A loaded build of csrc/cuda (see the module docstring). poison: fill every output and scratch buffer with
    NaN before a launch (tests: an entry the kernels fail to write shows up); off, buffers are torch.empty."""

    def __init__(self, library: ctypes.CDLL, options: KernelOptions, poison: bool = False):
        self.library, self.options, self.poison = library, options, poison
        for name in LAUNCHERS:
            getattr(library, name).restype = ctypes.c_char_p
        sizes = (ctypes.c_int * len(C_STRUCTS))()
        if library.pna_cuda_struct_sizes(sizes, len(C_STRUCTS)) != len(C_STRUCTS):
            raise RuntimeError("pna cuda: the library reports another number of launcher structs than cuda_abi.py "
                               "mirrors (stale build?)")
        for (name, struct), size in zip(C_STRUCTS.items(), sizes):
            if ctypes.sizeof(struct) != size:
                raise RuntimeError(f"pna cuda: struct {name} is {size} bytes in the library but "
                                   f"{ctypes.sizeof(struct)} in cuda_abi.py (stale build?)")

    # -- helpers ---------------------------------------------------------------------------------------------------
    def _empty(self, *shape: int, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        if self.poison:
            return torch.full(shape, float("nan"), dtype=dtype, device=device)
        return torch.empty(shape, dtype=dtype, device=device)

    @staticmethod
    def _stream(device: torch.device) -> ctypes.c_void_p | None:
        """The current CUDA stream of device (None, the legacy default stream, for host-emulated CPU tensors)."""
        if device.type != "cuda":
            return None
        return ctypes.c_void_p(torch.cuda.current_stream(device).cuda_stream)

    def _launch(self, name: str, device: torch.device, *structs: ctypes.Structure) -> None:
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            error = getattr(self.library, name)(*map(ctypes.byref, structs), self._stream(device))
        if error is not None:
            raise RuntimeError(f"pna cuda: {name} failed: {error.decode()}")

    def num_dblocks(self, dim: int, groups: int, dstate: int) -> int:
        """Channel blocks per batch row (rows of the per-block partial-sum buffers)."""
        return int(self.library.pna_cuda_num_dblocks(dim, groups, dstate))

    def dbdc_slabs(self, dim: int, groups: int, dstate: int) -> int:
        """Rows per batch element of the backward's dB / dC partial sums (the options' dbdc_reduction decides)."""
        return int(self.library.pna_cuda_dbdc_slabs(dim, groups, dstate))

    def _scan_args(self, a: ScanArgs) -> ctypes.Structure:
        device, act = a.u.device, a.u.dtype
        if act not in DTYPE_CODES:
            raise ValueError(f"u: the CUDA kernels take float32, float16 or bfloat16, got {act}")
        for name in SCAN_POINTERS:
            value = getattr(a, name)
            if value is not None:
                _check(name, value, device, act if name in ("u", "delta", "B", "C", "z") else torch.float32)
        if a.chunk_size != self.options.chunk:
            raise ValueError(f"chunk_size: the kernels are compiled for {self.options.chunk}, got {a.chunk_size}")
        batch, dim, length = a.u.shape
        return fill("PnaScanArgs", dtype=DTYPE_CODES[act], batch=batch, dim=dim, length=length,
                    dstate=a.A.shape[1], groups=a.B.shape[1], delta_softplus=int(a.delta_softplus),
                    with_channel_mean=int(a.with_channel_mean), **{n: getattr(a, n) for n in SCAN_POINTERS})

    # -- the contract ----------------------------------------------------------------------------------------------
    def scan_forward(self, a: ScanArgs) -> ScanResult:
        """contract scan_forward on the kernels: out in u's dtype, the rest float32."""
        c_args = self._scan_args(a)
        batch, dim, length = a.u.shape
        dstate, device, mean = a.A.shape[1], a.u.device, a.with_channel_mean
        n_dblocks = self.num_dblocks(dim, a.B.shape[1], dstate)
        empty = lambda *shape: self._empty(*shape, device=device)  # noqa: E731
        r = ScanResult(out=self._empty(batch, dim, length, device=device, dtype=a.u.dtype), entropy=empty(batch, length),
                       halt_logits=empty(batch, length), last_state=empty(batch, dim, dstate),
                       channel_mean=empty(batch, length, dstate) if mean else empty(0),
                       checkpoints=empty(batch, math.ceil(length / self.options.chunk), dim, dstate),
                       entropy_sums=empty(batch, 2, length))
        partials = empty(3, batch, n_dblocks, length)
        channel_partials = empty(batch, n_dblocks, length, dstate) if mean else None
        result = fill("PnaScanResult", **{f.name: getattr(r, f.name) for f in dataclasses.fields(r)},
                      partials=partials, channel_partials=channel_partials)
        if not mean:
            result.channel_mean = None
        self._launch("pna_cuda_scan_forward", device, c_args, result)
        return r

    def scan_backward(self, a: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads:
        """contract scan_backward on the kernels: every gradient in its input's shape and dtype."""
        c_args = self._scan_args(a)
        batch, dim, length = a.u.shape
        dstate, groups, device, dtype = a.A.shape[1], a.B.shape[1], a.u.device, a.u.dtype
        slabs = self.dbdc_slabs(dim, groups, dstate)
        for name in ("checkpoints", "entropy_sums"):
            _check(name, getattr(saved, name), device, torch.float32)
        grad_out = cot.grad_out.to(dtype).contiguous()
        grads32 = {n: getattr(cot, n).float().contiguous()
                   for n in ("grad_entropy", "grad_halt", "grad_last_state")}
        if a.with_channel_mean:
            grads32["grad_channel_mean"] = cot.grad_channel_mean.float().contiguous()
            if tuple(grads32["grad_channel_mean"].shape) != (batch, length, dstate):
                raise ValueError(f"grad_channel_mean: expected shape {(batch, length, dstate)}, "
                                 f"got {tuple(grads32['grad_channel_mean'].shape)}")
        else:
            grads32["grad_channel_mean"] = None
        for name, value in (("grad_out", grad_out), *grads32.items()):
            if value is not None:
                _check(name, value, device)
        empty = lambda *shape, dtype=torch.float32: self._empty(*shape, device=device, dtype=dtype)  # noqa: E731
        parts = {"u": empty(batch, dim, length, dtype=dtype), "delta": empty(batch, dim, length, dtype=dtype),
                 "z": None if a.z is None else empty(batch, dim, length, dtype=dtype),
                 **{f"{n}_rows": empty(batch, dim, dstate) for n in ("A", "halt_weight")},
                 **{f"{n}_rows": empty(batch, dim) for n in ("D", "delta_bias")},
                 **{f"{n}_blocks": empty(batch, slabs, dstate, length) for n in ("B", "C")},
                 "initial_state": empty(batch, dim, dstate)}
        self._launch("pna_cuda_scan_backward", device, c_args,
                     fill("PnaScanSaved", checkpoints=saved.checkpoints, entropy_sums=saved.entropy_sums),
                     fill("PnaScanCotangents", grad_out=grad_out, **grads32), fill("PnaScanGradParts", **parts))
        group_sum = {n: parts[f"{n}_blocks"].view(batch, groups, -1, dstate, length).sum(2).to(dtype) for n in "BC"}
        return ScanGrads(u=parts["u"], delta=parts["delta"], A=parts["A_rows"].sum(0), **group_sum,
                         D=parts["D_rows"].sum(0), z=parts["z"], delta_bias=parts["delta_bias_rows"].sum(0),
                         halt_weight=parts["halt_weight_rows"].sum(0),
                         halt_bias=grads32["grad_halt"].sum().reshape(a.halt_bias.shape),
                         initial_state=parts["initial_state"])

    def state_update(self, a: StateUpdateArgs) -> StateUpdateResult:
        """contract state_update on the kernels: y in x's dtype, the rest float32; a.state is updated in place."""
        batch, dim = a.x.shape
        dstate, groups, device, act = a.A.shape[1], a.B.shape[1], a.x.device, a.x.dtype
        if act not in DTYPE_CODES:
            raise ValueError(f"x: the CUDA kernels take float32, float16 or bfloat16, got {act}")
        for f in dataclasses.fields(a):
            value = getattr(a, f.name)
            if isinstance(value, torch.Tensor):
                _check(f.name, value, device, act if f.name in ("x", "dt", "B", "C", "z") else torch.float32)
        n_dblocks = self.num_dblocks(dim, groups, dstate)
        empty = lambda *shape: self._empty(*shape, device=device)  # noqa: E731
        r = StateUpdateResult(y=self._empty(batch, dim, device=device, dtype=act), entropy=empty(batch),
                              halt_logits=empty(batch), channel_mean=empty(batch, dstate))
        c_args = fill("PnaStateUpdateArgs", dtype=DTYPE_CODES[act], batch=batch, dim=dim, dstate=dstate,
                      groups=groups, dt_softplus=int(a.dt_softplus),
                      **{f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name != "dt_softplus"})
        partials, channel_partials = empty(3, batch, n_dblocks), empty(batch, n_dblocks, dstate)  # kept alive
        result = fill("PnaStateUpdateResult", **{f.name: getattr(r, f.name) for f in dataclasses.fields(r)},
                      partials=partials, channel_partials=channel_partials)
        self._launch("pna_cuda_state_update", device, c_args, result)
        return r
