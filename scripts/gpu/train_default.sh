#!/usr/bin/env bash
# Device command: train the embedded default model on one GPU within ~9 minutes.
# Carried paths: datasets/emoji (blinkgen data emoji --out datasets/emoji) and .devcarry/minilm
# (python scripts/gpu/prune_text_encoder.py .devcarry/minilm datasets/emoji shapes:4000).
set -euo pipefail
export PYTHONPATH="$PWD/src" BLINKGEN_TEXT_ENCODER_DIR="$PWD/.devcarry/minilm" PYTHONUNBUFFERED=1 \
       HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
OUT="${OUT:-/tmp/blinkgen-out}"; mkdir -p "$OUT"; export TQDM_MININTERVAL=20
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
python3 -c "import torch, transformers, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__)"
python3 scripts/gpu/train_default.py --out "$OUT" "$@" 2>&1 | grep --line-buffered -v "step/s\]$" | tee "$OUT/log.txt"
