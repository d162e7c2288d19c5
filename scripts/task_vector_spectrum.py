"""How low-rank are a pool's task vectors? For every fine-tuned matrix of the attention and MLP
blocks, the share of the task vector's energy (squared Frobenius norm) in its top-r singular
values, averaged per kind of matrix; a random matrix of the same shape is the reference.

    .venv/bin/python scripts/task_vector_spectrum.py [--pool tiny8] [--ranks 16,24]
"""
from __future__ import annotations

import argparse
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def energy_shares(delta: torch.Tensor, ranks: list[int]) -> list[float]:
    s2 = torch.linalg.svdvals(delta.float()) ** 2
    cum = s2.cumsum(0) / s2.sum()
    return [float(cum[min(r, len(cum)) - 1]) for r in ranks]


def main() -> None:
    from wemoe_core.pools import load_pool

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pool", default="tiny8")
    ap.add_argument("--ranks", default="16,24")
    args = ap.parse_args()
    ranks = [int(r) for r in args.ranks.split(",")]
    pool = load_pool(args.pool)
    pre = {k: v.detach() for k, v in pool.pretrained().state_dict().items()}
    shares, shapes = defaultdict(list), {}
    for task in pool.tasks:
        ft = pool.finetuned_source(task)()
        for name, w0 in pre.items():
            if w0.dim() != 2 or name not in ft or not (".attn." in name or ".mlp." in name):
                continue
            delta = ft[name].float() - w0.float()
            if float(delta.norm()) == 0.0:
                continue
            kind = name.split(".", 3)[-1]                      # e.g. mlp.c_fc.weight
            shares[kind].append(energy_shares(delta, ranks))
            shapes[kind] = tuple(delta.shape)
    g = torch.Generator().manual_seed(0)
    head = " | ".join(f"top {r}: task vectors / random" for r in ranks)
    print(f"| matrix | shape | {head} |\n|---|---|" + "---|" * len(ranks))
    for kind, rows in sorted(shares.items()):
        mean = [sum(x[i] for x in rows) / len(rows) for i in range(len(ranks))]
        rnd = energy_shares(torch.randn(*shapes[kind], generator=g), ranks)
        cells = " | ".join(f"{m:.0%} / {r:.0%}" for m, r in zip(mean, rnd))
        print(f"| {kind} ({len(rows)}) | {shapes[kind][0]}x{shapes[kind][1]} | {cells} |")


if __name__ == "__main__":
    main()
