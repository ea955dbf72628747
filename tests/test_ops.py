"""The custom ops and the public functions around them: opcheck, torch.compile, determinism, backend choice."""
from __future__ import annotations

import dataclasses
import inspect

import pytest
import torch

import pna_kernels
from pna_kernels.backends import AUTO_ORDER, available_backends, resolve_backend
from pna_kernels.contract import (
    COTANGENT_OF, ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult,
    fields_of, flatten, tensor_fields, unflatten,
)
from pna_kernels.testing import RTOL, assert_close_rel, random_scan_inputs, run_scan
from pna_kernels.validation import check_scan_inputs, check_state_update_inputs

CHUNK = 4


def canonical_scan_args(with_z: bool, with_channel_mean: bool, requires_grad: bool) -> ScanArgs:
    """The contract's inputs for a small float64 problem (L = 6: two chunks of 4)."""
    x = random_scan_inputs(2, 4, 6, 3, groups=2, dtype=torch.float64, seed=1, with_z=with_z)
    args = check_scan_inputs(**x, delta_softplus=True, chunk_size=CHUNK, with_channel_mean=with_channel_mean)
    if requires_grad:
        args = dataclasses.replace(args, **{n: None if getattr(args, n) is None else
                                            getattr(args, n).detach().requires_grad_(True)
                                            for n in tensor_fields(ScanArgs)})
    return args


OP_CASES = [pytest.param(z, m, id=f"{'z' if z else 'no_z'}-{'channel_mean' if m else 'no_channel_mean'}")
            for z in (True, False) for m in (True, False)]


@pytest.mark.parametrize("with_z,with_channel_mean", OP_CASES)
def test_opcheck_scan_forward(with_z, with_channel_mean):
    args = canonical_scan_args(with_z, with_channel_mean, requires_grad=True)
    torch.library.opcheck(torch.ops.pna.selective_scan_fwd, (*flatten(args), "reference"))


@pytest.mark.parametrize("with_z,with_channel_mean", OP_CASES)
def test_opcheck_scan_backward(with_z, with_channel_mean):
    args = canonical_scan_args(with_z, with_channel_mean, requires_grad=False)
    res = unflatten(ScanResult, torch.ops.pna.selective_scan_fwd(*flatten(args), "reference"))
    gen = torch.Generator().manual_seed(2)
    cot = ScanCotangents(**{c: torch.randn(getattr(res, o).shape, generator=gen, dtype=getattr(res, o).dtype)
                            for o, c in COTANGENT_OF.items()})
    torch.library.opcheck(torch.ops.pna.selective_scan_bwd,
                          (*flatten(args), *flatten(res.saved), *flatten(cot), "reference"))


