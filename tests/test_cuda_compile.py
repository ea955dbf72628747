"""The CUDA backend's sources without a GPU: every csrc/cuda/*.cu compiles with nvcc for sm_80 and sm_90 with
warnings as errors, the torch binding passes the host compiler (syntax only), and the kernels themselves run under
host emulation (csrc/cuda/host_emulation.h: one std::thread per CUDA thread, real barriers and warp exchanges) and
match the float64 oracle through the backend contract, forward (the channel mean included) and every gradient,
with every output and scratch buffer NaN-poisoned first.
nvcc missing is a failure, not a skip: CI has it (the emulation also needs the toolkit's cuda_fp16/bf16 headers)."""
from __future__ import annotations

import ctypes
import dataclasses
import math
import re
import shutil
import subprocess
import sysconfig

import pytest
import torch
from torch.utils import cpp_extension

from pna_kernels import cuda as cuda_backend
from pna_kernels.contract import (
    ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult,
)
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


def test_every_cuda_source_is_compiled_and_loaded():
    names = {p.name for p in cuda_backend.kernel_sources()}
    assert {"scan_forward.cu", "scan_backward.cu", "state_update.cu", "combine_sums.cu"} <= names
    assert (cuda_backend.SOURCE_DIR / cuda_backend.BINDINGS).is_file()


@pytest.mark.parametrize("source", [p.name for p in cuda_backend.kernel_sources()])
def test_kernel_compiles(source, tmp_path):
    """One nvcc call per file for every architecture in ARCHS (--threads 0: the architectures in parallel)."""
    archs = [flag for arch in ARCHS for flag in ("-gencode", f"arch=compute_{arch},code=sm_{arch}")]
    run([nvcc(), "-c", "-O3", "-std=c++17", *cuda_backend.DEFINES, *archs, "--threads", "0", "-Werror", "all-warnings",
         "-Xcompiler", "-Wall,-Wextra,-Werror", "-o", str(tmp_path / "kernel.o"),
         str(cuda_backend.SOURCE_DIR / source)])


def test_binding_syntax(tmp_path):
    """bindings.cpp against torch's headers and the CUDA toolkit's, with nvcc driving the host compiler (which adds
    the toolkit's include path). A CPU-only torch ships c10/cuda's headers but not the CMake-generated
    cuda_cmake_macros.h they include, so a one-line stand-in goes first on the path."""
    generated = tmp_path / "c10" / "cuda" / "impl"
    generated.mkdir(parents=True)
    (generated / "cuda_cmake_macros.h").write_text("#define C10_CUDA_BUILD_SHARED_LIBS\n")
    includes = [str(tmp_path), *cpp_extension.include_paths(), sysconfig.get_paths()["include"]]
    run([nvcc(), "-c", "-std=c++17", *cuda_backend.DEFINES, "-Xcompiler", "-fsyntax-only,-Wall,-Wextra,-Werror",
         f"-DTORCH_EXTENSION_NAME={cuda_backend.EXTENSION_NAME}",
         *(flag for path in includes for flag in ("-isystem", path)),
         str(cuda_backend.SOURCE_DIR / cuda_backend.BINDINGS), "-o", str(tmp_path / "bindings.o")])


def test_the_limits_come_from_python(tmp_path):
    """The kernels' chunk size and largest N are cuda.py's, passed as -D flags: a compile without them stops with
    a message saying so (no number mirrored by hand in the sources)."""
    done = subprocess.run([nvcc(), "-E", "-std=c++17", str(cuda_backend.SOURCE_DIR / "combine_sums.cu"),
                           "-o", str(tmp_path / "out.ii")], capture_output=True, text=True, timeout=300)
    assert done.returncode != 0 and "PNA_CUDA_CHUNK" in done.stderr
    assert f"-DPNA_CUDA_CHUNK={cuda_backend.CHUNK_SIZE}" in cuda_backend.NVCC_FLAGS


