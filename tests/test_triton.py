"""The fused Triton backend against the float64 oracle, through the public op (custom op + autograd).

On the CPU these run under TRITON_INTERPRET=1 (set in conftest.py), so shapes stay small. The `small_tiles`
fixture lowers CHUNK_SIZE to 8 and the tile sizes so that a short sequence spans several chunks and the channels
of one group several D-blocks (BLOCK_D = 2 or 1), the last one partly masked.
"""
from __future__ import annotations

import math
import os

import pytest
import torch
import torch.nn.functional as F

import pna_kernels
import pna_kernels.triton as triton_backend
import pna_kernels.triton.common as triton_common
from pna_kernels import reference
from pna_kernels.testing import (
    RTOL, SCAN_OUTPUT_NAMES, assert_close_rel, assert_decode_loop_matches_scan, assert_matches_oracle,
    assert_state_update_matches_oracle, cotangents, decode_inputs, oracle_with_grads, random_scan_inputs,
    scan_with_grads,
)
from pna_kernels.validation import check_scan_inputs

SMALL_CHUNK = 8
# conftest.py sets TRITON_INTERPRET=1 unless the environment already says otherwise; TRITON_INTERPRET=0 on a CUDA
# machine tests the compiled kernels instead.
INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
interpreted = pytest.mark.skipif(not INTERPRETED, reason="CPU tests run the kernels under TRITON_INTERPRET=1")
compiled_cuda = pytest.mark.skipif(INTERPRETED or not torch.cuda.is_available(),
                                   reason="needs a CUDA device and TRITON_INTERPRET=0 (compiled kernels)")


@pytest.fixture
def small_tiles(monkeypatch):
    """CHUNK_SIZE 8; BLOCK_D 2 for N = 4 and 1 for N = 16, in the scan and the decode step."""
    monkeypatch.setattr(triton_backend, "CHUNK_SIZE", SMALL_CHUNK)
    monkeypatch.setattr(triton_common, "SCAN_TILE_ELEMENTS", 2 * 4 * SMALL_CHUNK)
    monkeypatch.setattr(triton_common, "STATE_TILE_ELEMENTS", 2 * 4)


def make_inputs(batch: int, dim: int, length: int, dstate: int, groups: int, grouped: bool, with_z: bool,
                with_init: bool, softplus: bool, dtype: torch.dtype = torch.float32, device: str = "cpu") -> dict:
    """random_scan_inputs, with positive deltas when the op does not apply softplus itself."""
    x = random_scan_inputs(batch, dim, length, dstate, groups=groups, dtype=dtype, device=device, seed=length + dim,
                           with_z=with_z, with_initial_state=with_init, grouped_bc=grouped)
    if not softplus:
        x["delta"] = F.softplus(x["delta"].double()).to(dtype)
    return x


# batch, D, L, N, groups, grouped B/C, z, initial_state, softplus. With small_tiles every L is 2-3 chunks and not a
# multiple of 8 (or shorter than one chunk). For N = 4, BLOCK_D = 2 and the 3 channels of a group leave the last
# D-block half masked; for larger N, BLOCK_D = 1 and a group spans up to 5 D-blocks. N = 5 is padded to BLOCK_N = 8;
# N = 256 is the largest supported state.
SHAPES = [
    (2, 6, 19, 4, 2, True, True, True, True),
    (1, 5, 13, 16, 1, True, False, False, False),
    (2, 4, 21, 16, 2, True, True, False, False),
    (1, 3, 17, 4, 1, False, False, True, True),
    (2, 4, 11, 5, 2, True, True, True, True),
    (1, 2, 5, 256, 2, True, True, True, False),
]


@interpreted
@pytest.mark.parametrize("batch,dim,length,dstate,groups,grouped,with_z,with_init,softplus", SHAPES)
def test_float32_matches_oracle(small_tiles, batch, dim, length, dstate, groups, grouped, with_z, with_init, softplus):
    x = make_inputs(batch, dim, length, dstate, groups, grouped, with_z, with_init, softplus)
    assert_matches_oracle(x, "triton", softplus, RTOL[torch.float32])


@interpreted
def test_all_zero_states_have_zero_entropy_and_gradient(small_tiles):
    x = make_inputs(2, 4, 13, 4, 2, True, True, False, True)
    x["u"][:, :, :10] = 0.0  # no initial state: h_t = 0 for the first 10 steps, across a chunk boundary
    assert_matches_oracle(x, "triton", True, RTOL[torch.float32])
    out = pna_kernels.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], backend="triton")
    assert torch.equal(out.entropy[:, :10], torch.zeros(2, 10))


@interpreted
def test_default_tiles_with_partial_last_chunk():
    length = triton_backend.CHUNK_SIZE + 5
    x = make_inputs(1, 2, length, 4, 1, True, True, True, True)
    assert_matches_oracle(x, "triton", True, RTOL[torch.float32])


@interpreted
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_low_precision_inputs_match_oracle(small_tiles, dtype):
    x = make_inputs(2, 6, 19, 4, 2, True, True, True, True, dtype=dtype)
    assert_matches_oracle(x, "triton", True, RTOL[dtype])


