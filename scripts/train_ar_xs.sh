#!/bin/bash
# Usage: scripts/train_ar_xs.sh  (CPU, about an hour on 2 cores; everything under runs/ar-xs/)
# The LLM family on a larger tokenizer (FSQ XS: 1000 codes, 640 bits/image vs tiny's 448), then
# the causal Llama XS and the masked (parallel) Llama XS on its tokens, same optimiser settings.
set -e
cd "$(dirname "$0")/.."; source .venv/bin/activate
D=datasets/emoji+shapes:1500
R=runs/ar-xs
[ -f $R/tok/model/config.json ] || blinkgen train --family tokenizer --preset XS --data $D --out $R/tok --steps 700 --batch-size 32 \
  --lr 0.001 --warmup 50 --log-every 50 --eval-every 350 --sample-every 0 --ckpt-every 350
for fam in ar maskgit; do
  [ -f $R/$fam/model/config.json ] || blinkgen train --family $fam --preset XS --data $D --out $R/$fam --autoencoder $R/tok/model \
    --steps 800 --batch-size 32 --lr 0.0006 --warmup 60 --log-every 50 --eval-every 400 --sample-every 0 \
    --ckpt-every 200 --save-dtype fp16
done
echo DONE
