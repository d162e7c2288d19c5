"""How close 2 ranks come to one process: the margins behind ``tests/core/test_distributed.py``.

    python -m benchmarks.dist_equality [--json benchmarks/results/cpu_dist_equality.json]

Runs the scenarios of that test's ``ranks`` fixture (2 CPU ranks, gloo on loopback, one thread
each, tiny random pools: data parallel in float32 and float64, experts sharded dense and low-rank
and in float64) and compares them with one process exactly as the tests do, printing the largest
differences the tests bound (1e-5 in float32; 1e-10 and 1e-12 in float64) and whether the
accuracies are equal.
"""
from __future__ import annotations

import argparse
import json
import sys
import time


def measure() -> dict:
    import wemoe_core as wc
    from tests.conftest import make_pool
    from tests.core import dist_ranks as dr
    from tests.core import test_distributed as td
    from wemoe_core.model.towers import MultiTaskModel

    t0 = time.perf_counter()
    sc = {name: (dr.adapt_scenario, case) for name, case in td.CASES.items()}
    sc["float64"] = (dr.adapt_scenario, (*td.float64_case(), 0, "float64"))
    sc |= {f"sharded {n}": (dr.sharded_scenario, (hp, td.sharded_adapt(hp))) for n, hp in td.SHARDED.items()}
    sc["sharded float64"] = (dr.sharded_scenario, (td.SHARDED["dense+attention"], td.sharded_adapt({}), "float64"))
    results = dr.run_ranks(dr.scenarios_worker, 2, sc, timeout=280)
    for r in results:
        if r["exitcode"] != 0:
            raise SystemExit(f"rank {r['rank']} failed: {r.get('error')}\n{r.get('trace', '')}")
    ranks = {n: [r["value"][n]["value"] for r in results] for n in sc}
    out = {}
    for case, (method, hparams, adapt) in td.CASES.items():
        one = dr.adapt_case(method, hparams, adapt, distributed=False)
        out[f"data parallel, {case}: routers max abs"] = max(td.max_diff(r["trainable"], one["trainable"])
                                                              for r in ranks[case])
        out[f"data parallel, {case}: accuracies equal"] = all(r["accuracy"] == one["accuracy"] for r in ranks[case])
    method, hparams, adapt = td.float64_case()
    one = dr.adapt_case(method, hparams, adapt, distributed=False, dtype="float64")
    out["data parallel, float64 (lr 1e-2): routers max abs"] = max(td.max_diff(r["trainable"], one["trainable"])
                                                                   for r in ranks["float64"])
    for name, hparams, dtype in [*((n, hp, None) for n, hp in td.SHARDED.items()),
                                 ("float64", td.SHARDED["dense+attention"], "float64")]:
        pre, fts, heads = make_pool()
        whole = MultiTaskModel(wc.upscale(pre, fts, task_names=dr.TASKS, **hparams), heads)
        one = dr.sharded_checks(whole.double() if dtype else whole, td.sharded_adapt({} if dtype else hparams))
        got = ranks[f"sharded {name}"]
        out[f"sharded {name}: features max abs"] = max(float((r["features"] - one["features"]).abs().max())
                                                       for r in got)
        out[f"sharded {name}: router grads max abs"] = max(td.max_diff(r["grads"], one["grads"]) for r in got)
        out[f"sharded {name}: routers max abs"] = max(td.max_diff(r["trainable"], one["trainable"]) for r in got)
        out[f"sharded {name}: accuracies equal"] = all(r["accuracy"] == one["accuracy"] for r in got)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.dist_equality", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args(argv)
    out = measure()
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
