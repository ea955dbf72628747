"""The "cuda" backend: fused CUDA kernels from csrc/cuda, built by nvcc alone into a plain shared library.

No torch headers, no pybind, no torch C++ ABI: csrc/cuda exports extern "C" launchers on raw pointers and a stream
(scan_kernels.h), nvcc builds them into one shared library (the CUDA runtime linked in statically), ctypes loads it
and cuda_abi.KernelLibrary calls it with the tensors' data pointers and torch's current stream. So any torch with
CUDA and any nvcc that targets the GPU work together; torch.version.cuda plays no part in the build.

    nvcc -shared -Xcompiler -fPIC -O3 -std=c++17 <KernelOptions.defines()> -gencode ... csrc/cuda/*.cu

Builds are cached on disk in PNA_CUDA_CACHE (else $XDG_CACHE_HOME/pna/cuda, else ~/.cache/pna/cuda). A library's
file name carries its options' name and a hash of the sources, the -D flags, the gencode list and the nvcc version;
beside it a manifest (<file>.json) records its architectures and a hash of the sources and -D flags only, so a
library built elsewhere (prebuilt on a machine without a GPU, then carried) is found where no nvcc is. Each build
runs under jit.exclusive_build's file lock (one lock per library file, so different builds run in parallel) and
moves its finished file into place: concurrent processes build once and never see a half-written file.

The architectures: PNA_CUDA_ARCH (e.g. "90" or "80,90"), else TORCH_CUDA_ARCH_LIST (torch's "8.0;9.0+PTX"
spelling), else the visible GPU's capability. A cached library whose architectures cover the GPU (the same major
version, a minor at or below the GPU's) is used; one that does not load (not a library, a missing launcher, a
struct of another size, no kernel image for the GPU) is rebuilt once, and if that fails too supports() says why.

Prebuilding without a GPU (then carry the folder and point PNA_CUDA_CACHE at it):

    python -m pna_kernels.cuda build --arch 80,90 --out DIR [--set chunk=64 --set max_state=64 ...]

The kernels keep the state and every sum in float32; activations may be float32, float16 or bfloat16. Every
reduction runs in a fixed order without atomics, so results are bitwise reproducible on a given GPU.
"""
from __future__ import annotations

import argparse
import ctypes
import dataclasses
import functools
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from . import jit
from .backends import kernel_source_dir
from .contract import ScanArgs, ScanCotangents, ScanGrads, ScanResult, ScanSaved, StateUpdateArgs, StateUpdateResult
from .cuda_abi import KernelLibrary
from .cuda_options import DEFAULT, KernelOptions
from .validation import MAX_STATE_DIM

# Steps per chunk of the backend's build (cuda_options.DEFAULT, compiled in as PNA_CUDA_CHUNK; a ScanArgs with
# another chunk_size is refused).
CHUNK_SIZE = DEFAULT.chunk
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
# The -D flags of the backend's build (every compile of csrc/cuda for it: the library, the compile checks).
DEFINES = DEFAULT.defines()
NVCC_FLAGS = ("-shared", "-Xcompiler", "-fPIC", "-O3", "-std=c++17")

SOURCE_DIR = kernel_source_dir("cuda")
CACHE_ENV = "PNA_CUDA_CACHE"
ARCH_ENV = "PNA_CUDA_ARCH"
PREBUILT_ARCHS = ("80", "90")  # what `python -m pna_kernels.cuda build` targets by default: A100 and H100/H200
LIBRARY_PREFIX = "libpna_cuda"
BUILD_TIMEOUT_S = 900


def kernel_sources() -> list[Path]:
    """The CUDA kernel files of csrc/cuda (every *.cu), sorted."""
    return sorted(SOURCE_DIR.glob("*.cu"))


def source_files() -> list[Path]:
    """Everything a build reads from csrc/cuda: the kernels and their headers (host_emulation.h included, which
    the emulated build reads)."""
    return sorted(p for p in SOURCE_DIR.iterdir() if p.suffix in (".cu", ".cuh", ".h"))


