"""Write example images for the app's Explore gallery: the first N test images of each task of a
pool, as ``assets/examples/<task>/<i>_<class>.png`` (the app reads them when present, and
otherwise generates the same images into a temporary folder on first use).

    .venv/bin/python scripts/make_examples.py --pool tiny8 --per-task 2
"""
from __future__ import annotations

import argparse
import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
log = logging.getLogger("make_examples")


def main() -> None:
    from PIL import Image

    from wemoe_core.pools import load_pool
    from wemoe_core.running.analysis import example_images

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="tiny8")
    ap.add_argument("--per-task", type=int, default=2)
    ap.add_argument("--out", default=str(ROOT / "assets" / "examples"))
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    pool = load_pool(args.pool)
    for task in pool.tasks:
        folder = Path(args.out) / task
        folder.mkdir(parents=True, exist_ok=True)
        for i, (pixels, label) in enumerate(example_images(pool, task, args.per_task)):
            path = folder / f"{i}_{re.sub(r'[^a-z0-9]+', '-', label.lower()).strip('-')}.png"
            Image.fromarray(pixels).save(path)
            log.info("wrote %s", path.relative_to(ROOT) if path.is_relative_to(ROOT) else path)


if __name__ == "__main__":
    main()
