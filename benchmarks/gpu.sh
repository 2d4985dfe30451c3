#!/usr/bin/env bash
# The prepared GPU check, one short run on one accelerator (benchmarks/gpu.py says what it measures):
#   pip install torch==<a CUDA build> && pip install -e . && bash benchmarks/gpu.sh [--out DIR] [--budget SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
"${PYTHON:-python}" benchmarks/gpu.py "$@"