@pytest.mark.parametrize("with_z", [True, False], ids=["z", "no_z"])
def test_opcheck_state_update(with_z):
    x = random_scan_inputs(2, 4, 1, 3, groups=2, dtype=torch.float32, seed=3, with_z=with_z)
    step = {k: None if v is None else (v[..., 0] if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
    state = step["initial_state"].clone()
    a = check_state_update_inputs(state, step["u"], step["delta"], step["A"], step["B"], step["C"], step["D"],
                                  step["z"], step["delta_bias"], True, step["halt_weight"], step["halt_bias"])
    torch.library.opcheck(torch.ops.pna.selective_state_update, (*flatten(a), "reference"))


def test_op_schemas_follow_the_contract_fields():
    """The ops' arguments and results are the dataclass fields in order (plus the backend name)."""
    fwd = torch.ops.pna.selective_scan_fwd.default._schema
    bwd = torch.ops.pna.selective_scan_bwd.default._schema
    step = torch.ops.pna.selective_state_update.default._schema
    assert [a.name for a in fwd.arguments] == [*fields_of(ScanArgs), "backend"]
    assert len(fwd.returns) == len(fields_of(ScanResult))
    assert [a.name for a in bwd.arguments] == [*fields_of(ScanArgs), *fields_of(ScanSaved),
                                               *fields_of(ScanCotangents), "backend"]
    assert len(bwd.returns) == len(fields_of(ScanGrads))
    assert [a.name for a in step.arguments] == [*fields_of(StateUpdateArgs), "backend"]
    assert len(step.returns) == len(fields_of(StateUpdateResult))
    assert set(COTANGENT_OF) <= set(fields_of(ScanResult)) and set(COTANGENT_OF.values()) == set(
        fields_of(ScanCotangents))


def _scan_loss(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state):
    res = pna_kernels.selective_scan(u, delta, A, B, C, D, z, delta_bias, True, True, halt_weight=halt_weight,
                                     halt_bias=halt_bias, initial_state=initial_state, return_channel_mean=True,
                                     backend="reference")
    return (res.out.square().sum() + res.entropy.sum() + (res.halt_logits * 0.5).sum() + res.last_state.sum()
            + res.channel_mean.square().sum())


def test_compile_fullgraph_matches_eager():
    x = random_scan_inputs(2, 4, 6, 3, groups=2, seed=4)
    leaves = {k: v.requires_grad_(True) for k, v in x.items()}
    eager = _scan_loss(**leaves)
    eager_grads = torch.autograd.grad(eager, tuple(leaves.values()))
    compiled = torch.compile(_scan_loss, fullgraph=True)(**leaves)
    compiled_grads = torch.autograd.grad(compiled, tuple(leaves.values()))
    torch.testing.assert_close(compiled, eager)
    for name, g, w in zip(leaves, compiled_grads, eager_grads):
        torch.testing.assert_close(g, w, msg=name)


def test_auto_resolves_to_the_first_available_cpu_backend(monkeypatch):
    monkeypatch.delenv("PNA_BACKEND", raising=False)
    available = available_backends("cpu")
    assert "reference" in available and "torch" in available
    want = next(name for name in AUTO_ORDER["cpu"] if name in available)
    assert resolve_backend("auto", torch.device("cpu"), torch.float32, 16) == want


def test_pna_backend_env_var_picks_the_backend(monkeypatch):
    monkeypatch.setenv("PNA_BACKEND", "reference")
    assert resolve_backend("auto", torch.device("cpu"), torch.float32, 16) == "reference"
    assert resolve_backend("torch", torch.device("cpu"), torch.float32, 16) == "torch"
    x = random_scan_inputs(2, 4, 9, 3, seed=8)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    by_env = pna_kernels.selective_scan(*args, backend="auto")
    named = pna_kernels.selective_scan(*args, backend="reference")
    assert all(torch.equal(a, b) for a, b in zip(by_env[:3], named[:3]))
    monkeypatch.setenv("PNA_BACKEND", "no-such-backend")
    with pytest.raises(ValueError, match="^backend:"):
        resolve_backend("auto", torch.device("cpu"), torch.float32, 16)


def test_scan_output_fields_and_last_state():
    x = random_scan_inputs(2, 4, 5, 3, seed=6)
    args = (x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], True)
    with_last = pna_kernels.selective_scan(*args, True, initial_state=x["initial_state"], backend="torch")
    without = pna_kernels.selective_scan(*args, initial_state=x["initial_state"], backend="torch")
    assert pna_kernels.ScanOutput._fields == ("out", "entropy", "halt_logits", "last_state", "channel_mean")
    assert with_last.out.shape == (2, 4, 5) and with_last.out.dtype == torch.float32
    assert with_last.entropy.shape == (2, 5) and with_last.halt_logits.shape == (2, 5)
    assert with_last.last_state.shape == (2, 4, 3)
    assert without.last_state is None and without.channel_mean is None
    assert torch.equal(without.out, with_last.out)
    assert torch.equal(with_last.halt_logits, torch.zeros_like(with_last.halt_logits))


def test_float64_inputs_give_float64_results():
    x = random_scan_inputs(1, 2, 3, 2, dtype=torch.float64, seed=7)
    res = pna_kernels.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True,
                                     backend="torch")
    assert {t.dtype for t in res if t is not None} == {torch.float64}


# --- mamba-ssm call compatibility ----------------------------------------------------------------------------------

MAMBA_PARAMETERS = (("u", None), ("delta", None), ("A", None), ("B", None), ("C", None), ("D", None), ("z", None),
                    ("delta_bias", None), ("delta_softplus", False), ("return_last_state", False))


