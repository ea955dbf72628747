#!/usr/bin/env bash
# The GPU run in one command, from a bare machine with a GPU, its python3, torch and triton (nothing installed):
#
#     bash bench/device_run.sh            # writes report.md, results.json, stages.log to $OUT (else ./device-run)
#     bash bench/device_run.sh --dry      # the same stages on the CPU at a tiny size, no GPU needed
#
# The CUDA kernels' libraries are looked for first in build/pna-cuda (a prebuilt copy carried with the working
# tree: python3 -m bench.device.variants builds it, no GPU needed), and built there with nvcc when missing or when
# they do not load. PNA_CUDA_CACHE overrides the folder.
# Stages, limits (<= 8 minutes in all) and files: bench/README.md, "The device run".
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export PNA_CUDA_CACHE="${PNA_CUDA_CACHE:-$PWD/build/pna-cuda}"
exec python3 -m bench.device.run "$@"
