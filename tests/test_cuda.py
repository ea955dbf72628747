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

import math
import os

import pytest
import torch
import torch.nn.functional as F

import pna_kernels
from pna_kernels import cuda as cuda_backend
from pna_kernels import reference
from pna_kernels.testing import (
    RTOL, SCAN_OUTPUT_NAMES, assert_close_rel, assert_decode_loop_matches_scan, assert_matches_oracle,
    assert_state_update_matches_oracle, cotangents, random_scan_inputs, scan_with_grads,
)
from pna_kernels.validation import check_scan_inputs

COMPILED_TRITON = os.environ.get("TRITON_INTERPRET") != "1"


def gpu(test):
    """Mark a test as a GPU test (pytest -m gpu) that skips without a CUDA device."""
    return pytest.mark.gpu(pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")(test))


def make_inputs(batch: int, dim: int, length: int, dstate: int, groups: int, grouped: bool, with_z: bool,
                with_init: bool, softplus: bool, dtype: torch.dtype = torch.float32) -> dict:
    """random_scan_inputs on the GPU, with positive deltas when the op does not apply softplus itself."""
    x = random_scan_inputs(batch, dim, length, dstate, groups=groups, dtype=dtype, device="cuda",
                           seed=length + dim + dstate, with_z=with_z, with_initial_state=with_init,
                           grouped_bc=grouped)
    if not softplus:
        x["delta"] = F.softplus(x["delta"].double()).to(dtype)
    return x


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
    from torch.utils import cpp_extension

    def failing_load(**kwargs):
        raise RuntimeError("Error building extension 'pna_cuda_kernels'\nscan_forward.cu(7): error: no such thing")

    fresh_build.setattr(torch.version, "cuda", "12.4")
    fresh_build.setattr(torch.cuda, "is_available", lambda: True)
    fresh_build.setattr(cuda_backend, "find_nvcc", lambda: "nvcc")
    fresh_build.setattr(cpp_extension, "load", failing_load)
    reason = cuda_backend.supports(torch.device("cuda"), torch.float32, 16)
    assert "failed" in reason and "no such thing" in reason
    with pytest.raises(RuntimeError, match="no such thing"):
        cuda_backend.extension()


@gpu
def test_extension_builds():
    reason = cuda_backend.supports(torch.device("cuda"), torch.float32, 16)
    assert reason is None, reason
    assert "cuda" in pna_kernels.available_backends("cuda")


# batch, D, L, N, groups, grouped B/C, z, initial_state, softplus
SHAPES = [
    (2, 40, 37, 4, 1, False, True, True, True),
    (2, 12, 150, 16, 2, True, True, False, False),
    (1, 6, 5, 16, 1, True, False, True, True),
    (2, 6, 37, 64, 2, True, False, False, True),
    (1, 6, 21, 256, 2, True, True, True, False),
    (3, 24, 70, 16, 1, False, False, True, False),
]


@gpu
@pytest.mark.parametrize("batch,dim,length,dstate,groups,grouped,with_z,with_init,softplus", SHAPES)
def test_float32_matches_oracle(batch, dim, length, dstate, groups, grouped, with_z, with_init, softplus):
    x = make_inputs(batch, dim, length, dstate, groups, grouped, with_z, with_init, softplus)
    assert_matches_oracle(x, "cuda", softplus, RTOL[torch.float32])


@gpu
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("dstate", [16, 64])
def test_low_precision_inputs_match_oracle(dtype, dstate):
    x = make_inputs(2, 12, 53, dstate, 2, True, True, True, True, dtype=dtype)
    assert_matches_oracle(x, "cuda", True, RTOL[dtype])


@gpu
def test_all_zero_states_have_zero_entropy_and_gradient():
    x = make_inputs(2, 12, 40, 16, 2, True, True, False, True)
    x["u"][:, :, :20] = 0.0  # no initial state: h_t = 0 for 20 steps, across a chunk boundary
    assert_matches_oracle(x, "cuda", True, RTOL[torch.float32])
    res = pna_kernels.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="cuda")
    assert torch.equal(res.entropy[:, :20], torch.zeros(2, 20, device="cuda"))


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
    x = make_inputs(2, 12, 37, 16, 2, True, True, True, True)
    args = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                             x["halt_weight"], x["halt_bias"], x["initial_state"])
    canonical = (args.u, args.delta, args.A, args.B, args.C, args.D, args.z, args.delta_bias, args.halt_weight,
                 args.halt_bias, args.initial_state)
    chunk = cuda_backend.CHUNK_SIZE
    want = reference.scan_forward(*(None if t is None else t.double() for t in canonical), True, chunk)
    cot = cotangents(2, 12, 37, 16, "cuda")
    want_grads = reference.scan_backward(*cot, *(None if t is None else t.double() for t in canonical),
                                         want[4], want[5], True, chunk)

    poison_cuda_cache()
    got = cuda_backend.scan_forward(*canonical, True, chunk)
    for name, g, w in zip(SCAN_OUTPUT_NAMES + ("checkpoints", "entropy_sums"), got, want):
        assert_close_rel(name, g, w, RTOL[torch.float32])
    poison_cuda_cache()
    got_grads = cuda_backend.scan_backward(cot[0].float(), cot[1].float(), cot[2].float(), cot[3].float(),
                                           *canonical, got[4], got[5], True, chunk)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "halt_weight", "halt_bias", "initial_state")
    for name, g, w in zip(names, got_grads, want_grads):
        assert_close_rel(f"d{name}", g, w, RTOL[torch.float32])


