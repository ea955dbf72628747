"""The "cpu" backend (C++/OpenMP kernels in csrc/cpu): what is specific to it, namely its raw entry points, its
build (locks left by killed builds, a broken compiler) and supports(). Its parity with the float64 oracle (every
output and gradient, decode step, NaN entropy, bitwise equality for any thread count) is in test_backends.py.

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

from pna_kernels import cpu, jit
from pna_kernels.backends import resolve_backend
from pna_kernels.contract import ScanCotangents
from pna_kernels.testing import (
    RTOL, ScanCase, assert_bitwise_equal, assert_kernels_match_oracle, run_kernels, scan_args, scan_cotangents,
)

# Without any C++ compiler the backend cannot exist; with one, a failing build is a test failure, not a skip.
pytestmark = pytest.mark.skipif(shutil.which(os.environ.get("CXX", "c++")) is None, reason="no C++ compiler")


def test_raw_entry_points_name_bad_arguments():
    args = scan_args(ScanCase(1, 4, 10, 4).inputs(), True, cpu.CHUNK_SIZE)
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


# The backward splits its work two ways by shape (csrc/cpu/scan_backward.cpp, kMinGroupItems = 8): single channel
# blocks with dB/dC partials summed afterwards when batch * groups < 8, whole (batch row, group) pairs adding into
# dB/dC directly from 8 on. test_backends.py's parity cases are all below 8.
WORK_SPLITS = {
    "block-items": ScanCase(2, 24, 20, 16, 2),
    "whole-group-items": ScanCase(4, 34, 21, 4, 2),  # 8 pairs of 17 channels: two blocks each, one padded
}


@pytest.mark.parametrize("case", WORK_SPLITS.values(), ids=WORK_SPLITS.keys())
def test_both_backward_work_splits_match_oracle_for_any_thread_count(case):
    args = scan_args(case.inputs(torch.float32, seed=3), True, cpu.CHUNK_SIZE)
    assert_kernels_match_oracle(cpu.scan_forward, cpu.scan_backward, args, RTOL[torch.float32])
    cot = scan_cotangents(args)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        both = run_kernels(cpu.scan_forward, cpu.scan_backward, args, cot)
        torch.set_num_threads(1)
        single = run_kernels(cpu.scan_forward, cpu.scan_backward, args, cot)
    finally:
        torch.set_num_threads(threads)
    assert_bitwise_equal(single, both)

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
