"""What is measured: the models of one setup and the calls to time or to probe for memory.

Three variants of every call:
- ``plain``: the pre-trained tower alone (the floor). Its adaptation step trains only the class
  and positional embeddings, so backward runs through every block for input gradients, as it
  must for the routers, without weight gradients of the frozen matrices;
- ``wemoe``: our WEMoE (8 experts unless said otherwise);
- ``loop``: the same WEMoE run by the public implementation's per-sample loop (reference.py).
An adaptation step is one ``wemoe_core.running.adapt`` step: one unlabeled batch per task (tasks =
experts), entropy loss through each task's head, backward, Adam.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections.abc import Callable
from dataclasses import dataclass

import torch

import wemoe_core as wc

from . import synthetic
from .reference import per_sample_loop

VARIANTS = ("plain", "wemoe", "loop")


@dataclass(frozen=True)
class Setup:
    arch: str = "ViT-B-32"
    layers: int | None = None        # None: the architecture's own depth
    experts: int = 8
    tasks: int | None = None         # heads, one batch each per step; None: one per expert
    impl: str = "auto"               # EnsembleLinear implementation: auto, weights, outputs
    compress: str = "none"           # expert storage: none, lowrank
    rank: int = 16                   # lowrank: the factors' rank
    factors: str = "float32"         # lowrank: the factors' storage
    factor_math: str = "float32"     # lowrank: the arithmetic of their products (float32: in ``dtype``)
    dtype: str = "float32"
    device: str = "cpu"

    def label(self) -> str:
        depth = f", {self.layers} layers" if self.layers else ""
        return f"{self.arch}{depth}, {self.experts} experts"


class Bench:
    """The models of one setup, built once, and factories of the calls to measure."""

    def __init__(self, setup: Setup):
        self.setup = setup
        self.cfg = synthetic.vit_config(setup.arch, setup.layers)
        dtype = getattr(torch, setup.dtype)
        self.plain, self.moe = synthetic.wemoe(self.cfg, setup.experts, compress=setup.compress, rank=setup.rank,
                                               factors=getattr(torch, setup.factors), factor_math=setup.factor_math)
        self.plain.to(setup.device, dtype)
        self.moe.to(setup.device, dtype)
        for m in self.moe.modules():
            if hasattr(m, "impl"):
                m.impl = setup.impl
        heads = synthetic.heads(setup.tasks or setup.experts, self.cfg).to(setup.device, dtype)
        self.tasks = heads.tasks
        tower = _with_trainable_embeddings(self.plain)
        self.models = {"plain": wc.MultiTaskModel(tower, heads), "wemoe": wc.MultiTaskModel(self.moe, heads)}

    def images(self, n: int, seed: int = 1) -> torch.Tensor:
        x = synthetic.images(n, self.cfg, seed)
        return x.to(self.setup.device, getattr(torch, self.setup.dtype))

    def infer(self, variant: str, batch: int) -> Callable[[], object]:
        x = self.images(batch)
        model = self.plain if variant == "plain" else self.moe

        def call():
            with torch.no_grad(), _context(variant):
                out = model(x)
            _sync(self.setup.device)
            return out
        return call

    def tta(self, variant: str, per_task: int) -> Callable[[], object]:
        model = self.models["plain" if variant == "plain" else "wemoe"]
        data = {t: itertools.repeat(self.images(per_task, seed=10 + i)) for i, t in enumerate(self.tasks)}
        params = wc.AdaptParams(steps=1, batch_size=per_task, lr=1e-4)

        def call():
            with _context(variant):
                out = wc.adapt(model, data, params)
            _sync(self.setup.device)
            return out
        return call

    def call(self, kind: str, variant: str, size: int) -> Callable[[], object]:
        return (self.infer if kind == "infer" else self.tta)(variant, size)

    def expert_bytes(self) -> int:
        return sum(m.experts.nbytes() for m in self.moe.modules() if hasattr(m, "experts"))


def _context(variant: str):
    return per_sample_loop() if variant == "loop" else contextlib.nullcontext()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _with_trainable_embeddings(tower: torch.nn.Module) -> torch.nn.Module:
    tower.class_embedding.requires_grad_(True)
    tower.positional_embedding.requires_grad_(True)
    return tower


@functools.lru_cache(maxsize=1)
def cached(setup: Setup) -> Bench:
    """One Bench at a time (a ViT-B/32 WEMoE holds ~2 GB of experts)."""
    return Bench(setup)


def setup_from(d: dict) -> Setup:
    return Setup(**{k: v for k, v in d.items() if k in {f.name for f in dataclasses.fields(Setup)}})
