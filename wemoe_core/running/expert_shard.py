"""Expert sharding: for models whose experts do not fit one device. Each rank holds a contiguous
slice of the T experts of every routed module (``upscale(..., experts=(lo, hi))`` builds only
those), rank 0 also the pre-trained weights, and every routed linear layer sums the ranks'
partial outputs:

    y = x W0^T + b0 + sum_t w_t (x dW_t^T + db_t)  =  sum_r [ rank r's terms ]

Everything else (routers, attention, norms, heads, the loss) is replicated: every rank runs the
same forward on the SAME inputs (no data parallelism in this mode) and ends with the same y.
Gradients stay exact with the two operators of tensor parallelism around each routed layer:
``_Replicated`` (identity forward, gradients summed over ranks backward: each rank's input
gradient holds only its experts' part) and ``_SumOverRanks`` (partial outputs summed forward;
backward identity, since the gradient arriving at y is already the same on every rank). So the
routers get the one-process gradients on every rank and stay identical without any gradient
all-reduce. Cost: two all-reduces of activations per routed linear layer and step direction.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..merging.experts import EnsembleLinear
from ..merging.wemoe import WEAttention, WEMLP, WEMoE, WEMoEParams, upscale
from .distributed import Group, collective


def expert_range(num_experts: int, rank: int, world: int) -> tuple[int, int]:
    """The experts [lo, hi) that ``rank`` holds: as even a split as possible (T=20 on 3 ranks: 7, 7, 6)."""
    if world > num_experts:
        raise ValueError(f"{world} ranks cannot share {num_experts} experts: use at most {num_experts} ranks")
    base, extra = divmod(num_experts, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (rank < extra)


class _Replicated(torch.autograd.Function):
    """Identity forward; backward sums the gradient over ranks."""

    @staticmethod
    def forward(ctx, x, group):
        ctx.group = group
        return x.view_as(x)

    @staticmethod
    def backward(ctx, g):
        import torch.distributed as dist

        g = g.contiguous().clone()
        with collective(ctx.group, "the backward pass of a sharded layer"):
            dist.all_reduce(g)
        return g, None


class _SumOverRanks(torch.autograd.Function):
    """Forward sums the ranks' partial outputs; backward identity."""

    @staticmethod
    def forward(ctx, y, group):
        import torch.distributed as dist

        y = y.contiguous().clone()
        with collective(group, "the forward pass of a sharded layer"):
            dist.all_reduce(y)
        return y

    @staticmethod
    def backward(ctx, g):
        return g, None


class ShardedLinear(nn.Module):
    """One rank's share of an ``EnsembleLinear``: experts [lo, hi) and, on rank 0 only, the
    pre-trained weights (zero elsewhere). ``forward(x, w)`` takes all T routing weights."""

    def __init__(self, inner: EnsembleLinear, lo: int, hi: int, group: Group):
        super().__init__()
        self.inner, self.lo, self.hi, self.group = inner, lo, hi, group
        if group.rank != 0:                       # the pre-trained term is added once, on rank 0
            inner.weight.zero_()
            if inner.bias is not None:
                inner.bias.zero_()

    @property
    def weight(self) -> torch.Tensor:             # (out, in): the shape callers read
        return self.inner.weight

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        x = _Replicated.apply(x, self.group)
        w = _Replicated.apply(w, self.group)[..., self.lo:self.hi]
        return _SumOverRanks.apply(self.inner(x, w), self.group)


def upscale_sharded(pretrained: nn.Module, finetuned: Sequence, group: Group, *, params: WEMoEParams,
                    task_names: Sequence[str]) -> WEMoE:
    """``upscale`` keeping only this rank's experts (every fine-tuned model is still read once,
    for the task-arithmetic merge of the shared weights), then every routed linear layer sharded.
    The routers are the one-process routers (same seed, same order)."""
    lo, hi = expert_range(len(finetuned), group.rank, group.world)
    model = upscale(pretrained, finetuned, params=params, task_names=task_names, experts=(lo, hi))
    for mod in model.modules():
        if isinstance(mod, WEMLP):
            mod.c_fc, mod.c_proj = ShardedLinear(mod.c_fc, lo, hi, group), ShardedLinear(mod.c_proj, lo, hi, group)
        elif isinstance(mod, WEAttention):
            mod.in_proj = ShardedLinear(mod.in_proj, lo, hi, group)
            mod.out_proj = ShardedLinear(mod.out_proj, lo, hi, group)
    model.expert_shard = (lo, hi)
    return model


def sharded(model: nn.Module) -> bool:
    """Whether ``model`` holds sharded experts (then every rank must run the same forward)."""
    return any(isinstance(m, ShardedLinear) for m in model.modules())


def expert_bytes(model: nn.Module) -> int:
    """Bytes of the experts this process holds."""
    return sum(m.experts.nbytes() for m in model.modules() if isinstance(m, EnsembleLinear))



def full_fingerprint(model: WEMoE, group: Group) -> str:
    """``sources.files.fingerprint`` of the WHOLE model, from the ranks' shares (every rank calls
    it): each rank samples its slice of every expert tensor at the positions where the whole
    tensor is sampled; the shared weights are rank 0's. So routers saved from a sharded run load
    into the same WEMoE built in one process (``load_routers`` checks this fingerprint)."""
    from ..sources.files import FINGERPRINT_STRIDE as stride, fingerprint_of

    lo, _ = model.expert_shard
    T, mine, split = len(model.task_names), {}, set()
    for key, t in model.state_dict().items():
        if "router" in key:
            continue
        name, t = key.replace(".inner.", "."), t.detach()
        if ".inner.experts." in key:            # this rank's experts lo.. of a (T, ...) tensor
            per = t[0].numel()
            split.add(name)
            mine[name] = ((T, *t.shape[1:]), t.flatten()[(-lo * per) % stride::stride].cpu())
        elif group.rank == 0:                   # shared (and, on rank 0, the pre-trained) weights
            mine[name] = (tuple(t.shape), t.flatten()[::stride].cpu())
    every = group.gather(mine, "the fingerprint of the sharded experts")
    items = []
    for name, (shape, sample) in every[0].items():
        if name in split:                       # the ranks' slices, in expert order
            sample = torch.cat([ranks[name][1] for ranks in every])
        items.append((name, shape, sample))
    return fingerprint_of(items)
