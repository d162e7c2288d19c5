"""The one extension point: ``METHODS``, name -> Method. The UI's method list, the CLI's choices
and the exports' metadata all come from here. Adding a method = one entry + its test."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Callable, Sequence

from torch import nn

from ..model.params import hp, validate
from ..model.towers import LazyStates, PerTaskEncoder, copy_frozen, freeze, materialise, state_of
from . import static
from .adamerging import AdaMerging, AdaMergingParams
from .wemoe import WEMoEParams, upscale


@dataclass(frozen=True)
class NoParams:
    pass


@dataclass(frozen=True)
class TaskArithmeticParams:
    scale: float = hp(0.3, "λ: multiplies the sum of the task vectors", min=0.0, max=2.0, step=0.05)


@dataclass(frozen=True)
class TiesParams:
    scale: float = hp(1.0, "λ: multiplies the merged (disjoint-mean) task vector; the paper uses 1", min=0.0, max=2.0, step=0.05)
    density: float = hp(0.2, "Fraction of each task vector's entries kept, by magnitude (paper: 0.2)", min=0.0, min_open=True, max=1.0, step=0.05)
    topk: str = hp("global", "Rank magnitudes over the whole task vector (paper) or within each tensor", choices=("global", "per_tensor"))


@dataclass(frozen=True)
class Method:
    name: str
    pretty_name: str
    reference_url: str
    summary: str                      # one line for a student
    params: type                      # frozen dataclass of hyperparameters
    build: Callable                   # (pretrained, finetuned, params, task_names) -> encoder
    adaptive: bool = False            # True: train with ``adapt`` after building
    # The settings that matter most, up front in a UI (names of ``params`` or, for adaptive
    # methods, of the adaptation's ``AdaptParams``); the rest are "advanced".
    main: tuple[str, ...] = ()

    def hparams(self, **values):
        """Validated hyperparameters (ValueError with a clear message otherwise)."""
        return validate(self.params, values, owner=self.pretty_name)

    def defaults(self) -> dict:
        return {f.name: f.default for f in fields(self.params)}


def _static(fn: Callable) -> Callable:
    def build(pretrained: nn.Module, finetuned: Sequence, params, task_names) -> nn.Module:
        merged = fn(state_of(pretrained), LazyStates(finetuned), **vars(params))
        model = copy_frozen(pretrained)
        model.load_state_dict(merged, strict=True)
        return model
    return build


def _individual(pretrained, finetuned, params, task_names) -> nn.Module:
    towers = {}
    for name, src in zip(task_names, finetuned):
        tower = copy_frozen(pretrained)
        tower.load_state_dict(materialise(src), strict=True)
        towers[name] = tower
    return PerTaskEncoder(towers)


def _pretrained(pretrained, finetuned, params, task_names) -> nn.Module:
    return copy_frozen(pretrained)


def _adamerging(granularity: str) -> Callable:
    def build(pretrained, finetuned, params, task_names) -> nn.Module:
        return AdaMerging(pretrained, finetuned, granularity=granularity, params=params, task_names=task_names)
    return build


def _wemoe(pretrained, finetuned, params, task_names) -> nn.Module:
    return upscale(pretrained, finetuned, params=params, task_names=task_names)


_METHODS = [
    Method("pretrained", "Pre-trained (zero-shot)", "https://arxiv.org/abs/2103.00020",
           "The pre-trained model with each task's head: the floor every merge should beat.", NoParams, _pretrained),
    Method("individual", "Individual fine-tuned", "https://arxiv.org/abs/2212.04089",
           "Each task uses its own fine-tuned model: the ceiling, at T times the memory.", NoParams, _individual),
    Method("average", "Simple averaging", "https://arxiv.org/abs/2203.05482",
           "Average the fine-tuned weights (model soups).", NoParams, _static(static.average)),
    Method("task_arithmetic", "Task arithmetic", "https://arxiv.org/abs/2212.04089",
           "Add λ times the sum of the task vectors to the pre-trained weights.", TaskArithmeticParams,
           _static(static.task_arithmetic), main=("scale",)),
    Method("ties", "TIES-merging", "https://arxiv.org/abs/2306.01708",
           "Trim small task-vector entries, elect a sign per entry, average the agreeing ones.", TiesParams,
           _static(static.ties), main=("density", "scale", "topk")),
    Method("adamerging_task", "AdaMerging (task-wise)", "https://arxiv.org/abs/2310.02575",
           "Task arithmetic with one coefficient per task, learned by entropy minimisation on unlabeled test images.",
           AdaMergingParams, _adamerging("task"), adaptive=True, main=("init", "steps", "lr")),
    Method("adamerging_layer", "AdaMerging (layer-wise)", "https://arxiv.org/abs/2310.02575",
           "One learned coefficient per task and per layer.", AdaMergingParams, _adamerging("layer"), adaptive=True,
           main=("init", "steps", "lr")),
    Method("wemoe", "WEMoE", "https://arxiv.org/abs/2402.00433",
           "Keep the task vectors as experts; a router per layer mixes them anew for every image.",
           WEMoEParams, _wemoe, adaptive=True, main=("router_depth", "steps", "lr")),
]
METHODS: dict[str, Method] = {m.name: m for m in _METHODS}
STATIC_MERGES = {"average": static.average, "task_arithmetic": static.task_arithmetic, "ties": static.ties}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    return METHODS[name]


def build(method: str, pretrained: nn.Module, finetuned: Sequence, task_names: Sequence[str], **hparams) -> nn.Module:
    """Build the encoder of ``method`` from a pre-trained tower and fine-tuned sources."""
    if len(finetuned) != len(task_names):
        raise ValueError(f"{len(finetuned)} fine-tuned models for {len(task_names)} tasks")
    if len(finetuned) < 1:
        raise ValueError("select at least one task to merge")
    m = get_method(method)
    return m.build(freeze(pretrained), finetuned, m.hparams(**hparams), list(task_names))


def merge(method: str, pretrained: dict, finetuned: list[dict], **hparams) -> dict:
    """Merge state dicts of the vision tower with a static method (``average``,
    ``task_arithmetic``, ``ties``). Hyperparameters: ``scale`` (λ, multiplies the merged task
    vector) and, for TIES, ``density`` (fraction of entries kept, in (0, 1]) and ``topk``."""
    if method not in STATIC_MERGES:
        hint = " (it learns: use build() and adapt())" if method in METHODS else ""
        raise ValueError(f"merge() supports {', '.join(STATIC_MERGES)}; got {method!r}{hint}")
    params = METHODS[method].hparams(**hparams)
    return STATIC_MERGES[method](pretrained, finetuned, **vars(params))
