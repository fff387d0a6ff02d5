#!/usr/bin/env bash
# One short session on a GPU machine (the `device` tool): install flowspec over the machine's own CUDA
# torch (wheels carried in .whl/, no network there), then run the quick start and the SDXL-like smoke
# pre-training on CUDA, i.e. bf16 autocast and fused AdamW. Prints timings; copies results to $OUT.
set -euo pipefail
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site
python3 -m pip install -q --no-index --no-deps --no-build-isolation -e . >/dev/null
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch; print('torch', torch.__version__, torch.cuda.get_device_name())"
for job in "specs/quickstart.yaml" "specs/sdxl_like.yaml --profile smoke --stage pretrain"; do
  TIMEFORMAT="wall %R s for flowspec run $job"
  time (python3 -m flowspec.cli run $job 2>&1 | grep -v "eta" || true)
done
out=${OUT:-/tmp/out}
mkdir -p "$out"
for f in runs/*/*/results.json; do cp "$f" "$out/$(echo "$f" | cut -d/ -f2,3 | tr / _)_results.json"; done
for f in runs/quickstart/*/eval_samples.png; do cp "$f" "$out/$(echo "$f" | cut -d/ -f3 | cut -d- -f1)_eval_samples.png"; done
grep -h '"step"' runs/quickstart/pretrain-*/metrics.jsonl | tail -1