def test_selective_scan_fn_has_mamba_signature():
    params = inspect.signature(pna_kernels.selective_scan_fn).parameters
    got = tuple((n, None if p.default is inspect.Parameter.empty else p.default) for n, p in params.items())
    assert got == MAMBA_PARAMETERS
    assert all(p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD for p in params.values())


@pytest.mark.parametrize("flag", [False, True, 0, 1], ids=repr)
def test_selective_scan_fn_returns_like_mamba(flag):
    x = random_scan_inputs(2, 4, 7, 3, seed=11, with_initial_state=False)
    got = pna_kernels.selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                        True, flag)
    full = pna_kernels.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"],
                                      True, True)
    if flag:
        out, last = got  # (out, last_state), as mamba-ssm returns it
        assert torch.equal(out, full.out) and torch.equal(last, full.last_state)
    else:
        assert isinstance(got, torch.Tensor) and torch.equal(got, full.out)


def test_selective_scan_fn_rejects_a_string_flag():
    x = random_scan_inputs(1, 2, 3, 2, seed=12)
    with pytest.raises(ValueError, match="^return_last_state:"):
        pna_kernels.selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state="no")
    with pytest.raises(ValueError, match="^delta_softplus:"):
        pna_kernels.selective_scan_fn(x["u"], x["delta"], x["A"], x["B"], x["C"], delta_softplus="yes")


def mamba_constant_bc_loop(u, delta, A, B, C, D, delta_bias):
    """mamba-ssm's selective_scan_ref semantics for B, C given as (D, N) or (batch, N, L), written as a loop:
    h = exp(dt A) h + dt B u, with B[d, :] for a 2-D B; y = sum_n C h with C[d, :] for a 2-D C."""
    dt = torch.nn.functional.softplus(delta + delta_bias[:, None])
    h = torch.zeros(u.shape[0], *A.shape, dtype=u.dtype)
    ys = []
    for t in range(u.shape[2]):
        b_t = B[None] if B.dim() == 2 else B[:, None, :, t]
        c_t = C[None] if C.dim() == 2 else C[:, None, :, t]
        h = torch.exp(dt[:, :, t, None] * A) * h + dt[:, :, t, None] * b_t * u[:, :, t, None]
        ys.append((h * c_t).sum(-1))
    return torch.stack(ys, -1) + D[:, None] * u, h


@pytest.mark.parametrize("constant", ["B", "C", "both"])
@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_constant_b_and_c_of_shape_d_n(constant, backend):
    """B and/or C of shape (D, N), constant over batch and time, mean what they mean to mamba-ssm; gradients
    come back in that shape."""
    x = random_scan_inputs(2, 4, 6, 3, dtype=torch.float64, seed=13, grouped_bc=False)
    x = {k: x[k] for k in ("u", "delta", "A", "B", "C", "D", "delta_bias")}
    gen = torch.Generator().manual_seed(14)
    for name in ("B", "C") if constant == "both" else (constant,):
        x[name] = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    leaves = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    out, last = pna_kernels.selective_scan_fn(**x, delta_softplus=True, return_last_state=True)
    want_out, want_last = mamba_constant_bc_loop(**x)
    assert_close_rel("out", out, want_out, RTOL[torch.float64])
    assert_close_rel("last_state", last, want_last, RTOL[torch.float64])
    x_grads = {k: v.clone().requires_grad_(True) for k, v in x.items()}
    want_out, _ = mamba_constant_bc_loop(**x_grads)
    want = torch.autograd.grad(want_out.sum(), tuple(x_grads.values()))
    got = torch.autograd.grad(run_scan(leaves, backend, True).out.sum(), tuple(leaves.values()))
    for name, g, w in zip(leaves, got, want):
        assert g.shape == leaves[name].shape
        assert_close_rel(f"d{name}", g, w, RTOL[torch.float64])


def test_constant_b_with_wrong_shape_names_b():
    x = random_scan_inputs(2, 4, 6, 3, seed=15)
    with pytest.raises(ValueError, match="^B:"):
        pna_kernels.selective_scan_fn(x["u"], x["delta"], x["A"], torch.zeros(5, 3), x["C"])
