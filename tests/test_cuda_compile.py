"""The CUDA backend's sources compile (no GPU needed): every csrc/cuda/*.cu with nvcc for sm_80 and sm_90 with
warnings as errors, and the torch binding with the host compiler (syntax only). nvcc missing is a failure, not a
skip: CI has it, and these are the only checks of the CUDA sources a GPU-less machine can run."""
from __future__ import annotations

import re
import subprocess
import sysconfig

import pytest
from torch.utils import cpp_extension

from pna_kernels import cuda as cuda_backend
from pna_kernels.validation import MAX_STATE_DIM

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


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("source", [p.name for p in cuda_backend.kernel_sources()])
def test_kernel_compiles(source, arch, tmp_path):
    run([nvcc(), "-c", "-O3", "-std=c++17", f"-arch=sm_{arch}", "-Werror", "all-warnings",
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
