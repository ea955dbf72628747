"""The "cpu" backend (C++/OpenMP kernels in csrc/cpu) against the float64 oracle, forward and every gradient.

The first test to run builds the extension (about half a minute on two cores, then cached on disk).
"""
from __future__ import annotations

import os
import shutil

import pytest
import torch
import torch.nn.functional as F

from pna_kernels import cpu, reference
from pna_kernels.backends import resolve_backend
from pna_kernels.reference import selective_scan_ref
from pna_kernels.testing import (
    RTOL, SCAN_INPUT_NAMES, assert_close_rel, assert_decode_loop_matches_scan, assert_matches_oracle,
    assert_state_update_matches_oracle, cotangents, decode_inputs, random_scan_inputs, scan_with_grads,
)
from pna_kernels.validation import check_scan_inputs


# Without any C++ compiler the backend cannot exist; with one, a failing build is a test failure, not a skip.
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler")


def make_inputs(batch: int, dim: int, length: int, dstate: int, groups: int, dtype: torch.dtype, *,
                grouped: bool = True, with_z: bool = True, with_init: bool = True, softplus: bool = True) -> dict:
    """random_scan_inputs; without softplus, delta and delta_bias are made positive so the scan stays stable."""
    x = random_scan_inputs(batch, dim, length, dstate, groups=groups, dtype=dtype, seed=length + dim,
                           with_z=with_z, with_initial_state=with_init, grouped_bc=grouped)
    if not softplus:
        x["delta"] = F.softplus(x["delta"].double()).to(dtype)
        x["delta_bias"] = x["delta_bias"].abs()
    return x


