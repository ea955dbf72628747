"""The CUDA kernels built for the host CPU (csrc/cuda/host_emulation.h), for tests on machines without a GPU.

`emulated_library(options)` rewrites the three constructs a host compiler cannot parse (kernel<<<...>>>, extern
__shared__ and __shared__), compiles every csrc/cuda/*.cu with the host C++ compiler, the toolkit's headers (for
cuda_fp16.h / cuda_bf16.h, so nvcc must be installed) and options.defines(), and returns a cuda_abi.KernelLibrary
over it with NaN-poisoned outputs. One std::thread per CUDA thread, real barriers and warp exchanges: the kernels'
own code runs, on CPU tensors. Builds are cached per process and on disk (by a hash of the sources, the options
and the compiler command) in the system's temporary directory.
"""
from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from . import cuda as cuda_backend
from .cuda_abi import KernelLibrary
from .cuda_options import DEFAULT, KernelOptions

HOST_HEADER = "host_emulation.h"


def to_host_cpp(source: str) -> str:
    """Rewrite the CUDA-only syntax of a kernel file for host_emulation.h."""
    source = source.replace("extern __shared__ float smem[];", "float* smem = emu_shared.data();")
    source = source.replace("__shared__ ", "static ")
    return re.sub(r"(\w+(?:<[^;]*?>)?)<<<(.*?),\s*\w+\s*>>>", r"emu_launch(\1, \2)", source)


def _run(cmd: list[str]) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{done.stdout}\n{done.stderr}")
    return done.stdout + done.stderr


@functools.cache
def cuda_include_dir() -> str:
    """The toolkit's include directory, as nvcc itself reports it (nvcc may be a wrapper outside the toolkit)."""
    nvcc = cuda_backend.find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc not found: set CUDA_HOME or put nvcc on PATH (the emulation needs the toolkit's "
                           "cuda_fp16.h / cuda_bf16.h)")
    done = subprocess.run([nvcc, "--dryrun", "-c", "-x", "cu", "/dev/null"], capture_output=True, text=True)
    match = re.search(r'INCLUDES="-I([^"]+?)"', done.stdout + done.stderr)
    if match is None:
        raise RuntimeError(f"nvcc --dryrun did not report its include directory:\n{done.stderr}")
    return match.group(1).strip()


@functools.cache
def emulated_library(options: KernelOptions = DEFAULT) -> KernelLibrary:
    """The csrc/cuda kernels compiled for the host with `options`, loaded (tens of seconds on the first build)."""
    compiler = shutil.which("c++") or shutil.which("g++")
    if compiler is None:
        raise RuntimeError("a host C++ compiler (c++ or g++) is needed for the CUDA host emulation")
    flags = ["-std=c++20", "-O1", "-fPIC", "-shared", "-pthread", *options.defines()]
    digest = hashlib.sha256(" ".join([compiler, *flags]).encode())
    for path in cuda_backend.source_files():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    build = Path(tempfile.gettempdir()) / f"pna-cuda-emulation-{digest.hexdigest()[:16]}"
    library = build / "libpna_cuda_emulated.so"
    if not library.is_file():
        work = Path(tempfile.mkdtemp(prefix="pna-cuda-emulation-build-"))
        for path in cuda_backend.source_files():
            if path.name == HOST_HEADER:
                shutil.copy(path, work)
            else:
                (work / (path.name + (".cpp" if path.suffix == ".cu" else ""))).write_text(to_host_cpp(path.read_text()))
        _run([compiler, *flags, "-include", str(work / HOST_HEADER), "-isystem", cuda_include_dir(), "-I", str(work),
              *map(str, sorted(work.glob("*.cu.cpp"))), "-o", str(work / library.name)])
        build.mkdir(parents=True, exist_ok=True)
        tmp = build / f"{library.name}.{os.getpid()}.tmp"
        shutil.copy(work / library.name, tmp)
        os.replace(tmp, library)
        shutil.rmtree(work, ignore_errors=True)
    return KernelLibrary(ctypes.CDLL(str(library)), options, poison=True)