@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_repeated_runs_are_bitwise_equal(dtype):
    x = make_inputs(2, 48, 150, 16, 2, True, True, True, True, dtype=dtype)
    cot = cotangents(2, 48, 150, 16, "cuda")
    first_out, first_grad = scan_with_grads(x, "cuda", True, cot)
    second_out, second_grad = scan_with_grads(x, "cuda", True, cot)
    for name in SCAN_OUTPUT_NAMES:
        assert torch.equal(first_out[name], second_out[name]), name
    for name in first_grad:
        assert torch.equal(first_grad[name], second_grad[name]), f"d{name}"


@gpu
@pytest.mark.parametrize("dstate,groups,with_z,softplus",
                         [(4, 2, True, True), (16, 1, False, False), (256, 2, True, True)])
def test_state_update_matches_oracle(dstate, groups, with_z, softplus):
    x = make_inputs(2, 12, 1, dstate, groups, True, with_z, True, softplus)
    poison_cuda_cache()
    assert_state_update_matches_oracle(x, 0, "cuda", softplus, RTOL[torch.float32])


@gpu
def test_decode_loop_equals_full_scan():
    x = make_inputs(2, 12, 19, 16, 2, True, True, True, True, dtype=torch.bfloat16)
    assert_decode_loop_matches_scan(x, "cuda", RTOL[torch.bfloat16])


@gpu
def test_kernel_errors_raise_with_the_message():
    x = make_inputs(1, 4, 5, 4, 1, True, False, True, True)
    a = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                          x["halt_weight"], x["halt_bias"], x["initial_state"])
    inputs = (a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.halt_weight, a.halt_bias, a.initial_state)
    with pytest.raises(RuntimeError, match="chunk_size"):
        cuda_backend.scan_forward(*inputs, True, cuda_backend.CHUNK_SIZE * 2)
    batch = 65536  # one more than the grid's y dimension holds: the launcher refuses it
    big = make_inputs(batch, 1, 1, 1, 1, True, False, True, True)
    b = check_scan_inputs(big["u"], big["delta"], big["A"], big["B"], big["C"], big["D"], None, big["delta_bias"],
                          True, big["halt_weight"], big["halt_bias"], big["initial_state"])
    with pytest.raises(RuntimeError, match="65535"):
        cuda_backend.scan_forward(b.u, b.delta, b.A, b.B, b.C, b.D, None, b.delta_bias, b.halt_weight, b.halt_bias,
                                  b.initial_state, True, cuda_backend.CHUNK_SIZE)


@gpu
def test_auto_picks_cuda_and_opcheck_passes():
    x = make_inputs(2, 12, 21, 16, 2, True, True, True, True)
    assert pna_kernels.backends.resolve_backend("auto", x["u"].device, x["u"].dtype, 16) == "cuda"
    a = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                          x["halt_weight"], x["halt_bias"], x["initial_state"])
    inputs = (a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.halt_weight, a.halt_bias, a.initial_state)
    chunk = cuda_backend.CHUNK_SIZE
    torch.library.opcheck(torch.ops.pna.selective_scan_fwd, (*inputs, True, "cuda", chunk))
    out, entropy, halt, last, checkpoints, sums = torch.ops.pna.selective_scan_fwd(*inputs, True, "cuda", chunk)
    grads = tuple(g.to(t.dtype) for g, t in zip(cotangents(2, 12, 21, 16, "cuda"), (out, entropy, halt, last)))
    torch.library.opcheck(torch.ops.pna.selective_scan_bwd, (*grads, *inputs, checkpoints, sums, True, "cuda", chunk))


# The realistic size the CPU suite cannot run: batch 2, L 2048, D 256, N 16, both fused GPU backends.
REALISTIC = (2, 256, 2048, 16, 1, False, True, True, True)


@gpu
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_realistic_size_matches_oracle(backend, dtype):
    if backend == "triton" and not COMPILED_TRITON:
        pytest.skip("set TRITON_INTERPRET=0 to test the compiled Triton kernels")
    x = make_inputs(*REALISTIC, dtype=dtype)
    assert_matches_oracle(x, backend, True, RTOL[dtype])
