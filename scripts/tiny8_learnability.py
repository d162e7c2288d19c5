"""Rough learnability check of the Tiny-8 tasks (CPU, one thread).

Per task: a small open_clip VisionTransformer (64 px, 16 px patches, width 128, 4 layers,
4 heads, output 128) + linear head trained FROM SCRATCH on `--n-train` train images for
`--steps` AdamW steps (batch 64, lr 1e-3, cosine, weight decay 0.05), test accuracy on
`--n-test` test images. Baseline "too easy" check: logistic regression on raw 16x16-downsampled
pixels (same train/test images).

    .venv/bin/python scripts/tiny8_learnability.py [--tasks scenes,signs] [--steps 400]
"""
from __future__ import annotations

import argparse
import importlib
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

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


def logreg_baseline(xtr, ytr, xte, yte):
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    def feat(x):
        n = x.shape[0]
        return x.reshape(n, 16, 4, 16, 4, 3).mean(axis=(2, 4)).reshape(n, -1) / 255.0

    sc = StandardScaler().fit(feat(xtr))
    clf = LogisticRegression(max_iter=300, C=0.1)
    clf.fit(sc.transform(feat(xtr)), ytr)
    return float((clf.predict(sc.transform(feat(xte))) == yte).mean())


def train_vit(xtr, ytr, xte, yte, n_classes, steps, batch, seed, aug):
    import torch
    import torch.nn as nn
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(seed)
    net = VisionTransformer(image_size=64, patch_size=16, width=128, layers=4, heads=4,
                            mlp_ratio=4, output_dim=128)
    head = nn.Linear(128, n_classes)
    model = nn.Sequential(net, head)
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05},
                             {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))

    def to_t(x):
        t = torch.from_numpy(x).permute(0, 3, 1, 2).float().div_(255.0)
        return (t - 0.5) / 0.25

    Xtr, Ytr = to_t(xtr), torch.from_numpy(ytr)
    Xte, Yte = to_t(xte), torch.from_numpy(yte)
    g = torch.Generator().manual_seed(seed)
    lossf = nn.CrossEntropyLoss()
    model.train()
    t0 = time.time()
    for s in range(steps):
        idx = torch.randint(0, len(Xtr), (batch,), generator=g)
        xb = Xtr[idx]
        if aug:  # random shift by up to 4 px (reflect pad + crop)
            dx, dy = torch.randint(-4, 5, (2,), generator=g).tolist()
            xb = torch.roll(xb, shifts=(dy, dx), dims=(2, 3))
        loss = lossf(model(xb), Ytr[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    train_s = time.time() - t0
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(Xte[i:i + 250]).argmax(1) for i in range(0, len(Xte), 250)])
        tr_pred = torch.cat([model(Xtr[i:i + 250]).argmax(1) for i in range(0, 1000, 250)])
    conf = np.zeros((n_classes, n_classes), np.int64)
    np.add.at(conf, (yte, pred.numpy()), 1)
    return (float((pred == Yte).float().mean()), float((tr_pred == Ytr[:1000]).float().mean()),
            train_s, float(loss.detach()), conf)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--tasks", default="")
    ap.add_argument("--n-train", type=int, default=4000)
    ap.add_argument("--n-test", type=int, default=500)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--aug", action="store_true", help="random 4 px roll augmentation")
    ap.add_argument("--skip-vit", action="store_true")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    t8 = load_tasks()
    names = [t for t in args.tasks.split(",") if t] or list(t8.TASKS)
    rows = []
    print(f"{'task':13s} {'gen img/s':>9s} {'logreg16':>8s} {'ViT test':>8s} {'ViT train':>9s} "
          f"{'train s':>7s}  top confusions (ViT)")
    for name in names:
        t0 = time.time()
        xtr, ytr = t8.generate(name, "train", args.n_train, seed=args.seed)
        xte, yte = t8.generate(name, "test", args.n_test, seed=args.seed)
        gen_rate = (args.n_train + args.n_test) / (time.time() - t0)
        lr = logreg_baseline(xtr, ytr, xte, yte)
        row = {"task": name, "gen_img_per_s": round(gen_rate), "logreg16": round(lr, 3)}
        if not args.skip_vit:
            names_c = t8.TASKS[name].classnames
            acc, tr_acc, secs, loss, conf = train_vit(xtr, ytr, xte, yte, len(names_c),
                                                      args.steps, args.batch, args.seed, args.aug)
            off = [(int(conf[i, j]), names_c[i], names_c[j]) for i in range(len(names_c))
                   for j in range(len(names_c)) if i != j and conf[i, j] > 0]
            row.update(vit_test=round(acc, 3), vit_train=round(tr_acc, 3), train_s=round(secs),
                       final_loss=round(loss, 3),
                       top_confusions=[f"{a}->{b}: {k}" for k, a, b in sorted(off, reverse=True)[:4]])
        rows.append(row)
        print(f"{name:13s} {row['gen_img_per_s']:9d} {lr:8.3f} {row.get('vit_test', float('nan')):8.3f} "
              f"{row.get('vit_train', float('nan')):9.3f} {row.get('train_s', 0):7d}  "
              f"{'; '.join(row.get('top_confusions', []))}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
