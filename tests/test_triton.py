"""The fused Triton backend: its module functions against the float64 oracle through the backend contract (every
output, the channel mean included, and every gradient), NaN entropy for a non-finite state, and supports().

On the CPU these run under TRITON_INTERPRET=1 (set in conftest.py), so shapes stay small (L * D * N per program
<= ~8k). Chunks of SMALL_CHUNK = 8 steps and the `small_tiles` fixture make a short sequence span several chunks
and the channels of one group several D-blocks (BLOCK_D = 2 or 1), the last one partly masked.
"""
from __future__ import annotations

import math
import os

import pytest
import torch

import pna_kernels.triton as triton_backend
import pna_kernels.triton.common as triton_common
from native_parity import (
    assert_decode_loop_matches_scan, assert_repeats_bitwise, assert_scan_matches_oracle,
    assert_state_update_matches_oracle, scan_args, scan_inputs, state_update_args, with_non_finite_state,
)
from pna_kernels.testing import RTOL, random_scan_inputs

SMALL_CHUNK = 8
# conftest.py sets TRITON_INTERPRET=1 unless the environment already says otherwise; TRITON_INTERPRET=0 on a CUDA
# machine tests the compiled kernels instead.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED, reason="CPU tests run the kernels under TRITON_INTERPRET=1")
compiled_cuda = pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(),
                                   reason="needs a CUDA device and TRITON_INTERPRET=0 (compiled kernels)")


@pytest.fixture
def small_tiles(monkeypatch):
    """BLOCK_D 2 for N = 4 and 1 for N = 16 with SMALL_CHUNK, in the scan and the decode step."""
    monkeypatch.setattr(triton_common, "SCAN_TILE_ELEMENTS", 2 * 4 * SMALL_CHUNK)
    monkeypatch.setattr(triton_common, "STATE_TILE_ELEMENTS", 2 * 4)


def check_scan(x: dict, softplus: bool, chunk_size: int = SMALL_CHUNK, with_channel_mean: bool = True):
    args = scan_args(x, softplus, chunk_size, with_channel_mean)
    return assert_scan_matches_oracle(triton_backend.scan_forward, triton_backend.scan_backward, args,
                                      RTOL[x["u"].dtype])


# batch, D, L, N, groups, grouped B/C, z, initial_state, softplus, channel mean. Every L is 2-3 chunks of 8 and not
# a multiple of 8 (or shorter than one chunk). For N = 4, BLOCK_D = 2 and the 3 channels of a group leave the last
# D-block half masked; for larger N, BLOCK_D = 1 and a group spans up to 5 D-blocks. N = 5 is padded to
# BLOCK_N = 8; N = 256 is the largest supported state.
SHAPES = {
    "N4-2groups-halfmasked": (2, 6, 19, 4, 2, True, True, True, True, True),
    "N16-no-softplus": (1, 5, 13, 16, 1, True, False, False, False, True),
    "N16-2groups-no-mean": (2, 4, 21, 16, 2, True, True, False, False, False),
    "ungrouped": (1, 3, 17, 4, 1, False, False, True, True, True),
    "N5-padded": (2, 4, 11, 5, 2, True, True, True, True, True),
    "N256": (1, 2, 5, 256, 2, True, True, True, False, True),
}


@interpreted
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_float32_matches_oracle(small_tiles, shape):
    *dims, softplus, with_mean = shape
    check_scan(scan_inputs(*dims, softplus), softplus, with_channel_mean=with_mean)


@interpreted
def test_all_zero_states_have_zero_entropy_and_gradient(small_tiles):
    x = scan_inputs(2, 4, 13, 4, 2, True, True, False, True)
    x["u"][:, :, :10] = 0.0  # no initial state: h_t = 0 for the first 10 steps, across a chunk boundary
    result = check_scan(x, True)
    assert torch.equal(result.entropy[:, :10], torch.zeros(2, 10))


