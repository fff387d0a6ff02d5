#!/usr/bin/env bash
# One short session on a GPU machine (the `device` tool): install flowspec over the machine's own CUDA
# torch (wheels carried in .whl/, no network there), then run the quick start and the SDXL-like smoke
# pre-training on CUDA, i.e. bf16 autocast and fused AdamW. Prints timings; copies results to $OUT.
source benchmarks/gpu_env.sh
for job in "specs/quickstart.yaml" "specs/sdxl_like.yaml --profile smoke --stage pretrain"; do
  TIMEFORMAT="wall %R s for flowspec run $job"
  time (python3 -m flowspec.cli run $job 2>&1 | grep -v "eta" || true)
done
out=${OUT:-/tmp/out}
mkdir -p "$out"
for f in runs/*/*/results.json; do cp "$f" "$out/$(echo "$f" | cut -d/ -f2,3 | tr / _)_results.json"; done
for f in runs/quickstart/*/eval_samples.png; do cp "$f" "$out/$(echo "$f" | cut -d/ -f3 | cut -d- -f1)_eval_samples.png"; done
grep -h '"step"' runs/quickstart/pretrain-*/metrics.jsonl | tail -1