def nan_filled_empty(real_empty):
    """A torch.empty that hands out NaN-filled floating tensors, so any element a kernel leaves unwritten shows."""
    def empty(*args, **kwargs):
        t = real_empty(*args, **kwargs)
        return t.fill_(math.nan) if t.is_floating_point() else t
    return empty


@interpreted
def test_every_output_element_is_written(small_tiles, monkeypatch):
    x = make_inputs(2, 6, 19, 4, 2, True, True, True, True)
    args = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                             x["halt_weight"], x["halt_bias"], x["initial_state"])
    canonical = (args.u, args.delta, args.A, args.B, args.C, args.D, args.z, args.delta_bias, args.halt_weight,
                 args.halt_bias, args.initial_state)
    want = reference.scan_forward(*(None if t is None else t.double() for t in canonical), True, SMALL_CHUNK)
    cot = cotangents(2, 6, 19, 4)
    want_out, want_grad = oracle_with_grads(x, True, cot)

    monkeypatch.setattr(torch, "empty", nan_filled_empty(torch.empty))
    assert torch.isnan(torch.empty(3)).all()
    got = triton_backend.scan_forward(*canonical, True, SMALL_CHUNK)
    got_out, got_grad = scan_with_grads(x, "triton", True, cot)

    names = SCAN_OUTPUT_NAMES + ("checkpoints", "entropy_sums")
    for name, g, w in zip(names, got, want):
        assert_close_rel(name, g, w, RTOL[torch.float32])
    for name in SCAN_OUTPUT_NAMES:
        assert_close_rel(name, got_out[name], want_out[name], RTOL[torch.float32])
    for name, w in want_grad.items():
        assert_close_rel(f"d{name}", got_grad[name], w, RTOL[torch.float32])


def assert_repeats_bitwise(x: dict, softplus: bool) -> None:
    batch, dim, length = x["u"].shape
    cot = cotangents(batch, dim, length, x["A"].shape[1], x["u"].device.type)
    first_out, first_grad = scan_with_grads(x, "triton", softplus, cot)
    second_out, second_grad = scan_with_grads(x, "triton", softplus, cot)
    for name in SCAN_OUTPUT_NAMES:
        assert torch.equal(first_out[name], second_out[name]), name
    for name in first_grad:
        assert torch.equal(first_grad[name], second_grad[name]), f"d{name}"


@interpreted
def test_repeated_runs_are_bitwise_equal(small_tiles):
    assert_repeats_bitwise(make_inputs(2, 6, 19, 4, 2, True, True, True, True), True)


@interpreted
@pytest.mark.parametrize("dstate,groups,with_z,softplus", [(4, 2, True, True), (16, 1, False, False)])
def test_state_update_matches_oracle(small_tiles, monkeypatch, dstate, groups, with_z, softplus):
    monkeypatch.setattr(torch, "empty", nan_filled_empty(torch.empty))
    x = make_inputs(2, 6, 1, dstate, groups, True, with_z, True, softplus)
    assert_state_update_matches_oracle(x, 0, "triton", softplus, RTOL[torch.float32])


@interpreted
def test_decode_loop_equals_full_scan(small_tiles):
    x = make_inputs(2, 6, 11, 4, 2, True, True, True, True)
    assert_decode_loop_matches_scan(x, "triton", RTOL[torch.float32])


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
    x = make_inputs(1, 2, 5, 4, 1, True, False, True, True)
    args = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                             x["halt_weight"], x["halt_bias"], x["initial_state"])
    with pytest.raises(ValueError, match="chunk_size"):
        triton_backend.scan_forward(args.u, args.delta, args.A, args.B, args.C, args.D, args.z, args.delta_bias,
                                    args.halt_weight, args.halt_bias, args.initial_state, True, 6)


@compiled_cuda
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_cuda_realistic_shape_matches_oracle_and_repeats_bitwise(dtype):
    x = make_inputs(2, 96, 300, 16, 2, True, True, True, True, dtype=dtype, device="cuda")
    assert_matches_oracle(x, "triton", True, RTOL[dtype])
    assert_repeats_bitwise(x, True)


@interpreted
def test_opcheck_with_triton_kernels(small_tiles):
    x = make_inputs(2, 6, 11, 4, 2, True, True, True, True)
    a = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True,
                          x["halt_weight"], x["halt_bias"], x["initial_state"])
    inputs = (a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.halt_weight, a.halt_bias, a.initial_state)
    torch.library.opcheck(torch.ops.pna.selective_scan_fwd, (*inputs, True, "triton", SMALL_CHUNK))
    out, entropy, halt, last, checkpoints, sums = torch.ops.pna.selective_scan_fwd(*inputs, True, "triton",
                                                                                  SMALL_CHUNK)
    grads = cotangents(2, 6, 11, 4)
    grads = tuple(g.to(t.dtype) for g, t in zip(grads, (out, entropy, halt, last)))
    torch.library.opcheck(torch.ops.pna.selective_scan_bwd,
                          (*grads, *inputs, checkpoints, sums, True, "triton", SMALL_CHUNK))
    step = decode_inputs(x, 0)
    state = x["initial_state"].clone()
    torch.library.opcheck(
        torch.ops.pna.selective_state_update,
        (state, step["x"], step["dt"], a.A, step["B"], step["C"], a.D, step["z"], a.delta_bias, a.halt_weight,
         a.halt_bias, True, "triton"),
    )
