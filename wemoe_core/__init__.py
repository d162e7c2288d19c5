"""wemoe_core: merge fine-tuned CLIP vision towers, upscale them into a weight-ensembling
mixture of experts (WEMoE), adapt at test time, evaluate and explain.

Public API (stable names): ``merge``, ``upscale``, ``adapt``, ``evaluate``, ``explain``,
``load_pool``, ``load_vision``, ``METHODS``, and the types listed in ``__all__``.

The library is layered; each layer imports only the ones above it in this list (enforced by
``tests/core/test_layers.py``):

- ``model``:   parameter names, vision towers, heads, typed hyperparameters, batches;
- ``merging``: the methods (static merges, AdaMerging, WEMoE) and their registry ``METHODS``;
- ``sources``: checkpoints, the Hub, local paths, open_clip's CLIP, zero-shot heads, images,
  our own files and recipes;
- ``pools``:   the Tiny-8 zoo and real CLIP pools (never methods or runs);
- ``running``: adaptation, evaluation, the workbench the CLI and app use, analyses, exports.

The names below are imported when first used, so ``import wemoe_core`` (or any of its
modules) does not pay for the whole library.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from ._version import __version__

# public name -> the module that defines it
_EXPORTS = {
    "PRESETS": "running.adapt", "AdaptationError": "running.adapt", "AdaptParams": "running.adapt",
    "StepInfo": "running.adapt", "adapt": "running.adapt",
    "load_vision": "sources.checkpoints",
    "Explanation": "running.evaluate", "evaluate": "running.evaluate", "explain": "running.evaluate",
    "routing_share": "running.evaluate",
    "Heads": "model.towers", "MultiTaskModel": "model.towers", "VisionConfig": "model.towers",
    "build_vision": "model.towers",
    "METHODS": "merging.registry", "build": "merging.registry", "get_method": "merging.registry",
    "merge": "merging.registry",
    "WEMoE": "merging.wemoe", "WEMoEParams": "merging.wemoe", "upscale": "merging.wemoe",
    "load_pool": "pools.registry",
}

__all__ = sorted(_EXPORTS, key=lambda n: (not n[0].isupper(), n))


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wemoe_core' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    globals()[name] = value          # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


if TYPE_CHECKING:  # for editors and type checkers: the same names, imported eagerly
    from .merging.registry import METHODS, build, get_method, merge
    from .merging.wemoe import WEMoE, WEMoEParams, upscale
    from .model.towers import Heads, MultiTaskModel, VisionConfig, build_vision
    from .pools.registry import load_pool
    from .running.adapt import PRESETS, AdaptationError, AdaptParams, StepInfo, adapt
    from .running.evaluate import Explanation, evaluate, explain, routing_share
    from .sources.checkpoints import load_vision