# ---------------------------------------------------------------------------------------------------------------
# The kernels run under host emulation, called through the launchers' structs (scan_kernels.h) the way
# csrc/cuda/bindings.cpp calls them: allocate, launch, add the per-block / per-row partial sums up in the same order.

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
LAUNCHERS = ("pna_cuda_scan_forward", "pna_cuda_scan_backward", "pna_cuda_state_update")


def c_struct(name: str, ints: tuple[str, ...], pointers: tuple[str, ...]) -> type[ctypes.Structure]:
    """A ctypes mirror of a struct of scan_kernels.h: `ints` int fields, then `pointers` pointer fields."""
    fields = [(n, ctypes.c_int) for n in ints] + [(n, ctypes.c_void_p) for n in pointers]
    return type(name, (ctypes.Structure,), {"_fields_": fields})


SCAN_POINTERS = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "halt_weight", "halt_bias", "initial_state")
# In the order scan_kernels.h declares them (pna_cuda_struct_sizes reports their sizes in that order).
C_STRUCTS = {
    "PnaScanArgs": c_struct("PnaScanArgs", ("dtype", "batch", "dim", "length", "dstate", "groups", "delta_softplus",
                                            "with_channel_mean"), SCAN_POINTERS),
    "PnaScanResult": c_struct("PnaScanResult", (), ("out", "entropy", "halt_logits", "last_state", "channel_mean",
                                                    "checkpoints", "entropy_sums", "partials", "channel_partials")),
    "PnaScanSaved": c_struct("PnaScanSaved", (), ("checkpoints", "entropy_sums")),
    "PnaScanCotangents": c_struct("PnaScanCotangents", (), ("grad_out", "grad_entropy", "grad_halt",
                                                            "grad_last_state", "grad_channel_mean")),
    "PnaScanGradParts": c_struct("PnaScanGradParts", (), ("u", "delta", "z", "A_rows", "B_blocks", "C_blocks",
                                                          "D_rows", "delta_bias_rows", "halt_weight_rows",
                                                          "initial_state")),
    "PnaStateUpdateArgs": c_struct("PnaStateUpdateArgs", ("dtype", "batch", "dim", "dstate", "groups", "dt_softplus"),
                                   ("state", "x", "dt", "A", "B", "C", "D", "z", "dt_bias", "halt_weight",
                                    "halt_bias")),
    "PnaStateUpdateResult": c_struct("PnaStateUpdateResult", (), ("y", "entropy", "halt_logits", "channel_mean",
                                                                  "partials", "channel_partials")),
}


def to_host_cpp(source: str) -> str:
    """Rewrite the CUDA-only syntax of a kernel file for host_emulation.h."""
    source = source.replace("extern __shared__ float smem[];", "float* smem = emu_shared.data();")
    source = source.replace("__shared__ ", "static ")
    return re.sub(r"(\w+(?:<[^;]*?>)?)<<<(.*?),\s*\w+\s*>>>", r"emu_launch(\1, \2)", source)


def cuda_include_dir() -> str:
    """The toolkit's include directory, as nvcc itself reports it (nvcc may be a wrapper outside the toolkit)."""
    done = subprocess.run([nvcc(), "--dryrun", "-c", "-x", "cu", "/dev/null"], capture_output=True, text=True)
    match = re.search(r'INCLUDES="-I([^"]+?)"', done.stdout + done.stderr)
    assert match is not None, f"nvcc --dryrun did not report its include directory:\n{done.stderr}"
    return match.group(1).strip()


@pytest.fixture(scope="module")
def emulated(tmp_path_factory) -> ctypes.CDLL:
    """The csrc/cuda kernels built for the host CPU (a few seconds) and loaded."""
    compiler = shutil.which("c++") or shutil.which("g++")
    assert compiler is not None, "a host C++ compiler is needed"
    build = tmp_path_factory.mktemp("cuda_emulation")
    shutil.copy(cuda_backend.SOURCE_DIR / "host_emulation.h", build)
    for path in [*cuda_backend.SOURCE_DIR.glob("*.cuh"), *cuda_backend.SOURCE_DIR.glob("scan_kernels.h"),
                 *cuda_backend.kernel_sources()]:
        (build / (path.name + (".cpp" if path.suffix == ".cu" else ""))).write_text(to_host_cpp(path.read_text()))
    toolkit_include = cuda_include_dir()
    library = build / "libpna_cuda_emulated.so"
    run([compiler, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", *cuda_backend.DEFINES,
         "-include", str(build / "host_emulation.h"), "-isystem", str(toolkit_include), "-I", str(build),
         *map(str, sorted(build.glob("*.cu.cpp"))), "-o", str(library)])
    lib = ctypes.CDLL(str(library))
    for name in LAUNCHERS:
        getattr(lib, name).restype = ctypes.c_char_p
    return lib


