"""WEMoE: weight-ensembling mixture of experts (Tang et al., ICML 2024, arXiv 2402.00433).

``upscale`` turns a pre-trained vision tower and T fine-tuned ones into one model:
1. every parameter is task-arithmetic merged with ``init_lambda``;
2. the MLP (and optionally the attention) of the chosen blocks becomes a weight-ensembling
   module whose base is the PRE-TRAINED module and whose dictionary is the T task vectors;
3. a router per module maps the module's input tokens to T weights, averaged over tokens, so
   each image gets its own merged weights ``theta_0 + sum_t w_t tau_t`` (dense, unconstrained).
Only the routers train.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..model import keys
from ..model.towers import check_pair, freeze, materialise, state_of
from .experts import DenseExperts, EnsembleLinear, LowRankExperts, SparseExperts
from .params import WEMoEParams  # noqa: F401 - declared there, re-exported here

ROUTER_STD = 0.01  # paper: router weights ~ Normal(0, 0.01)


class Router(nn.Module):
    """Maps tokens (B, N, d) to per-token expert weights (B, N, T).

    depth 2: W2 relu(W1 h + b1) + b2 (W1 d x d); depth 1: W h + b; depth 0: a free T-vector.
    Init as in the paper: weights ~ N(0, 0.01), hidden bias 0, output bias ``bias_init``.
    """

    def __init__(self, dim: int, num_experts: int, depth: int = 2, bias_init: float = 0.3,
                 generator: torch.Generator | None = None):
        super().__init__()
        if depth not in (0, 1, 2):
            raise ValueError(f"router_depth={depth}: choose 0, 1 or 2")
        self.depth = depth
        if depth == 0:
            self.bias = nn.Parameter(torch.full((num_experts,), float(bias_init)))
            return
        layers = [nn.Linear(dim, dim), nn.ReLU()] if depth == 2 else []
        layers.append(nn.Linear(dim, num_experts))
        self.net = nn.Sequential(*layers)
        for m in self.net:
            if isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, ROUTER_STD, generator=generator)
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.net[-1].bias, float(bias_init))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if self.depth == 0:
            return self.bias.expand(*h.shape[:-1], -1)
        return self.net(h)


class Routing(nn.Module):
    """Router + the paper's reduction: per-token outputs averaged over tokens -> (B, T).

    Remembers the weights it last applied, so a model can report them after a forward: with
    ``scope="batch"`` every image is merged with the batch mean, so every row is that mean.
    """

    def __init__(self, router: Router, mode: str = "dense", scope: str = "sample"):
        super().__init__()
        self.router, self.mode, self.scope = router, mode, scope
        self.forced: torch.Tensor | None = None      # (T,) or (B, T): bypass the router
        self.keep_tokens = False
        self.last: torch.Tensor | None = None        # (B, T) as applied, graph kept for auxiliary losses
        self.last_tokens: torch.Tensor | None = None  # (B, N, T), detached, for explanations

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.forced is not None:
            w = self.forced.to(x).expand(x.shape[0], -1)
        else:
            tok = self.router(x)                         # (B, N, T) per-token router outputs
            w = tok.mean(dim=1)                          # one vector per image, as in the paper
            if self.mode == "softmax":
                w = w.softmax(dim=-1)
            if self.keep_tokens:
                self.last_tokens = (tok.softmax(-1) if self.mode == "softmax" else tok).detach()
        if self.scope == "batch":                        # one vector for the whole batch
            shared = w.mean(dim=0)                       # (T,)
            self.last = shared.expand_as(w)              # what each image got; the mean's graph
            return shared
        self.last = w
        return w                                         # (B, T)


class WEMLP(nn.Module):
    """Drop-in for a block's ``mlp``: c_fc -> GELU -> c_proj with routed weights."""

    def __init__(self, c_fc: EnsembleLinear, act: nn.Module, c_proj: EnsembleLinear, routing: Routing):
        super().__init__()
        self.c_fc, self.act, self.c_proj, self.routing = c_fc, act, c_proj, routing

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.routing(x)                     # x: tokens after ln_2, (B, N, d)
        return self.c_proj(self.act(self.c_fc(x, w)), w)


