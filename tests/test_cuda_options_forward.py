"""The forward-side kernel options (pna_kernels/cuda_options.py: plain, lanes_per_channel, precompute_gates,
fast_log2, parallel_combine, forward_timesteps) under host emulation (pna_kernels/cuda_emulation.py): forward and every gradient
against the float64 oracle through the backend contract, at shapes that stress each option, with every output
NaN-poisoned, the shared memory NaN-poisoned before every block and the blocks run in a shuffled order; plus an
nvcc -Werror compile of the variants for sm_90, so one that does not build for the GPU fails here.

Options that do not interact share one build (an emulated build takes tens of seconds)."""
from __future__ import annotations

import dataclasses

import pytest
import torch

from test_cuda_compile import nvcc, run

from pna_kernels import cuda as cuda_backend
from pna_kernels.contract import ScanArgs, tensor_fields
from pna_kernels.cuda_emulation import emulated_library
from pna_kernels.cuda_options import DEFAULT, KernelOptions
from pna_kernels.testing import (
    RTOL, ScanCase, assert_bitwise_equal, assert_close_rel, assert_kernel_step_matches_oracle,
    assert_kernels_match_oracle, assert_non_finite_state_gives_nan_entropy, kernel_oracle, run_kernels, scan_args,
    scan_cotangents, state_update_args,
)

SEED_VARIABLE = "PNA_CUDA_EMULATION_SEED"
BLOCK_THREADS = 128  # kThreads of csrc/cuda/scan_common.cuh


PLAIN = KernelOptions(plain=True)
PLAIN_CASES = {  # L never a multiple of the chunk; with_channel_mean off (plain computes none)
    "N1-ungrouped": (ScanCase(1, 7, 20, 1, grouped=False, with_channel_mean=False), torch.float32),
    "N4-80ch-2groups": (ScanCase(2, 80, 37, 4, 2, with_init=False, with_channel_mean=False), torch.float32),
    "N16-3groups": (ScanCase(1, 9, 41, 16, 3, softplus=False, with_channel_mean=False), torch.float32),
    "N64": (ScanCase(1, 6, 23, 64, 2, with_z=False, with_channel_mean=False), torch.float32),
    "N100": (ScanCase(1, 5, 17, 100, with_channel_mean=False), torch.float32),
    "bf16-N16": (ScanCase(2, 6, 37, 16, 2, with_channel_mean=False), torch.bfloat16),
}


@pytest.mark.parametrize("case,dtype", PLAIN_CASES.values(), ids=PLAIN_CASES.keys())
def test_plain_matches_oracle(case, dtype):
    """plain: out, last_state and the checkpoints match the oracle and entropy, halt_logits, entropy_sums are left
    unwritten (NaN from the poisoned buffers: the option really drops them); the gradients of out and last_state
    (grad_entropy = grad_halt = 0) match the oracle's."""
    library = emulated_library(PLAIN)
    args = scan_args(case.inputs(dtype), case.softplus, PLAIN.chunk, with_channel_mean=False)
    batch, _, length = args.u.shape
    zeros = torch.zeros(batch, length, dtype=torch.float64)
    cot = dataclasses.replace(scan_cotangents(args), grad_entropy=zeros, grad_halt=zeros)
    want, want_grads = kernel_oracle(args, cot)
    got = library.scan_forward(args)
    for name in ("out", "last_state", "checkpoints"):
        assert_close_rel(name, getattr(got, name), getattr(want, name), RTOL[dtype])
    for name in ("entropy", "halt_logits", "entropy_sums"):
        assert torch.isnan(getattr(got, name)).all(), f"{name}: plain wrote it"
    grads = library.scan_backward(args, got.saved, cot)
    for name in tensor_fields(ScanArgs):
        if getattr(args, name) is not None:
            assert_close_rel(f"d{name}", getattr(grads, name), getattr(want_grads, name), RTOL[dtype])


# Builds with a fixed lane count: 4 lanes (8 channels a warp, up to 8 entries a lane at N 32) and 16 (N 1 leaves 15
# lanes of a channel idle; N 100 and 128 give 8 entries a lane), each with the forward-side options that do not
# change the layout: silu(z) staged with the tile, the SFU log2 (std::log2 under emulation) and the tiled combine.
FORWARD_OPTIONS = {"precompute_gates": True, "fast_log2": True, "parallel_combine": True}
LANES4 = KernelOptions(lanes_per_channel=4, max_state=32, **FORWARD_OPTIONS)
LANES16 = KernelOptions(lanes_per_channel=16, max_state=128, **FORWARD_OPTIONS)
LANE_CASES = {  # L never a multiple of the chunk; D / G above the block's channels: several blocks per group
    "lanes4-N1": (LANES4, ScanCase(1, 7, 20, 1, grouped=False), torch.float32),
    "lanes4-N4-80ch-2groups": (LANES4, ScanCase(2, 80, 37, 4, 2, with_init=False), torch.float32),
    "lanes4-N4-20blocks": (LANES4, ScanCase(1, 640, 19, 4, 2, with_init=False), torch.float32),
    "lanes4-N16-3groups": (LANES4, ScanCase(1, 96, 19, 16, 3, softplus=False), torch.float32),
    "lanes4-N20": (LANES4, ScanCase(1, 40, 21, 20, with_z=False), torch.float32),
    "lanes4-N32-bf16": (LANES4, ScanCase(2, 36, 35, 32, 2), torch.bfloat16),
    "lanes16-N1-2groups": (LANES16, ScanCase(1, 20, 23, 1, 2), torch.float32),
    "lanes16-N16": (LANES16, ScanCase(2, 18, 37, 16, with_init=False), torch.float32),
    "lanes16-N64-3groups": (LANES16, ScanCase(1, 30, 17, 64, 3, softplus=False), torch.float32),
    "lanes16-N100": (LANES16, ScanCase(1, 10, 19, 100, with_z=False), torch.float32),
    "lanes16-N128-bf16": (LANES16, ScanCase(1, 12, 21, 128, 2), torch.bfloat16),
}


