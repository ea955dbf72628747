"""Just-in-time builds of the native extensions (cpu.py) that never hang on a lock a killed build left; cuda.py's
nvcc library builds take the same lock (exclusive_build).

torch.utils.cpp_extension.load serialises builds with a lock file, `<build dir>/lock`, created when a build starts
and removed when it ends; a process killed mid-build leaves it behind, and every later load waits for it forever.
So every build here first takes an flock on `<build dir>/pna_build.flock` (the kernel drops an flock when its
process dies). Holding that, a leftover torch lock can only belong to a build whose process is gone: it is removed
and the build runs. While another live process holds the flock (it is building), this waits for it at most
LOCK_WAIT_SECONDS, longer than any build takes, then fails with a message naming the lock file.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import time
import warnings
from pathlib import Path
from types import ModuleType
from typing import Iterator

try:
    import fcntl
except ImportError:  # not POSIX: no flock, so leftover locks are left to torch
    fcntl = None

# The longest another process's build is waited for (a cold CUDA build takes a few minutes on a small machine).
LOCK_WAIT_SECONDS = 900.0
# After this long a waiting build says once what it waits for (the guard file to delete if no build is running).
LOCK_WARN_SECONDS = 10.0
GUARD_NAME = "pna_build.flock"
TORCH_LOCK_NAME = "lock"  # the file torch.utils.file_baton creates in the build directory

# What a failed build raises: compiler or ninja errors (RuntimeError), a missing or broken compiler
# (CalledProcessError, OSError), a library that does not load (ImportError).
BUILD_ERRORS = (RuntimeError, OSError, ImportError, subprocess.SubprocessError)


class BuildLockTimeout(RuntimeError):
    """Another live process held the build lock longer than LOCK_WAIT_SECONDS."""


def build_directory(name: str) -> Path:
    """The directory torch builds extension `name` in (under TORCH_EXTENSIONS_DIR or torch's default root)."""
    from torch.utils import cpp_extension

    return Path(cpp_extension._get_build_directory(name, False))


@contextlib.contextmanager
def exclusive_build(directory: Path, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold the build guard of `directory` and clear a torch lock left by a dead build (see the module doc)."""
    if fcntl is None:
        yield
        return
    wait_seconds = LOCK_WAIT_SECONDS if wait_seconds is None else wait_seconds
    guard = directory / GUARD_NAME
    fd = os.open(guard, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        start = time.monotonic()
        warned = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - start
                if not warned and waited >= LOCK_WARN_SECONDS:
                    warnings.warn(f"waiting for another process that is building in {directory} (it holds {guard})",
                                  stacklevel=3)
                    warned = True
                if waited >= wait_seconds:
                    raise BuildLockTimeout(
                        f"waited {wait_seconds:.0f} s for another process building in {directory} (it holds "
                        f"{guard}); if no build is running, delete {guard} and {directory / TORCH_LOCK_NAME}"
                    ) from None
                time.sleep(0.2)
        with contextlib.suppress(FileNotFoundError):
            (directory / TORCH_LOCK_NAME).unlink()  # no live build holds the guard: its owner is gone
        yield
    finally:
        os.close(fd)  # releases the flock


def load(name: str, sources: list[str], **kwargs) -> ModuleType:
    """torch.utils.cpp_extension.load(name=name, sources=sources, **kwargs) under exclusive_build, in the default
    build directory. Raises one of BUILD_ERRORS when the build fails."""
    from torch.utils import cpp_extension

    directory = build_directory(name)
    with exclusive_build(directory):
        return cpp_extension.load(name=name, sources=sources, build_directory=str(directory), **kwargs)


def first_error(exc: BaseException, pattern: str = "error:") -> str:
    """The first line of a build failure that contains `pattern` (the compiler's first complaint), else its last."""
    text = str(exc).strip()
    if isinstance(exc, subprocess.CalledProcessError):
        text = f"{' '.join(map(str, exc.cmd)) if isinstance(exc.cmd, list) else exc.cmd} exited with {exc.returncode}"
    lines = [line.strip() for line in text.splitlines() if line.strip()] or [type(exc).__name__]
    return next((line for line in lines if pattern in line.lower()), lines[-1])
