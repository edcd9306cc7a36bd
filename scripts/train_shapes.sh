#!/usr/bin/env bash
# A shapes-only text-to-image model within 2 CPU-hours (issue 17's shapes recipe).
#
#   nohup scripts/train_shapes.sh > ~/.cache/blinkgen/runs/shapes-p4.log 2>&1 &
#   scripts/train_shapes.sh --resume          # after any interruption: same command + --resume
#
# uvit-S-p4 (patch 4 on the 16x16 latent: 16 tokens, ~2.8x the steps per CPU-second of uvit-S)
# over procedurally drawn scenes, with the mirror augmentation that swaps left/right in the
# caption. Stops after CPU_LIMIT CPU-seconds of training steps (all threads, summed over resumes)
# or at STEPS. Score it with:
#   blinkgen eval --model "$RUN/model" --data shapes:1500 --prompts bench/prompts/shapes_eval.txt \
#       --samples 128 --out eval/shapes-only
set -euo pipefail
cd "$(dirname "$0")/.."
BLINKGEN="${BLINKGEN:-.venv/bin/blinkgen}"
RUN="${RUN:-$HOME/.cache/blinkgen/runs/shapes-p4}"
PRESET="${PRESET:-uvit-S-p4}"
STEPS="${STEPS:-22000}"  # 0.32 CPU-s per step at 1 thread (0.43 at 2) on one machine, 0.54 on another: size STEPS so the cosine ends inside CPU_LIMIT
CPU_LIMIT="${CPU_LIMIT:-7200}"    # 2 CPU-hours
THREADS="${THREADS:-1}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
exec "$BLINKGEN" train --family diffusion --data shapes:12000 --preset "$PRESET" \
  --autoencoder src/blinkgen/weights/default/autoencoder --out "$RUN" --steps "$STEPS" \
  --batch-size 64 --lr 5e-4 --warmup 300 --min-lr-ratio 0.1 \
  --ema-decay 0.999 --ema-extra 0.9995 --augment mirror \
  --log-every 50 --eval-every 1000 --sample-every 2000 --ckpt-every 250 --keep-checkpoints 2 \
  --save-dtype fp16 --threads "$THREADS" --cpu-limit "$CPU_LIMIT" "$@"