@interpreted
def test_default_tiles_with_partial_last_chunk():
    x = scan_inputs(1, 2, triton_backend.CHUNK_SIZE + 5, 4, 1, True, True, True, True)
    check_scan(x, True, chunk_size=triton_backend.CHUNK_SIZE)


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs_match_oracle(small_tiles, dtype):
    check_scan(scan_inputs(2, 6, 19, 4, 2, True, True, True, True, dtype=dtype), True)


def nan_filled_empty(real_empty):
    """A torch.empty that hands out NaN-filled floating tensors, so any element a kernel leaves unwritten shows."""
    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(math.nan) if t.is_floating_point() else t
    return empty


@interpreted
def test_every_output_element_is_written(small_tiles, monkeypatch):
    x = scan_inputs(2, 6, 19, 4, 2, True, True, True, True)
    monkeypatch.setattr(torch, "empty", nan_filled_empty(torch.empty))
    assert torch.isnan(torch.empty(3)).all()
    check_scan(x, True)


@interpreted
@pytest.mark.parametrize("value", [float("nan"), 1e30], ids=["nan", "overflow"])
def test_non_finite_state_gives_nan_entropy(value):
    """A NaN state, or one whose energy h^2 overflows float32, gives NaN entropy (never 0 or another number), in
    the scan and in the decode step; the other batch row is unaffected."""
    args = with_non_finite_state(scan_args(scan_inputs(2, 4, 3, 4, 1, True, True, True, True), True, SMALL_CHUNK),
                                 value)
    entropy = triton_backend.scan_forward(args).entropy
    assert torch.isnan(entropy[0, 0]) and torch.isfinite(entropy[1]).all()
    step = with_non_finite_state(state_update_args(random_scan_inputs(2, 4, 1, 4), 0, True), value)
    entropy = triton_backend.state_update(step).entropy
    assert torch.isnan(entropy[0]) and torch.isfinite(entropy[1])


@interpreted
def test_repeated_runs_are_bitwise_equal(small_tiles):
    assert_repeats_bitwise(triton_backend.scan_forward, triton_backend.scan_backward,
                           scan_args(scan_inputs(2, 6, 19, 4, 2, True, True, True, True), True, SMALL_CHUNK))


@interpreted
@pytest.mark.parametrize("dstate,groups,with_z,softplus", [(4, 2, True, True), (16, 1, False, False)],
                         ids=["N4-2groups-gate", "N16-no-softplus"])
def test_state_update_matches_oracle(small_tiles, monkeypatch, dstate, groups, with_z, softplus):
    monkeypatch.setattr(torch, "empty", nan_filled_empty(torch.empty))
    x = scan_inputs(2, 6, 1, dstate, groups, True, with_z, True, softplus)
    assert_state_update_matches_oracle(triton_backend.state_update, state_update_args(x, 0, softplus),
                                       RTOL[torch.float32])


@interpreted
def test_decode_loop_equals_full_scan(small_tiles):
    x = scan_inputs(2, 6, 11, 4, 2, True, True, True, True)
    assert_decode_loop_matches_scan(triton_backend.scan_forward, triton_backend.state_update, x, SMALL_CHUNK,
                                    RTOL[torch.float32])


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
    args = scan_args(scan_inputs(1, 2, 5, 4, 1, True, False, True, True), True, 6)
    with pytest.raises(ValueError, match="chunk_size"):
        triton_backend.scan_forward(args)


@compiled_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_realistic_shape_matches_oracle_and_repeats_bitwise(dtype):
    x = scan_inputs(2, 96, 300, 16, 2, True, True, True, True, dtype=dtype, device="cuda")
    check_scan(x, True, chunk_size=triton_backend.CHUNK_SIZE)
    assert_repeats_bitwise(triton_backend.scan_forward, triton_backend.scan_backward,
                           scan_args(x, True, triton_backend.CHUNK_SIZE))
