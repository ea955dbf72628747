"""One parity suite for every backend: forward, every gradient (the channel mean's included), the decode step,
decode loop == scan, NaN entropy of a non-finite state, determinism and opcheck, against the float64 oracle.

Each test is parametrised over the backends (ids: reference, torch, cpu, triton, cuda); a backend that cannot
run here (no compiler, no GPU, a dtype it does not support) is skipped with its own reason. Triton runs on the
CPU under the interpreter (tests/conftest.py), so its sizes stay small (L * D * N <= ~8k).
Backend-specific checks (builds, supports(), host emulation, compile checks) stay in the backends' own files.
"""
from __future__ import annotations

import pytest
import torch

from pna_kernels import selective_state_update
from pna_kernels.backends import chunk_size, unsupported_reason
from pna_kernels.contract import COTANGENT_OF, ScanCotangents, ScanResult, flatten, replace, unflatten
from pna_kernels.testing import (
    RTOL, assert_decode_loop_matches_scan, assert_matches_oracle, assert_state_update_matches_oracle, cotangents,
    decode_inputs, random_scan_inputs, run_scan, scan_with_grads,
)
from pna_kernels.validation import check_scan_inputs, check_state_update_inputs

GPU = torch.cuda.is_available()
# (backend, device): the GPU backends on the GPU when there is one; Triton otherwise under the interpreter.
BACKENDS = [
    pytest.param(("reference", "cpu"), id="reference"),
    pytest.param(("torch", "cpu"), id="torch"),
    pytest.param(("cpu", "cpu"), id="cpu"),
    pytest.param(("triton", "cuda" if GPU else "cpu"), id="triton"),
    pytest.param(("cuda", "cuda"), id="cuda"),
]