class WEAttention(nn.Module):
    """Drop-in for a block's ``attn`` (batch-first self-attention) with routed projections."""

    def __init__(self, in_proj: EnsembleLinear, out_proj: EnsembleLinear, num_heads: int, routing: Routing):
        super().__init__()
        self.in_proj, self.out_proj, self.num_heads, self.routing = in_proj, out_proj, num_heads, routing

    def forward(self, query, key=None, value=None, need_weights=False, attn_mask=None, **_):
        x = query                               # tokens after ln_1, (B, N, d); self-attention only
        B, N, d = x.shape
        w = self.routing(x)
        qkv = self.in_proj(x, w).view(B, N, 3, self.num_heads, d // self.num_heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)    # each (B, heads, N, head_dim)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
        return self.out_proj(out.transpose(1, 2).reshape(B, N, d), w), None


class WEMoE(nn.Module):
    """The upscaled vision tower. ``forward(images)`` returns features like the original tower."""

    def __init__(self, vision: nn.Module, params: WEMoEParams, task_names: Sequence[str]):
        super().__init__()
        self.vision = vision
        self.params = params
        self.task_names = list(task_names)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.vision(images)

    def routings(self) -> list[tuple[str, Routing]]:
        """The routed modules in forward order, e.g. ``("block3.mlp", Routing)``."""
        out = []
        for i, block in enumerate(self.vision.transformer.resblocks):
            for part in ("attn", "mlp"):
                mod = getattr(block, part)
                if isinstance(mod, (WEMLP, WEAttention)):
                    out.append((f"block{i}.{part}", mod.routing))
        return out

    @property
    def routed_names(self) -> list[str]:
        return [n for n, _ in self.routings()]

    def routing_weights(self, detach: bool = True) -> torch.Tensor:
        """Routing weights applied in the last forward: (layers, batch, experts). With
        ``scope="batch"`` each image's row is the batch mean that merged its weights."""
        w = torch.stack([r.last for _, r in self.routings()])
        return w.detach() if detach else w

    def token_routing(self) -> torch.Tensor:
        """Per-token router outputs of the last forward run inside ``keep_token_routing``:
        (layers, batch, tokens, experts); token 0 is CLS."""
        return torch.stack([r.last_tokens for _, r in self.routings()])

    @contextlib.contextmanager
    def keep_token_routing(self) -> Iterator[None]:
        for _, r in self.routings():
            r.keep_tokens = True
        try:
            yield
        finally:
            for _, r in self.routings():
                r.keep_tokens = False

    @contextlib.contextmanager
    def forced_routing(self, weights: torch.Tensor) -> Iterator[None]:
        """Bypass the routers with fixed weights (T,) or (B, T), e.g. one-hot for the oracle."""
        for _, r in self.routings():
            r.forced = weights
        try:
            yield
        finally:
            for _, r in self.routings():
                r.forced = None

    def router_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if "router" in n]

    def router_state(self) -> dict[str, torch.Tensor]:
        return {n: p.detach() for n, p in self.named_parameters() if "router" in n}


def upscale(pretrained: nn.Module, finetuned: Sequence, *, init_lambda: float = 0.3, router_depth: int = 2,
            task_names: Sequence[str] | None = None, params: WEMoEParams | None = None,
            experts: tuple[int, int] | None = None, **overrides) -> WEMoE:
    """Build a WEMoE model from a pre-trained open_clip ``VisionTransformer`` and T fine-tuned
    towers (modules, state dicts, or zero-argument callables returning a state dict: these are
    loaded one at a time, so 8 large checkpoints never sit in memory together).

    Only router parameters have ``requires_grad=True``; their names contain ``router``.
    ``experts=(lo, hi)`` keeps only experts lo..hi-1 of every routed module (the routers still
    weigh all T): one rank's share when experts are sharded (``running/expert_shard.py``).
    """
    from ..model.params import validate

    if params is None:
        params = validate(WEMoEParams, init_lambda=init_lambda, router_depth=router_depth, owner="WEMoE", **overrides)
    else:   # a hand-made WEMoEParams is checked too (NaN, out of range)
        params = validate(WEMoEParams, dataclasses.asdict(params), owner="WEMoE")
    if len(finetuned) < 1:
        raise ValueError("upscale needs at least one fine-tuned model")
    names = list(task_names) if task_names else [f"task{t}" for t in range(len(finetuned))]
    pre = state_of(pretrained)
    n_blocks = keys.num_blocks(pre)
    blocks = keys.resolve_blocks(n_blocks, params.blocks or None)
    routed = _routed_keys(blocks, params.upscale_attention)
    T = len(finetuned)
    lo, hi = experts if experts is not None else (0, T)
    if not 0 <= lo < hi <= T:
        raise ValueError(f"experts={experts}: keep a non-empty range of the {T} experts")
    deltas, merged = _collect(pre, finetuned, routed, params.init_lambda, names, range(lo, hi))
    vision = freeze(copy.deepcopy(pretrained))
    vision.load_state_dict(merged, strict=True)
    gen = torch.Generator().manual_seed(params.seed)
    for i in blocks:
        block = vision.transformer.resblocks[i]
        if params.upscale_attention:
            block.attn = _we_attention(block.attn, pre, deltas, i, params, gen, T)
        block.mlp = _we_mlp(block.mlp, pre, deltas, i, params, gen, T)
    return WEMoE(vision, params, names)


def _routed_keys(blocks: list[int], attention: bool) -> set[str]:
    out = set()
    for i in blocks:
        out.update(keys.mlp_keys(i))
        if attention:
            out.update(keys.attn_keys(i))
    return out


