#!/usr/bin/env bash
# One prepared GPU run (at most 7 minutes: per-command timeouts 2 x (90 + 2 x 60) s): eval forward and training step with --device cuda,
# float32 and bfloat16, eager and compiled (torch.compile, inductor, fullgraph), every number written as JSON
# under ${OUT:-gpu-results}/. Not part of CI. Usage: bash benchmarks/gpu.sh [OUT_DIR]
#   eval: 171 classes, 512x512, batch 1 (latency) and batch 16 (throughput: images/s = 16 / median)
#   training: batch 16 would need forward.py's batch flag; here its fixed batch 2 (step time and peak memory)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT="${1:-${OUT:-gpu-results}}"
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; print(torch.cuda.get_device_name())" \
  | tee "$OUT/device.txt"
run() {  # name, seconds allowed, command...
  local name=$1 limit=$2; shift 2
  echo "== $name" >&2
  timeout "$limit" "$@" > "$OUT/$name.md" 2> "$OUT/$name.log" || echo "$name: failed or timed out (see $OUT/$name.log)" >&2
}
for dtype in float32 bfloat16; do
  # eager tables: eval at 171 classes, training step and its peak memory at 171 classes
  run "forward-$dtype" 90 python benchmarks/forward.py --device cuda --dtype "$dtype" --repeats 5 \
    --classes 171 --train-classes 171 --json "$OUT/forward-$dtype.json"
  # eager vs compiled eval forward, batch 1 and batch 16
  for batch in 1 16; do
    run "runtimes-$dtype-b$batch" 60 python benchmarks/runtimes.py --device cuda --dtype "$dtype" \
      --classes 171 --batch "$batch" --repeats 10 --skip onnx --json "$OUT/runtimes-$dtype-b$batch.json"
  done
done
echo "wrote $OUT/" >&2
