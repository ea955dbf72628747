#!/usr/bin/env bash
# The GPU run in one command, from a bare machine with a GPU, its python3, torch and triton (nothing installed):
#
#     bash bench/device_run.sh            # writes report.md, results.json, stages.log to $OUT (else ./device-run)
#     bash bench/device_run.sh --dry      # the same stages on the CPU at a tiny size, no GPU needed
#
# Stages, limits (<= 8 minutes in all) and files: bench/README.md, "The device run".
cd "$(dirname "$0")/.." || exit 1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
exec python3 -m bench.device.run "$@"
