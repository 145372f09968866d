#!/usr/bin/env bash
# The main job: the bundled demo photo (demo/coffee.jpg) to a 3D model, setting up the environment first:
# preprocess -> coarse stage -> refine stage -> mesh export -> turntable video.
#
#   bash tools/demo.sh              real default models: SAM mask, DPT depth, BLIP caption, Stable Diffusion prior
#                                   (downloaded on first use into ~/.cache/single-image-nerf)
#   bash tools/demo.sh --offline    no downloads: GrabCut mask, a given caption, no prior; small sizes, CPU-friendly
#
# Options: --steps N (coarse steps; refine takes N/2), --workdir DIR (default demo_outputs),
# --device cpu|cuda (default: cuda if any), --tiny (smallest sizes, same models: checks the chain on a CPU).
# Where weights cannot be had, the step that needs them stops with one line saying how to supply them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

OFFLINE=0
TINY=0
STEPS=""
WORKDIR="demo_outputs"
DEVICE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --offline) OFFLINE=1 ;;
        --tiny) TINY=1 ;;
        --steps) STEPS="$2"; shift ;;
        --workdir) WORKDIR="$2"; shift ;;
        --device) DEVICE="$2"; shift ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo: error: unknown option $1 (see bash tools/demo.sh --help)" >&2; exit 2 ;;
    esac
    shift
done
case "$STEPS" in ''|*[!0-9]*|0) [ -z "$STEPS" ] || { echo "demo: error: --steps must be a positive integer, got $STEPS" >&2; exit 2; } ;; esac

source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
[ -n "$DEVICE" ] || DEVICE="$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
DATA="$WORKDIR/data/coffee"
RUNS="$WORKDIR/outputs"
EXPORTS="$WORKDIR/exports"
TIMESTAMP="$(date +%Y-%m-%d_%H%M%S)"

# Sizes: the real defaults, small ones for --offline, the smallest for --tiny.
if [ "$TINY" = 1 ]; then
    PRE_SIZE=64; COARSE_STEPS="${STEPS:-6}"
    COARSE_SIZES=(--pipeline.datamanager.dataparser.image-size 32 --pipeline.datamanager.train-num-rays-per-batch 256
        --pipeline.datamanager.novel-views.resolution 16 --pipeline.model.implementation torch
        --pipeline.model.num-levels 8 --pipeline.model.max-res 128 --pipeline.model.log2-hashmap-size 14
        --pipeline.model.num-proposal-samples-per-ray 32 --pipeline.model.num-nerf-samples-per-ray 24)
    REFINE_SIZES=(--pipeline.model.seed-num-points 300 --pipeline.model.seed-grid-resolution 32
        --pipeline.model.seed-density-level 1.0 --pipeline.datamanager.novel-views.resolution 16)
    MESH_SIZES=(--resolution 32 --depth-views 8 --depth-resolution 32 --bake-views 4 --bake-resolution 32
                --texture-size 128); TURNTABLE_SIZES=(--frames 4 --resolution 32)
elif [ "$OFFLINE" = 1 ]; then
    PRE_SIZE=256; COARSE_STEPS="${STEPS:-300}"
    COARSE_SIZES=(--pipeline.datamanager.dataparser.image-size 64 --pipeline.datamanager.train-num-rays-per-batch 1024
        --pipeline.datamanager.novel-views.resolution 32 --pipeline.model.implementation torch)
    REFINE_SIZES=(--pipeline.model.seed-num-points 2000 --pipeline.model.seed-grid-resolution 64
        --pipeline.datamanager.novel-views.resolution 64)
    MESH_SIZES=(--resolution 128 --depth-resolution 128 --bake-views 16 --bake-resolution 256 --texture-size 1024)
    TURNTABLE_SIZES=(--frames 36 --resolution 128)
else
    PRE_SIZE=512; COARSE_STEPS="${STEPS:-5000}"
    COARSE_SIZES=(); REFINE_SIZES=(); MESH_SIZES=(); TURNTABLE_SIZES=()
fi
REFINE_STEPS=$(( COARSE_STEPS / 2 > 2 ? COARSE_STEPS / 2 : 2 ))
if [ "$OFFLINE" = 1 ]; then GUIDANCE=(pipeline.guidance:none); else GUIDANCE=(pipeline.guidance:stable-diffusion); fi

echo "[demo] 1/5 preprocess demo/coffee.jpg -> $DATA"
if [ -f "$DATA/rgba.png" ]; then
    echo "[demo] $DATA already exists; reusing it (delete it to preprocess again)"
elif [ "$OFFLINE" = 1 ]; then
    sin-preprocess demo/coffee.jpg --output "$DATA" --size "$PRE_SIZE" --mask-from grabcut --no-depth \
        --caption "a cup of coffee on a saucer"
else
    sin-preprocess demo/coffee.jpg --output "$DATA" --size "$PRE_SIZE"
fi

COMMON=(--output-dir "$RUNS" --experiment-name coffee --timestamp "$TIMESTAMP" --machine.device-type "$DEVICE"
        --vis tensorboard)
echo "[demo] 2/5 coarse stage on $DEVICE ($COARSE_STEPS steps)"
ns-train single-image-nerf --data "$DATA" "${COMMON[@]}" --max-num-iterations "$COARSE_STEPS" \
    "${COARSE_SIZES[@]}" "${GUIDANCE[@]}"
COARSE="$RUNS/coffee/single-image-nerf/$TIMESTAMP"

echo "[demo] 3/5 refine stage on $DEVICE ($REFINE_STEPS steps)"
ns-train single-image-refine --pipeline.model.coarse-config "$COARSE/config.yml" "${COMMON[@]}" \
    --max-num-iterations "$REFINE_STEPS" "${REFINE_SIZES[@]}" "${GUIDANCE[@]}"
REFINE="$RUNS/coffee/single-image-refine/$TIMESTAMP"

echo "[demo] 4/5 textured mesh of the refined model -> $EXPORTS/coffee-$TIMESTAMP.glb"
sin-export-mesh --load-config "$REFINE/config.yml" --output "$EXPORTS/coffee-$TIMESTAMP.glb" "${MESH_SIZES[@]}"

echo "[demo] 5/5 turntable of the refined splats -> $EXPORTS/coffee-$TIMESTAMP.gif"
sin-render-turntable --load-config "$REFINE/config.yml" --output "$EXPORTS/coffee-$TIMESTAMP.gif" "${TURNTABLE_SIZES[@]}"

echo "[demo] done: coarse run $COARSE, refined run $REFINE, exports in $EXPORTS"
echo "[demo] view it: ns-viewer --load-config $REFINE/config.yml"
