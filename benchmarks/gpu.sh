#!/usr/bin/env bash
# The GPU benchmark suite on one CUDA device: ViT-B/32 and L/14 shapes, fp32 and bf16, the
# per-sample loop, torch.compile, bf16 precision. About 5 minutes on an H200.
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
exec "$PY" -m benchmarks --gpu --threads "$(nproc)" --json "${1:-benchmarks/results/gpu.json}"
