"""The backward-side kernel options (pna_kernels/cuda_options.py: chunk 32 / 64, reuse_decay, dbdc_reduction
"wide_blocks", plain) on the CPU: each build compiles for sm_90 with warnings as errors, and its host emulation
(pna_kernels/cuda_emulation.py, every output and scratch buffer NaN-poisoned) matches the float64 oracle through
the backend contract, forward and every gradient, at shapes that stress the option: N 1 to 256 where the build
allows it, 1-3 groups, L not a multiple of the chunk, a group's last wide block with spare sub-blocks, bf16.

Four builds cover the options (those that do not interact share one): chunk 32 with reuse_decay (every N <= 64
reuses its decays) and wide_blocks; chunk 64 with reuse_decay (reused for N <= 32, exponentiated twice at N 64)
and the per-block partials; plain with wide_blocks at chunk 16 (N up to 256); reuse_decay at chunk 16 (reused up
to N 128)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from test_cuda_compile import nvcc, run
from test_cuda_options_forward import SEED_VARIABLE

from pna_kernels import cuda as cuda_backend
from pna_kernels.contract import ScanArgs
from pna_kernels.cuda_emulation import emulated_library
from pna_kernels.cuda_options import KernelOptions
from pna_kernels.testing import (
    RTOL, assert_bitwise_equal, assert_close_rel, assert_kernels_match_oracle, kernel_oracle, run_kernels, ScanCase,
    scan_args, scan_cotangents,
)

CHUNK32 = KernelOptions(chunk=32, max_state=64, reuse_decay=True, dbdc_reduction="wide_blocks")
CHUNK64 = KernelOptions(chunk=64, max_state=64, reuse_decay=True)
PLAIN = KernelOptions(plain=True, dbdc_reduction="wide_blocks")
REUSE16 = KernelOptions(reuse_decay=True)
BUILDS = (CHUNK32, CHUNK64, PLAIN, REUSE16)

# Shapes for every build (N <= 64: the long chunks' limit); L 100 leaves a partial last chunk at 16, 32 and 64.
COMMON_CASES = {
    "N1-ungrouped": (ScanCase(1, 7, 100, 1, grouped=False), torch.float32),
    "N4-80ch-2groups": (ScanCase(1, 80, 75, 4, 2, with_init=False), torch.float32),
    # 40 channels a group at N 16 are 5 channel blocks: wide blocks of 4 leave 3 spare sub-blocks in the last one
    "N16-3groups-spare-subblocks": (ScanCase(1, 120, 40, 16, 3), torch.float32),
    "N64-2groups-bf16": (ScanCase(1, 6, 100, 64, 2), torch.bfloat16),
    "N64-no-softplus-no-mean": (ScanCase(2, 3, 37, 64, softplus=False, with_channel_mean=False), torch.float32),
}
# Above the long chunks' limit: the chunk-16 builds only.
WIDE_N_CASES = {
    "N100-3groups": (ScanCase(1, 9, 19, 100, 3, softplus=False), torch.float32),
    "N256-fp16": (ScanCase(1, 6, 21, 256, 2, with_z=False), torch.float16),
}
# reuse_decay at chunk 16: 4 entries a lane (N 100, 128) reuse their decays, 8 (N 256) exponentiate twice.
REUSE16_CASES = {
    "N16-2groups": (ScanCase(2, 6, 37, 16, 2), torch.float32),
    "N128-bf16": (ScanCase(1, 9, 21, 128, 3), torch.bfloat16),
    **WIDE_N_CASES,
}


@pytest.mark.parametrize("options", BUILDS, ids=KernelOptions.name)
def test_option_build_compiles_for_sm90(options, tmp_path):
    """The backward of each build through nvcc for sm_90, warnings as errors (tests/test_cuda_compile.py compiles
    the default build for every architecture)."""
    run([nvcc(), "-c", "-O3", "-std=c++17", *options.defines(), "-gencode", "arch=compute_90,code=sm_90",
         "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror", "-o", str(tmp_path / "kernel.o"),
         str(cuda_backend.SOURCE_DIR / "scan_backward.cu")])


def _cases(options: KernelOptions, cases: dict | None = None):
    cases = cases or {**COMMON_CASES, **(WIDE_N_CASES if options.chunk == 16 else {})}
    return [pytest.param(options, case, dtype, id=f"{options.name()}-{name}")
            for name, (case, dtype) in cases.items()]


def _args(options: KernelOptions, case: ScanCase, dtype: torch.dtype, with_channel_mean: bool) -> ScanArgs:
    return scan_args(case.inputs(dtype), case.softplus, options.chunk, with_channel_mean)


@pytest.mark.parametrize("options,case,dtype", [*_cases(CHUNK32), *_cases(CHUNK64), *_cases(REUSE16, REUSE16_CASES)])
def test_long_chunk_and_reuse_decay_match_oracle(options, case, dtype):
    """chunk 32 / 64, reuse_decay and wide_blocks: forward (the checkpoints the forward writes every `chunk` steps
    included) and every gradient, the channel mean and its cotangent included where the case asks for it."""
    args = _args(options, case, dtype, case.with_channel_mean)
    library = emulated_library(options)
    got = assert_kernels_match_oracle(library.scan_forward, library.scan_backward, args, RTOL[dtype])
    want, _ = kernel_oracle(args, scan_cotangents(args))
    assert_close_rel("checkpoints", got.checkpoints, want.checkpoints, RTOL[dtype])


def _nan_like(t: torch.Tensor) -> torch.Tensor:
    return torch.full_like(t, float("nan"))


@pytest.mark.parametrize("options,case,dtype", _cases(PLAIN))
def test_plain_matches_oracle_without_entropy_and_halt(options, case, dtype):
    """plain: out and last_state as the oracle's; the backward, given NaN for every cotangent and saved sum that it
    must not read (grad_entropy, grad_halt, the entropy sums), gives the oracle's gradients for grad_entropy =
    grad_halt = 0 (halt_weight's then 0). halt_bias is left out: its gradient is the caller's sum of grad_halt."""
    library = emulated_library(options)
    args = _args(options, case, dtype, with_channel_mean=False)
    cot = scan_cotangents(args)
    cot_plain = dataclasses.replace(cot, grad_entropy=torch.zeros_like(cot.grad_entropy),
                                    grad_halt=torch.zeros_like(cot.grad_halt))
    want, want_grads = kernel_oracle(args, cot_plain)
    got = library.scan_forward(args)
    for name in ("out", "last_state"):
        assert_close_rel(name, getattr(got, name), getattr(want, name), RTOL[dtype])
    saved = dataclasses.replace(got.saved, entropy_sums=_nan_like(got.entropy_sums))
    grads = library.scan_backward(args, saved, dataclasses.replace(cot, grad_entropy=_nan_like(cot.grad_entropy),
                                                                   grad_halt=_nan_like(cot.grad_halt)))
    for f in dataclasses.fields(ScanArgs):
        value = getattr(args, f.name)
        if isinstance(value, torch.Tensor) and f.name != "halt_bias":
            assert getattr(grads, f.name).dtype == value.dtype, f"d{f.name}: dtype"
            assert_close_rel(f"d{f.name}", getattr(grads, f.name), getattr(want_grads, f.name), RTOL[dtype])


@pytest.mark.parametrize("options", [CHUNK32, PLAIN], ids=KernelOptions.name)
def test_wide_blocks_do_not_depend_on_the_block_order(options, monkeypatch):
    """The emulation runs the blocks in another order for another seed: the wide reduction's sums are in a fixed
    order (no atomics), so the gradients are bitwise the same (plain leaves NaN in some forward outputs)."""
    library = emulated_library(options)
    args = _args(options, *COMMON_CASES["N16-3groups-spare-subblocks"], with_channel_mean=False)
    cot = scan_cotangents(args)
    runs = []
    for seed in ("1", "2"):
        monkeypatch.setenv(SEED_VARIABLE, seed)
        runs.append(run_kernels(library.scan_forward, library.scan_backward, args, cot)[1:])
    assert_bitwise_equal(*runs)


@pytest.mark.parametrize("dim,groups,dstate,factor", [
    (1536, 1, 16, 4), (1536, 3, 64, 2), (1536, 2, 128, 1), (80, 2, 4, 2), (120, 3, 16, 5 / 2)],
    ids=["realistic-N16", "N64-3groups", "N128", "one-wide-block-a-group", "spare-subblocks"])
def test_wide_blocks_shrink_the_dbdc_slabs(dim, groups, dstate, factor):
    """wide_blocks at chunk 16: the (N, L) slabs of dB and dC per batch row are the channel blocks / `factor` (4
    sub-blocks at N 16, 2 at N 64 where 4 would pass the shared-memory cap, 1 at N 128; a group's last wide block
    may hold spare sub-blocks); "partials" keeps one slab per channel block."""
    wide, partials = emulated_library(PLAIN), emulated_library(CHUNK64)
    blocks = wide.num_dblocks(dim, groups, dstate)
    assert wide.dbdc_slabs(dim, groups, dstate) * factor == blocks
    assert partials.dbdc_slabs(dim, groups, dstate) == blocks
