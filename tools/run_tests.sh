#!/usr/bin/env bash
# Sets up the environment and runs the whole test suite (CPU is enough; GPU tests run only where CUDA is).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
source "$ROOT/tools/setup_env.sh"
# The viewer test screenshots the live viewer in headless Chromium (Debian's package); install it when we can.
if ! command -v chromium >/dev/null && ! command -v chromium-browser >/dev/null; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "[setup] installing chromium (for the viewer test)"
        (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
            || echo "[setup] could not install chromium; the viewer's browser test will be skipped"
    else
        echo "[setup] chromium is missing (e.g. sudo apt-get install chromium); the viewer's browser test will be skipped"
    fi
fi
cd "$ROOT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 SINGLE_IMAGE_NERF_OFFLINE=1 PYTHONUNBUFFERED=1
exec python -m pytest -q -p no:cacheprovider "$@"
