"""The "cpu" backend (C++/OpenMP kernels in csrc/cpu): its module functions against the float64 oracle through the
backend contract (every output, the channel mean included, and every gradient), its raw entry points, its build
(locks left by killed builds, a broken compiler) and supports().

The first test to run builds the extension (about half a minute on two cores, then cached on disk).
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import textwrap
from types import SimpleNamespace

import pytest
import torch

from native_parity import (
    assert_bitwise_equal, assert_decode_loop_matches_scan, assert_scan_matches_oracle,
    assert_state_update_matches_oracle, run_scan, scan_args, scan_cotangents, scan_inputs, state_update_args,
    with_non_finite_state,
)
from pna_kernels import cpu, jit, reference
from pna_kernels.backends import resolve_backend
from pna_kernels.contract import ScanCotangents, tensor_fields
from pna_kernels.reference import selective_scan_ref
from pna_kernels.testing import RTOL, assert_close_rel, random_scan_inputs

# Without any C++ compiler the backend cannot exist; with one, a failing build is a test failure, not a skip.
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler")


def make_args(batch: int, dim: int, length: int, dstate: int, groups: int, dtype: torch.dtype, *,
              with_z: bool = True, with_init: bool = True, softplus: bool = True, with_channel_mean: bool = True,
              chunk_size: int = cpu.CHUNK_SIZE):
    """Contract inputs from scan_inputs (grouped B/C)."""
    x = scan_inputs(batch, dim, length, dstate, groups, True, with_z, with_init, softplus, dtype)
    return scan_args(x, softplus, chunk_size, with_channel_mean)


SHAPES = {
    # batch, D, L, N, groups, z, initial_state, softplus, channel mean
    "3chunks-blocks16+16+5": (2, 37, 150, 16, 1, True, True, True, True),
    "17-per-group-no-softplus": (2, 34, 100, 4, 2, False, True, False, True),
    "one-chunk-3-per-group": (3, 6, 64, 16, 2, True, False, True, True),
    "into-third-chunk-no-mean": (1, 7, 129, 4, 1, False, False, True, False),
    "single-step": (1, 5, 1, 4, 1, True, True, False, True),
}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_matches_oracle(dtype, shape):
    batch, dim, length, dstate, groups, with_z, with_init, softplus, with_mean = shape
    args = make_args(batch, dim, length, dstate, groups, dtype, with_z=with_z, with_init=with_init,
                     softplus=softplus, with_channel_mean=with_mean)
    assert_scan_matches_oracle(cpu.scan_forward, cpu.scan_backward, args, RTOL[dtype])


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=str)
def test_half_precision_inputs_are_upcast(dtype):
    assert_scan_matches_oracle(cpu.scan_forward, cpu.scan_backward, make_args(2, 9, 70, 4, 1, dtype), RTOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_zero_states_match_oracle(dtype):
    """All-zero states (S1 = 0, entropy 0) for the first 66 steps, across a chunk boundary, and a state entry that
    stays exactly zero throughout (0 log 0 = 0 in S2 and in the entropy gradient)."""
    args = make_args(2, 5, 70, 4, 1, dtype, with_init=False)
    args.u[..., :66] = 0
    args.B[:, :, 0] = 0
    assert_scan_matches_oracle(cpu.scan_forward, cpu.scan_backward, args, RTOL[dtype])


def test_checkpoints_and_chunk_size():
    """Checkpoints are the oracle's states before every chunk, and the backward does not depend on the chunk."""
    args5 = make_args(2, 5, 23, 4, 1, torch.float64, chunk_size=5)
    fwd5 = cpu.scan_forward(args5)
    states = selective_scan_ref(args5.u, args5.delta, args5.A, args5.B, args5.C, args5.D, args5.z, args5.delta_bias,
                                True, args5.halt_weight, args5.halt_bias, args5.initial_state)[4]
    assert_close_rel("checkpoints", fwd5.checkpoints,
                     reference.checkpoints_from_states(args5.initial_state, states, 5), RTOL[torch.float64])
    cot = scan_cotangents(args5)
    args64 = dataclasses.replace(args5, chunk_size=64)
    grads5 = cpu.scan_backward(args5, fwd5.saved, cot)
    grads64 = cpu.scan_backward(args64, cpu.scan_forward(args64).saved, cot)
    for name in tensor_fields(type(args5)):
        assert_close_rel(f"grad {name}", getattr(grads5, name), getattr(grads64, name), RTOL[torch.float64])


@pytest.mark.parametrize("value", [float("nan"), 1e30], ids=["nan", "overflow"])
def test_non_finite_state_gives_nan_entropy(value):
    """A NaN state, or one whose energy h^2 overflows float32, gives NaN entropy (never 0 or another number), in
    the scan and in the decode step; the other batch row is unaffected."""
    args = with_non_finite_state(make_args(2, 5, 3, 4, 1, torch.float32), value)
    entropy = cpu.scan_forward(args).entropy
    assert torch.isnan(entropy[0, 0]) and torch.isfinite(entropy[1]).all()
    step = with_non_finite_state(state_update_args(random_scan_inputs(2, 5, 1, 4), 0, True), value)
    entropy = cpu.state_update(step).entropy
    assert torch.isnan(entropy[0]) and torch.isfinite(entropy[1])


