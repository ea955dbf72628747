"""The CUDA backend's sources without a GPU: every csrc/cuda/*.cu compiles with nvcc for sm_80 and sm_90 with
warnings as errors, nvcc alone builds them into the shared library the backend loads (pna_kernels/cuda.py), which
loads with ctypes and reports a launch without a GPU as an error, and the kernels themselves run under
host emulation (pna_kernels/cuda_emulation.py) through the same ctypes binding as the GPU build (cuda_abi.py) and
match the float64 oracle through the backend contract, forward (the channel mean included) and every gradient,
with every output and scratch buffer NaN-poisoned first.
nvcc missing is a failure, not a skip: CI has it (the emulation also needs the toolkit's cuda_fp16/bf16 headers)."""
from __future__ import annotations

import ctypes
import json
import subprocess
import time
from pathlib import Path

import pytest
import torch

from pna_kernels import cuda as cuda_backend
from pna_kernels.cuda_abi import C_STRUCTS, KernelLibrary
from pna_kernels.cuda_emulation import emulated_library
from pna_kernels.cuda_options import DEFAULT
from pna_kernels.testing import (
    RTOL, assert_kernel_step_matches_oracle, assert_kernels_match_oracle, assert_non_finite_state_gives_nan_entropy,
    ScanCase, scan_args, state_update_args,
)

ARCHS = ("80", "90")


def nvcc() -> str:
    """The nvcc the extension build would use; fails the test when there is none."""
    path = cuda_backend.find_nvcc()
    assert path is not None, "nvcc not found: set CUDA_HOME or put nvcc on PATH (CI installs the CUDA toolkit)"
    return path


def run(cmd: list[str]) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}"


def assert_struct_mirrors_match(lib: KernelLibrary) -> None:
    """KernelLibrary checks every ctypes mirror against the library's sizeof when it loads; check it did."""
    sizes = (ctypes.c_int * len(C_STRUCTS))()
    assert lib.library.pna_cuda_struct_sizes(sizes, len(C_STRUCTS)) == len(C_STRUCTS)
    assert [ctypes.sizeof(s) for s in C_STRUCTS.values()] == list(sizes)


def test_every_cuda_source_is_compiled():
    names = {p.name for p in cuda_backend.kernel_sources()}
    assert {"scan_forward.cu", "scan_backward.cu", "state_update.cu", "combine_sums.cu"} <= names
    assert not list(cuda_backend.SOURCE_DIR.glob("*.cpp"))  # no torch binding: the library is nvcc's alone


@pytest.mark.parametrize("source", [p.name for p in cuda_backend.kernel_sources()])
def test_kernel_compiles(source, tmp_path):
    """One nvcc call per file for every architecture in ARCHS (--threads 0: the architectures in parallel)."""
    run([nvcc(), "-c", "-O3", "-std=c++17", *cuda_backend.DEFINES, *cuda_backend.gencode_flags(ARCHS),
         "--threads", "0", "-Werror", "all-warnings", "-Xcompiler", "-Wall,-Wextra,-Werror",
         "-o", str(tmp_path / "kernel.o"), str(cuda_backend.SOURCE_DIR / source)])


