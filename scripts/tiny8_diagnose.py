"""Diagnose whether entropy-based adaptation can route Tiny-8 right (TINY8.md's criteria).

For every task t and expert e: route every block's attention and MLP one-hot to expert e, run
task t's test images through head t, and report the mean prediction entropy and the accuracy.
Then: for how many of task t's images is the own expert the lowest-entropy one?

    python scripts/tiny8_diagnose.py [--zoo assets/tiny8] [--scale 10]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from wemoe_core.merging.wemoe import upscale  # noqa: E402
from wemoe_core.pools.registry import load_pool  # noqa: E402
from wemoe_core.running.adapt import entropy  # noqa: E402


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zoo")
    ap.add_argument("--scale", type=float, default=10.0)
    ap.add_argument("--limit", type=int, default=200)
    args = ap.parse_args()
    if args.zoo:
        os.environ["WEMOE_TINY8_DIR"] = args.zoo
    pool = load_pool("tiny8")
    tasks = pool.tasks
    model = upscale(pool.pretrained(), pool.finetuned_sources(tasks), task_names=tasks, upscale_attention=True)
    heads = pool.heads(tasks)
    T = len(tasks)
    ent = np.zeros((T, T))
    acc = np.zeros((T, T))
    own_lowest, margin = {}, {}
    for t, task in enumerate(tasks):
        x, y = pool.arrays(task, "test")
        data = pool.dataset(task, "test", limit=args.limit)
        xs = torch.stack([data[i][0] for i in range(len(data))])
        ys = torch.tensor([int(data[i][1]) for i in range(len(data))])
        per_image = []
        for e in range(T):
            w = torch.zeros(T)
            w[e] = 1.0
            with model.forced_routing(w):
                z = heads(model(xs), task, args.scale)
            h = entropy(z)
            per_image.append(h)
            ent[t, e] = float(h.mean())
            acc[t, e] = 100.0 * float((z.argmax(-1) == ys).float().mean())
        H = torch.stack(per_image, 1)                                 # (images, experts)
        own_lowest[task] = 100.0 * float((H.argmin(1) == t).float().mean())
        others = torch.cat([H[:, :t], H[:, t + 1:]], 1).min(1).values
        margin[task] = float((others - H[:, t]).mean())
    print(f"mean entropy (nats) at logit scale {args.scale}: rows = task images + head, columns = expert")
    print(pd.DataFrame(ent, index=tasks, columns=tasks).round(2).to_string())
    print("\naccuracy (%): rows = task, columns = expert")
    print(pd.DataFrame(acc, index=tasks, columns=tasks).round(1).to_string())
    print("\nown expert lowest entropy (% of images) and mean margin to the best other expert (nats)")
    print(pd.DataFrame({"own_lowest_%": own_lowest, "margin": margin}).round(2).to_string())


if __name__ == "__main__":
    main()
