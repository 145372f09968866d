#!/usr/bin/env bash
# One command that proves the GPU path on a bare machine: photo -> coarse -> refine -> mesh, splat, turntable.
#
#   bash tools/gpu_check.sh --download           on a machine with PyPI: fill .whl/ with the wheels the check needs
#   bash tools/gpu_check.sh                      on the GPU machine (Python 3.12 and a CUDA build of torch there)
#   bash tools/gpu_check.sh --device cpu --tiny  the same steps at the smallest sizes, in the current environment
#
# Steps: install the project and the packages it needs from .whl/ into a venv that sees the machine's torch
# (skipped where the project already imports, or with --no-install); build gsplat's CUDA extension, or load the one
# kept in .whl/torch_extensions/ by an earlier run, and time it; pytest -m gpu; then benchmarks/gpu_check.py runs
# the whole chain at the real default sizes with the Stable Diffusion 2.1-base architecture at random weights and
# writes report.json and table.md under --out; it also times each stage of the zero123 recipe's GPU budget (12 views
# a step at 64 px, 4 at 128, 2 at 256) with its peak memory, and projects that recipe's photo-to-mesh time.
# Options: --out DIR (default gpu_check_outputs), --device auto|cuda|cpu, --tiny, --no-install, --no-pytest,
# --wheels DIR (default .whl), --venv DIR (default /tmp/gpu-check-venv); other options pass to benchmarks/gpu_check.py
# (--coarse-steps N, --refine-steps N, --recipe-steps N, --photo FILE).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

OUT="gpu_check_outputs"
DEVICE="auto"
TINY=0
INSTALL="auto"
PYTEST=1
DOWNLOAD=0
WHEELS="${GPU_CHECK_WHEELS:-$ROOT/.whl}"
VENV="${GPU_CHECK_VENV:-/tmp/gpu-check-venv}"
PASS=()
while [ $# -gt 0 ]; do
    case "$1" in
        --download) DOWNLOAD=1 ;;
        --out) OUT="$2"; shift ;;
        --device) DEVICE="$2"; shift ;;
        --tiny) TINY=1 ;;
        --no-install) INSTALL=0 ;;
        --no-pytest) PYTEST=0 ;;
        --wheels) WHEELS="$2"; shift ;;
        --venv) VENV="$2"; shift ;;
        --coarse-steps|--refine-steps|--photo|--prior-repeats) PASS+=("$1" "$2"); shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "gpu_check: error: unknown option $1 (see bash tools/gpu_check.sh --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$DEVICE" in auto|cuda|cpu) ;; *) echo "gpu_check: error: --device must be auto, cuda or cpu" >&2; exit 2 ;; esac

# What the chain imports that a CUDA machine with torch, transformers, diffusers' hub and the scientific stack lacks
# (benchmarks/gpu_check.py lists every distribution the chain imported in its report). Not carried: open3d,
# pymeshlab and mediapy (nerfstudio's exporter module imports them, `gaussian-splat` does not use them: the check
# stands in empty modules), and what the chain never imports (comet_ml, wandb, av, timm, jupyter, ...).
PACKAGES=(
    nerfstudio==1.1.5 gsplat==1.4.0 nerfacc==0.5.2 diffusers==0.42.1 importlib-metadata==10.2.0
    tyro==1.0.17 docstring-parser==0.18.0 typeguard==4.6.1
    viser==0.2.7 msgspec==0.23.0 websockets==17.4
    plyfile==1.1.3 trimesh==5.2.0 xatlas==0.0.11
    appdirs==1.4.4 pyquaternion==0.9.9 splines==0.3.0 pytorch-msssim==1.0.0 tensorly==0.10.0 fpsample==0.3.3
    rawpy==0.28.0 pathos==0.3.5 pox==0.3.7 ppft==1.7.8 dill==0.4.1 multiprocess==0.70.19
)