def _collect(pre, finetuned, routed, lam, names, keep: range):
    """Stream the fine-tuned models once: stack the task vectors of routed tensors of the kept
    experts into (len(keep), ...) buffers, sum the others over all tasks for task arithmetic.
    Returns (deltas, merged state dict)."""
    deltas = {k: torch.empty((len(keep), *pre[k].shape), dtype=pre[k].dtype) for k in routed}
    total = {k: torch.zeros_like(v) for k, v in pre.items() if keys.is_float(v) and k not in routed}
    for t, src in enumerate(finetuned):
        ft = materialise(src)
        check_pair(pre, ft, names[t])
        if t in keep:
            for k in deltas:
                deltas[k][t - keep.start] = ft[k] - pre[k]
        for k in total:
            total[k] += ft[k] - pre[k]
        del ft
    merged = {k: (v + lam * total[k]) if k in total else v.clone() for k, v in pre.items()}
    return deltas, merged


def _experts(w: torch.Tensor, b: torch.Tensor, params: WEMoEParams) -> nn.Module:
    if params.compress == "lowrank":
        return LowRankExperts.from_dense(w, b, params.rank, dtype=getattr(torch, params.factors), math=params.factor_math)
    if params.compress == "sparse":
        return SparseExperts.from_dense(w, b, params.density)
    return DenseExperts(w, b)


def _linear(pre, deltas, key_w: str, key_b: str, params) -> EnsembleLinear:
    """One routed linear layer. Its task vectors leave ``deltas`` as the layer takes them: the
    layer re-stacks (or compresses) them, so the build never holds two copies of every layer's."""
    w, b = deltas.pop(key_w), deltas.pop(key_b)
    return EnsembleLinear(pre[key_w].clone(), pre[key_b].clone(), _experts(w, b, params))


def _routing(dim: int, num_experts: int, params: WEMoEParams, gen) -> Routing:
    # Softmax routing starts at the simple average (uniform weights): output bias 0.
    bias = 0.0 if params.routing == "softmax" else params.init_lambda
    return Routing(Router(dim, num_experts, params.router_depth, bias, gen), params.routing, params.scope)


def _we_mlp(mlp: nn.Module, pre, deltas, i: int, params, gen, T: int) -> WEMLP:
    k = lambda name: keys.block_key(i, name)  # noqa: E731
    c_fc = _linear(pre, deltas, k("mlp.c_fc.weight"), k("mlp.c_fc.bias"), params)
    c_proj = _linear(pre, deltas, k("mlp.c_proj.weight"), k("mlp.c_proj.bias"), params)
    return WEMLP(c_fc, mlp.gelu, c_proj, _routing(c_fc.weight.shape[1], T, params, gen))


def _we_attention(attn: nn.MultiheadAttention, pre, deltas, i: int, params, gen, T: int) -> WEAttention:
    k = lambda name: keys.block_key(i, name)  # noqa: E731
    in_proj = _linear(pre, deltas, k("attn.in_proj_weight"), k("attn.in_proj_bias"), params)
    out_proj = _linear(pre, deltas, k("attn.out_proj.weight"), k("attn.out_proj.bias"), params)
    return WEAttention(in_proj, out_proj, attn.num_heads, _routing(in_proj.weight.shape[1], T, params, gen))


def skeleton(cfg, params: WEMoEParams, task_names: Sequence[str], state: keys.StateDict) -> WEMoE:
    """An uninitialised WEMoE with the layout of the saved ``state`` (for loading from disk)."""
    from ..model.towers import build_vision

    vision = freeze(build_vision(cfg))
    T = len(task_names)
    for i in keys.resolve_blocks(cfg.layers, params.blocks or None):
        block = vision.transformer.resblocks[i]
        pre = f"vision.transformer.resblocks.{i}."
        if params.upscale_attention:
            block.attn = WEAttention(_empty_linear(state, pre + "attn.in_proj", params), _empty_linear(state, pre + "attn.out_proj", params),
                                     block.attn.num_heads, _routing(cfg.width, T, params, None))
        block.mlp = WEMLP(_empty_linear(state, pre + "mlp.c_fc", params), block.mlp.gelu,
                          _empty_linear(state, pre + "mlp.c_proj", params), _routing(cfg.width, T, params, None))
    return WEMoE(vision, params, task_names)


def _empty_linear(state: keys.StateDict, prefix: str, params: WEMoEParams) -> EnsembleLinear:
    e = prefix + ".experts."
    like = lambda k: torch.empty_like(state[k]) if k in state else None  # noqa: E731
    if e + "a" in state:
        experts = LowRankExperts(like(e + "a"), like(e + "b"), like(e + "bias"), params.factor_math)
    elif e + "values" in state:
        experts = SparseExperts(like(e + "values"), like(e + "indices"), like(e + "bias"), state[prefix + ".weight"].shape)
    else:
        experts = DenseExperts(like(e + "weight"), like(e + "bias"))
    return EnsembleLinear(like(prefix + ".weight"), like(prefix + ".bias"), experts)
