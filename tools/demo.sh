#!/usr/bin/env bash
# The main job: the bundled demo photo (demo/coffee.jpg) to a 3D model, setting up the environment first.
#
#   bash tools/demo.sh              real default models: SAM mask, DPT depth, BLIP-2 caption, Stable Diffusion prior
#   bash tools/demo.sh --offline    no downloads: GrabCut mask, a given caption, no prior; small sizes, CPU-friendly
#
# Options: --steps N (coarse steps), --workdir DIR (default demo_outputs), --device cpu|cuda (default: cuda if any).
# Where weights cannot be had, the step that needs them stops with one line saying how to supply them.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"

OFFLINE=0
STEPS=""
WORKDIR="demo_outputs"
DEVICE=""
while [ $# -gt 0 ]; do
    case "$1" in
        --offline) OFFLINE=1 ;;
        --steps) STEPS="$2"; shift ;;
        --workdir) WORKDIR="$2"; shift ;;
        --device) DEVICE="$2"; shift ;;
        -h|--help) sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "demo: error: unknown option $1 (see bash tools/demo.sh --help)" >&2; exit 2 ;;
    esac
    shift
done

source "$ROOT/tools/setup_env.sh"
cd "$ROOT"
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore}"
[ -n "$DEVICE" ] || DEVICE="$(python -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"
DATA="$WORKDIR/data/coffee"
RUNS="$WORKDIR/outputs"
TIMESTAMP="$(date +%Y-%m-%d_%H%M%S)"

echo "[demo] 1/2 preprocess demo/coffee.jpg -> $DATA"
if [ -f "$DATA/rgba.png" ]; then
    echo "[demo] $DATA already exists; reusing it (delete it to preprocess again)"
elif [ "$OFFLINE" = 1 ]; then
    sin-preprocess demo/coffee.jpg --output "$DATA" --size 256 --mask-from grabcut --no-depth \
        --caption "a cup of coffee on a saucer"
else
    sin-preprocess demo/coffee.jpg --output "$DATA"
fi

echo "[demo] 2/2 coarse stage on $DEVICE"
if [ "$OFFLINE" = 1 ]; then
    ns-train single-image-nerf --data "$DATA" --output-dir "$RUNS" --experiment-name coffee --timestamp "$TIMESTAMP" \
        --machine.device-type "$DEVICE" --vis tensorboard --max-num-iterations "${STEPS:-300}" \
        --pipeline.datamanager.dataparser.image-size 64 --pipeline.datamanager.train-num-rays-per-batch 1024 \
        --pipeline.datamanager.novel-views.resolution 32 --pipeline.model.implementation torch \
        pipeline.guidance:none
else
    ns-train single-image-nerf --data "$DATA" --output-dir "$RUNS" --experiment-name coffee --timestamp "$TIMESTAMP" \
        --machine.device-type "$DEVICE" --vis tensorboard --max-num-iterations "${STEPS:-5000}" \
        pipeline.guidance:stable-diffusion
fi
RUN="$RUNS/coffee/single-image-nerf/$TIMESTAMP"
echo "[demo] done: $RUN (config.yml, nerfstudio_models/, tensorboard logs)"
echo "[demo] view it: ns-viewer --load-config $RUN/config.yml"
