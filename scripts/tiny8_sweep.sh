#!/bin/bash
# Try one WEMoE adaptation recipe on a Tiny-8 build without touching it: links the zoo's weights
# into a scratch folder with its own recipes.json, runs the benchmark for WEMoE, and appends
# "name avg last-module share-per-task wins/8" to $OUT/results.txt. How the shipped recipe was chosen:
#   scripts/tiny8_sweep.sh assets/tiny8 lr1e2 '{"adapt": {"lr": 0.01, "steps": 200}}'
# Overrides are merged into the recipe of assets/tiny8/recipes.json.
set -euo pipefail
zoo=$(realpath "$1"); name=$2; override=${3:-"{}"}
OUT=${OUT:-/tmp/tiny8-sweep}; d=$OUT/$name
root=$(cd "$(dirname "$0")/.." && pwd); py=$root/.venv/bin/python
mkdir -p "$d/finetuned"
for f in pretrained.safetensors heads.safetensors manifest.json; do ln -sf "$zoo/$f" "$d/$f"; done
for f in "$zoo"/finetuned/*; do ln -sf "$f" "$d/finetuned/"; done
"$py" - "$zoo/recipes.json" "$override" > "$d/recipes.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))["recipes"]["wemoe"]
o = json.loads(sys.argv[2])
for k in ("hparams", "adapt"):
    r.setdefault(k, {}).update(o.get(k, {}))
print(json.dumps({"recipes": {"wemoe": r}}))
PY
cd "$root"
WEMOE_TINY8_DIR=$d "$py" -m wemoe_core evaluate --pool tiny8 --methods wemoe --json "$d/out.json" > "$d/log" 2>&1
"$py" - "$d/out.json" "$name" >> "$OUT/results.txt" <<'PY'
import json, sys
d = json.load(open(sys.argv[1])); s = d["routing_share"]; last = list(next(iter(s.values())))[-1]
share = {t: round(v[last]) for t, v in s.items()}
print(sys.argv[2], d["accuracy"]["wemoe"]["avg"], last, share, f"{sum(v > 50 for v in share.values())}/8")
PY
tail -1 "$OUT/results.txt"
