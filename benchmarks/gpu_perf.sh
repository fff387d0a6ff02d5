#!/usr/bin/env bash
# Issue 15's measurement on a lent GPU machine (about 10 minutes of one H200):
# install flowspec over the machine's own CUDA torch (wheels carried in .whl/, no network there), then
# benchmarks/gpu_step.py on DiT-XL/2 (batch 256) and the SD3-medium-like MMDiT (batch 64), flowspec with
# regional compilation against the hand-written loop eager and compiled, then flowspec uncompiled.
# Results: $OUT/gpu_step*.json.
source benchmarks/gpu_env.sh
out=${OUT:-/tmp/out}
mkdir -p "$out"
# Each model in its own process (a fresh allocator for each peak); the compile cache is kept between them.
# About 10 minutes in all on an H200, most of it compiling (regional for flowspec, whole-model for the reference).
for model in dit_xl sd3_medium; do
  timeout 270 python3 benchmarks/gpu_step.py --model "$model" --steps 10 --warmup 3 \
    --json "$out/gpu_step_$model.json" || echo "$model: exit $?"
done
# Ablation: flowspec without compilation (the other ablations are measured on the CPU, docs/performance.md).
timeout 90 python3 benchmarks/gpu_step.py --model dit_xl --compile false --steps 10 --warmup 3 --flowspec-only \
  --json "$out/gpu_step_dit_xl_eager.json" || echo "ablation: exit $?"