@pytest.mark.parametrize("options,case,dtype", LANE_CASES.values(), ids=LANE_CASES.keys())
def test_fixed_lanes_match_oracle(options, case, dtype):
    """Every kernel (forward, backward, decode step) on the build's fixed lane count: the forward with the channel
    mean and every gradient, then one decode step, against the float64 oracle; the layout has the build's
    128 / lanes channels a block."""
    library = emulated_library(options)
    per_group, channels = case.dim // case.groups, BLOCK_THREADS // options.lanes_per_channel
    assert library.num_dblocks(case.dim, case.groups, case.dstate) == case.groups * -(-per_group // channels)
    args = scan_args(case.inputs(dtype), case.softplus, options.chunk, case.with_channel_mean)
    assert_kernels_match_oracle(library.scan_forward, library.scan_backward, args, RTOL[dtype])
    assert_kernel_step_matches_oracle(library.state_update, state_update_args(case.inputs(dtype), 3, case.softplus),
                                      RTOL[dtype])


# The forward's second layout (a thread owns timesteps), with the options that touch its code; the backward and the
# decode step are the lane layout's and run on its checkpoints and sums. A pass is 128 * tpc / 4 steps (128 at
# N <= 4, 512 at N 16, 1024 at N > 16): L above it carries the state from one pass to the next.
TIMESTEPS = KernelOptions(forward_timesteps=True, precompute_gates=True, fast_log2=True)
TIMESTEP_CASES = {
    "N1-ungrouped": (ScanCase(1, 7, 20, 1, grouped=False), torch.float32),
    "N4-80ch-2groups-3passes": (ScanCase(2, 80, 300, 4, 2, with_init=False), torch.float32),
    "N16-3groups": (ScanCase(1, 9, 41, 16, 3, softplus=False), torch.float32),
    "N16-2passes": (ScanCase(1, 4, 530, 16, with_z=False), torch.float32),
    "N64-2passes": (ScanCase(1, 2, 1030, 64, softplus=False), torch.float32),
    "N64-no-mean": (ScanCase(2, 6, 37, 64, 2, with_channel_mean=False), torch.float32),
    "N100": (ScanCase(1, 5, 17, 100, softplus=False), torch.float32),
    "bf16-N16": (ScanCase(2, 6, 37, 16, 2), torch.bfloat16),
}


@pytest.mark.parametrize("case,dtype", TIMESTEP_CASES.values(), ids=TIMESTEP_CASES.keys())
def test_timestep_layout_matches_oracle(case, dtype):
    """The second forward layout: every output (the channel mean included) and, through its checkpoints and
    entropy sums, every gradient against the float64 oracle."""
    library = emulated_library(TIMESTEPS)
    args = scan_args(case.inputs(dtype), case.softplus, TIMESTEPS.chunk, case.with_channel_mean)
    assert_kernels_match_oracle(library.scan_forward, library.scan_backward, args, RTOL[dtype])


@pytest.mark.parametrize("options", [DEFAULT, LANES4, TIMESTEPS], ids=lambda o: o.name())
def test_block_order_does_not_change_results(options, monkeypatch):
    """The emulation runs the blocks in another order for another seed; every reduction is in a fixed order (the
    tiled combine's too), so the forward and the gradients are bitwise the same. N 4 at 320 channels in 2 groups:
    10 blocks a row, more than the combine's 8 slices."""
    library = emulated_library(options)
    args = scan_args(ScanCase(2, 320, 21, 4, 2).inputs(), True, options.chunk)
    cot = scan_cotangents(args)
    runs = []
    for seed in ("1", "2"):
        monkeypatch.setenv(SEED_VARIABLE, seed)
        runs.append(run_kernels(library.scan_forward, library.scan_backward, args, cot))
    assert_bitwise_equal(*runs)


@pytest.mark.parametrize("value", [float("nan"), 1e30], ids=["nan", "overflow"])
def test_non_finite_state_gives_nan_entropy(value):
    """With the SFU log2 and the tiled combine, a NaN or overflowing state still gives NaN entropy (scan and
    decode step), and the other batch row stays finite."""
    library = emulated_library(LANES4)
    assert_non_finite_state_gives_nan_entropy(library.scan_forward, library.state_update,
                                              ScanCase(2, 4, 3, 4).inputs(), LANES4.chunk, value)


@pytest.mark.parametrize("options", [PLAIN, LANES4, dataclasses.replace(TIMESTEPS, plain=True, parallel_combine=True)],
                         ids=lambda o: o.name())
def test_variant_compiles_for_sm90(options, tmp_path):
    """Every kernel file of the variant in one nvcc call for sm_90, warnings as errors (the defaults are compiled
    for sm_80 and sm_90 by tests/test_cuda_compile.py)."""
    run([nvcc(), "-c", "-O3", "-std=c++17", *options.defines(), "-gencode", "arch=compute_90,code=sm_90",
         "--threads", "0", "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror", "-odir", str(tmp_path),
         *map(str, cuda_backend.kernel_sources())])
