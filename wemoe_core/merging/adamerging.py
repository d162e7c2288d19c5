"""AdaMerging (Yang et al., ICLR 2024, arXiv 2310.02575): task arithmetic whose coefficients are
learned at test time by entropy minimisation.

Task-wise: ``theta = theta_0 + sum_t lambda_t tau_t`` (one coefficient per task).
Layer-wise: ``theta_g = theta_0,g + sum_t lambda_{g,t} tau_{g,t}`` for every parameter tensor g.
Coefficients start at ``init`` (0.3) and, as in the official code, are clamped to [0, 1] unless
``clamp`` is off.
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from ..model import keys
from ..model.towers import check_pair, freeze, materialise, state_of
from .params import AdaMergingParams  # noqa: F401 - declared there, re-exported here


class AdaMerging(nn.Module):
    """Vision tower whose weights are the pre-trained ones plus learnable multiples of the task
    vectors. ``forward(images)`` returns features; ``merged_state()`` the current static merge."""

    def __init__(self, pretrained: nn.Module, finetuned: Sequence, *, granularity: str = "layer",
                 params: AdaMergingParams = AdaMergingParams(), task_names: Sequence[str] | None = None,
                 learnable: Callable[[str], bool] | None = None):
        super().__init__()
        if granularity not in ("task", "layer"):
            raise ValueError(f"granularity={granularity!r}: choose 'task' or 'layer'")
        self.granularity, self.params = granularity, params
        self.task_names = list(task_names) if task_names else [f"task{t}" for t in range(len(finetuned))]
        self.model = freeze(copy.deepcopy(pretrained))
        pre = state_of(pretrained)
        deltas = self._stack(pre, finetuned)
        # Tensors no fine-tune moved carry no coefficient; the rest are the learnable groups.
        moved = [k for k, d in deltas.items() if d.abs().amax() > 0]
        learn = [k for k in moved if learnable is None or learnable(k)]
        fixed = [k for k in moved if k not in learn]
        self.group_names = learn
        self._static = {k: v for k, v in pre.items() if k not in learn}
        for k in fixed:   # moved but not learnable: task arithmetic with the initial coefficient
            self._static[k] = pre[k] + params.init * deltas[k].sum(0)
        for j, k in enumerate(learn):
            self.register_buffer(f"base{j}", pre[k])
            self.register_buffer(f"delta{j}", deltas[k])
        shape = (len(finetuned),) if granularity == "task" else (len(learn), len(finetuned))
        self.coefficients_raw = nn.Parameter(torch.full(shape, float(params.init)))

    def _stack(self, pre: keys.StateDict, finetuned: Sequence) -> dict[str, torch.Tensor]:
        T = len(finetuned)
        deltas = {k: torch.empty((T, *v.shape), dtype=v.dtype) for k, v in pre.items() if keys.is_float(v)}
        for t, src in enumerate(finetuned):
            ft = materialise(src)
            check_pair(pre, ft, self.task_names[t])
            for k in deltas:
                deltas[k][t] = ft[k] - pre[k]
        return deltas

    def coefficients(self) -> torch.Tensor:
        """Current coefficients: (T,) task-wise or (groups, T) layer-wise."""
        c = self.coefficients_raw
        return c.clamp(0.0, 1.0) if self.params.clamp else c

    def merged_state(self) -> keys.StateDict:
        """The merged weights as a state dict (differentiable with respect to the coefficients)."""
        lam = self.coefficients()
        state = {k: v.to(lam.device) for k, v in self._static.items()}
        for j, k in enumerate(self.group_names):
            c = lam if lam.dim() == 1 else lam[j]
            state[k] = getattr(self, f"base{j}") + torch.tensordot(c, getattr(self, f"delta{j}"), dims=1)
        return state

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, self.merged_state(), (images,))

    def _apply(self, fn, *args, **kwargs):
        # Keep the plain-dict tensors on the same device as the module's buffers.
        out = super()._apply(fn, *args, **kwargs)
        self._static = {k: fn(v) for k, v in self._static.items()}
        return out