def test_raw_entry_points_name_bad_arguments():
    args = make_args(1, 4, 10, 4, 1, torch.float32)
    bad_dtype = dataclasses.replace(args, halt_weight=args.halt_weight.double())
    with pytest.raises(ValueError, match="halt_weight"):
        cpu.extension().scan_forward(bad_dtype, 1)
    strided = dataclasses.replace(args, u=args.u.transpose(1, 2).contiguous().transpose(1, 2))
    with pytest.raises(ValueError, match="u: must be contiguous"):
        cpu.extension().scan_forward(strided, 1)
    cot = scan_cotangents(args)
    wrong_mean = ScanCotangents(**{**{f.name: getattr(cot, f.name).float() for f in dataclasses.fields(cot)},
                                   "grad_channel_mean": torch.zeros(0)})
    with pytest.raises(ValueError, match="grad_channel_mean: expected shape"):
        cpu.extension().scan_backward(args, cpu.scan_forward(args).saved, wrong_mean, 1)
    missing_field = SimpleNamespace(**{k: v for k, v in vars(args).items() if k != "with_channel_mean"})
    with pytest.raises(AttributeError, match="with_channel_mean"):
        cpu.extension().scan_forward(missing_field, 1)


def test_bitwise_deterministic_for_any_thread_count():
    args = make_args(2, 40, 90, 16, 2, torch.float32)
    cot = scan_cotangents(args)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        first, second = (run_scan(cpu.scan_forward, cpu.scan_backward, args, cot) for _ in range(2))
        torch.set_num_threads(1)
        single = run_scan(cpu.scan_forward, cpu.scan_backward, args, cot)
    finally:
        torch.set_num_threads(threads)
    assert_bitwise_equal(second, first)
    assert_bitwise_equal(single, first)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
@pytest.mark.parametrize("groups,with_z,softplus", [(1, True, True), (2, False, False), (2, True, True)],
                         ids=["gate", "2-groups-no-softplus", "2-groups-gate"])
def test_state_update_matches_oracle(dtype, groups, with_z, softplus):
    x = scan_inputs(3, 10, 2, 16, groups, True, with_z, True, softplus, dtype)
    assert_state_update_matches_oracle(cpu.state_update, state_update_args(x, 1, softplus), RTOL[dtype])


def test_decode_loop_reproduces_the_scan():
    x = scan_inputs(2, 6, 9, 4, 2, True, True, True, True, torch.float64)
    assert_decode_loop_matches_scan(cpu.scan_forward, cpu.state_update, x, cpu.CHUNK_SIZE, RTOL[torch.float64])


def test_supports_and_auto_choice(monkeypatch):
    monkeypatch.delenv("PNA_BACKEND", raising=False)
    cpu_device = torch.device("cpu")
    assert cpu.supports(cpu_device, torch.bfloat16, 256) is None
    assert "N <= 256" in cpu.supports(cpu_device, torch.float32, 257)
    assert "CPU tensors only" in cpu.supports(torch.device("meta"), torch.float32, 16)
    assert "floating dtype" in cpu.supports(cpu_device, torch.int32, 16)
    assert resolve_backend("auto", cpu_device, torch.float32, 16) == "cpu"


def test_build_failure_is_a_sentence_then_a_runtime_error(monkeypatch):
    def failing_load(*args, **kwargs):
        raise RuntimeError("Error building extension 'pna_cpu_kernels':\nscan_forward.cpp:1: error: no compiler")

    monkeypatch.setattr(jit, "load", failing_load)
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


def run_python(code: str, env: dict[str, str], timeout: float = 240) -> subprocess.CompletedProcess:
    """`code` in a fresh interpreter with `env` added, from the repository root; a hang fails the test."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    full_env = {**os.environ, "PYTHONPATH": root, **env}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=full_env, capture_output=True,
                          text=True, timeout=timeout, cwd=root)


def test_broken_compiler_makes_cpu_unsupported_and_auto_falls_back(tmp_path):
    done = run_python("""
        import torch
        from pna_kernels import cpu
        from pna_kernels.backends import resolve_backend
        print(cpu.supports(torch.device("cpu"), torch.float32, 16))
        print(resolve_backend("auto", torch.device("cpu"), torch.float32, 16))
    """, {"CXX": "/bin/false", "TORCH_EXTENSIONS_DIR": str(tmp_path), "PNA_BACKEND": "auto"})
    assert done.returncode == 0, done.stderr
    reason, chosen = done.stdout.strip().splitlines()[-2:]
    assert reason.startswith("building the C++/OpenMP kernels") and "/bin/false" in reason, reason
    assert chosen == "torch"


PROBE = "int pna_lock_probe() { return 1; }\n"


def test_a_lock_left_by_a_killed_build_is_cleared(tmp_path):
    """torch's `<build dir>/lock`, left by a build killed midway, no longer blocks the next build forever."""
    (tmp_path / "probe.cpp").write_text(PROBE)
    lock = tmp_path / "ext" / "pna_lock_probe" / jit.TORCH_LOCK_NAME
    lock.parent.mkdir(parents=True)
    lock.touch()
    done = run_python(f"""
        from pna_kernels import jit
        jit.load("pna_lock_probe", [{str(tmp_path / 'probe.cpp')!r}], is_python_module=False)
        print("built")
    """, {"TORCH_EXTENSIONS_DIR": str(tmp_path / "ext")})
    assert done.returncode == 0 and done.stdout.strip().endswith("built"), done.stderr
    assert not lock.exists()


def test_a_live_build_is_waited_for_then_named(tmp_path, monkeypatch):
    """While another process builds (holds the guard), a second build waits, and past the limit fails with a
    message naming the guard file instead of waiting forever."""
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    directory = jit.build_directory("pna_lock_probe")
    with jit.exclusive_build(directory):
        with pytest.raises(jit.BuildLockTimeout, match=str(directory / jit.GUARD_NAME)):
            with jit.exclusive_build(directory, wait_seconds=0.5):
                pass
