"""The custom ops and the public functions around them: opcheck, torch.compile, determinism, backend choice."""
from __future__ import annotations

import pytest
import torch

import pna_kernels
from pna_kernels.backends import AUTO_ORDER, available_backends, resolve_backend
from pna_kernels.testing import random_scan_inputs
from pna_kernels.validation import check_scan_inputs, check_state_update_inputs

CHUNK = 4


def canonical_scan_args(with_z: bool, requires_grad: bool) -> tuple:
    """Positional arguments of pna::selective_scan_fwd for a small float64 problem (L = 6: two chunks of 4)."""
    x = random_scan_inputs(2, 4, 6, 3, groups=2, dtype=torch.float64, seed=1, with_z=with_z)
    a = check_scan_inputs(**x, delta_softplus=True)
    tensors = [a.u, a.delta, a.A, a.B, a.C, a.D, a.z, a.delta_bias, a.halt_weight, a.halt_bias, a.initial_state]
    if requires_grad:
        tensors = [None if t is None else t.detach().requires_grad_(True) for t in tensors]
    return (*tensors, True, "reference", CHUNK)


@pytest.mark.parametrize("with_z", [True, False])
def test_opcheck_scan_forward(with_z):
    torch.library.opcheck(torch.ops.pna.selective_scan_fwd, canonical_scan_args(with_z, requires_grad=True))


@pytest.mark.parametrize("with_z", [True, False])
def test_opcheck_scan_backward(with_z):
    args = canonical_scan_args(with_z, requires_grad=False)
    out, entropy, halt, last, checkpoints, sums = torch.ops.pna.selective_scan_fwd(*args)
    gen = torch.Generator().manual_seed(2)
    grads = tuple(torch.randn(t.shape, generator=gen, dtype=t.dtype) for t in (out, entropy, halt, last))
    inputs, (softplus, backend, chunk) = args[:11], args[11:]
    torch.library.opcheck(torch.ops.pna.selective_scan_bwd,
                          (*grads, *inputs, checkpoints, sums, softplus, backend, chunk))


@pytest.mark.parametrize("with_z", [True, False])
def test_opcheck_state_update(with_z):
    x = random_scan_inputs(2, 4, 1, 3, groups=2, dtype=torch.float32, seed=3, with_z=with_z)
    step = {k: None if v is None else (v[..., 0] if k in ("u", "delta", "z", "B", "C") else v) for k, v in x.items()}
    state = step["initial_state"].clone()
    a = check_state_update_inputs(state, step["u"], step["delta"], step["A"], step["B"], step["C"], step["D"],
                                  step["z"], step["delta_bias"], True, step["halt_weight"], step["halt_bias"])
    torch.library.opcheck(
        torch.ops.pna.selective_state_update,
        (state, a.x, a.dt, a.A, a.B, a.C, a.D, a.z, a.dt_bias, a.halt_weight, a.halt_bias, True, "reference"),
    )


def _scan_loss(u, delta, A, B, C, D, z, delta_bias, halt_weight, halt_bias, initial_state):
    res = pna_kernels.selective_scan(u, delta, A, B, C, D, z, delta_bias, True, True, halt_weight=halt_weight,
                                     halt_bias=halt_bias, initial_state=initial_state, backend="reference")
    return res.out.square().sum() + res.entropy.sum() + (res.halt_logits * 0.5).sum() + res.last_state.sum()


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


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_repeat_runs_are_bitwise_equal(backend):
    x = random_scan_inputs(2, 8, 40, 4, groups=2, seed=5)

    def run():
        leaves = {k: v.detach().clone().requires_grad_(True) for k, v in x.items()}
        res = pna_kernels.selective_scan(
            leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves["z"],
            leaves["delta_bias"], True, True, halt_weight=leaves["halt_weight"], halt_bias=leaves["halt_bias"],
            initial_state=leaves["initial_state"], backend=backend,
        )
        loss = res.out.sum() + res.entropy.sum() + res.halt_logits.sum() + res.last_state.sum()
        return (*res, *torch.autograd.grad(loss, tuple(leaves.values())))

    for first, second in zip(run(), run()):
        assert torch.equal(first, second)


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
    assert pna_kernels.ScanOutput._fields == ("out", "entropy", "halt_logits", "last_state")
    assert with_last.out.shape == (2, 4, 5) and with_last.out.dtype == torch.float32
    assert with_last.entropy.shape == (2, 5) and with_last.halt_logits.shape == (2, 5)
    assert with_last.last_state.shape == (2, 4, 3)
    assert without.last_state is None
    assert torch.equal(without.out, with_last.out)
    assert torch.equal(with_last.halt_logits, torch.zeros_like(with_last.halt_logits))


def test_float64_inputs_give_float64_results():
    x = random_scan_inputs(1, 2, 3, 2, dtype=torch.float64, seed=7)
    res = pna_kernels.selective_scan(x["u"], x["delta"], x["A"], x["B"], x["C"], return_last_state=True,
                                     backend="torch")
    assert {t.dtype for t in res} == {torch.float64}
