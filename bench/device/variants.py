"""The CUDA kernel variants of a device run (plan.VARIANTS): built or found, in parallel, and prebuilt to carry.

    python3 -m bench.device.variants [--arch 90] [--out build/pna-cuda] [--jobs N]

(a machine without a GPU is fine: nvcc only) builds the default library for sm_80 and sm_90 and every variant for
the --arch list into the folder the device run looks in first (plan.PREBUILT_DIR); carry that folder with the
working tree. On the GPU machine the build stage (ensure_variants) loads each variant from there, and builds with
that machine's nvcc whatever is missing or does not load, every variant at once.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

from .plan import PREBUILT_DIR, PREBUILT_VARIANT_ARCHS, VARIANTS
from .run import REPO_ROOT


def variant_options(variants: tuple[dict[str, object], ...] = VARIANTS) -> list:
    """The KernelOptions of each variant, in plan order (a variant the options refuse raises ValueError)."""
    from pna_kernels.cuda_options import KernelOptions

    return [KernelOptions(**fields) for fields in variants]


def _ensure_one(options: Any, archs: tuple[str, ...], directory: Path, capability: tuple[int, int] | None,
                device: Any) -> dict[str, Any]:
    """cuda.find_or_build for one variant: a row saying how its library was got, or why there is none."""
    from pna_kernels import cuda

    start = time.monotonic()
    row: dict[str, Any] = {"name": options.name(), "status": "failed", "file": None, "error": None}
    try:
        _, path, how = cuda.find_or_build(options, archs, directory, capability, device)
        row.update(status=how, file=path.name)
    except RuntimeError as exc:
        row["error"] = str(exc)[:300]
    row["seconds"] = round(time.monotonic() - start, 1)
    return row


def ensure_variants(options_list: list, archs: tuple[str, ...], directory: Path, *, device: Any = None,
                    capability: tuple[int, int] | None = None, jobs: int = 4,
                    on_result: Callable[[dict[str, Any]], None] = lambda row: None) -> list[dict[str, Any]]:
    """Every variant's library in `directory`: found (loaded on `device` when given, which must then be of
    `capability`), else built for `archs`, `jobs` nvcc builds at a time (the first variant is started first).
    on_result(row) is called as each finishes; rows (name, status found/built/rebuilt/failed, seconds, file,
    error) are returned in plan order."""
    rows: dict[int, dict[str, Any]] = {}
    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        futures = {pool.submit(_ensure_one, options, archs, directory, capability, device): i
                   for i, options in enumerate(options_list)}
        for future in as_completed(futures):
            rows[futures[future]] = future.result()
            on_result(rows[futures[future]])
    return [rows[i] for i in range(len(options_list))]


def main(argv: list[str] | None = None) -> int:
    """Prebuild the libraries a device run loads (see the module docstring); exit 1 if any build failed."""
    parser = argparse.ArgumentParser(prog="python3 -m bench.device.variants", description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default=",".join(PREBUILT_VARIANT_ARCHS),
                        help="compute capabilities of the variants (default: %(default)s; the default library is "
                             "also built for sm_80 and sm_90)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / PREBUILT_DIR, help="folder (default: %(default)s)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 2, help="parallel nvcc builds")
    args = parser.parse_args(argv)
    from pna_kernels import cuda
    from pna_kernels.cuda_options import DEFAULT

    try:
        archs = cuda.parse_archs(args.arch, "--arch")
    except ValueError as exc:
        parser.error(str(exc))
    others = [options for options in variant_options() if options != DEFAULT]
    print(f"building into {args.out}: the default for sm_{',sm_'.join(cuda.PREBUILT_ARCHS)}, "
          f"{len(others)} other variants for sm_{',sm_'.join(archs)}, {args.jobs} at a time", flush=True)
    start = time.monotonic()
    report = lambda row: print(f"  {row['name']:<60} {row['status']:<8} {row['seconds']:6.1f} s  "  # noqa: E731
                               f"{row['error'] or row['file']}", flush=True)
    rows = ensure_variants([DEFAULT], cuda.PREBUILT_ARCHS, args.out, jobs=1, on_result=report)
    rows += ensure_variants(others, archs, args.out, jobs=args.jobs, on_result=report)
    print(f"done in {time.monotonic() - start:.1f} s", flush=True)
    return 1 if any(r["status"] == "failed" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
