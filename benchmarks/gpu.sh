#!/usr/bin/env bash
# The GPU benchmark suite on one CUDA device: first one adaptation step at the paper's batch
# (16 images per task, 8 tasks, ViT-B/32, fp32), ours against the per-sample loop (time, peak
# memory); then ViT-B/32 and L/14 shapes, fp32 and bf16, the per-sample loop, torch.compile, bf16
# precision (no new run after 300 s), then the scale-out check (benchmarks/scale_out.py).
# Under 8 minutes on an H200 by design; not yet run (no GPU was lent to this project).
#   benchmarks/gpu.sh [OUT.json]      (default benchmarks/results/gpu.json; .md/.html/.png beside it)
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
"$PY" - <<'PY'
import sys
try:
    import torch, open_clip  # noqa: F401
except ImportError as e:
    sys.exit(f"error: {e}; install requirements.txt first (pip install -r requirements.txt)")
if not torch.cuda.is_available():
    sys.exit("error: no CUDA device visible; the CPU suite is `python -m benchmarks`")
print(f"torch {torch.__version__} on {torch.cuda.get_device_name(0)}", file=sys.stderr)
PY
OUT="${1:-benchmarks/results/gpu.json}"
status=0
"$PY" -m benchmarks --gpu --threads "$(nproc)" --json "$OUT" || status=$?
# Scale-out check (about a minute): one process against 2 ranks, experts sharded and data parallel,
# ViT-B/32 width, 12 blocks, 8 tasks, the paper's 16 images per task: peak CUDA memory per rank and
# the routers after one step against one process. With one GPU both ranks share it over gloo
# (NCCL needs a GPU per rank, so it is skipped there; the results say so).
"$PY" -m benchmarks.scale_out measure --device cuda --world 2 --blocks 12 --tasks 8 --per-task 16 --threads 4 \
    --json "${OUT%.json}_scale_out.json" || status=$?
exit $status
