"""wemoe_core: merge fine-tuned CLIP vision towers, upscale them into a weight-ensembling
mixture of experts (WEMoE), adapt at test time, evaluate and explain.

Public API (stable names): ``merge``, ``upscale``, ``adapt``, ``evaluate``, ``explain``,
``load_pool``, ``load_vision``, ``METHODS``.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .adapt import PRESETS, AdaptationError, AdaptParams, StepInfo, adapt  # noqa: E402
from .checkpoints import load_vision  # noqa: E402
from .evaluate import Explanation, evaluate, explain, routing_share  # noqa: E402
from .models import Heads, MultiTaskModel, VisionConfig, build_vision  # noqa: E402
from .registry import METHODS, build, get_method  # noqa: E402
from .wemoe import WEMoE, WEMoEParams, upscale  # noqa: E402


def merge(method: str, pretrained: dict, finetuned: list[dict], **hparams) -> dict:
    """Merge state dicts of the vision tower with a static method (``average``,
    ``task_arithmetic``, ``ties``). Hyperparameters: ``scale`` (λ, multiplies the merged task
    vector) and, for TIES, ``density`` (fraction of entries kept, in (0, 1]) and ``topk``."""
    from .registry import STATIC_MERGES

    if method not in STATIC_MERGES:
        hint = " (it learns: use build() and adapt())" if method in METHODS else ""
        raise ValueError(f"merge() supports {', '.join(STATIC_MERGES)}; got {method!r}{hint}")
    params = METHODS[method].hparams(**hparams)
    return STATIC_MERGES[method](pretrained, finetuned, **vars(params))


__all__ = [
    "METHODS", "PRESETS", "AdaptParams", "AdaptationError", "Explanation", "Heads", "MultiTaskModel", "StepInfo",
    "VisionConfig", "WEMoE", "WEMoEParams", "adapt", "build", "build_vision", "evaluate", "explain",
    "get_method", "load_vision", "merge", "routing_share", "upscale",
]
