"""The CUDA backend (csrc/cuda) against the float64 oracle on a GPU; the compiled Triton kernels at a realistic size.

Everything but the loader tests at the top needs a CUDA device and skips without one. On a GPU machine the
extension must build: a failed build fails test_extension_builds with the compiler's message. Run with
TRITON_INTERPRET=0 (bench/gpu_suite.sh does) so that the Triton tests use compiled kernels rather than the
interpreter conftest.py selects by default.

The shapes are chosen against the kernels' layout (csrc/cuda/scan_common.cuh): a block holds 32 channels for
N = 4, 8 for N = 16 and 4 for N >= 32, never straddling a group, so D per group = 40, 6, 3 leaves the last block
partly empty; L = 37, 150, 5 is not a multiple of the 16-step chunk, 150 spans several forward tiles, and 5 is less
than one chunk.
"""
from __future__ import annotations

import dataclasses
import math
import os

import pytest
import torch

import pna_kernels
from native_parity import (
    assert_decode_loop_matches_scan, assert_repeats_bitwise, assert_scan_matches_oracle,
    assert_state_update_matches_oracle, scan_args, scan_inputs, state_update_args, with_non_finite_state,
)
from pna_kernels import cuda as cuda_backend
from pna_kernels import jit
from pna_kernels.backends import backend_module
from pna_kernels.testing import RTOL

COMPILED_TRITON = os.environ.get("TRITON_INTERPRET") != "1"


def gpu(test):
    """Mark a test as a GPU test (pytest -m gpu) that skips without a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


def make_inputs(*shape, dtype: torch.dtype = torch.float32) -> dict:
    """scan_inputs on the GPU."""
    return scan_inputs(*shape, dtype=dtype, device="cuda")


def check_scan(x: dict, softplus: bool, backend=cuda_backend, with_channel_mean: bool = True):
    args = scan_args(x, softplus, backend.CHUNK_SIZE, with_channel_mean)
    return assert_scan_matches_oracle(backend.scan_forward, backend.scan_backward, args, RTOL[x["u"].dtype])


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


# batch, D, L, N, groups, grouped B/C, z, initial_state, softplus, channel mean
SHAPES = {
    "N4-ungrouped": (2, 40, 37, 4, 1, False, True, True, True, True),
    "N16-150steps-no-softplus": (2, 12, 150, 16, 2, True, True, False, False, True),
    "N16-under-a-chunk-no-mean": (1, 6, 5, 16, 1, True, False, True, True, False),
    "N64": (2, 6, 37, 64, 2, True, False, False, True, True),
    "N256": (1, 6, 21, 256, 2, True, True, True, False, True),
    "N16-ungrouped-no-softplus": (3, 24, 70, 16, 1, False, False, True, False, True),
}


@gpu
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_float32_matches_oracle(shape):
    *dims, softplus, with_mean = shape
    check_scan(make_inputs(*dims, softplus), softplus, with_channel_mean=with_mean)


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("dstate", [16, 64])
def test_low_precision_inputs_match_oracle(dtype, dstate):
    check_scan(make_inputs(2, 12, 53, dstate, 2, True, True, True, True, dtype=dtype), True)


@gpu
def test_all_zero_states_have_zero_entropy_and_gradient():
    x = make_inputs(2, 12, 40, 16, 2, True, True, False, True)
    x["u"][:, :, :20] = 0.0  # no initial state: h_t = 0 for 20 steps, across a chunk boundary
    result = check_scan(x, True)
    assert torch.equal(result.entropy[:, :20], torch.zeros(2, 20, device="cuda"))


@gpu
@pytest.mark.parametrize("value", [float("nan"), 1e30], ids=["nan", "overflow"])
def test_non_finite_state_gives_nan_entropy(value):
    args = with_non_finite_state(scan_args(make_inputs(2, 12, 3, 16, 1, True, True, True, True), True,
                                           cuda_backend.CHUNK_SIZE), value)
    entropy = cuda_backend.scan_forward(args).entropy
    assert torch.isnan(entropy[0, 0]) and torch.isfinite(entropy[1]).all()
    step = with_non_finite_state(state_update_args(make_inputs(2, 12, 1, 16, 1, True, True, True, True), 0, True),
                                 value)
    entropy = cuda_backend.state_update(step).entropy
    assert torch.isnan(entropy[0]) and torch.isfinite(entropy[1])


def poison_cuda_cache() -> None:
    """Leave NaN-filled blocks in torch's CUDA caching allocator, so that outputs the kernels allocate (in the C++
    binding, out of reach of a torch.empty patch) hold NaN wherever a kernel fails to write."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    large = torch.full((64 * 2**20,), math.nan, device="cuda")  # 256 MiB: one segment that large requests split
    small = [torch.full((2**17,), math.nan, device="cuda") for _ in range(64)]  # 512 KiB blocks of the small pool
    del large, small
    assert torch.isnan(torch.empty(1000, device="cuda")).all()
    assert torch.isnan(torch.empty(4 * 2**20, device="cuda")).all()