def find_nvcc() -> str | None:
    """Path of nvcc: CUDA_HOME/bin/nvcc (or CUDA_PATH's), else nvcc on PATH, else /usr/local/cuda/bin/nvcc."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")):
        if home and (Path(home) / "bin" / "nvcc").is_file():
            return str(Path(home) / "bin" / "nvcc")
    found = shutil.which("nvcc")
    if found:
        return found
    default = Path("/usr/local/cuda/bin/nvcc")
    return str(default) if default.is_file() else None


@functools.cache
def nvcc_version(nvcc: str) -> str:
    """The last line of `nvcc --version` (e.g. "Build cuda_13.0.r13.0/compiler.36424714_0")."""
    done = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{nvcc} --version exited with {done.returncode}: {done.stderr.strip()}")
    return (done.stdout.strip().splitlines() or ["unknown"])[-1]


# ----------------------------------------------------------------------------------------------- architectures
def parse_archs(text: str, name: str = ARCH_ENV) -> tuple[str, ...]:
    """Architectures from "80,90", "8.0;9.0+PTX" or "sm_90a": sorted unique compute capabilities like "90", "90a".
    ValueError naming `name` for anything else."""
    archs = set()
    for item in filter(None, re.split(r"[,; ]+", text.strip())):
        match = re.fullmatch(r"(?:sm_|compute_)?(?:(\d+)\.(\d)|(\d+)(\d))([af]?)(?:\+PTX)?", item, re.IGNORECASE)
        if match is None:
            raise ValueError(f"{name}: expected compute capabilities such as 80,90 or 8.0;9.0, got {text!r}")
        dotted_major, dotted_minor, major, minor, suffix = match.groups()
        archs.add(f"{dotted_major or major}{dotted_minor or minor}{suffix.lower()}")
    if not archs:
        raise ValueError(f"{name}: expected at least one compute capability, got {text!r}")
    return tuple(sorted(archs))


def target_archs() -> tuple[str, ...]:
    """The architectures a build here targets: PNA_CUDA_ARCH, else TORCH_CUDA_ARCH_LIST, else the current GPU."""
    for name in (ARCH_ENV, "TORCH_CUDA_ARCH_LIST"):
        if os.environ.get(name, "").strip():
            return parse_archs(os.environ[name], name)
    major, minor = torch.cuda.get_device_capability()
    return (f"{major}{minor}",)


def covers(archs: tuple[str, ...], capability: tuple[int, int]) -> bool:
    """Whether a library with SASS for `archs` runs on a GPU of this capability: an arch of the same major version
    and a minor at or below the GPU's ("90a" only on exactly 9.0)."""
    major, minor = capability
    for arch in archs:
        digits, suffix = arch.rstrip("af"), arch[len(arch.rstrip("af")):]
        a_major, a_minor = int(digits[:-1]), int(digits[-1])
        if a_major == major and (a_minor == minor if suffix else a_minor <= minor):
            return True
    return False


def gencode_flags(archs: tuple[str, ...]) -> list[str]:
    return [flag for arch in archs for flag in ("-gencode", f"arch=compute_{arch},code=sm_{arch}")]


# ------------------------------------------------------------------------------------------------------ builds
def cache_dir() -> Path:
    """Where built libraries are kept: PNA_CUDA_CACHE, else ($XDG_CACHE_HOME or ~/.cache)/pna/cuda."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "pna" / "cuda"


def source_key(options: KernelOptions) -> str:
    """Hash of what the kernels compute: the csrc/cuda sources and the options' -D flags."""
    digest = hashlib.sha256(" ".join(options.defines()).encode())
    for path in source_files():
        digest.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:20]


