"""Method settings on a built zoo, best first: the grids behind the README's Tiny-8 diagnosis.

    .venv/bin/python scripts/tiny8_grid.py task_arithmetic:scale=0.4 ties:density=0.5,scale=1.5
    .venv/bin/python scripts/tiny8_grid.py wemoe@steps=800 wemoe_paper@logit_scale=100
    .venv/bin/python scripts/tiny8_grid.py --trim-alone 0.1,0.2,0.5,1

A SPEC is ``VARIANT[:HPARAM=V,...][@ADAPT=V,...]``: a method variant of the suite (`evaluate
--methods`), its hyperparameters and its adaptation settings over the pool's recipe (values as
JSON). ``--trim-alone`` adds each task's vector trimmed to its top DENSITY by magnitude, alone
(TIES of one model: no merge, so no interference), evaluated on its own task: what TIES's trim
step costs before any merging. Reads the zoo, never writes it; appends one JSON line per run to
``--out``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))        # tiny8_zoo_sweep, also when imported by the tests

from wemoe_core.cli import _parse_sets as parse_sets  # noqa: E402  (NAME=VALUE, values as JSON)


def parse_spec(spec: str) -> tuple[str, dict | None, dict | None]:
    """``"ties:density=0.5,scale=1.5"`` -> ("ties", {"density": 0.5, "scale": 1.5}, None)."""
    head, _, adapt = spec.partition("@")
    variant, _, hp = head.partition(":")
    parse = lambda s: parse_sets([p for p in s.split(",") if p]) or None  # noqa: E731
    if not variant:
        raise ValueError(f"{spec!r}: expected VARIANT[:HPARAM=V,...][@ADAPT=V,...]")
    return variant, parse(hp), parse(adapt)


def trim_alone(pool, density: float) -> dict:
    from wemoe_core.running.suite import run_one

    acc = {t: float(run_one(pool, [t], "ties", hparams={"density": density, "scale": 1.0}).table.at[t, "accuracy"])
           for t in pool.tasks}
    return {**acc, "avg": sum(acc.values()) / len(acc)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("specs", nargs="*")
    ap.add_argument("--zoo", default=str(ROOT / "assets" / "tiny8"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--trim-alone", default="", help="comma-separated densities")
    ap.add_argument("--out", default="/tmp/tiny8-grid.jsonl")
    args = ap.parse_args(argv)
    specs = [(s, *parse_spec(s)) for s in args.specs]         # every spec checked before any run
    from tiny8_zoo_sweep import evaluate
    from wemoe_core.pools.tiny8.pool import Tiny8Pool

    torch.set_num_threads(args.threads)
    pool = Tiny8Pool(args.zoo)
    rows = []
    for spec, variant, hp, adapt in specs:
        t0 = time.perf_counter()
        r = evaluate(pool, variant, hp, adapt)
        r.pop("curve", None)
        rows.append({"spec": spec, "avg": r["acc"]["avg"], "wins": r.get("wins"), "s": round(time.perf_counter() - t0)})
        print(json.dumps(rows[-1]), flush=True)
        with open(args.out, "a") as f:
            f.write(json.dumps({"zoo": args.zoo, "spec": spec, **r}) + "\n")
    for d in filter(None, args.trim_alone.split(",")):
        acc = trim_alone(pool, float(d))
        rows.append({"spec": f"trim alone, density {d}", "avg": round(acc["avg"], 2), "wins": None, "s": None})
        print(json.dumps({**rows[-1], "per_task": acc}), flush=True)
    print("\n| run | avg | own expert wins (last module) |\n|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["avg"]):
        print(f"| {r['spec']} | {r['avg']:.2f} | {'' if r['wins'] is None else r['wins']} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
