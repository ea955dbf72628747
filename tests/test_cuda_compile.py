"""The CUDA backend's sources without a GPU: every csrc/cuda/*.cu compiles with nvcc for sm_80 and sm_90 with
warnings as errors, the torch binding passes the host compiler (syntax only), and the kernels themselves run under
host emulation (csrc/cuda/host_emulation.h: one std::thread per CUDA thread, real barriers and warp exchanges) and
match the float64 oracle, forward and every gradient, with every output and scratch buffer NaN-poisoned first.
nvcc missing is a failure, not a skip: CI has it (the emulation also needs the toolkit's cuda_fp16/bf16 headers)."""
from __future__ import annotations

import ctypes
import math
import re
import shutil
import subprocess
import sysconfig

import pytest
import torch
import torch.nn.functional as F
from torch.utils import cpp_extension

from pna_kernels import cuda as cuda_backend
from pna_kernels import reference
from pna_kernels.testing import RTOL, assert_close_rel, random_scan_inputs
from pna_kernels.validation import MAX_STATE_DIM, check_scan_inputs, check_state_update_inputs

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
    run([nvcc(), "-c", "-O3", "-std=c++17", *archs, "--threads", "0", "-Werror", "all-warnings",
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
    run([nvcc(), "-c", "-std=c++17", "-Xcompiler", "-fsyntax-only,-Wall,-Wextra,-Werror",
         f"-DTORCH_EXTENSION_NAME={cuda_backend.EXTENSION_NAME}",
         *(flag for path in includes for flag in ("-isystem", path)),
         str(cuda_backend.SOURCE_DIR / cuda_backend.BINDINGS), "-o", str(tmp_path / "bindings.o")])


def constant(name: str) -> int:
    text = (cuda_backend.SOURCE_DIR / "scan_common.cuh").read_text()
    match = re.search(rf"constexpr int {name} = (\d+);", text)
    assert match is not None, f"{name} not found in scan_common.cuh"
    return int(match.group(1))


def test_python_constants_match_the_kernels():
    assert constant("kChunk") == cuda_backend.CHUNK_SIZE
    assert constant("kMaxState") == MAX_STATE_DIM


# ---------------------------------------------------------------------------------------------------------------
# The kernels run under host emulation. The calls below mirror csrc/cuda/bindings.cpp: allocate, launch, add the
# per-block / per-row partial sums up in the same order.

DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
LAUNCHERS = ("pna_cuda_scan_forward", "pna_cuda_scan_backward", "pna_cuda_state_update")


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
    run([compiler, "-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", "-include", str(build / "host_emulation.h"),
         "-isystem", str(toolkit_include), "-I", str(build), *map(str, sorted(build.glob("*.cu.cpp"))),
         "-o", str(library)])
    lib = ctypes.CDLL(str(library))
    for name in LAUNCHERS:
        getattr(lib, name).restype = ctypes.c_char_p
    return lib


def ptr(t: torch.Tensor | None) -> ctypes.c_void_p:
    """The tensor's data pointer for a launcher (the caller keeps the tensor alive)."""
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def poisoned(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.full(shape, float("nan"), dtype=dtype)


def emulated_forward(lib: ctypes.CDLL, a) -> tuple[torch.Tensor, ...]:
    batch, dim, length = a.u.shape
    dstate, groups = a.A.shape[1], a.B.shape[1]
    n_dblocks = lib.pna_cuda_num_dblocks(dim, groups, dstate)
    out = poisoned(batch, dim, length, dtype=a.u.dtype)
    entropy, halt, sums = poisoned(batch, length), poisoned(batch, length), poisoned(batch, 2, length)
    last = poisoned(batch, dim, dstate)
    checkpoints = poisoned(batch, math.ceil(length / cuda_backend.CHUNK_SIZE), dim, dstate)
    partials = poisoned(3, batch, n_dblocks, length)
    error = lib.pna_cuda_scan_forward(
        DTYPE_CODES[a.u.dtype], ptr(a.u), ptr(a.delta), ptr(a.A), ptr(a.B), ptr(a.C), ptr(a.D), ptr(a.z),
        ptr(a.delta_bias), ptr(a.halt_weight), ptr(a.halt_bias), ptr(a.initial_state), int(a.delta_softplus),
        batch, dim, length, dstate, groups, ptr(out), ptr(last), ptr(checkpoints), ptr(partials), ptr(entropy),
        ptr(halt), ptr(sums), None)
    assert error is None, error.decode()
    return out, entropy, halt, last, checkpoints, sums


def emulated_backward(lib: ctypes.CDLL, a, cotangents, checkpoints, sums) -> dict[str, torch.Tensor]:
    batch, dim, length = a.u.shape
    dstate, groups = a.A.shape[1], a.B.shape[1]
    n_dblocks = lib.pna_cuda_num_dblocks(dim, groups, dstate)
    dtype = a.u.dtype
    grad_out, grad_entropy, grad_halt, grad_last = (cotangents[0].to(dtype), *(c.float() for c in cotangents[1:]))
    du, ddelta = poisoned(batch, dim, length, dtype=dtype), poisoned(batch, dim, length, dtype=dtype)
    dz = None if a.z is None else poisoned(batch, dim, length, dtype=dtype)
    rows = {name: poisoned(batch, dim, dstate) for name in ("A", "halt_weight", "initial_state")}
    rows.update({name: poisoned(batch, dim) for name in ("D", "delta_bias")})
    blocks = {name: poisoned(batch, n_dblocks, dstate, length) for name in ("B", "C")}
    error = lib.pna_cuda_scan_backward(
        DTYPE_CODES[dtype], ptr(grad_out), ptr(grad_entropy), ptr(grad_halt), ptr(grad_last), ptr(a.u),
        ptr(a.delta), ptr(a.A), ptr(a.B), ptr(a.C), ptr(a.D), ptr(a.z), ptr(a.delta_bias), ptr(a.halt_weight),
        ptr(checkpoints), ptr(sums), int(a.delta_softplus), batch, dim, length, dstate, groups, ptr(du),
        ptr(ddelta), ptr(dz), ptr(rows["A"]), ptr(blocks["B"]), ptr(blocks["C"]), ptr(rows["D"]),
        ptr(rows["delta_bias"]), ptr(rows["halt_weight"]), ptr(rows["initial_state"]), None)
    assert error is None, error.decode()
    grads = {name: rows[name].sum(0) for name in ("A", "D", "delta_bias", "halt_weight")}
    grads.update({name: t.view(batch, groups, -1, dstate, length).sum(2).to(dtype) for name, t in blocks.items()})
    grads.update(u=du, delta=ddelta, z=dz, halt_bias=grad_halt.sum(), initial_state=rows["initial_state"])
    return grads


EMULATED_SCANS = [  # batch, D, L, N, G, grouped B/C, z, initial_state, softplus, dtype
    (2, 6, 37, 16, 2, True, False, False, False, torch.float32),
    (1, 80, 150, 4, 2, True, True, False, True, torch.float32),
    (2, 3, 5, 64, 1, True, True, True, False, torch.float32),
    (1, 6, 100, 64, 2, True, True, True, True, torch.float32),
    (1, 6, 37, 256, 2, True, False, True, True, torch.float32),
    (1, 7, 20, 1, 1, False, True, True, True, torch.float32),
    (1, 5, 17, 100, 1, True, True, True, False, torch.float32),
    (1, 9, 19, 128, 3, True, True, True, True, torch.float32),
    (2, 6, 37, 16, 2, True, True, True, True, torch.bfloat16),
    (1, 6, 21, 256, 1, True, False, True, False, torch.float16),
]


@pytest.mark.parametrize("batch,dim,length,dstate,groups,grouped,with_z,with_init,softplus,dtype", EMULATED_SCANS)
def test_emulated_kernels_match_oracle(emulated, batch, dim, length, dstate, groups, grouped, with_z, with_init,
                                       softplus, dtype):
    x = random_scan_inputs(batch, dim, length, dstate, groups=groups, dtype=dtype, seed=length + dim + dstate,
                           with_z=with_z, with_initial_state=with_init, grouped_bc=grouped)
    if not softplus:
        x["delta"] = F.softplus(x["delta"].double()).to(dtype)
    a = check_scan_inputs(x["u"], x["delta"], x["A"], x["B"], x["C"], x["D"], x["z"], x["delta_bias"], softplus,
                          x["halt_weight"], x["halt_bias"], x["initial_state"])
    out, entropy, halt, last, checkpoints, sums = emulated_forward(emulated, a)
    names = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias", "halt_weight", "halt_bias", "initial_state")
    leaves = {n: getattr(a, n).double().requires_grad_(True) for n in names if getattr(a, n) is not None}
    want = reference.selective_scan_ref(
        leaves["u"], leaves["delta"], leaves["A"], leaves["B"], leaves["C"], leaves["D"], leaves.get("z"),
        leaves["delta_bias"], softplus, leaves["halt_weight"], leaves["halt_bias"], leaves["initial_state"])
    states = want[4].detach()
    rtol = RTOL[dtype]
    for name, got, ref in zip(("out", "entropy", "halt_logits", "last_state"), (out, entropy, halt, last), want):
        assert_close_rel(name, got, ref, rtol)
    assert_close_rel("checkpoints", checkpoints,
                     reference.checkpoints_from_states(a.initial_state.double(), states, cuda_backend.CHUNK_SIZE), rtol)
    assert_close_rel("entropy_sums", sums, torch.stack(reference.entropy_sums(states), 1), rtol)
    gen = torch.Generator().manual_seed(7)
    cotangents = [torch.randn(*t.shape, generator=gen, dtype=torch.float64) for t in want[:4]]
    grads = torch.autograd.grad(want[:4], tuple(leaves.values()), cotangents)
    got = emulated_backward(emulated, a, cotangents, checkpoints, sums)
    for name, ref in zip(leaves, grads):
        assert_close_rel(f"d{name}", got[name], ref, rtol)


@pytest.mark.parametrize("batch,dim,dstate,groups,with_z,softplus,dtype", [
    (2, 6, 16, 2, True, True, torch.float32), (3, 40, 4, 1, False, False, torch.float32),
    (1, 5, 256, 1, True, True, torch.float32), (2, 9, 100, 3, True, False, torch.bfloat16)])
def test_emulated_state_update_matches_oracle(emulated, batch, dim, dstate, groups, with_z, softplus, dtype):
    x = random_scan_inputs(batch, dim, 1, dstate, groups=groups, dtype=dtype, seed=dstate, with_z=with_z)
    if not softplus:
        x["delta"] = F.softplus(x["delta"].double()).to(dtype)
    a = check_state_update_inputs(x["initial_state"], x["u"][..., 0], x["delta"][..., 0], x["A"], x["B"][..., 0],
                                  x["C"][..., 0], x["D"], None if x["z"] is None else x["z"][..., 0],
                                  x["delta_bias"], softplus, x["halt_weight"], x["halt_bias"])
    state, want_state = x["initial_state"].clone(), x["initial_state"].double()
    want = reference.selective_state_update_ref(
        want_state, a.x.double(), a.dt.double(), a.A.double(), a.B.double(), a.C.double(), a.D.double(),
        None if a.z is None else a.z.double(), a.dt_bias.double(), softplus, a.halt_weight.double(),
        a.halt_bias.double())
    n_dblocks = emulated.pna_cuda_num_dblocks(dim, groups, dstate)
    y, entropy, halt = poisoned(batch, dim, dtype=dtype), poisoned(batch), poisoned(batch)
    partials = poisoned(3, batch, n_dblocks)
    error = emulated.pna_cuda_state_update(
        DTYPE_CODES[dtype], ptr(state), ptr(a.x), ptr(a.dt), ptr(a.A), ptr(a.B), ptr(a.C), ptr(a.D), ptr(a.z),
        ptr(a.dt_bias), ptr(a.halt_weight), ptr(a.halt_bias), int(softplus), batch, dim, dstate, groups, ptr(y),
        ptr(partials), ptr(entropy), ptr(halt), None)
    assert error is None, error.decode()
    for name, got, ref in zip(("y", "entropy", "halt_logits", "state"), (y, entropy, halt, state), (*want, want_state)):
        assert_close_rel(name, got, ref, RTOL[dtype])
