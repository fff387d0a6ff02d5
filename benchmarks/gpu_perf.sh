#!/usr/bin/env bash
# Issue 15's measurement on a lent GPU machine (about 15 minutes of one H200 in all):
# install flowspec over the machine's own CUDA torch (wheels carried in .whl/, no network there), then
# benchmarks/gpu_step.py on DiT-XL/2 (batch 256) and the SD3-medium-like MMDiT (batch 64), flowspec with
# regional compilation against the hand-written loop eager and compiled, then the ablation rows
# (flowspec eager, flowspec with the whole model compiled). Results: $OUT/gpu_step*.json.
source benchmarks/gpu_env.sh
out=${OUT:-/tmp/out}
mkdir -p "$out"
# Each model in its own process (a fresh allocator for each peak); the compile cache is kept between them.
for model in dit_xl sd3_medium; do
  timeout 240 python3 benchmarks/gpu_step.py --model "$model" --json "$out/gpu_step_$model.json" || echo "$model: exit $?"
done
for mode in false full; do
  timeout 120 python3 benchmarks/gpu_step.py --model dit_xl --compile "$mode" --steps 10 --flowspec-only \
    --json "$out/gpu_step_dit_xl_$mode.json" || echo "ablation $mode: exit $?"
done
