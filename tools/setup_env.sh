#!/usr/bin/env bash
# Creates (or reuses) the project's virtual environment with everything the demo and the tests need.
# Usage: source tools/setup_env.sh   (sets VENV and activates it)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${SINGLE_IMAGE_NERF_VENV:-$ROOT/.venv}"
STAMP="$VENV/.single-image-nerf-stamp"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)"

# open3d (used by ns-export) needs libusb; install it when we can (root on Debian/Ubuntu).
if ! ldconfig -p 2>/dev/null | grep -q libusb-1.0.so.0; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
        echo "[setup] installing libusb-1.0-0 (needed by open3d)"
        (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) >/dev/null 2>&1 || echo "[setup] could not install libusb-1.0-0; ns-export may fail"
    else
        echo "[setup] libusb-1.0-0 is missing: install it (e.g. sudo apt-get install libusb-1.0-0) for ns-export"
    fi
fi

if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    echo "[setup] creating the environment in $VENV (first run takes a few minutes)"
    PYTHON="${PYTHON:-python3}"
    [ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install -q --upgrade pip
    # torch first, pinned to releases that have CPU and CUDA builds for this Python.
    "$VENV/bin/python" -m pip install -q "torch==${TORCH_VERSION:-2.14.1}" "torchvision==${TORCHVISION_VERSION:-0.29.1}"
    "$VENV/bin/python" -m pip install -q -e "$ROOT[test,batch]"
    echo "$WANT" > "$STAMP"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
