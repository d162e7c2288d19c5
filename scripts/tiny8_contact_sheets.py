"""Contact sheets of the Tiny-8 tasks: one PNG per task (rows = classes, columns = examples,
upscaled 2x) and one for the pre-training mixture, written to /tmp/tiny8_sheets/ by default.

    .venv/bin/python scripts/tiny8_contact_sheets.py [--out DIR] [--per-class 8] [--tasks a,b]
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def load_tasks():
    """The Tiny-8 generators. They are self-contained numpy modules: if the surrounding
    ``wemoe_core`` package cannot be imported (e.g. mid-refactor), load them by path."""
    try:
        return importlib.import_module("wemoe_core.pools.tiny8.tasks")
    except ImportError:
        from importlib import util as importlib_util

        d = ROOT / "wemoe_core" / "pools" / "tiny8" / "tasks"
        spec = importlib_util.spec_from_file_location("tiny8_tasks", d / "__init__.py",
                                                      submodule_search_locations=[str(d)])
        mod = importlib_util.module_from_spec(spec)
        sys.modules["tiny8_tasks"] = mod
        spec.loader.exec_module(mod)
        return mod


def sheet(images, labels, n_classes, per_class, zoom=2, pad=2):
    s = images.shape[1] * zoom
    H = n_classes * (s + pad) + pad
    W = per_class * (s + pad) + pad
    out = np.full((H, W, 3), 255, np.uint8)
    for c in range(n_classes):
        idx = np.flatnonzero(labels == c)[:per_class]
        for j, i in enumerate(idx):
            im = images[i].repeat(zoom, 0).repeat(zoom, 1)
            y, x = pad + c * (s + pad), pad + j * (s + pad)
            out[y:y + s, x:x + s] = im
    return out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="/tmp/tiny8_sheets")
    ap.add_argument("--per-class", type=int, default=8)
    ap.add_argument("--tasks", default="")
    ap.add_argument("--split", default="train")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t8 = load_tasks()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = [t for t in args.tasks.split(",") if t] or list(t8.TASKS)
    for name in names:
        if name == "pretrain":
            continue
        spec = t8.TASKS[name]
        C = len(spec.classnames)
        x, y = t8.generate(name, args.split, C * args.per_class * 2, seed=args.seed)
        Image.fromarray(sheet(x, y, C, args.per_class)).save(out / f"{name}.png")
        print(f"{name}: {', '.join(f'{i}={c}' for i, c in enumerate(spec.classnames))}")
    if not args.tasks or "pretrain" in names:
        rng = np.random.default_rng(args.seed)
        x, attrs = t8.pretrain_batch(rng, 96)
        grid = x[:96].reshape(8, 12, 64, 64, 3).transpose(0, 2, 1, 3, 4).reshape(8 * 64, 12 * 64, 3)
        Image.fromarray(grid.repeat(2, 0).repeat(2, 1)).save(out / "pretrain.png")
        print("pretrain attributes (first 12):")
        for k, v in attrs.items():
            print(f"  {k}: {v[:12].tolist()}")
    print(f"sheets in {out}")


if __name__ == "__main__":
    main()