def dtype_id(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def usable(backend: tuple[str, str], dtype: torch.dtype = torch.float32, dstate: int = 4) -> tuple[str, str]:
    """The backend and device, or a skip saying why this backend cannot run these inputs here."""
    name, device = backend
    if device == "cuda" and not GPU:
        pytest.skip("needs a CUDA device")
    reason = unsupported_reason(name, torch.device(device), dtype, dstate)
    if reason is not None:
        pytest.skip(f"{name} cannot run {dtype_id(dtype)} here: {reason}")
    return name, device


SHAPES = [
    # batch, D, L, N, groups, grouped B/C, z, initial_state, softplus
    pytest.param((1, 3, 1, 2, 1, False, True, True, True), id="one_step"),
    pytest.param((2, 6, 19, 4, 2, True, True, False, True), id="grouped_no_init"),
    pytest.param((2, 4, 37, 8, 1, False, False, True, False), id="ungrouped_no_softplus"),
    pytest.param((1, 4, 70, 4, 4, True, True, True, True), id="partial_chunks"),
]


def make_inputs(shape: tuple, dtype: torch.dtype, device: str, seed: int = 0) -> tuple[dict, bool]:
    batch, dim, length, dstate, groups, grouped, with_z, with_init, softplus = shape
    x = random_scan_inputs(batch, dim, length, dstate, groups=groups, dtype=dtype, device=device,
                           seed=seed + length, with_z=with_z, with_initial_state=with_init, grouped_bc=grouped,
                           delta_softplus=softplus)
    return x, softplus


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=dtype_id)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("backend", BACKENDS)
def test_forward_and_gradients_match_oracle(backend, shape, dtype):
    """out, entropy, halt_logits, last_state, channel_mean and the gradient of every input."""
    name, device = usable(backend, dtype, shape[3])
    x, softplus = make_inputs(shape, dtype, device)
    assert_matches_oracle(x, name, softplus, RTOL[dtype], with_channel_mean=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_without_channel_mean_matches_oracle(backend):
    """The default call (no channel mean asked): the four outputs and every gradient."""
    name, device = usable(backend)
    x, softplus = make_inputs((2, 6, 19, 4, 2, True, True, True, True), torch.float32, device, seed=1)
    assert_matches_oracle(x, name, softplus, RTOL[torch.float32])
    assert run_scan(x, name).channel_mean is None


@pytest.mark.parametrize("backend", BACKENDS)
def test_channel_mean_is_the_mean_of_the_states_over_channels(backend):
    """Only the channel mean carries a cotangent: its gradient alone matches the oracle's."""
    name, device = usable(backend)
    x, softplus = make_inputs((2, 4, 21, 4, 2, True, True, True, True), torch.float32, device, seed=2)
    batch, dim, length = x["u"].shape
    cot = cotangents(batch, dim, length, 4, device, with_channel_mean=True)
    only_mean = tuple(torch.zeros_like(c) for c in cot[:-1]) + cot[-1:]
    got_out, got_grad = scan_with_grads(x, name, softplus, only_mean)
    want_out, want_grad = scan_with_grads({k: None if v is None else v.double() for k, v in x.items()},
                                          "reference", softplus, only_mean)
    torch.testing.assert_close(got_out["channel_mean"], want_out["channel_mean"].float(), rtol=1e-4, atol=1e-5)
    for key, want in want_grad.items():
        torch.testing.assert_close(got_grad[key].double(), want, rtol=1e-3, atol=1e-5, msg=f"d{key}")


@pytest.mark.parametrize("softplus", [True, False], ids=["softplus", "no_softplus"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=dtype_id)
@pytest.mark.parametrize("backend", BACKENDS)
def test_state_update_matches_oracle(backend, dtype, softplus):
    name, device = usable(backend, dtype)
    x, _ = make_inputs((2, 6, 3, 4, 3, True, True, True, softplus), dtype, device, seed=3)
    assert_state_update_matches_oracle(x, 1, name, softplus, RTOL[dtype])


@pytest.mark.parametrize("backend", BACKENDS)
def test_decode_loop_matches_scan(backend):
    name, device = usable(backend)
    x, _ = make_inputs((2, 4, 23, 4, 2, True, True, True, True), torch.float32, device, seed=4)
    assert_decode_loop_matches_scan(x, name, RTOL[torch.float32])


@pytest.mark.parametrize("bad", ["inf", "nan", "overflow"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_state_gives_nan_entropy(backend, bad):
    """Once the state holds Inf or NaN (or its energy sum overflows) the entropy is NaN, never a finite number;
    before that it is finite. The decode step likewise."""
    name, device = usable(backend)
    x, _ = make_inputs((1, 4, 12, 4, 1, True, False, False, True), torch.float32, device, seed=5)
    t_bad = 5
    x["u"][:, 1, t_bad] = {"inf": float("inf"), "nan": float("nan"), "overflow": 3e38}[bad]
    x["A"] = torch.full_like(x["A"], -1e-3)  # slow decay: the bad value stays in the state
    entropy = run_scan(x, name, check_finite=False).entropy
    assert torch.isfinite(entropy[:, :t_bad]).all()
    assert torch.isnan(entropy[:, t_bad]).all(), entropy
    state = x["initial_state"] if x["initial_state"] is not None else torch.zeros(1, 4, 4, device=device)
    state = torch.full_like(state, {"inf": float("inf"), "nan": float("nan"), "overflow": 3e30}[bad])
    step = decode_inputs(x, 0)
    _, step_entropy, _ = selective_state_update(state, step["x"], step["dt"], x["A"], step["B"], step["C"],
                                                backend=name, check_finite=False)
    assert torch.isnan(step_entropy).all()


@pytest.mark.parametrize("backend", BACKENDS)
def test_zero_state_has_zero_entropy_and_finite_gradients(backend):
    """h_t = 0 (no input, no initial state) across a chunk boundary: entropy exactly 0, every gradient finite."""
    name, device = usable(backend)
    x, softplus = make_inputs((2, 4, 40, 4, 2, True, True, False, True), torch.float32, device, seed=6)
    x["u"][:, :, :20] = 0.0
    res = run_scan(x, name, return_channel_mean=True)
    assert torch.equal(res.entropy[:, :20], torch.zeros_like(res.entropy[:, :20]))
    assert torch.equal(res.channel_mean[:, :20], torch.zeros_like(res.channel_mean[:, :20]))
    cot = cotangents(2, 4, 40, 4, device, with_channel_mean=True)
    _, grads = scan_with_grads(x, name, softplus, cot)
    for key, g in grads.items():
        assert torch.isfinite(g).all(), key


@pytest.mark.parametrize("backend", BACKENDS)
def test_repeat_runs_are_bitwise_equal(backend):
    """Deterministic: the same inputs give the same bits, forward and backward (no float atomics)."""
    name, device = usable(backend)
    x, softplus = make_inputs((2, 8, 40, 4, 2, True, True, True, True), torch.float32, device, seed=7)
    cot = cotangents(2, 8, 40, 4, device, with_channel_mean=True)
    first_out, first_grad = scan_with_grads(x, name, softplus, cot)
    second_out, second_grad = scan_with_grads(x, name, softplus, cot)
    for key in first_out:
        assert torch.equal(first_out[key], second_out[key]), key
    for key in first_grad:
        assert torch.equal(first_grad[key], second_grad[key]), f"d{key}"


@pytest.mark.parametrize("with_channel_mean", [True, False], ids=["channel_mean", "no_channel_mean"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_opcheck(backend, with_channel_mean):
    """torch.library.opcheck of the forward, backward and decode-step ops on this backend."""
    name, device = usable(backend)
    x, _ = make_inputs((2, 4, 6, 4, 2, True, True, True, True), torch.float32, device, seed=8)
    args = check_scan_inputs(**x, delta_softplus=True, chunk_size=chunk_size(name),
                             with_channel_mean=with_channel_mean)
    grad_args = replace(args, **{k: getattr(args, k).detach().requires_grad_(True) for k in ("u", "A", "B")})
    torch.library.opcheck(torch.ops.pna.selective_scan_fwd, (*flatten(grad_args), name))
    res = unflatten(ScanResult, torch.ops.pna.selective_scan_fwd(*flatten(args), name))
    gen = torch.Generator().manual_seed(9)
    cot = ScanCotangents(**{c: torch.randn(getattr(res, o).shape, generator=gen).to(device, getattr(res, o).dtype)
                            for o, c in COTANGENT_OF.items()})
    torch.library.opcheck(torch.ops.pna.selective_scan_bwd, (*flatten(args), *flatten(res.saved), *flatten(cot), name))
    step = decode_inputs(x, 0)
    state = check_state_update_inputs(x["initial_state"].clone(), step["x"], step["dt"], x["A"], step["B"], step["C"],
                                      x["D"], step["z"], x["delta_bias"], True, x["halt_weight"], x["halt_bias"])
    torch.library.opcheck(torch.ops.pna.selective_state_update, (*flatten(state), name))
