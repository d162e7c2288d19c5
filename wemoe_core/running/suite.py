"""Run several methods on one pool with the paper's protocol and collect one table: the engine
of ``python -m wemoe_core evaluate``. Adaptive methods adapt on the unlabeled test images, one
batch per task per step; accuracy is measured along the way to draw curves."""
from __future__ import annotations

import logging
import time
from dataclasses import replace
from typing import Callable, Sequence

import pandas as pd
import torch

from ..pools.base import Pool
from .distributed import Group
from .workbench import VARIANTS, Run, adapt_run, build_model, evaluate_run, routing_table

log = logging.getLogger(__name__)


def expand_methods(spec: str | Sequence[str]) -> list[str]:
    names = list(VARIANTS) if spec == "all" else [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if s.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown method {unknown[0]!r}; choose from: all, {', '.join(VARIANTS)}")
    return names


def run_one(pool: Pool, tasks: Sequence[str], variant: str, *, steps: int | None = None,
            curve_every: int = 0, eval_limit: int | None = None,
            progress: Callable[[str, int, int], None] | None = None, hparams=None, adapt=None,
            device: str | torch.device = "cpu", shard: Group | None = None) -> Run:
    """Build, adapt (if the method learns) and evaluate one method variant on ``device``. Under
    ``torchrun`` every rank runs this; ``shard`` (the process group) shards WEMoE's experts."""
    run = build_model(pool, tasks, variant, hparams, adapt, shard=shard)
    run.model.to(device)
    if run.adapt_params is not None:
        params = replace(run.adapt_params, steps=steps) if steps else run.adapt_params
        curve = run.curve

        def on_step(info):
            if progress:
                progress(variant, info.step, info.steps)
            if curve_every and (info.step % curve_every == 0 or info.step == info.steps):
                acc = evaluate_run(run, pool, limit=eval_limit, device=device)["accuracy"]
                curve.append({"step": info.step, "entropy": sum(info.entropy.values()) / len(info.entropy),
                              "accuracy": float(acc["avg"])})
        if curve_every:
            acc0 = evaluate_run(run, pool, limit=eval_limit, device=device)["accuracy"]
            curve.append({"step": 0, "entropy": None, "accuracy": float(acc0["avg"])})
        adapt_run(run, pool, callback=on_step, params=params, device=device)
    evaluate_run(run, pool, limit=eval_limit, device=device)
    return run


def run_suite(pool: Pool, variants: Sequence[str], tasks: Sequence[str] | None = None, *, steps: int | None = None,
              curve_every: int = 0, eval_limit: int | None = None, progress=None,
              device: str | torch.device = "cpu", shard: Group | None = None, adapt: dict | None = None) -> dict:
    """Every variant on the pool; returns the JSON-ready result (accuracy per method and task,
    normalised accuracy, routing share of the default WEMoE (and of every WEMoE variant in
    ``routing_shares``), curves, wall time)."""
    t0 = time.perf_counter()
    tasks = pool.check_tasks(tasks)
    out = {"pool": pool.name, "tasks": list(tasks), "accuracy": {}, "normalized": {}, "routing_share": {},
           "routing_shares": {}, "curves": {}, "recipes": {}, "seconds": {}}
    for variant in variants:
        log.info("running %s", variant)
        run = run_one(pool, tasks, variant, steps=steps, curve_every=curve_every, eval_limit=eval_limit,
                      progress=progress, device=device, shard=shard, adapt=adapt)
        table = run.table
        out["accuracy"][variant] = {t: round(float(table.at[t, "accuracy"]), 2) for t in table.index}
        if "normalized" in table:
            out["normalized"][variant] = round(float(table.at["avg", "normalized"]), 2)
        out["recipes"][variant] = {"method": run.recipe.method, "hparams": run.recipe.hparams, "adapt": run.recipe.adapt}
        out["seconds"][variant] = round(run.build_s + run.adapt_s, 1)
        if run.curve:
            out["curves"][variant] = run.curve
        if variant in ("wemoe", "wemoe_paper"):
            share = routing_table(run, pool, limit=eval_limit, device=device)
            out["routing_shares"][variant] = {t: {c: round(float(share.at[t, c]), 1) for c in share.columns}
                                              for t in share.index}
    out["routing_share"] = out["routing_shares"].get("wemoe", {})     # the default WEMoE's (kept for readers of old files)
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def accuracy_frame(result: dict) -> pd.DataFrame:
    """Methods x (tasks, avg, normalised) table for printing."""
    df = pd.DataFrame(result["accuracy"]).T
    if result.get("normalized"):
        df["norm."] = pd.Series(result["normalized"])
    return df