if [ "$DOWNLOAD" = 1 ]; then
    PY="${PYTHON:-python3}"
    mkdir -p "$WHEELS"
    echo "[gpu-check] downloading ${#PACKAGES[@]} wheels for CPython 3.12 on x86-64 Linux into $WHEELS"
    "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 --platform any -d "$WHEELS" "${PACKAGES[@]}"
    count=$(ls "$WHEELS"/*.whl | wc -l)
    echo "[gpu-check] $WHEELS: $count wheels, $(du -sh --exclude=torch_extensions "$WHEELS" | cut -f1)"
    exit 0
fi

mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
SETUP="$OUT/setup.env"
: > "$SETUP"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}" HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.2f", b - a }'; }

# ------------------------------------------------------------------------------------------ the environment
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
    if [ -x "$ROOT/.venv/bin/python" ]; then PY="$ROOT/.venv/bin/python"; else PY="python3"; fi
fi
IMPORTS='import single_image_nerf.method_configs, diffusers, gsplat'
if [ "$INSTALL" = auto ]; then
    if "$PY" -c "$IMPORTS" >/dev/null 2>&1; then INSTALL=0; else INSTALL=1; fi
fi
if [ "$INSTALL" = 1 ]; then
    ls "$WHEELS"/*.whl >/dev/null 2>&1 || {
        echo "gpu_check: error: no wheels in $WHEELS: run 'bash tools/gpu_check.sh --download' where PyPI is reachable" >&2
        exit 2; }
    BASE="${PYTHON:-python3}"
    start=$(now)
    echo "[gpu-check] installing the project and $(ls "$WHEELS"/*.whl | wc -l) wheels into $VENV"
    rm -rf "$VENV"
    "$BASE" -m venv --system-site-packages --without-pip "$VENV"
    # When the machine's python3 is itself a venv, a venv made from it sees the base interpreter's packages, not
    # that venv's torch: name its site folders in a .pth (appended after the new venv's own, which win).
    SITE="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$BASE" -c 'import site, sys; print("\n".join(site.getsitepackages()))' > "$SITE/_gpu_check_base.pth"
    "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-compile --find-links "$WHEELS" "$WHEELS"/*.whl
    "$VENV/bin/python" -m pip install -q --no-index --no-deps --no-build-isolation -e "$ROOT"
    PY="$VENV/bin/python"
    "$PY" -c "$IMPORTS"
    echo "install_s=$(since "$start")" >> "$SETUP"
    echo "[gpu-check] installed in $(since "$start") s"
else
    echo "[gpu-check] using the current environment ($PY)"
fi
"$PY" -c 'import torch; print(f"[gpu-check] torch {torch.__version__}, CUDA {torch.version.cuda}, "
           f"device {torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}")'
if [ "$DEVICE" = auto ]; then
    DEVICE="$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
fi

# ------------------------------------------------------------------------------- gsplat's CUDA extension
# gsplat's registry package compiles its kernels with nvcc at first use into TORCH_EXTENSIONS_DIR. The compiled
# library is kept in .whl/torch_extensions/prebuilt with a stamp of what it was built for; where the stamp matches,
# a module gsplat.csrc written into the environment loads it (gsplat tries `from gsplat import csrc` first), so
# nothing is compiled again. Bring gsplat_cuda.so and its stamp back from --out once to carry them.
if [ "$DEVICE" = cuda ]; then
    export TORCH_EXTENSIONS_DIR="$WHEELS/torch_extensions"
    export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
    PREBUILT="$TORCH_EXTENSIONS_DIR/prebuilt"
    STAMP="$("$PY" -c 'import torch, importlib.metadata as m; c = torch.cuda.get_device_capability();
print(f"torch={torch.__version__} cuda={torch.version.cuda} gsplat={m.version(\"gsplat\")} sm={c[0]}{c[1]}")')"
    GSPLAT_DIR="$("$PY" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("gsplat").origin))')"
    start=$(now)
    if [ -f "$PREBUILT/gsplat_cuda.so" ] && [ "$(cat "$PREBUILT/stamp.txt" 2>/dev/null)" = "$STAMP" ]; then
        MODE="carried"
    else
        MODE="built"
        rm -f "$GSPLAT_DIR/csrc.py"
        echo "[gpu-check] compiling gsplat's CUDA kernels (MAX_JOBS=$MAX_JOBS) into $TORCH_EXTENSIONS_DIR"
        "$PY" -c 'from gsplat.cuda import _backend; assert _backend._C is not None, "gsplat: no CUDA extension"'
        BUILT="$("$PY" -c 'from torch.utils.cpp_extension import _get_build_directory as d; print(d("gsplat_cuda", False))')"
        mkdir -p "$PREBUILT"
        cp "$BUILT/gsplat_cuda.so" "$PREBUILT/gsplat_cuda.so"
        echo "$STAMP" > "$PREBUILT/stamp.txt"
        cp "$PREBUILT/gsplat_cuda.so" "$PREBUILT/stamp.txt" "$OUT/"
    fi
    cat > "$GSPLAT_DIR/csrc.py" <<EOF
"""gsplat's compiled CUDA extension ($STAMP), loaded from $PREBUILT (written by tools/gpu_check.sh)."""
import importlib.util as _util

import torch as _torch  # noqa: F401  (the extension links against torch's libraries)

_spec = _util.spec_from_file_location("gsplat_cuda", "$PREBUILT/gsplat_cuda.so")
_module = _util.module_from_spec(_spec)
_spec.loader.exec_module(_module)
globals().update({k: v for k, v in vars(_module).items() if not k.startswith("__")})
EOF
    "$PY" -c 'from gsplat.cuda import _backend; assert _backend._C is not None and hasattr(_backend._C, "isect_tiles")'
    EXT_S="$(since "$start")"
    echo "extension_mode=$MODE" >> "$SETUP"
    echo "extension_s=$EXT_S" >> "$SETUP"
    echo "[gsplat] CUDA extension $MODE in $EXT_S s ($STAMP)"
fi

# ------------------------------------------------------------------------------------------ pytest -m gpu
if [ "$PYTEST" = 1 ]; then
    mapfile -t GPU_TESTS < <(grep -l "pytest.mark.gpu" tests/test_*.py)
    start=$(now)
    echo "[gpu-check] pytest -m gpu ${GPU_TESTS[*]}"
    set +e
    "$PY" -m pytest -q -p no:cacheprovider -m gpu --junitxml "$OUT/pytest-gpu.xml" "${GPU_TESTS[@]}"
    rc=$?
    set -e
    echo "pytest_rc=$rc" >> "$SETUP"
    echo "pytest_s=$(since "$start")" >> "$SETUP"
    echo "pytest_junit=$OUT/pytest-gpu.xml" >> "$SETUP"
fi

# ------------------------------------------------------------------------------------------ the chain
CHAIN=(--device "$DEVICE" --out "$OUT" --setup "$SETUP")
[ "$TINY" = 1 ] && CHAIN+=(--tiny)
set +e
"$PY" benchmarks/gpu_check.py "${CHAIN[@]}" "${PASS[@]}"
rc=$?
set -e
if [ "$PYTEST" = 1 ] && [ "$(grep '^pytest_rc=' "$SETUP" | cut -d= -f2)" != 0 ] && [ "$rc" = 0 ]; then rc=1; fi
echo "[gpu-check] report: $OUT/report.json, table: $OUT/table.md (exit status $rc)"
exit "$rc"
