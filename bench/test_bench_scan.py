"""Kernel benchmarks: forward and forward+backward of every available backend of the fused scan.

Run with `pytest bench/ --benchmark-only`. CPU shapes run everywhere; the CUDA shapes (the realistic training
shape batch 8, L 2048, D 1536, N 16, bf16) skip without a GPU, as do the plain-scan and mamba-ssm baselines.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

import pna_kernels
from pna_kernels.testing import RTOL, assert_close_rel, random_scan_inputs
from pna_kernels.validation import check_scan_inputs

from device.floors import ScanFootprint  # bench/device/floors.py: the one definition of the memory floor

HAS_CUDA = torch.cuda.is_available()


@dataclass(frozen=True)
class Shape:
    name: str
    device: str
    batch: int
    length: int
    dim: int
    dstate: int
    dtype: torch.dtype

    @property
    def tokens(self) -> int:
        return self.batch * self.length


CPU_SMALL = Shape("cpu-b2-L64-D64-N16", "cpu", 2, 64, 64, 16, torch.float32)
CPU = Shape("cpu-b2-L256-D64-N16", "cpu", 2, 256, 64, 16, torch.float32)
GPU_SMALL = Shape("cuda-b8-L256-D1536-N16", "cuda", 8, 256, 1536, 16, torch.bfloat16)
GPU = Shape("cuda-b8-L2048-D1536-N16", "cuda", 8, 2048, 1536, 16, torch.bfloat16)
SHAPES = (CPU_SMALL, CPU, GPU_SMALL, GPU)
ORACLE_SHAPES = (CPU_SMALL, GPU_SMALL)  # the oracle loops over L in Python: only the short shapes
MODES = ("fwd", "fwd+bwd")
NO_CUDA = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device")


def backends_for(shape: Shape) -> list[str]:
    """Backends to time at this shape: all available ones, but Triton only on CUDA (the CPU interpreter is far
    too slow to time) and the Python-loop oracle only at the short shapes."""
    names = pna_kernels.available_backends(shape.device, shape.dtype, shape.dstate)
    if shape.device == "cpu":
        names = [n for n in names if n != "triton"]
    if shape not in ORACLE_SHAPES:
        names = [n for n in names if n != "reference"]
    return names


def fused_cases() -> list:
    cases = []
    for shape in SHAPES:
        if shape.device == "cuda" and not HAS_CUDA:
            cases.append(pytest.param(shape, "any", "fwd", marks=NO_CUDA, id=f"{shape.name}-skipped"))
            continue
        for backend in backends_for(shape):
            for mode in MODES:
                cases.append(pytest.param(shape, backend, mode, id=f"{shape.name}-{backend}-{mode}"))
    return cases


_INPUTS: dict[Shape, dict[str, Tensor]] = {}


def inputs(shape: Shape) -> dict[str, Tensor]:
    """Random inputs of a shape (mamba-1 layout: ungrouped B, C), made once per run."""
    if shape not in _INPUTS:
        _INPUTS[shape] = random_scan_inputs(shape.batch, shape.dim, shape.length, shape.dstate, dtype=shape.dtype,
                                            device=shape.device, grouped_bc=False)
    return _INPUTS[shape]


def nbytes(*tensors: Tensor | None) -> int:
    return sum(t.numel() * t.element_size() for t in tensors if t is not None)


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def cotangents(outputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    gen = torch.Generator(device=outputs[0].device).manual_seed(0)
    return tuple(torch.randn(o.shape, generator=gen, device=o.device, dtype=o.dtype) for o in outputs)


@pytest.mark.parametrize("shape,backend,mode", fused_cases())
def test_fused_scan(measure, shape, backend, mode):
    x = inputs(shape)
    leaves = {k: v.detach().requires_grad_(mode == "fwd+bwd") for k, v in x.items()}

    def call() -> tuple[Tensor, ...]:
        res = pna_kernels.selective_scan(
            leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves["z"],
            leaves["delta_bias"], True, True, halt_weight=leaves["halt_weight"], halt_bias=leaves["halt_bias"],
            initial_state=leaves["initial_state"], backend=backend, check_finite=False,
        )
        return tuple(t for t in res if t is not None)  # channel_mean is None unless asked for

    outputs = call()
    footprint = ScanFootprint(batch=shape.batch, length=shape.length, dim=shape.dim, dstate=shape.dstate,
                              act_bytes=x["u"].element_size())
    floor = footprint.pass_cost(mode)[0]
    if mode == "fwd":

        def fn():
            call()
            synchronize(shape.device)
    else:
        grads = cotangents(outputs)
        del outputs

        def fn():
            torch.autograd.grad(call(), tuple(leaves.values()), grads)
            synchronize(shape.device)

    measure(fn, shape=shape.name, mode=mode, backend=backend, tokens=shape.tokens,
            floor_bytes=floor if shape.device == "cuda" else None)


def _baseline_check(name: str, out: Tensor, shape: Shape) -> None:
    """A baseline is only worth timing if it computes the same scan: compare with the torch backend."""
    x = inputs(shape)
    want = pna_kernels.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                      True, backend="torch").out
    assert_close_rel(f"{name} out", out, want, RTOL[shape.dtype])


@NO_CUDA
@pytest.mark.parametrize("shape", [GPU_SMALL, GPU], ids=lambda s: s.name)
def test_plain_triton_scan(measure, shape):
    from plain_scan import plain_selective_scan

    x = inputs(shape)
    a = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                          None, None, None, check_finite=False)
    args = (a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, True)
    out, last = plain_selective_scan(*args)
    _baseline_check("plain-triton", out, shape)

    def fn():
        plain_selective_scan(*args)
        synchronize("cuda")

    floor = nbytes(a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, out, last)
    measure(fn, shape=shape.name, mode="fwd", backend="plain-triton", tokens=shape.tokens, floor_bytes=floor)


@NO_CUDA
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [GPU_SMALL, GPU], ids=lambda s: s.name)
def test_mamba_ssm_selective_scan_fn(measure, shape, mode):
    interface = pytest.importorskip("mamba_ssm.ops.selective_scan_interface")
    x = inputs(shape)
    leaves = {k: x[k].detach().requires_grad_(mode == "fwd+bwd")
              for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")}

    def call() -> tuple[Tensor, Tensor]:
        return interface.selective_scan_fn(
            leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves["z"],
            leaves["delta_bias"], delta_softplus=True, return_last_state=True,
        )

    out, last = call()
    _baseline_check("mamba-ssm", out, shape)
    inputs_bytes = nbytes(*leaves.values())
    if mode == "fwd":
        floor = inputs_bytes + nbytes(out, last)

        def fn():
            call()
            synchronize("cuda")
    else:
        # selective_scan_fn differentiates out only: the backward reads one cotangent, for out
        floor = 3 * inputs_bytes + 2 * nbytes(out) + nbytes(last)
        grad_out = cotangents((out,))[0]

        def fn():
            torch.autograd.grad(call()[0], tuple(leaves.values()), grad_out)
            synchronize("cuda")

    measure(fn, shape=shape.name, mode=mode, backend="mamba-ssm", tokens=shape.tokens, floor_bytes=floor)