def test_struct_mirrors_match_the_launchers(emulated):
    sizes = (ctypes.c_int * len(C_STRUCTS))()
    assert emulated.pna_cuda_struct_sizes(sizes, len(C_STRUCTS)) == len(C_STRUCTS)
    for (name, struct), size in zip(C_STRUCTS.items(), sizes):
        assert ctypes.sizeof(struct) == size, name


def fill(name: str, **values) -> ctypes.Structure:
    """A launcher struct: tensors become their data pointers, None a null pointer. The caller must hold a reference
    to every tensor until the launch returns."""
    return C_STRUCTS[name](**{k: (v.data_ptr() if isinstance(v, torch.Tensor) else v) for k, v in values.items()})


def poisoned(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype)


def launch(lib: ctypes.CDLL, name: str, *structs: ctypes.Structure) -> None:
    error = getattr(lib, name)(*map(ctypes.byref, structs), None)
    assert error is None, error.decode()


def c_scan_args(a: ScanArgs) -> ctypes.Structure:
    batch, dim, length = a.u.shape
    return fill("PnaScanArgs", dtype=DTYPE_CODES[a.u.dtype], batch=batch, dim=dim, length=length,
                dstate=a.A.shape[1], groups=a.B.shape[1], delta_softplus=int(a.delta_softplus),
                with_channel_mean=int(a.with_channel_mean), **{n: getattr(a, n) for n in SCAN_POINTERS})


def emulated_forward(lib: ctypes.CDLL, a: ScanArgs) -> ScanResult:
    batch, dim, length = a.u.shape
    dstate, n_dblocks = a.A.shape[1], lib.pna_cuda_num_dblocks(dim, a.B.shape[1], a.A.shape[1])
    mean = a.with_channel_mean
    r = ScanResult(out=poisoned(batch, dim, length, dtype=a.u.dtype), entropy=poisoned(batch, length),
                   halt_logits=poisoned(batch, length), last_state=poisoned(batch, dim, dstate),
                   channel_mean=poisoned(batch, length, dstate) if mean else torch.empty(0),
                   checkpoints=poisoned(batch, math.ceil(length / cuda_backend.CHUNK_SIZE), dim, dstate),
                   entropy_sums=poisoned(batch, 2, length))
    partials = poisoned(3, batch, n_dblocks, length)
    channel_partials = poisoned(batch, n_dblocks, length, dstate) if mean else None
    result = fill("PnaScanResult", **{f.name: getattr(r, f.name) for f in dataclasses.fields(r)}, partials=partials,
                  channel_partials=channel_partials)
    if not mean:
        result.channel_mean = None
    launch(lib, "pna_cuda_scan_forward", c_scan_args(a), result)
    return r


