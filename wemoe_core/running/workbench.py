"""The narrow facade the CLI and the app use: pool + tasks + method -> a model, adapted and
evaluated, with a recipe. Everything here is plain composition of the public API."""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from ..merging.registry import build, get_method
from ..merging.wemoe import WEMoE
from ..model.data import labeled_batches, unlabeled_stream
from ..model.towers import MultiTaskModel
from ..pools.base import Pool
from ..sources.files import Recipe
from .adapt import AdaptationError, AdaptParams, AdaptResult, StepInfo, adapt
from .distributed import Group
from .evaluate import evaluate, routing_share
from .expert_shard import upscale_sharded
from .recipes import VARIANTS, pool_recipe, recipe_for  # noqa: F401 - defined there, re-exported here


class OracleEncoder(nn.Module):
    """WEMoE told the task: every routed module uses weight 1 on the task's own expert and 0
    elsewhere. The ceiling of routing (equal to the individual model when only routed modules
    were fine-tuned)."""

    needs_task = True

    def __init__(self, wemoe: WEMoE):
        super().__init__()
        self.wemoe = wemoe

    def forward(self, images: torch.Tensor, task: str) -> torch.Tensor:
        w = torch.zeros(len(self.wemoe.task_names))
        w[self.wemoe.task_names.index(task)] = 1.0
        with self.wemoe.forced_routing(w):
            return self.wemoe(images)


@dataclass
class Run:
    """One method run on one pool: the model, its recipe, its table, its history."""

    name: str
    model: MultiTaskModel
    recipe: Recipe
    adapt_params: AdaptParams | None = None       # None: the method does not learn
    build_s: float = 0.0
    adapt_s: float = 0.0
    history: list[StepInfo] = field(default_factory=list)
    curve: list[dict] = field(default_factory=list)   # accuracy along adaptation, if measured
    stopped: bool = False
    table: pd.DataFrame | None = None


def build_model(pool: Pool, tasks: Sequence[str], variant: str, hparams: dict | None = None,
                adapt_params=None, *, shard: Group | None = None) -> Run:
    """Build (not yet adapt) a method's model on the pool's tasks. With ``shard`` (a process
    group), a WEMoE keeps only this rank's share of the experts (``running/expert_shard.py``)."""
    tasks = pool.check_tasks(tasks)
    method, hp, ap = recipe_for(pool, variant, hparams, adapt_params)
    t0 = time.perf_counter()
    if shard is not None and method == "wemoe":
        enc = upscale_sharded(pool.pretrained(), pool.finetuned_sources(tasks), shard,
                              params=get_method(method).hparams(**hp), task_names=tasks)
    else:
        enc = build(method, pool.pretrained(), pool.finetuned_sources(tasks), tasks, **hp)
    if variant == "oracle":
        enc = OracleEncoder(enc)
    model = MultiTaskModel(enc, pool.heads(tasks))
    recipe = Recipe(method=method, hparams=hp, pool=pool.name, tasks=list(tasks),
                    adapt=asdict(ap) if ap is not None and variant != "oracle" else None,
                    seed=hp.get("seed", ap.seed if ap else None))
    return Run(variant, model, recipe, adapt_params=None if variant == "oracle" else ap,
               build_s=time.perf_counter() - t0)


def adaptation_data(pool: Pool, tasks: Sequence[str], params: AdaptParams) -> dict:
    """Endless unlabeled batches of each task's TEST images (transductive, as in the paper)."""
    return {t: unlabeled_stream(pool.dataset(t, "test"), params.batch_size, seed=params.seed + i)
            for i, t in enumerate(tasks)}


def evaluation_data(pool: Pool, tasks: Sequence[str], batch_size: int = 250, limit: int | None = None) -> dict:
    return {t: labeled_batches(pool.dataset(t, "test", limit=limit), batch_size) for t in tasks}


def adapt_run(run: Run, pool: Pool, *, callback: Callable[[StepInfo], None] | None = None,
              should_stop: Callable[[], bool] | None = None, params: AdaptParams | None = None,
              device: str | torch.device = "cpu") -> AdaptResult | None:
    """Run test-time adaptation when the method learns; no-op otherwise. The model must already
    sit on ``device`` (``run.model.to(device)``); batches are moved there as they are drawn."""
    params = params or run.adapt_params
    if params is None:
        return None
    t0 = time.perf_counter()
    data = adaptation_data(pool, run.recipe.tasks, params)
    if torch.device(device).type != "cpu":
        data = {t: (b.to(device, non_blocking=True) for b in it) for t, it in data.items()}
    try:
        result = adapt(run.model, data, params, callback=callback, should_stop=should_stop)
    except AdaptationError as e:   # keep the good steps: the model holds their parameters
        _record(run, params, e.result, t0)
        run.stopped = True
        raise
    _record(run, params, result, t0)
    return result


def _record(run: Run, params: AdaptParams, result: AdaptResult, t0: float) -> None:
    run.adapt_s += time.perf_counter() - t0
    run.history.extend(result.history)
    run.stopped = result.stopped
    run.recipe = replace(run.recipe, adapt=asdict(params) | {"steps_done": result.steps_done})


def evaluate_run(run: Run, pool: Pool, limit: int | None = None, device: str | torch.device = "cpu") -> pd.DataFrame:
    tasks = run.recipe.tasks
    individual = {t: pool.task(t).individual_accuracy for t in tasks}
    run.table = evaluate(run.model, evaluation_data(pool, tasks, limit=limit),
                         individual=individual if all(individual.values()) else None, device=device)
    return run.table


def routing_table(run: Run, pool: Pool, limit: int | None = None,
                  device: str | torch.device = "cpu") -> pd.DataFrame | None:
    """Routing analysis of a WEMoE run (None for other methods)."""
    if not isinstance(run.model.encoder, WEMoE):
        return None
    return routing_share(run.model, evaluation_data(pool, run.recipe.tasks, limit=limit), device=device)