SHAPES = [
    # batch, D, L, N, groups, grouped B/C, z, initial_state, softplus
    (2, 37, 150, 16, 1, True, True, True, True),  # 3 chunks, the last partial; channel blocks 16 + 16 + 5
    (2, 34, 100, 4, 2, True, False, True, False),  # 17 channels per group: blocks never straddle a group
    (3, 6, 64, 16, 2, True, True, False, True),  # exactly one chunk, 3 channels per group
    (1, 7, 129, 4, 1, False, False, False, True),  # ungrouped (batch, N, L) B/C, one step into a third chunk
    (1, 5, 1, 4, 1, False, True, True, False),  # a single step
]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("batch,dim,length,dstate,groups,grouped,with_z,with_init,softplus", SHAPES)
def test_matches_oracle(dtype, batch, dim, length, dstate, groups, grouped, with_z, with_init, softplus):
    x = make_inputs(batch, dim, length, dstate, groups, dtype, grouped=grouped, with_z=with_z, with_init=with_init,
                    softplus=softplus)
    assert_matches_oracle(x, "cpu", softplus, RTOL[x["u"].dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_inputs_are_upcast(dtype):
    x = make_inputs(2, 9, 70, 4, 1, dtype)
    assert_matches_oracle(x, "cpu", True, RTOL[x["u"].dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_zero_states_match_oracle(dtype):
    """All-zero states (S1 = 0, entropy 0) for the first 66 steps, across a chunk boundary, and a state entry that
    stays exactly zero throughout (0 log 0 = 0 in S2 and in the entropy gradient)."""
    x = make_inputs(2, 5, 70, 4, 1, dtype, with_init=False)
    x["u"][..., :66] = 0
    x["B"][:, :, 0] = 0
    assert_matches_oracle(x, "cpu", True, RTOL[x["u"].dtype])


def canonical_args(x: dict, softplus: bool) -> tuple:
    """The backend-level arguments (validation.ScanArgs order) without the chunk size."""
    a = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], softplus,
                          x["halt_weight"], x["halt_bias"], x["initial_state"])
    return (a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.halt_weight, a.halt_bias, a.initial_state,
            a.delta_softplus)


def test_checkpoints_and_chunk_size():
    """Checkpoints are the oracle's states before every chunk, and the backward does not depend on the chunk."""
    x = make_inputs(2, 5, 23, 4, 1, torch.float64)
    args = canonical_args(x, True)
    fwd = cpu.scan_forward(*args, 5)
    states = selective_scan_ref(*args[:8], True, *args[8:11])[4]
    assert_close_rel("checkpoints", fwd[4], reference.checkpoints_from_states(args[10], states, 5),
                     RTOL[torch.float64])
    cot = cotangents(2, 5, 23, 4)
    grads5 = cpu.scan_backward(*cot, *args[:11], fwd[4], fwd[5], True, 5)
    fwd64 = cpu.scan_forward(*args, 64)
    grads64 = cpu.scan_backward(*cot, *args[:11], fwd64[4], fwd64[5], True, 64)
    for name, g5, g64 in zip(SCAN_INPUT_NAMES, grads5, grads64):
        assert_close_rel(f"grad {name}", g5, g64, RTOL[torch.float64])


def nan_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, float("nan"))


@pytest.mark.parametrize("with_z", [True, False])
def test_raw_kernels_write_every_output_element(with_z):
    """The extension's entry points fill preallocated NaN outputs completely, with what the wrapper returns."""
    x = make_inputs(2, 21, 70, 4, 1, torch.float32, with_z=with_z)
    args = canonical_args(x, True)
    want = cpu.scan_forward(*args, cpu.CHUNK_SIZE)
    got = [nan_like(t) for t in want]
    cpu.extension().scan_forward_out(*args, cpu.CHUNK_SIZE, 2, *got)
    for name, g, w in zip(("out", "entropy", "halt", "last_state", "checkpoints", "entropy_sums"), got, want):
        assert torch.isfinite(g).all(), name
        assert torch.equal(g, w), name

    cot = tuple(t.float() for t in cotangents(2, 21, 70, 4))
    want_grads = cpu.scan_backward(*cot, *args[:11], want[4], want[5], True, cpu.CHUNK_SIZE)
    got_grads = [None if g is None else nan_like(g) for g in want_grads]
    cpu.extension().scan_backward_out(*cot, *args[:11], want[4], want[5], True, cpu.CHUNK_SIZE, 2, *got_grads)
    for name, g, w in zip(SCAN_INPUT_NAMES, got_grads, want_grads):
        if w is None:
            assert g is None and not with_z and name == "z"
            continue
        assert torch.isfinite(g).all(), name
        assert torch.equal(g, w), name


def test_raw_state_update_writes_every_output_element():
    x = make_inputs(3, 21, 1, 4, 1, torch.float32)
    step = {k: v.contiguous() for k, v in decode_inputs(x, 0).items()}
    params = (x["A"], step["B"], step["C"], x["D"], step["z"], x["delta_bias"], x["halt_weight"], x["halt_bias"])
    want_state = x["initial_state"].clone()
    want = cpu.state_update(want_state, step["x"], step["dt"], *params, True)
    state = x["initial_state"].clone()
    got = [nan_like(t) for t in want]
    cpu.extension().state_update_out(state, step["x"], step["dt"], *params, True, 2, *got)
    for name, g, w in zip(("y", "entropy", "halt", "state"), (*got, state), (*want, want_state)):
        assert torch.isfinite(g).all(), name
        assert torch.equal(g, w), name


def test_raw_kernels_name_bad_arguments():
    x = make_inputs(1, 4, 10, 4, 1, torch.float32)
    args = list(canonical_args(x, True))
    outs = [nan_like(t) for t in cpu.scan_forward(*args, cpu.CHUNK_SIZE)]
    args[8] = args[8].double()  # halt_weight in the wrong dtype
    with pytest.raises(ValueError, match="halt_weight"):
        cpu.extension().scan_forward_out(*args, cpu.CHUNK_SIZE, 1, *outs)
    args[8] = args[8].float()
    outs[0] = outs[0].transpose(1, 2).contiguous().transpose(1, 2)
    with pytest.raises(ValueError, match="out: must be contiguous"):
        cpu.extension().scan_forward_out(*args, cpu.CHUNK_SIZE, 1, *outs)


def test_bitwise_deterministic_for_any_thread_count():
    x = make_inputs(2, 40, 90, 16, 2, torch.float32)
    cot = cotangents(2, 40, 90, 16)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first = scan_with_grads(x, "cpu", True, cot)
        second = scan_with_grads(x, "cpu", True, cot)
        torch.set_num_threads(1)
        single = scan_with_grads(x, "cpu", True, cot)
    finally:
        torch.set_num_threads(threads)
    for other in (second, single):
        for got, want in zip(other, first):
            for name in want:
                assert torch.equal(got[name], want[name]), name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("groups,with_z,softplus", [(1, True, True), (2, False, False), (2, True, True)])
def test_state_update_matches_oracle(dtype, groups, with_z, softplus):
    x = make_inputs(3, 10, 2, 16, groups, dtype, with_z=with_z, softplus=softplus)
    assert_state_update_matches_oracle(x, 1, "cpu", softplus, RTOL[dtype])


def test_decode_loop_reproduces_the_scan():
    assert_decode_loop_matches_scan(make_inputs(2, 6, 9, 4, 2, torch.float64), "cpu", RTOL[torch.float64])


def test_supports_and_auto_choice(monkeypatch):
    monkeypatch.delenv("PNA_BACKEND", raising=False)
    cpu_device = torch.device("cpu")
    assert cpu.supports(cpu_device, torch.bfloat16, 256) is None
    assert "N <= 256" in cpu.supports(cpu_device, torch.float32, 257)
    assert "CPU tensors only" in cpu.supports(torch.device("meta"), torch.float32, 16)
    assert "floating dtype" in cpu.supports(cpu_device, torch.int32, 16)
    assert resolve_backend("auto", cpu_device, torch.float32, 16) == "cpu"


def test_build_failure_is_a_sentence_then_a_runtime_error(monkeypatch):
    from torch.utils import cpp_extension

    def failing_load(**kwargs):
        raise RuntimeError("Error building extension 'pna_cpu_kernels':\nscan_forward.cpp:1: error: no compiler")

    monkeypatch.setattr(cpp_extension, "load", failing_load)
    cpu._build.cache_clear()
    try:
        reason = cpu.supports(torch.device("cpu"), torch.float32, 16)
        assert reason is not None and "error: no compiler" in reason and "ninja" in reason
        with pytest.raises(RuntimeError, match="cpu backend: building the C\\+\\+/OpenMP kernels"):
            cpu.extension()
    finally:
        monkeypatch.undo()
        cpu._build.cache_clear()
    assert cpu.supports(torch.device("cpu"), torch.float32, 16) is None


@pytest.mark.parametrize("with_z", [True, False])
def test_opcheck_with_cpu_backend(with_z):
    """The custom ops' schemas, fake kernels and autograd registration hold with the cpu backend behind them."""
    x = make_inputs(2, 4, 6, 3, 2, torch.float64, with_z=with_z)
    args = canonical_args(x, True)
    leaves = tuple(None if t is None else t.detach().requires_grad_(True) for t in args[:11])
    torch.library.opcheck(torch.ops.pna.selective_scan_fwd, (*leaves, True, "cpu", 4))
    fwd = torch.ops.pna.selective_scan_fwd(*args, "cpu", 4)
    cot = cotangents(2, 4, 6, 3)
    torch.library.opcheck(torch.ops.pna.selective_scan_bwd, (*cot, *args[:11], fwd[4], fwd[5], True, "cpu", 4))
    step = decode_inputs(x, 0)
    torch.library.opcheck(
        torch.ops.pna.selective_state_update,
        (x["initial_state"].clone(), step["x"], step["dt"], x["A"], step["B"], step["C"], x["D"], step["z"],
         x["delta_bias"], x["halt_weight"], x["halt_bias"], True, "cpu"),
    )
