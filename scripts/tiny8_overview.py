"""One picture of Tiny-8 for the README: a row per task, one test image per class (the first of
each class in the test split), upscaled 2x, written to assets/examples/tiny8_overview.png.

    .venv/bin/python scripts/tiny8_overview.py [--out assets/examples/tiny8_overview.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    from wemoe_core.pools.tiny8.tasks import TASKS, generate

    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "assets" / "examples" / "tiny8_overview.png"))
    args = ap.parse_args()
    rows = []
    for name, spec in TASKS.items():
        x, y = generate(name, "test", 100, seed=0)
        tiles = [x[int(np.flatnonzero(y == c)[0])] for c in range(len(spec.classnames))]
        gap = np.full((x.shape[1], 2, 3), 255, np.uint8)
        rows.append(np.concatenate([np.concatenate([t, gap], 1) for t in tiles], 1))
        rows.append(np.full((2, rows[-1].shape[1], 3), 255, np.uint8))
    sheet = Image.fromarray(np.concatenate(rows, 0))
    sheet = sheet.resize((sheet.width * 2, sheet.height * 2), Image.NEAREST)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    sheet.save(args.out, optimize=True)
    print(f"wrote {args.out} ({sheet.width}x{sheet.height}); rows: {', '.join(TASKS)}")


if __name__ == "__main__":
    main()
