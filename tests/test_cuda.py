"""The CUDA backend (csrc/cuda): what is specific to it, namely supports(), its build, its raw entry points and
launch limits, the limits it exports; and both fused GPU backends at a realistic size. Its parity with the float64
oracle (shapes chosen against the kernels' layout, every dtype tier, decode step, NaN entropy, NaN-poisoned
outputs, bitwise repeats) is in test_backends.py, which runs it where a GPU is.

Everything but the loader tests at the top needs a CUDA device and skips without one. On a GPU machine the
extension must build: a failed build fails test_extension_builds with the compiler's message. Run with
TRITON_INTERPRET=0 (bench/gpu_suite.sh does) so that the Triton tests use compiled kernels rather than the
interpreter conftest.py selects by default.
"""
from __future__ import annotations

import dataclasses
import os

import pytest
import torch

import pna_kernels
from pna_kernels import cuda as cuda_backend
from pna_kernels import jit
from pna_kernels.backends import backend_module
from pna_kernels.testing import RTOL, ScanCase, assert_kernels_match_oracle, scan_args

COMPILED_TRITON = os.environ.get("TRITON_INTERPRET") != "1"


def gpu(test):
    """Mark a test as a GPU test (pytest -m gpu) that skips without a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


@pytest.fixture
def fresh_build(monkeypatch):
    """Forget the once-per-process build result before and after the test (it reads monkeypatched state)."""
    cuda_backend._build.cache_clear()
    yield monkeypatch
    cuda_backend._build.cache_clear()


def test_supports_says_why_not(fresh_build):
    cuda = torch.device("cuda")
    assert "CUDA tensors only" in cuda_backend.supports(torch.device("cpu"), torch.float32, 16)
    assert "float64" in cuda_backend.supports(cuda, torch.float64, 16)
    assert "257" in cuda_backend.supports(cuda, torch.float32, 257)
    fresh_build.setattr(torch.version, "cuda", None)
    assert "CPU-only build" in cuda_backend.supports(cuda, torch.float32, 16)
    cuda_backend._build.cache_clear()
    fresh_build.setattr(torch.version, "cuda", "12.4")
    fresh_build.setattr(torch.cuda, "is_available", lambda: False)
    assert "no CUDA GPU" in cuda_backend.supports(cuda, torch.float32, 16)
    cuda_backend._build.cache_clear()
    fresh_build.setattr(torch.cuda, "is_available", lambda: True)
    fresh_build.setattr(cuda_backend, "find_nvcc", lambda: None)
    assert "nvcc was not found" in cuda_backend.supports(cuda, torch.float32, 16)


def test_a_failed_build_is_a_sentence_then_a_runtime_error(fresh_build):
    def failing_load(*args, **kwargs):
        raise RuntimeError("Error building extension 'pna_cuda_kernels'\nscan_forward.cu(7): error: no such thing")

    fresh_build.setattr(torch.version, "cuda", "12.4")
    fresh_build.setattr(torch.cuda, "is_available", lambda: True)
    fresh_build.setattr(cuda_backend, "find_nvcc", lambda: "nvcc")
    fresh_build.setattr(jit, "load", failing_load)
    reason = cuda_backend.supports(torch.device("cuda"), torch.float32, 16)
    assert "failed" in reason and "no such thing" in reason
    with pytest.raises(RuntimeError, match="no such thing"):
        cuda_backend.extension()


@gpu
def test_extension_builds():
    reason = cuda_backend.supports(torch.device("cuda"), torch.float32, 16)
    assert reason is None, reason
    assert "cuda" in pna_kernels.available_backends("cuda")


@gpu
def test_raw_entry_points_name_bad_arguments():
    args = scan_args(ScanCase(1, 4, 5, 4, with_z=False).inputs(device="cuda"), True, cuda_backend.CHUNK_SIZE)
    with pytest.raises(ValueError, match="chunk_size"):
        cuda_backend.scan_forward(dataclasses.replace(args, chunk_size=cuda_backend.CHUNK_SIZE * 2))
    with pytest.raises(ValueError, match="halt_weight: expected dtype"):
        cuda_backend.scan_forward(dataclasses.replace(args, halt_weight=args.halt_weight.double()))
    with pytest.raises(ValueError, match="D: expected a CUDA tensor"):
        cuda_backend.scan_forward(dataclasses.replace(args, D=args.D.cpu()))
    big = scan_args(ScanCase(65536, 1, 1, 1, with_z=False).inputs(device="cuda"), True, cuda_backend.CHUNK_SIZE)
    with pytest.raises(RuntimeError, match="65535"):  # one more than the grid's y dimension holds
        cuda_backend.scan_forward(big)


@gpu
def test_auto_picks_cuda_and_the_extension_exports_the_limits():
    assert pna_kernels.backends.resolve_backend("auto", torch.device("cuda"), torch.float32, 16) == "cuda"
    assert cuda_backend.extension().CHUNK_SIZE == cuda_backend.CHUNK_SIZE
    assert cuda_backend.extension().MAX_STATE_DIM == pna_kernels.validation.MAX_STATE_DIM


# The realistic size the CPU suite cannot run: batch 2, L 2048, D 256, N 16, both fused GPU backends.
REALISTIC = ScanCase(2, 256, 2048, 16, grouped=False)


@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_realistic_size_matches_oracle(backend, dtype):
    if backend == "triton" and not COMPILED_TRITON:
        pytest.skip("set TRITON_INTERPRET=0 to test the compiled Triton kernels")
    module = backend_module(backend)
    args = scan_args(REALISTIC.inputs(dtype, "cuda"), True, module.CHUNK_SIZE)
    assert_kernels_match_oracle(module.scan_forward, module.scan_backward, args, RTOL[dtype])
