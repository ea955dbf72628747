"""The forward-side kernel options (pna_kernels/cuda_options.py: plain, lanes_per_channel, precompute_gates,
fast_log2, parallel_combine) under host emulation (pna_kernels/cuda_emulation.py): forward and every gradient
against the float64 oracle through the backend contract, at shapes that stress each option, with every output
NaN-poisoned, the shared memory NaN-poisoned before every block and the blocks run in a shuffled order; plus an
nvcc -Werror compile of the variants for sm_90, so one that does not build for the GPU fails here.

Options that do not interact share one build (an emulated build takes tens of seconds)."""
from __future__ import annotations

import pytest
import torch

from pna_kernels.cuda_emulation import emulated_library
from pna_kernels.cuda_options import DEFAULT
from pna_kernels.testing import (
    RTOL, ScanCase, assert_bitwise_equal, run_kernels, scan_args, scan_cotangents,
)

SEED_VARIABLE = "PNA_CUDA_EMULATION_SEED"


@pytest.mark.parametrize("options", [DEFAULT], ids=lambda o: o.name())
def test_block_order_does_not_change_results(options, monkeypatch):
    """The emulation runs the blocks in another order for another seed; every reduction is in a fixed order, so
    the forward and the gradients are bitwise the same (N 4 at 80 channels: several blocks per group)."""
    library = emulated_library(options)
    args = scan_args(ScanCase(2, 80, 37, 4, 2).inputs(), True, options.chunk)
    cot = scan_cotangents(args)
    runs = []
    for seed in ("1", "2"):
        monkeypatch.setenv(SEED_VARIABLE, seed)
        runs.append(run_kernels(library.scan_forward, library.scan_backward, args, cot))
    assert_bitwise_equal(*runs)