@gpu
def test_every_output_element_is_written():
    args = scan_args(make_inputs(2, 12, 37, 16, 2, True, True, True, True), True, cuda_backend.CHUNK_SIZE)

    def forward(a):
        poison_cuda_cache()
        return cuda_backend.scan_forward(a)

    def backward(a, saved, cot):
        poison_cuda_cache()
        return cuda_backend.scan_backward(a, saved, cot)

    assert_scan_matches_oracle(forward, backward, args, RTOL[torch.float32])


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_repeated_runs_are_bitwise_equal(dtype):
    x = make_inputs(2, 48, 150, 16, 2, True, True, True, True, dtype=dtype)
    assert_repeats_bitwise(cuda_backend.scan_forward, cuda_backend.scan_backward,
                           scan_args(x, True, cuda_backend.CHUNK_SIZE))


@gpu
@pytest.mark.parametrize("dstate,groups,with_z,softplus",
                         [(4, 2, True, True), (16, 1, False, False), (256, 2, True, True)],
                         ids=["N4-2groups", "N16-no-softplus", "N256"])
def test_state_update_matches_oracle(dstate, groups, with_z, softplus):
    x = make_inputs(2, 12, 1, dstate, groups, True, with_z, True, softplus)
    poison_cuda_cache()
    assert_state_update_matches_oracle(cuda_backend.state_update, state_update_args(x, 0, softplus),
                                       RTOL[torch.float32])


@gpu
def test_decode_loop_equals_full_scan():
    x = make_inputs(2, 12, 19, 16, 2, True, True, True, True, dtype=torch.bfloat16)
    assert_decode_loop_matches_scan(cuda_backend.scan_forward, cuda_backend.state_update, x,
                                    cuda_backend.CHUNK_SIZE, RTOL[torch.bfloat16])


@gpu
def test_raw_entry_points_name_bad_arguments():
    args = scan_args(make_inputs(1, 4, 5, 4, 1, True, False, True, True), True, cuda_backend.CHUNK_SIZE)
    with pytest.raises(ValueError, match="chunk_size"):
        cuda_backend.scan_forward(dataclasses.replace(args, chunk_size=cuda_backend.CHUNK_SIZE * 2))
    with pytest.raises(ValueError, match="halt_weight: expected dtype"):
        cuda_backend.scan_forward(dataclasses.replace(args, halt_weight=args.halt_weight.double()))
    with pytest.raises(ValueError, match="D: expected a CUDA tensor"):
        cuda_backend.scan_forward(dataclasses.replace(args, D=args.D.cpu()))
    big = scan_args(make_inputs(65536, 1, 1, 1, 1, True, False, True, True), True, cuda_backend.CHUNK_SIZE)
    with pytest.raises(RuntimeError, match="65535"):  # one more than the grid's y dimension holds
        cuda_backend.scan_forward(big)


@gpu
def test_auto_picks_cuda_and_the_extension_exports_the_limits():
    assert pna_kernels.backends.resolve_backend("auto", torch.device("cuda"), torch.float32, 16) == "cuda"
    assert cuda_backend.extension().CHUNK_SIZE == cuda_backend.CHUNK_SIZE
    assert cuda_backend.extension().MAX_STATE_DIM == pna_kernels.validation.MAX_STATE_DIM


# The realistic size the CPU suite cannot run: batch 2, L 2048, D 256, N 16, both fused GPU backends.
REALISTIC = (2, 256, 2048, 16, 1, False, True, True, True)


@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_realistic_size_matches_oracle(backend, dtype):
    if backend == "triton" and not COMPILED_TRITON:
        pytest.skip("set TRITON_INTERPRET=0 to test the compiled Triton kernels")
    check_scan(make_inputs(*REALISTIC, dtype=dtype), True, backend=backend_module(backend))
