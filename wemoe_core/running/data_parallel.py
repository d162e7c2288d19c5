"""What data parallelism needs besides collectives (``running/distributed.py``): the checks
before and at the first adaptation step, and each rank's share of the test set."""
from __future__ import annotations

import dataclasses
from typing import Iterable, Sequence

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, IterableDataset, Subset

from .distributed import Group


def weights_checksum(tensors: Iterable[torch.Tensor], every: int = 997) -> float:
    """A cheap checksum of many tensors (every ``every``-th value), equal on ranks that hold the
    same weights."""
    total = 0.0
    for t in tensors:
        total += float(t.detach().flatten()[::every].double().sum())
    return float(f"{total:.10g}")      # ranks may sum in another order (threads): compare 10 digits


# --- adaptation: checks before and at the first step --------------------------------------------
def check_adaptation(group: Group, dp: Group | None, model: nn.Module, tasks: Sequence[str], params, joint: bool) -> None:
    """Before the first step: the ranks run the same recipe on the same model, and data
    parallelism can split the batch."""
    if dp is not None and not joint:
        raise ValueError("scope='batch' averages the routing over the whole batch inside the model, which data "
                         "parallelism cannot split; use scope='sample' (the paper's) or one process")
    if dp is not None and params.batch_size % group.world:
        raise ValueError(f"batch_size={params.batch_size} is not a multiple of the {group.world} ranks: each rank "
                         f"takes an equal share of every task's batch. Use a batch_size divisible by {group.world} "
                         f"(e.g. {group.world * max(1, params.batch_size // group.world)}) or another number of ranks")
    trainable = model.trainable_parameters()
    frozen = [p for p in model.parameters() if not p.requires_grad] + list(model.buffers())
    group.agree({"tasks": list(tasks), "params": dataclasses.asdict(params), "model": type(model.encoder).__name__,
                 "mode": "data parallel" if dp is not None else "experts sharded",
                 "trainable": [list(p.shape) for p in trainable],
                 "trainable_checksum": weights_checksum(trainable, every=1),
                 "frozen_checksum": weights_checksum(frozen) if dp is not None else None},
                "the adaptation (tasks, settings, model and its initial weights)")


def rank_batches(group: Group, dp: Group | None, tasks: Sequence[str], batches: list, step: int) -> list:
    """Check at the first step that every rank drew the same global batches, then (data parallel)
    keep this rank's share of each."""
    if step == 0:
        group.agree({t: [list(b.shape), weights_checksum([b], every=1)] for t, b in zip(tasks, batches)},
                    "the first adaptation batch of each task (every rank must read the same data with the same seed)")
    if dp is None:
        return batches
    return [dp.shard(b, f"the batch of task {t!r}") for t, b in zip(tasks, batches)]


# --- evaluation: each rank its share of the test set -----------------------------------------------
def shard_batches(batches: Iterable, group: Group) -> Iterable:
    """This rank's share of one task's labeled batches: a loader over every ``world``-th item of
    its dataset (``dataset.shard(rank, world)`` where the dataset offers it, e.g. streamed parquet),
    or, for other iterables, every ``world``-th batch."""
    if isinstance(batches, DataLoader):
        return DataLoader(shard_dataset(batches.dataset, group.rank, group.world), batch_size=batches.batch_size,
                          num_workers=batches.num_workers)
    return (b for i, b in enumerate(batches) if i % group.world == group.rank)


def shard_dataset(ds: Dataset, rank: int, world: int) -> Dataset:
    if hasattr(ds, "shard"):
        return ds.shard(rank, world)
    if isinstance(ds, IterableDataset):
        return _Strided(ds, rank, world)
    return Subset(ds, range(rank, len(ds), world))


class _Strided(IterableDataset):
    """Every ``world``-th item of an iterable dataset (each rank still reads all of it)."""

    def __init__(self, ds: IterableDataset, rank: int, world: int):
        self.ds, self.rank, self.world = ds, rank, world

    def __iter__(self):
        return (x for i, x in enumerate(self.ds) if i % self.world == self.rank)
