"""Sweep the Tiny-8 zoo's build knobs: build a variant (reusing a cached pre-trained tower when the
pre-training settings match), then measure what decides whether merges behave like real CLIP
merges: the task vectors' size and pairwise cosine, and the static merges' accuracies.

    .venv/bin/python scripts/tiny8_zoo_sweep.py NAME --set finetune_lr=1e-4 --set finetune_params=all
    .venv/bin/python scripts/tiny8_zoo_sweep.py NAME ... --methods adamerging_layer,wemoe --steps 200

Appends one JSON line per variant to $OUT/results.jsonl (default /tmp/tiny8-zoo) and prints a
summary; the zoo itself lands in $OUT/NAME (a complete build: `WEMOE_TINY8_DIR=$OUT/NAME`).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wemoe_core.cli import _parse_sets as parse_sets  # noqa: E402  (NAME=VALUE, values as JSON)
from wemoe_core.pools.tiny8.build import BuildConfig, build  # noqa: E402
from wemoe_core.pools.tiny8.pool import Tiny8Pool  # noqa: E402

PRETRAIN_FIELDS = ("seed", "image_size", "patch_size", "width", "layers", "heads", "output_dim", "pretrain_steps",
                   "pretrain_batch", "pretrain_lr", "pretrain_images", "threads", "pretrain_task_images", "pretrain_coarse",
                   "pretrain_task_weight")
# Added later: part of the key only when they differ from the default (old cache entries stay valid).
PRETRAIN_FIELDS_NEW = ("mlp_ratio", "pretrain_act_l1", "pretrain_domain")


def pretrained_cache(cfg: BuildConfig, root: Path) -> Path:
    d = {f: getattr(cfg, f) for f in PRETRAIN_FIELDS}
    default = BuildConfig()
    d.update({f: getattr(cfg, f) for f in PRETRAIN_FIELDS_NEW if getattr(cfg, f) != getattr(default, f)})
    key = json.dumps(d, sort_keys=True)
    return root / "pre" / (hashlib.sha1(key.encode()).hexdigest()[:12] + ".safetensors")


def vector_stats(pool: Tiny8Pool) -> dict:
    """Task vectors' norm relative to the pre-trained weights (all moved tensors, and per group),
    and their pairwise cosine."""
    from safetensors.torch import load_file

    pre = load_file(str(pool.root / "pretrained.safetensors"))
    taus = {t: {k: v - pre[k] for k, v in load_file(str(pool.root / "finetuned" / f"{t}.safetensors")).items()}
            for t in pool.tasks}

    def group(k):
        return "mlp" if ".mlp." in k else "attn" if ".attn." in k else "other"

    flat = {t: torch.cat([v.flatten() for v in tau.values()]) for t, tau in taus.items()}
    pre_norm = torch.cat([v.flatten() for v in pre.values()]).norm()
    rel = {t: float(f.norm() / pre_norm) for t, f in flat.items()}
    groups = {}
    for g in ("mlp", "attn", "other"):
        keys = [k for k in pre if group(k) == g]
        pn = torch.cat([pre[k].flatten() for k in keys]).norm()
        groups[g] = sum(float(torch.cat([taus[t][k].flatten() for k in keys]).norm() / pn) for t in taus) / len(taus)
    names = list(flat)
    cos = []
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            cos.append(float(torch.nn.functional.cosine_similarity(flat[names[i]], flat[names[j]], dim=0)))
    return {"rel_norm": sum(rel.values()) / len(rel), "rel_norm_per_task": rel, "rel_norm_group": groups,
            "cos_mean": sum(cos) / len(cos), "cos_max": max(cos), "cos_min": min(cos)}


def interference(pool: Tiny8Pool, lam: float = 0.3) -> dict:
    """Mean accuracy over tasks of theta_0 + lam tau_t on task t ("own": what its own task vector
    gives) and of theta_0 + lam sum_{s != t} tau_s ("others": what the other tasks' vectors do
    to it; the pre-trained accuracy when there is no interference)."""
    from safetensors.torch import load_file

    from wemoe_core.model.data import labeled_batches
    from wemoe_core.model.towers import build_vision

    pre = load_file(str(pool.root / "pretrained.safetensors"))
    taus = {t: {k: v - pre[k] for k, v in load_file(str(pool.root / "finetuned" / f"{t}.safetensors")).items()}
            for t in pool.tasks}
    heads, tower = pool.heads(), build_vision(pool.info.vision_config).eval()

    def acc(delta, task):
        tower.load_state_dict({k: pre[k] + delta[k] for k in pre})
        correct = 0
        with torch.no_grad():
            for x, y in labeled_batches(pool.dataset(task, "test"), 500):
                correct += int((heads(tower(x), task).argmax(-1) == y).sum())
        return 100.0 * correct / pool.test_size

    def feats(delta, task):
        tower.load_state_dict({k: pre[k] + delta[k] for k in pre})
        x = pool.dataset(task, "test", limit=200)
        with torch.no_grad():
            return torch.nn.functional.normalize(tower(torch.stack([x[i][0] for i in range(len(x))])), dim=-1)

    own, others, shift = {}, {}, {}
    zero = {k: torch.zeros_like(v) for k, v in pre.items()}
    for t in pool.tasks:
        own[t] = acc({k: lam * v for k, v in taus[t].items()}, t)
        others[t] = acc({k: lam * sum(taus[s][k] for s in pool.tasks if s != t) for k in pre}, t)
        f0 = feats(zero, t)
        d = {s: float((feats({k: lam * v for k, v in taus[s].items()}, t) - f0).norm(dim=-1).mean()) for s in pool.tasks}
        shift[t] = {"own": d[t], "other": sum(v for s, v in d.items() if s != t) / (len(d) - 1)}
    ratio = sum(v["own"] / v["other"] for v in shift.values()) / len(shift)
    return {"own": sum(own.values()) / len(own), "others": sum(others.values()) / len(others),
            "own_per_task": own, "others_per_task": others, "shift": shift, "disentanglement": ratio}


def evaluate(pool, variant, hparams=None, adapt=None, steps=None):
    from wemoe_core.running.suite import run_one
    from wemoe_core.running.workbench import routing_table

    t0 = time.perf_counter()
    run = run_one(pool, pool.tasks, variant, hparams=hparams, adapt=adapt, steps=steps)
    acc = {t: round(float(run.table.at[t, "accuracy"]), 2) for t in run.table.index}
    out = {"acc": acc, "s": round(time.perf_counter() - t0, 1)}
    if variant.startswith("wemoe") and variant != "wemoe_depth0":
        share = routing_table(run, pool)
        last = share.columns[-1]
        out["share_last"] = {t: round(float(share.at[t, last]), 1) for t in share.index}
        out["wins"] = int(sum(v > 50 for v in out["share_last"].values()))
    if run.curve:
        out["curve"] = run.curve
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("name")
    ap.add_argument("--set", action="append", default=[], help="BuildConfig field=value")
    ap.add_argument("--methods", default="", help="extra methods to run after the static ones (comma separated)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--recipe", default="", help="JSON {method: {hparams, adapt}} used for the extra methods")
    ap.add_argument("--skip-static", action="store_true")
    args = ap.parse_args(argv)
    root = Path(os.environ.get("OUT", "/tmp/tiny8-zoo"))
    out = root / args.name
    cfg = dataclasses.replace(BuildConfig(), **parse_sets(args.set))
    if not (out / "manifest.json").is_file():
        cache = pretrained_cache(cfg, root)
        t0 = time.perf_counter()
        if cache.is_file():
            build(out, cfg, report=lambda m: print(m, file=sys.stderr, flush=True), pretrained=cache)
        else:
            cache.parent.mkdir(parents=True, exist_ok=True)
            build(out, cfg, report=lambda m: print(m, file=sys.stderr, flush=True))
            os.link(out / "pretrained.safetensors", cache)
        print(f"built in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    recipe = json.loads(args.recipe) if args.recipe else {}
    if recipe:
        (out / "recipes.json").write_text(json.dumps({"recipes": recipe}))
    torch.set_num_threads(2)
    pool = Tiny8Pool(out)
    res = {"name": args.name, "set": parse_sets(args.set), "stats": vector_stats(pool),
           "pretrained": pool.manifest["accuracy"]["pretrained"]["avg"],
           "individual": pool.manifest["accuracy"]["individual"]["avg"], "runs": {}}
    if not args.skip_static:
        res["interference"] = interference(pool)
        for variant, hp in [("average", None), ("task_arithmetic", {"scale": 0.3}), ("ties", None)]:
            res["runs"][variant] = evaluate(pool, variant, hp)
        for lam in (0.1, 0.2, 0.5):
            res["runs"][f"ta{lam}"] = evaluate(pool, "task_arithmetic", {"scale": lam})
        for lam in (0.3, 0.5):
            res["runs"][f"ties{lam}"] = evaluate(pool, "ties", {"scale": lam})
    for m in filter(None, args.methods.split(",")):
        res["runs"][m] = evaluate(pool, m, steps=args.steps)
    with open(root / "results.jsonl", "a") as f:
        f.write(json.dumps(res) + "\n")
    ind = res["individual"]
    s = res["stats"]
    line = [f"{args.name}: pre {res['pretrained']:.1f} ind {ind:.1f} | tau/theta {s['rel_norm']:.3f} cos {s['cos_mean']:.3f}"]
    if "interference" in res:
        i = res["interference"]
        line.append(f"own@0.3 {i['own']:.1f} others@0.3 {i['others']:.1f} R {i['disentanglement']:.2f}")
    for k, r in res["runs"].items():
        a = r["acc"]["avg"]
        line.append(f"{k} {a:.1f} ({100 * a / ind:.0f})" + (f" wins {r['wins']}/8" if "wins" in r else ""))
    print(" | ".join(line))
    return 0


if __name__ == "__main__":
    sys.exit(main())
