#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (CPU is enough; GPU tests run only where CUDA is).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
exec python -m pytest -q -p no:cacheprovider "$@"
