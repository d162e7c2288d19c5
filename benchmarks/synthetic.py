"""Random models of real shapes: a ViT-B/32-shaped (or any open_clip-shaped) pre-trained tower
and T "fine-tuned" towers = pre-trained + small random task vectors, streamed one at a time.

Speed and memory do not depend on the weights' values, so random weights measure them exactly;
accuracy needs the real Tiny-8 zoo (``tiny8.py``)."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

import wemoe_core as wc
from wemoe_core.merging.experts import DenseExperts, EnsembleLinear, LowRankExperts
from wemoe_core.merging.wemoe import Router, Routing, WEMoE
from wemoe_core.model.towers import VisionConfig, build_vision, freeze

NOISE = 0.01   # task vector entries ~ NOISE x the tensor's std


def vit_config(name: str = "ViT-B-32", layers: int | None = None) -> VisionConfig:
    """The architecture of an open_clip model, optionally with fewer (or more) blocks."""
    cfg = VisionConfig.from_open_clip(name)
    return dataclasses.replace(cfg, layers=layers) if layers else cfg


def pretrained(cfg: VisionConfig, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return freeze(build_vision(cfg))


def finetuned_sources(pre: torch.nn.Module, experts: int, seed: int = 0) -> list[Callable[[], dict]]:
    """Zero-argument loaders of T random fine-tuned state dicts (for the real ``upscale`` path).
    One random bank per tensor is drawn once and rolled per task (distinct task vectors without
    T full draws)."""
    state = {k: v.detach() for k, v in pre.state_dict().items()}
    g = torch.Generator().manual_seed(seed)
    bank = {k: torch.randn(v.shape, generator=g) * NOISE * (float(v.std()) if v.numel() > 1 else 1.0)
            for k, v in state.items()}

    def source(t: int) -> Callable[[], dict]:
        def load() -> dict:
            return {k: v + bank[k].flatten().roll(1 + 7919 * t).view_as(v) for k, v in state.items()}
        return load
    return [source(t) for t in range(experts)]


def wemoe(cfg: VisionConfig, experts: int, seed: int = 0, compress: str = "none", rank: int = 16,
          factors: torch.dtype = torch.float32, factor_math: str = "float32", **options) -> tuple[torch.nn.Module, WEMoE]:
    """(pre-trained tower, a T-expert WEMoE of the same shapes), built fast: ``upscale`` from ONE
    random fine-tuned tower, then every expert dictionary widened to T scaled copies of its task
    vector and every router rebuilt for T outputs. Layout, dtype and bytes equal those of a
    WEMoE upscaled from T towers; only the values differ, and speed does not depend on them.
    ``compress="lowrank"``: each dictionary then becomes random rank-``rank`` factors of the
    shapes ``LowRankExperts`` stores, in ``factors``, applied in ``factor_math`` (an SVD of random
    task vectors would only cost time)."""
    if compress not in ("none", "lowrank"):
        raise ValueError(f"compress={compress!r}: the synthetic model has 'none' or 'lowrank'")
    pre = pretrained(cfg, seed)
    model = wc.upscale(pre, finetuned_sources(pre, 1, seed), task_names=["task0"], **options)
    scale = torch.linspace(0.5, 1.5, experts)
    for m in model.modules():
        if isinstance(m, EnsembleLinear):
            d, b = m.experts.weight, m.experts.bias
            if compress == "lowrank":
                g = torch.Generator().manual_seed(seed)
                (o, i), sd = d.shape[1:], float(d.std()) / rank ** 0.5
                m.experts = LowRankExperts((torch.randn(experts, o, rank, generator=g) * sd ** 0.5).to(factors),
                                           (torch.randn(experts, i, rank, generator=g) * sd ** 0.5).to(factors),
                                           b * scale.view(-1, 1), factor_math)
            else:
                m.experts = DenseExperts(d * scale.view(-1, *[1] * (d.dim() - 1)), b * scale.view(-1, 1))
            m.restack()
        if isinstance(m, Routing):
            old = m.router
            dim = old.net[0].in_features if old.depth else 1
            m.router = Router(dim, experts, old.depth, model.params.init_lambda, torch.Generator().manual_seed(seed))
    model.task_names = [f"task{t}" for t in range(experts)]
    return pre, model.eval()


def images(batch: int, cfg: VisionConfig, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, 3, cfg.image_size, cfg.image_size, generator=torch.Generator().manual_seed(seed))


def heads(experts: int, cfg: VisionConfig, classes: int = 10, seed: int = 2) -> wc.Heads:
    g = torch.Generator().manual_seed(seed)
    return wc.Heads({f"task{t}": torch.randn(classes, cfg.output_dim, generator=g) for t in range(experts)})
