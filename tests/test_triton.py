"""The fused Triton backend: what is specific to it, namely supports(), its chunk-size rule and, with compiled
kernels on a GPU, a realistic size. Its parity with the float64 oracle (under TRITON_INTERPRET=1 on the CPU, with
small tiles and chunks, every output and gradient, decode step, NaN entropy, poisoned outputs) is in
test_backends.py.
"""
from __future__ import annotations

import os

import pytest
import torch

import pna_kernels.triton as triton_backend
from pna_kernels.testing import (
    RTOL, ScanCase, assert_bitwise_equal, assert_kernels_match_oracle, run_kernels, scan_args, scan_cotangents,
)

# conftest.py sets TRITON_INTERPRET=1 unless the environment already says otherwise; TRITON_INTERPRET=0 on a CUDA
# machine tests the compiled kernels instead.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
compiled_cuda = pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(),
                                   reason="needs a CUDA device and TRITON_INTERPRET=0 (compiled kernels)")


def test_supports_says_why_not(monkeypatch):
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert triton_backend.supports(cpu, torch.bfloat16, 256) is None
    assert triton_backend.supports(cuda, torch.float16, 16) is None
    assert "float64" in triton_backend.supports(cuda, torch.float64, 16)
    assert "257" in triton_backend.supports(cuda, torch.float32, 257)
    monkeypatch.delenv("TRITON_INTERPRET")
    assert "TRITON_INTERPRET" in triton_backend.supports(cpu, torch.float32, 16)


def test_chunk_size_must_be_a_power_of_two():
    args = scan_args(ScanCase(1, 2, 5, 4, with_z=False).inputs(), True, 6)
    with pytest.raises(ValueError, match="chunk_size"):
        triton_backend.scan_forward(args)


@compiled_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_realistic_shape_matches_oracle_and_repeats_bitwise(dtype):
    """The compiled kernels with their default tiles and chunk at a size the interpreter cannot run."""
    args = scan_args(ScanCase(2, 96, 300, 16, 2).inputs(dtype, "cuda"), True, triton_backend.CHUNK_SIZE)
    assert_kernels_match_oracle(triton_backend.scan_forward, triton_backend.scan_backward, args, RTOL[dtype])
    cot = scan_cotangents(args)
    assert_bitwise_equal(run_kernels(triton_backend.scan_forward, triton_backend.scan_backward, args, cot),
                         run_kernels(triton_backend.scan_forward, triton_backend.scan_backward, args, cot))