@dataclasses.dataclass(frozen=True)
class LibraryBuild:
    """One nvcc build: the kernel options, the target architectures and the compiler."""

    options: KernelOptions
    archs: tuple[str, ...]
    nvcc: str

    def file_name(self) -> str:
        """libpna_cuda-<options>-sm<archs>-<hash of sources, -D flags, gencode list and nvcc version>.so"""
        key = "\0".join([source_key(self.options), *gencode_flags(self.archs), nvcc_version(self.nvcc)])
        return (f"{LIBRARY_PREFIX}-{self.options.name()}-sm{'_'.join(self.archs)}-"
                f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.so")

    def command(self, output: Path) -> list[str]:
        return [self.nvcc, *NVCC_FLAGS, *self.options.defines(), *gencode_flags(self.archs), "--threads", "0",
                *map(str, kernel_sources()), "-o", str(output)]

    def manifest(self) -> dict:
        return {"options": dataclasses.asdict(self.options), "source_key": source_key(self.options),
                "archs": list(self.archs), "nvcc": nvcc_version(self.nvcc)}


def build(options: KernelOptions, archs: tuple[str, ...], directory: Path | None = None, force: bool = False,
          nvcc: str | None = None) -> Path:
    """Build the library for `options` and `archs` into `directory` (default: cache_dir()) unless it is there
    (force: build anyway, replacing it). Needs no GPU. Returns its path; RuntimeError with nvcc's first error."""
    nvcc = nvcc or find_nvcc()
    if nvcc is None:
        raise RuntimeError("nvcc was not found (set CUDA_HOME or put nvcc on PATH) to build the kernels in csrc/cuda")
    job = LibraryBuild(options, tuple(archs), nvcc)
    directory = cache_dir() if directory is None else Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / job.file_name()
    locks = directory / ".locks" / target.stem  # one lock per library: different builds run in parallel
    locks.mkdir(parents=True, exist_ok=True)
    with jit.exclusive_build(locks):
        if target.is_file() and target.with_suffix(".json").is_file() and not force:
            return target  # another process built it while this one waited
        work = Path(tempfile.mkdtemp(prefix=f".{target.stem}-", dir=directory))
        try:
            start = time.monotonic()
            done = subprocess.run(job.command(work / target.name), capture_output=True, text=True,
                                  timeout=BUILD_TIMEOUT_S)
            if done.returncode != 0:
                raise RuntimeError(f"{' '.join(job.command(target))}\n{done.stdout}\n{done.stderr}")
            manifest = {**job.manifest(), "build_seconds": round(time.monotonic() - start, 1)}
            (work / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
            os.replace(work / target.name, target)
            os.replace(work / "manifest.json", target.with_suffix(".json"))
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def find_cached(options: KernelOptions, capability: tuple[int, int] | None, archs: tuple[str, ...],
                directory: Path | None = None) -> Path | None:
    """A library in `directory` built from these sources and options whose architectures cover the GPU's
    capability (without a GPU: include every arch of `archs`), by its manifest; any nvcc version. None if none."""
    directory = cache_dir() if directory is None else Path(directory)
    key = source_key(options)
    for manifest in sorted(directory.glob(f"{LIBRARY_PREFIX}-*.json")):
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, ValueError):
            continue
        library = manifest.with_suffix(".so")
        got = tuple(meta.get("archs", ()))
        fits = covers(got, capability) if capability is not None else set(archs) <= set(got)
        if meta.get("source_key") == key and fits and library.is_file():
            return library
    return None


# ------------------------------------------------------------------------------------------------------ loading
# Paths dlopen'ed by this process and the (inode, mtime) they had: dlopen returns the handle it holds for a path,
# so a library rebuilt in place since is loaded from a copy under a fresh name.
_OPENED: dict[str, tuple[int, int]] = {}
# What a library that does not load raises: not a library / missing file (OSError), a missing launcher
# (AttributeError), a struct mirror of another size or a failed probe launch (RuntimeError).
LOAD_ERRORS = (OSError, AttributeError, RuntimeError)


def open_library(path: Path, options: KernelOptions, device: torch.device | None = None) -> KernelLibrary:
    """Load a built library with ctypes behind a KernelLibrary (the struct sizes are checked); with a CUDA
    device, also launch the decode step once on a 1x1x1 problem there, which fails without a kernel image for it.
    Raises one of LOAD_ERRORS."""
    path = Path(path)
    stat = path.stat()
    if _OPENED.get(str(path), (stat.st_ino, stat.st_mtime_ns)) != (stat.st_ino, stat.st_mtime_ns):
        fresh = Path(tempfile.mkdtemp(prefix="pna-cuda-reload-")) / path.name  # rebuilt in place since
        shutil.copy(path, fresh)
        path = fresh
    handle = ctypes.CDLL(str(path))
    _OPENED[str(path)] = (stat.st_ino, stat.st_mtime_ns)
    library = KernelLibrary(handle, options)
    if device is not None and device.type == "cuda":
        _probe(library, device)
    return library


def _probe(library: KernelLibrary, device: torch.device) -> None:
    """One decode step on a 1-channel, 1-state problem (no sync: a missing kernel image fails at launch)."""
    one = lambda *shape: torch.zeros(shape, dtype=torch.float32, device=device)  # noqa: E731
    library.state_update(StateUpdateArgs(
        state=one(1, 1, 1), x=one(1, 1), dt=one(1, 1), A=one(1, 1), B=one(1, 1, 1), C=one(1, 1, 1), D=one(1),
        z=None, dt_bias=one(1), halt_weight=one(1, 1), halt_bias=one(1), dt_softplus=False))


def load(options: KernelOptions = DEFAULT, device: torch.device | None = None,
         directory: Path | None = None) -> KernelLibrary:
    """The library for `options` on `device` (default: the current CUDA device): a cached build that covers it,
    else one built now (target_archs()); a cached one that does not load is rebuilt once. RuntimeError with a
    sentence saying why when there is no usable library."""
    if not torch.cuda.is_available():
        raise RuntimeError("no CUDA GPU is visible (torch.cuda.is_available() is False)")
    if not kernel_sources():
        raise RuntimeError(f"its CUDA sources are not in {SOURCE_DIR} (reinstall pna: pip install -e . from a "
                           "source checkout)")
    device = torch.device("cuda", torch.cuda.current_device()) if device is None else torch.device(device)
    capability = torch.cuda.get_device_capability(device)
    directory = cache_dir() if directory is None else Path(directory)
    archs = target_archs()
    if not covers(archs, capability):
        raise RuntimeError(f"the target architectures {','.join(archs)} (from {ARCH_ENV} or TORCH_CUDA_ARCH_LIST) do "
                           f"not include the GPU's sm_{capability[0]}{capability[1]}")
    return find_or_build(options, archs, directory, capability, device)[0]


def find_or_build(options: KernelOptions, archs: tuple[str, ...], directory: Path,
                  capability: tuple[int, int] | None = None,
                  device: torch.device | None = None) -> tuple[KernelLibrary, Path, str]:
    """(library, its path, how: "found", "built" or "rebuilt"): the cached build in `directory` that covers the
    GPU's capability (without one: every arch of `archs`) and loads (on `device` when given), else one built now
    for `archs`; a cached one that does not load is rebuilt once. RuntimeError with a sentence if none loads."""
    failed = None
    cached = find_cached(options, capability, archs, directory)
    if cached is not None:
        try:
            return open_library(cached, options, device), cached, "found"
        except LOAD_ERRORS as exc:
            failed = f"{cached.name} did not load ({jit.first_error(exc)}), and rebuilding it "
    try:
        path = build(options, archs, directory, force=failed is not None)
    except jit.BUILD_ERRORS as exc:
        raise RuntimeError(f"{failed or ''}building the CUDA kernels in {SOURCE_DIR} failed: "
                           f"{jit.first_error(exc)}") from None
    try:
        return open_library(path, options, device), path, "rebuilt" if failed else "built"
    except LOAD_ERRORS as exc:
        raise RuntimeError(f"{failed or ''}the library built in {path} does not load: "
                           f"{jit.first_error(exc)}") from None


@functools.cache
def _library(options: KernelOptions) -> tuple[KernelLibrary | None, str | None]:
    """(library, None) or (None, why not) for options on the current device; tried once per process."""
    try:
        return load(options), None
    except (RuntimeError, ValueError) as exc:  # ValueError: a malformed PNA_CUDA_ARCH / TORCH_CUDA_ARCH_LIST
        return None, str(exc)


def library(options: KernelOptions = DEFAULT) -> KernelLibrary:
    """The loaded library of `options` (built on first use, then cached on disk); RuntimeError saying why if there
    is none. Several options can be loaded side by side in one process (bench/device compares them)."""
    lib, reason = _library(options)
    if lib is None:
        raise RuntimeError(f"pna_kernels cuda backend: {reason}")
    return lib


def supports(device: torch.device, dtype: torch.dtype, dstate: int) -> str | None:
    """None for CUDA tensors of float32/float16/bfloat16 with 1 <= N <= 256 once the library loads, else why not,
    in a sentence. The first call on a machine may build the library (about a minute, then cached on disk)."""
    if device.type != "cuda":
        return f"it runs on CUDA tensors only, got device {device}"
    if dtype == torch.float64:
        return "the kernels keep state and sums in float32; use the 'reference' or 'cpu' backend for float64"
    if dtype not in DTYPES:
        return f"inputs must be float32, float16 or bfloat16, got {dtype}"
    if not 1 <= dstate <= MAX_STATE_DIM:
        return f"it supports state sizes 1 <= N <= {MAX_STATE_DIM}, got {dstate}"
    return _library(DEFAULT)[1]


def scan_forward(args: ScanArgs) -> ScanResult:
    """Fused forward (shapes in pna_kernels/contract.py): u, delta, z, B, C in float32/float16/bfloat16, the
    parameters and initial_state float32, args.chunk_size == CHUNK_SIZE. Returns out in u's dtype, everything
    else float32; channel_mean (batch, L, N) when args.with_channel_mean, else an empty (0,) tensor."""
    return library().scan_forward(args)


def scan_backward(args: ScanArgs, saved: ScanSaved, cot: ScanCotangents) -> ScanGrads:
    """Fused backward: the gradient of every tensor input, in its shape and dtype (z None when z is None)."""
    return library().scan_backward(args, saved, cot)


def state_update(args: StateUpdateArgs) -> StateUpdateResult:
    """One decode step: y (batch, D) in x's dtype; entropy, halt_logits (batch,) and channel_mean (batch, N) of the
    new state, float32. args.state (batch, D, N) float32 is updated in place."""
    return library().state_update(args)


# ---------------------------------------------------------------------------------------------------------- CLI
def parse_option(text: str) -> tuple[str, object]:
    """`name=value` of a KernelOptions field, the value in the field's type ("1"/"true" for a bool)."""
    name, sep, value = text.partition("=")
    types = {f.name: f.type for f in dataclasses.fields(KernelOptions)}
    if not sep or name not in types:
        raise ValueError(f"--set: expected NAME=VALUE with NAME one of {', '.join(types)}, got {text!r}")
    kind = types[name] if isinstance(types[name], str) else types[name].__name__
    if kind == "bool":
        if value.lower() not in ("0", "1", "true", "false"):
            raise ValueError(f"--set {name}: expected true/false or 1/0, got {value!r}")
        return name, value.lower() in ("1", "true")
    if kind == "int":
        try:
            return name, int(value)
        except ValueError:
            raise ValueError(f"--set {name}: expected an integer, got {value!r}") from None
    return name, value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pna_kernels.cuda",
                                     description="Build the CUDA kernels' shared library (no GPU needed).")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("build", help="build (or find cached) the library for some options and architectures")
    cmd.add_argument("--arch", default=",".join(PREBUILT_ARCHS), help="compute capabilities, e.g. 80,90 (default)")
    cmd.add_argument("--out", type=Path, default=None, help=f"folder to build into (default: {CACHE_ENV} or the "
                                                            "per-user cache)")
    cmd.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                     help="a KernelOptions field (repeatable), e.g. --set chunk=64 --set max_state=64")
    cmd.add_argument("--force", action="store_true", help="build even if a cached library matches")
    args = parser.parse_args(argv)
    try:
        archs = parse_archs(args.arch, "--arch")
        options = KernelOptions(**dict(parse_option(s) for s in args.set))
    except ValueError as exc:
        print(f"python -m pna_kernels.cuda: {exc}", file=sys.stderr)
        return 2
    start = time.monotonic()
    try:
        path = build(options, archs, args.out, force=args.force)
    except jit.BUILD_ERRORS as exc:
        print(f"python -m pna_kernels.cuda: building failed: {exc}", file=sys.stderr)
        return 1
    print(f"{path} ({options.name()}, sm_{',sm_'.join(archs)}, {time.monotonic() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
