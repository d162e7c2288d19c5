"""The sections that need the Tiny-8 zoo: the evaluation command's wall time, prediction latency,
and compressed experts (memory saved against accuracy lost). Each is skipped, with the reason in
the report, when ``load_pool("tiny8")`` cannot load the zoo."""
from __future__ import annotations

import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from . import harness
from .plans import Plan

log = logging.getLogger(__name__)


def pool_or_reason():
    """(pool, None) or (None, why it is unavailable)."""
    try:
        from wemoe_core.pools import load_pool

        return load_pool("tiny8"), None
    except (ValueError, OSError, ImportError) as e:
        return None, f"Tiny-8 zoo not available ({e})"


def evaluation(plan: Plan) -> dict:
    """Wall time of ``python -m wemoe_core evaluate --pool tiny8 --methods all`` (a fresh process)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eval.json"
        cmd = [sys.executable, "-m", "wemoe_core", "evaluate", "--pool", "tiny8", "--methods", "all", "--json", str(out)]
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            return {"skipped": f"evaluate failed: {proc.stderr[-500:]}"}
        result = json.loads(out.read_text())
    avg = {m: acc.get("avg") for m, acc in result.get("accuracy", {}).items()}
    return {"command": " ".join(["python"] + cmd[1:-2]), "wall_s": wall, "avg_accuracy": avg,
            "seconds_per_method": result.get("seconds", {})}


def latency(pool, images: int = 50, warmup: int = 5) -> dict:
    """Per-image prediction latency of an (unadapted) WEMoE through ``wc.explain``, as the app
    predicts: one image at a time, every head, routing included. Adaptation does not change it."""
    import wemoe_core as wc
    from wemoe_core.running.workbench import build_model

    run = build_model(pool, pool.tasks, "wemoe")
    data = pool.dataset(pool.tasks[0], "test", limit=images + warmup)
    xs = [data[i][0] for i in range(len(data))]
    for x in xs[:warmup]:
        wc.explain(run.model, x)
    ms = []
    for x in xs[warmup:]:
        t0 = time.perf_counter()
        wc.explain(run.model, x)
        ms.append(1000 * (time.perf_counter() - t0))
    return {"images": len(ms), "p50_ms": float(np.percentile(ms, 50)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(np.mean(ms))}


def compression(pool, plan: Plan) -> dict:
    """WEMoE with dense experts vs each compressed variant, adapted and evaluated the same way,
    once per seed of the adaptation data's order (a seed moves dense WEMoE by ~2 points on
    Tiny-8 at 200 steps, so one seed cannot resolve a 1-point target); accuracies are means."""
    from wemoe_core.running.suite import run_one

    tasks, runs = pool.tasks, {}
    for hp in ({},) + tuple(plan.compress):
        name, accs, t0 = _name(hp), [], time.perf_counter()
        for seed in plan.tiny8_seeds:
            run = run_one(pool, tasks, "wemoe", steps=plan.tiny8_steps, hparams=hp or None, adapt={"seed": seed})
            accs.append(float(run.table.at["avg", "accuracy"]))
        runs[name] = {"hparams": hp, "avg_accuracy": float(np.mean(accs)), "avg_accuracy_per_seed": accs,
                      "expert_bytes": _expert_bytes(run.model.encoder), "seconds": time.perf_counter() - t0}
        log.info("tiny8 compression %s: %s", name, runs[name])
    dense = runs.pop("dense")
    for r in runs.values():
        r["memory_ratio"] = dense["expert_bytes"] / r["expert_bytes"]
        r["accuracy_drop_points"] = dense["avg_accuracy"] - r["avg_accuracy"]
        r["accuracy_drop_per_seed"] = [d - c for d, c in zip(dense["avg_accuracy_per_seed"], r["avg_accuracy_per_seed"])]
    best = _best(runs)
    return {"dense": dense, "variants": runs, "chosen": best, "steps": plan.tiny8_steps or "recipe",
            "seeds": list(plan.tiny8_seeds)}


def _best(runs: dict, speed: dict | None = None) -> str | None:
    """The most compressed variant within 1 point of dense, else the most accurate 4x+ one.
    Variants equally compressed (same rank and storage, different arithmetic) are told apart by
    ``speed`` (name -> inference time ratio to plain), the faster first, when it is known."""
    speed = speed or {}
    ok = [k for k, r in runs.items() if r["accuracy_drop_points"] <= 1.0 and r["memory_ratio"] >= 4.0]
    if ok:
        return max(ok, key=lambda k: (runs[k]["memory_ratio"], -speed.get(k, float("inf"))))
    big = [k for k, r in runs.items() if r["memory_ratio"] >= 4.0]
    return min(big, key=lambda k: (runs[k]["accuracy_drop_points"], speed.get(k, float("inf")))) if big else None


def _name(hp: dict) -> str:
    if not hp:
        return "dense"
    if hp["compress"] == "lowrank":
        from .core import lowrank_name

        return lowrank_name(hp)
    return f"sparse d={hp['density']}"


def _expert_bytes(encoder) -> int:
    return sum(m.experts.nbytes() for m in encoder.modules() if hasattr(m, "experts"))


def run(plan: Plan) -> dict:
    """The evaluation command's wall time and prediction latency."""
    pool, reason = pool_or_reason()
    if pool is None:
        return {"skipped": reason + "; run `python -m benchmarks --only tiny8` once the zoo is built"}
    ev = {"skipped": "the full evaluation command runs in the full mode only"} if plan.tiny8_quick else evaluation(plan)
    return {"evaluation": ev, "latency": latency(pool), "machine_load_avg": harness.machine().get("load_avg_1min")}


def run_compression(plan: Plan) -> dict:
    pool, reason = pool_or_reason()
    if pool is None:
        return {"skipped": reason + "; run `python -m benchmarks --only compression` once the zoo is built"}
    return compression(pool, plan)