def test_the_limits_come_from_python(tmp_path):
    """The kernels' chunk size and largest N are cuda_options.py's, passed as -D flags: a compile without them
    stops with a message saying so (no number mirrored by hand in the sources)."""
    done = subprocess.run([nvcc(), "-E", "-std=c++17", str(cuda_backend.SOURCE_DIR / "combine_sums.cu"),
                           "-o", str(tmp_path / "out.ii")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "PNA_CUDA_CHUNK" in done.stderr
    assert f"-DPNA_CUDA_CHUNK={cuda_backend.CHUNK_SIZE}" in cuda_backend.DEFINES


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    """The real library: nvcc alone builds every csrc/cuda/*.cu into one shared object for sm_80 and sm_90 (what a
    prebuilt copy holds), in a fresh cache folder. Its build time is printed (pytest -s) and in its manifest."""
    start = time.monotonic()
    path = cuda_backend.build(DEFAULT, ARCHS, tmp_path_factory.mktemp("pna-cuda-cache"), nvcc=nvcc())
    print(f"\nnvcc build of {path.name}: {time.monotonic() - start:.1f} s")
    return path


def test_nvcc_library_loads_with_ctypes(built):
    """The library nvcc built loads with ctypes behind cuda_abi.KernelLibrary, whose struct-size check passes."""
    lib = cuda_backend.open_library(built, DEFAULT)
    assert_struct_mirrors_match(lib)
    assert lib.num_dblocks(1536, 1, 16) >= 1
    manifest = json.loads(built.with_suffix(".json").read_text())
    assert manifest["archs"] == list(ARCHS) and manifest["nvcc"] == cuda_backend.nvcc_version(nvcc())


def test_nvcc_library_is_found_in_its_cache(built):
    assert cuda_backend.find_cached(DEFAULT, (9, 0), ("90",), built.parent) == built
    assert cuda_backend.find_cached(DEFAULT, (8, 0), ("80",), built.parent) == built
    mtime = built.stat().st_mtime_ns
    assert cuda_backend.build(DEFAULT, ARCHS, built.parent, nvcc=nvcc()) == built
    assert built.stat().st_mtime_ns == mtime  # same inputs: not rebuilt


@pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without a GPU (this one would run the launch)")
def test_launch_without_a_gpu_is_a_runtime_error(built):
    """No GPU (no driver): the launcher returns the CUDA runtime's error, raised as a RuntimeError, no crash."""
    lib = cuda_backend.open_library(built, DEFAULT)
    args = scan_args(ScanCase(1, 4, 5, 4, with_z=False).inputs(), True, cuda_backend.CHUNK_SIZE)
    with pytest.raises(RuntimeError, match="pna_cuda_scan_forward failed: .*(CUDA|driver|device)"):
        lib.scan_forward(args)


@pytest.fixture(scope="module")
def emulated() -> KernelLibrary:
    """The csrc/cuda kernels built for the host CPU with the backend's options (cached), behind cuda_abi."""
    return emulated_library(DEFAULT)


def test_struct_mirrors_match_the_launchers(emulated):
    assert_struct_mirrors_match(emulated)


EMULATED_SCANS = {  # the sizes the CUDA layout cares about (csrc/cuda/scan_common.cuh), far above the Triton ones
    "N16-2groups-no-mean": (ScanCase(2, 6, 37, 16, 2, with_z=False, with_init=False, softplus=False,
                                     with_channel_mean=False), torch.float32),
    "N4-80ch": (ScanCase(1, 80, 150, 4, 2, with_init=False), torch.float32),
    "N64-short": (ScanCase(2, 3, 5, 64, softplus=False), torch.float32),
    "N64-100steps": (ScanCase(1, 6, 100, 64, 2), torch.float32),
    "N256": (ScanCase(1, 6, 37, 256, 2, with_z=False), torch.float32),
    "N1-ungrouped": (ScanCase(1, 7, 20, 1, grouped=False), torch.float32),
    "N100": (ScanCase(1, 5, 17, 100, softplus=False), torch.float32),
    "N128-3groups": (ScanCase(1, 9, 19, 128, 3), torch.float32),
    "bf16": (ScanCase(2, 6, 37, 16, 2), torch.bfloat16),
    "fp16-N256": (ScanCase(1, 6, 21, 256, with_z=False, softplus=False), torch.float16),
}


@pytest.mark.parametrize("case,dtype", EMULATED_SCANS.values(), ids=EMULATED_SCANS.keys())
def test_emulated_kernels_match_oracle(emulated, case, dtype):
    args = scan_args(case.inputs(dtype), case.softplus, cuda_backend.CHUNK_SIZE, case.with_channel_mean)
    assert_kernels_match_oracle(emulated.scan_forward,
                                emulated.scan_backward, args, RTOL[dtype])


@pytest.mark.parametrize("case,dtype", [
    (ScanCase(2, 6, 1, 16, 2), torch.float32), (ScanCase(3, 40, 1, 4, with_z=False, softplus=False), torch.float32),
    (ScanCase(1, 5, 1, 256), torch.float32), (ScanCase(2, 9, 1, 100, 3, softplus=False), torch.bfloat16)],
    ids=["N16-2groups", "N4-40ch-no-softplus", "N256", "bf16-N100-3groups"])
def test_emulated_state_update_matches_oracle(emulated, case, dtype):
    assert_kernel_step_matches_oracle(emulated.state_update,
                                      state_update_args(case.inputs(dtype), 0, case.softplus), RTOL[dtype])


@pytest.mark.parametrize("value", [float("nan"), 1e30], ids=["nan", "overflow"])
def test_emulated_non_finite_state_gives_nan_entropy(emulated, value):
    """A NaN state, or one whose energy h^2 overflows float32, gives NaN entropy (never 0 or another number), in
    the scan and in the decode step; the other batch row is unaffected."""
    assert_non_finite_state_gives_nan_entropy(emulated.scan_forward,
                                              emulated.state_update,
                                              ScanCase(2, 4, 3, 4).inputs(), cuda_backend.CHUNK_SIZE, value)


def test_kernel_options_name_their_build():
    """Every option reaches the compiler as a -D flag; the defaults are the backend's build."""
    from pna_kernels.cuda_options import KernelOptions
    assert DEFAULT.name() == "default" and cuda_backend.DEFINES == DEFAULT.defines()
    opts = KernelOptions(chunk=64, max_state=64, fast_log2=True)
    assert opts.name() == "chunk64-max_state64-fast_log2"
    assert {"-DPNA_CUDA_CHUNK=64", "-DPNA_CUDA_MAX_STATE=64", "-DPNA_CUDA_FAST_LOG2=1", "-DPNA_CUDA_PLAIN=0"} \
        <= set(opts.defines())


@pytest.mark.parametrize("fields,argument", [
    ({"chunk": 24}, "chunk"), ({"chunk": 64}, "max_state"), ({"lanes_per_channel": 6}, "lanes_per_channel"),
    ({"lanes_per_channel": 4}, "lanes_per_channel"), ({"fast_log2": 1}, "fast_log2"),
    ({"dbdc_reduction": "atomics"}, "dbdc_reduction")], ids=["chunk", "long-chunk-N256", "lanes", "lanes-too-few",
                                                              "not-bool", "reduction"])
def test_kernel_options_reject_bad_values(fields, argument):
    from pna_kernels.cuda_options import KernelOptions
    with pytest.raises(ValueError, match=f"^{argument}:"):
        KernelOptions(**fields)