def emulated_backward(lib: ctypes.CDLL, a: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads:
    batch, dim, length = a.u.shape
    dstate, groups = a.A.shape[1], a.B.shape[1]
    n_dblocks = lib.pna_cuda_num_dblocks(dim, groups, dstate)
    dtype = a.u.dtype
    grad_out = cot.grad_out.to(dtype).contiguous()
    grads32 = {n: getattr(cot, n).float().contiguous()
               for n in ("grad_entropy", "grad_halt", "grad_last_state", "grad_channel_mean")}
    parts = {"u": poisoned(batch, dim, length, dtype=dtype), "delta": poisoned(batch, dim, length, dtype=dtype),
             "z": None if a.z is None else poisoned(batch, dim, length, dtype=dtype),
             **{f"{n}_rows": poisoned(batch, dim, dstate) for n in ("A", "halt_weight")},
             **{f"{n}_rows": poisoned(batch, dim) for n in ("D", "delta_bias")},
             **{f"{n}_blocks": poisoned(batch, n_dblocks, dstate, length) for n in ("B", "C")},
             "initial_state": poisoned(batch, dim, dstate)}
    launch(lib, "pna_cuda_scan_backward", c_scan_args(a),
           fill("PnaScanSaved", checkpoints=saved.checkpoints, entropy_sums=saved.entropy_sums),
           fill("PnaScanCotangents", grad_out=grad_out, **grads32), fill("PnaScanGradParts", **parts))
    group_sum = {n: parts[f"{n}_blocks"].view(batch, groups, -1, dstate, length).sum(2).to(dtype) for n in "BC"}
    return ScanGrads(u=parts["u"], delta=parts["delta"], A=parts["A_rows"].sum(0), **group_sum,
                     D=parts["D_rows"].sum(0), z=parts["z"], delta_bias=parts["delta_bias_rows"].sum(0),
                     halt_weight=parts["halt_weight_rows"].sum(0), halt_bias=grads32["grad_halt"].sum(),
                     initial_state=parts["initial_state"])


def emulated_state_update(lib: ctypes.CDLL, a: StateUpdateArgs) -> StateUpdateResult:
    batch, dim = a.x.shape
    dstate, groups = a.A.shape[1], a.B.shape[1]
    n_dblocks = lib.pna_cuda_num_dblocks(dim, groups, dstate)
    r = StateUpdateResult(y=poisoned(batch, dim, dtype=a.x.dtype), entropy=poisoned(batch),
                          halt_logits=poisoned(batch), channel_mean=poisoned(batch, dstate))
    args = fill("PnaStateUpdateArgs", dtype=DTYPE_CODES[a.x.dtype], batch=batch, dim=dim, dstate=dstate,
                groups=groups, dt_softplus=int(a.dt_softplus),
                **{f.name: getattr(a, f.name) for f in dataclasses.fields(a) if f.name != "dt_softplus"})
    partials, channel_partials = poisoned(3, batch, n_dblocks), poisoned(batch, n_dblocks, dstate)  # kept alive
    result = fill("PnaStateUpdateResult", **{f.name: getattr(r, f.name) for f in dataclasses.fields(r)},
                  partials=partials, channel_partials=channel_partials)
    launch(lib, "pna_cuda_state_update", args, result)
    return r


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
    assert_kernels_match_oracle(lambda a: emulated_forward(emulated, a),
                                lambda a, saved, cot: emulated_backward(emulated, a, saved, cot), args, RTOL[dtype])


@pytest.mark.parametrize("case,dtype", [
    (ScanCase(2, 6, 1, 16, 2), torch.float32), (ScanCase(3, 40, 1, 4, with_z=False, softplus=False), torch.float32),
    (ScanCase(1, 5, 1, 256), torch.float32), (ScanCase(2, 9, 1, 100, 3, softplus=False), torch.bfloat16)],
    ids=["N16-2groups", "N4-40ch-no-softplus", "N256", "bf16-N100-3groups"])
def test_emulated_state_update_matches_oracle(emulated, case, dtype):
    assert_kernel_step_matches_oracle(lambda a: emulated_state_update(emulated, a),
                                      state_update_args(case.inputs(dtype), 0, case.softplus), RTOL[dtype])


@pytest.mark.parametrize("value", [float("nan"), 1e30], ids=["nan", "overflow"])
def test_emulated_non_finite_state_gives_nan_entropy(emulated, value):
    """A NaN state, or one whose energy h^2 overflows float32, gives NaN entropy (never 0 or another number), in
    the scan and in the decode step; the other batch row is unaffected."""
    assert_non_finite_state_gives_nan_entropy(lambda a: emulated_forward(emulated, a),
                                              lambda a: emulated_state_update(emulated, a),
                                              ScanCase(2, 4, 3, 4).inputs(), cuda_backend.CHUNK_SIZE, value)
