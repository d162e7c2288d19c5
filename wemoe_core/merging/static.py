"""Static merging methods: pure functions over state dicts of the vision tower.

Every function takes the pre-trained state dict and a list of fine-tuned state dicts (same keys
and shapes) and returns a new state dict. No file I/O, no device moves, no printing.
Non-floating tensors (buffers such as position ids) are copied from the pre-trained model.
Each function reads the fine-tuned models in order, one at a time, so a lazily loading sequence
(``models.LazyStates``) keeps only one of them in memory.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch

from ..model.keys import StateDict, is_float
from ..model.towers import check_pair


def task_vectors(pretrained: StateDict, finetuned: Sequence[StateDict]) -> list[StateDict]:
    """tau_t = theta_t - theta_0 for every floating tensor."""
    return [{k: ft[k] - v for k, v in pretrained.items() if is_float(v)} for ft in finetuned]


def _apply(pretrained: StateDict, delta: StateDict, scale: float) -> StateDict:
    return {k: (v + scale * delta[k]) if k in delta else v.clone() for k, v in pretrained.items()}


def pretrained_merge(pretrained: StateDict, finetuned: Sequence[StateDict]) -> StateDict:
    """The pre-trained model itself (the zero-shot baseline)."""
    return {k: v.clone() for k, v in pretrained.items()}


def individual(pretrained: StateDict, finetuned: Sequence[StateDict], task: int = 0) -> StateDict:
    """Fine-tuned model number ``task`` unchanged (the per-task upper baseline)."""
    if not 0 <= task < len(finetuned):
        raise ValueError(f"task={task}: choose an index between 0 and {len(finetuned) - 1}")
    return {k: v.clone() for k, v in finetuned[task].items()}


def average(pretrained: StateDict, finetuned: Sequence[StateDict]) -> StateDict:
    """Simple weight averaging: theta = mean_t theta_t (one pass, one model's worth of memory)."""
    total = _sum(pretrained, finetuned, lambda ft, k: ft[k])
    return {k: total[k] / len(finetuned) if k in total else v.clone() for k, v in pretrained.items()}


def task_arithmetic(pretrained: StateDict, finetuned: Sequence[StateDict], scale: float = 0.3) -> StateDict:
    """Task arithmetic: theta = theta_0 + scale * sum_t tau_t (one pass)."""
    total = _sum(pretrained, finetuned, lambda ft, k: ft[k] - pretrained[k])
    return _apply(pretrained, total, scale)


def ties(
    pretrained: StateDict,
    finetuned: Sequence[StateDict],
    scale: float = 1.0,
    density: float = 0.2,
    topk: Literal["global", "per_tensor"] = "global",
) -> StateDict:
    """TIES-merging (Yadav et al., 2023): trim, elect sign, disjoint mean.

    1. Trim: keep the top ``density`` fraction of each task vector's entries by magnitude,
       ranked over the WHOLE task vector (``topk="global"``, as in the paper) or within each
       tensor separately (``topk="per_tensor"``).
    2. Elect: per entry, the sign of the sum of the trimmed task vectors.
    3. Disjoint mean: average only the entries whose sign agrees with the elected one.
    Result: theta_0 + scale * merged.
    Two passes over ``finetuned`` (sum of trimmed vectors, then agreeing entries), so only one
    fine-tuned model is held at a time when the sequence loads lazily.
    """
    trimmed = lambda ft: _trim(task_vectors(pretrained, [ft])[0], density, topk)  # noqa: E731
    total = _sum(pretrained, finetuned, None, whole=trimmed)
    sign = {k: torch.sign(v) for k, v in total.items()}
    agree_sum, count = {}, {}
    for ft in finetuned:
        for k, v in trimmed(ft).items():
            agree = (torch.sign(v) == sign[k]) & (v != 0)
            agree_sum[k] = agree_sum.get(k, 0) + v * agree
            count[k] = count.get(k, 0) + agree.to(v.dtype)
    merged = {k: agree_sum[k] / count[k].clamp(min=1) for k in agree_sum}
    return _apply(pretrained, merged, scale)


def _sum(pretrained: StateDict, finetuned: Sequence[StateDict], term, whole=None) -> StateDict:
    """sum_t term(ft_t, k) for every floating tensor k (or sum_t whole(ft_t), a dict), checking
    each model as it streams by."""
    if len(finetuned) < 1:
        raise ValueError("no fine-tuned models given: select at least one task")
    total: StateDict = {}
    for t, ft in enumerate(finetuned):
        check_pair(pretrained, ft, f"model {t}")
        parts = whole(ft) if whole else {k: term(ft, k) for k, v in pretrained.items() if is_float(v)}
        for k, v in parts.items():
            total[k] = total[k] + v if k in total else v.clone()
    return total


def _trim(tv: StateDict, density: float, topk: str) -> StateDict:
    if density >= 1.0:
        return tv
    if topk == "per_tensor":
        return {k: _keep_top(v, _threshold(v.abs().flatten(), density)) for k, v in tv.items()}
    if topk != "global":
        raise ValueError(f"topk={topk!r}: choose 'global' or 'per_tensor'")
    thr = _threshold(torch.cat([v.abs().flatten() for v in tv.values()]), density)
    return {k: _keep_top(v, thr) for k, v in tv.items()}


def _threshold(mags: torch.Tensor, density: float) -> torch.Tensor:
    k = max(1, int(round(density * mags.numel())))
    # The k-th largest magnitude; entries >= it are kept (ties at the threshold are kept too).
    return torch.kthvalue(mags.float(), mags.numel() - k + 1).values


def _keep_top(v: torch.Tensor, thr: torch.Tensor) -> torch.Tensor:
    return torch.where(v.abs() >= thr, v, torch.zeros_like(v))
