"""The one extension point: ``METHODS``, name -> Method. The UI's method list, the CLI's choices
and the exports' metadata all come from here. Adding a method = one entry + its test.

Describing the methods is cheap: this module imports no torch (the hyperparameters live in
``params``); a method's module is imported when the method is first built."""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, Callable, Sequence

from ..model.params import validate
from .params import AdaMergingParams, NoParams, TaskArithmeticParams, TiesParams, WEMoEParams

if TYPE_CHECKING:
    from torch import nn


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


def _towers():
    from ..model import towers      # (torch) when a method is first built

    return towers


def _static(name: str) -> Callable:
    """A builder that loads the state dicts and applies ``static.<name>``."""
    def build(pretrained: nn.Module, finetuned: Sequence, params, task_names) -> nn.Module:
        t = _towers()
        merged = _static_merge(name)(t.state_of(pretrained), t.LazyStates(finetuned), **vars(params))
        model = t.copy_frozen(pretrained)
        model.load_state_dict(merged, strict=True)
        return model
    return build


def _static_merge(name: str) -> Callable:
    from . import static

    return getattr(static, name)


def _individual(pretrained, finetuned, params, task_names) -> nn.Module:
    t = _towers()
    towers = {}
    for name, src in zip(task_names, finetuned):
        tower = t.copy_frozen(pretrained)
        tower.load_state_dict(t.materialise(src), strict=True)
        towers[name] = tower
    return t.PerTaskEncoder(towers)


def _pretrained(pretrained, finetuned, params, task_names) -> nn.Module:
    return _towers().copy_frozen(pretrained)


def _adamerging(granularity: str) -> Callable:
    def build(pretrained, finetuned, params, task_names) -> nn.Module:
        from .adamerging import AdaMerging

        return AdaMerging(pretrained, finetuned, granularity=granularity, params=params, task_names=task_names)
    return build


def _wemoe(pretrained, finetuned, params, task_names) -> nn.Module:
    from .wemoe import upscale

    return upscale(pretrained, finetuned, params=params, task_names=task_names)


_METHODS = [
    Method("pretrained", "Pre-trained (zero-shot)", "https://arxiv.org/abs/2103.00020",
           "The pre-trained model with each task's head: the floor every merge should beat.", NoParams, _pretrained),
    Method("individual", "Individual fine-tuned", "https://arxiv.org/abs/2212.04089",
           "Each task uses its own fine-tuned model: the ceiling, at T times the memory.", NoParams, _individual),
    Method("average", "Simple averaging", "https://arxiv.org/abs/2203.05482",
           "Average the fine-tuned weights (model soups).", NoParams, _static("average")),
    Method("task_arithmetic", "Task arithmetic", "https://arxiv.org/abs/2212.04089",
           "Add λ times the sum of the task vectors to the pre-trained weights.", TaskArithmeticParams,
           _static("task_arithmetic"), main=("scale",)),
    Method("ties", "TIES-merging", "https://arxiv.org/abs/2306.01708",
           "Trim small task-vector entries, elect a sign per entry, average the agreeing ones.", TiesParams,
           _static("ties"), main=("density", "scale", "topk")),
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
STATIC_MERGES = ("average", "task_arithmetic", "ties")      # merge() over state dicts


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
    return m.build(_towers().freeze(pretrained), finetuned, m.hparams(**hparams), list(task_names))


def merge(method: str, pretrained: dict, finetuned: list[dict], **hparams) -> dict:
    """Merge state dicts of the vision tower with a static method (``average``,
    ``task_arithmetic``, ``ties``). Hyperparameters: ``scale`` (λ, multiplies the merged task
    vector) and, for TIES, ``density`` (fraction of entries kept, in (0, 1]) and ``topk``."""
    if method not in STATIC_MERGES:
        hint = " (it learns: use build() and adapt())" if method in METHODS else ""
        raise ValueError(f"merge() supports {', '.join(STATIC_MERGES)}; got {method!r}{hint}")
    params = METHODS[method].hparams(**hparams)
    return _static_merge(method)(pretrained, finetuned, **vars(params))
