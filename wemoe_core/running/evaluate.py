"""Accuracy tables, routing analysis, and ``explain``: what a model says about one image."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from ..model.towers import MultiTaskModel
from .data_parallel import shard_batches
from .distributed import Group, current
from .expert_shard import sharded

Labeled = Iterable[tuple[torch.Tensor, torch.Tensor]]


@torch.no_grad()
def evaluate(model: MultiTaskModel, data: Mapping[str, Labeled], *,
             individual: Mapping[str, float] | None = None, device: str | torch.device = "cpu",
             distributed: bool | None = None) -> pd.DataFrame:
    """Top-1 accuracy (%) per task, and normalised accuracy (% of the individual model's accuracy)
    when ``individual`` gives those. The ``avg`` row is the unweighted mean over tasks.

    Data parallel (``distributed``, as in ``adapt``): every rank passes the same ``data``, counts
    its share of each task's test set, and the counts are summed over ranks."""
    model.eval()
    group = _data_parallel(model, distributed)
    counts = {}
    for task in model.tasks:
        if task not in data:
            continue
        correct = total = 0
        for images, labels in _share_of(data[task], group):
            pred = model.logits(images.to(device), task).argmax(-1).cpu()
            correct += int((pred == labels).sum())
            total += len(labels)
        counts[task] = (correct, total)
    if group is not None and counts:
        summed = group.sum(torch.tensor(list(counts.values()), dtype=torch.float64), what="the accuracy counts")
        counts = {t: (int(c), int(n)) for t, (c, n) in zip(counts, summed.tolist())}
    rows = {t: {"accuracy": 100.0 * c / max(n, 1), "n": n} for t, (c, n) in counts.items()}
    if not rows:
        raise ValueError(f"no evaluation data for any task of the model ({model.tasks})")
    df = pd.DataFrame.from_dict(rows, orient="index")
    if individual is not None:
        df["normalized"] = [100.0 * df.at[t, "accuracy"] / individual[t] if individual.get(t) else np.nan for t in df.index]
    avg = df.drop(columns="n").mean().to_dict() | {"n": int(df["n"].sum())}
    df.loc["avg"] = avg
    df["n"] = df["n"].astype(int)
    df.index.name = "task"
    return df


@torch.no_grad()
def routing_counts(model: MultiTaskModel, data: Mapping[str, Labeled], device="cpu",
                   distributed: bool | None = None) -> np.ndarray:
    """For WEMoE: counts[t, m, e] = how many test images of task t have expert e as the largest
    routing weight in routed module m. Shape (tasks, modules, experts). Data parallel as ``evaluate``."""
    enc = model.encoder
    group = _data_parallel(model, distributed)
    tasks = [t for t in model.tasks if t in data]
    counts = np.zeros((len(tasks), len(enc.routed_names), len(enc.task_names)), dtype=np.int64)
    for i, task in enumerate(tasks):
        for images, _ in _share_of(data[task], group):
            model.features(images.to(device))
            top = enc.routing_weights().argmax(-1).cpu().numpy()          # (modules, B)
            for m in range(top.shape[0]):
                counts[i, m] += np.bincount(top[m], minlength=counts.shape[2])
    if group is not None:
        counts = group.sum(torch.from_numpy(counts), what="the routing counts").numpy()
    return counts


def _data_parallel(model: MultiTaskModel, distributed: bool | None) -> Group | None:
    """The group whose ranks share the test set; None in one process and when the model holds
    sharded experts (then every rank runs every image)."""
    group = current(distributed)
    return None if group is None or sharded(model) else group


def _share_of(batches: Labeled, group: Group | None) -> Labeled:
    return batches if group is None else shard_batches(batches, group)


def routing_share(model: MultiTaskModel, data: Mapping[str, Labeled], device="cpu",
                  distributed: bool | None = None) -> pd.DataFrame:
    """Share (%) of task t's test images whose strongest expert in each module is expert t
    (rows: tasks; columns: routed modules, input side first)."""
    counts = routing_counts(model, data, device, distributed)
    tasks = [t for t in model.tasks if t in data]
    experts = model.encoder.task_names
    share = {}
    for i, t in enumerate(tasks):
        e = experts.index(t) if t in experts else None
        total = counts[i, 0].sum()
        share[t] = [100.0 * counts[i, m, e] / total if e is not None and total else np.nan for m in range(counts.shape[1])]
    return pd.DataFrame.from_dict(share, orient="index", columns=model.encoder.routed_names)


@dataclass
class Explanation:
    """Everything the UI shows for one image."""

    predictions: dict[str, list[tuple[str, float]]]       # task -> top-k (class, probability)
    routing: np.ndarray | None = None                       # (modules, experts)
    token_routing: np.ndarray | None = None                 # (modules, tokens, experts); token 0 = CLS
    routed_names: list[str] = field(default_factory=list)
    experts: list[str] = field(default_factory=list)


@torch.no_grad()
def explain(model: MultiTaskModel, image: torch.Tensor, *, classnames: Mapping[str, Sequence[str]] | None = None,
            topk: int = 5, tasks: Sequence[str] | None = None) -> Explanation:
    """Predictions of every task head for one pre-processed image (C, H, W), plus the routing
    weights (per module, and per token) that produced them when the model is a WEMoE."""
    model.eval()
    x = image.unsqueeze(0) if image.dim() == 3 else image
    enc = model.encoder
    routed = hasattr(enc, "keep_token_routing")
    shared, routing, tokens = None, None, None
    if routed:
        with enc.keep_token_routing():
            shared = model.features(x)
        routing = enc.routing_weights()[:, 0].float().cpu().numpy()
        tokens = enc.token_routing()[:, 0].float().cpu().numpy()
    elif not getattr(enc, "needs_task", False):
        shared = model.features(x)
    preds = {}
    for task in tasks or model.tasks:
        f = shared if shared is not None else model.features(x, task)
        p = model.heads(f, task).softmax(-1)[0]
        val, idx = p.topk(min(topk, p.numel()))
        names = classnames.get(task) if classnames else None
        preds[task] = [(names[i] if names else str(i), float(v)) for v, i in zip(val.tolist(), idx.tolist())]
    return Explanation(preds, routing, tokens, enc.routed_names if routed else [],
                       list(enc.task_names) if routed else [])
