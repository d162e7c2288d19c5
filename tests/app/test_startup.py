"""Start-up stays fast: building the page imports neither torch nor open_clip (seconds on a
small CPU, more on a cold disk); the first page load imports them in the background, and every
model-building path imports them where it needs them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

PROBE = """
import json, sys
from app.ui import build_demo
build_demo()
before = sorted(m for m in ("torch", "open_clip", "safetensors.torch", "sklearn", "plotly.graph_objects")
                if m in sys.modules)
from app.config import warm_up
warm_up(); warm_up()                        # twice: one thread, not two
import threading
t = [x for x in threading.enumerate() if x.name == "warm-up"]
for x in t:
    x.join(120)
print(json.dumps({"before": before, "threads": len(t), "after": "open_clip" in sys.modules and "torch" in sys.modules}))
"""


def test_building_the_page_imports_no_torch_and_warm_up_does():
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", PROBE], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"before": [], "threads": 1, "after": True}


def test_a_tower_builds_in_a_fresh_process_without_open_clip_imported_first():
    code = ("from wemoe_core.model.towers import VisionConfig, build_vision\n"
            "m = build_vision(VisionConfig(image_size=32, patch_size=16, width=32, layers=1, heads=2, output_dim=8))\n"
            "print(type(m).__module__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "open_clip.transformer"
