"""Arithmetic limits: what WEMoE must cost relative to a plain tower, counted from the shapes.

Multiply-adds (MACs) of the matrix products only, per image; layer norms, GELU, softmax and the
like are the same in both models and left out, so the limit is a floor in FLOPs, and a measured
time ratio can come a little under it where those elementwise costs weigh (they add to plain and
to WEMoE alike). Per routed matrix (in x out) and image of N tokens, with K experts:

- plain forward: N in out; plain adaptation step (frozen weights, input gradients only): 2 N in out;
- WEMoE forward, materialised: N in out + K in out (building the sample's weights is K
  multiply-adds per weight), so one routed MLP costs (N + K) / N of a plain one;
- WEMoE adaptation step: forward (N + K), input gradient N (with the forward's weights), the
  sample's weight gradient gy^T x (N) and its contraction with the K experts (K): (3N + 2K) in out,
  i.e. (3N + 2K) / (2N) of a plain MLP step. (Our backward rebuilds the weights instead of keeping
  them, K more per weight, so that no per-sample weights outlive a chunk: a memory choice.)
- low-rank experts in output space (rank r): N in out + N K r (in + out); in the step twice that
  extra (the input gradient; the routing-weight gradient reuses gy a_t and the forward's x b_t).
- the router of every block: depth 2, N (d^2 + d K); depth 1, N d K; forward, and in the step
  also its input and weight gradients (3x).
Attention (q, k, v, out projections and the N x N products), the patch embedding and the final
projection are not routed: they cost the same in both models and dilute the MLP's ratio.

"Share of the limit reached" is limit / measured: 100 % means the measured ratio equals the limit.
"""
from __future__ import annotations

from wemoe_core.model.config import VisionConfig


def _plain(cfg: VisionConfig) -> dict:
    """MACs per image of the plain tower's parts: attention (linear + N^2 products), MLP, the rest."""
    N, d = cfg.num_tokens, cfg.width
    h = int(d * cfg.mlp_ratio)
    attn_lin = 4 * N * d * d
    attn_nn = 2 * N * N * d
    mlp = 2 * N * d * h
    patches = (cfg.image_size // cfg.patch_size) ** 2
    return {"attn_lin": cfg.layers * attn_lin, "attn_nn": cfg.layers * attn_nn, "mlp": cfg.layers * mlp,
            "patch": patches * 3 * cfg.patch_size ** 2 * d, "proj": d * cfg.output_dim}


def _router(cfg: VisionConfig, K: int, depth: int) -> int:
    N, d = cfg.num_tokens, cfg.width
    per_block = N * (d * d + d * K) if depth == 2 else N * d * K if depth == 1 else 0
    return cfg.layers * per_block


def _expert_extra(cfg: VisionConfig, K: int, rank: int | None, step: bool) -> int:
    """MACs per image that the routed MLPs add over plain ones (both matrices, all blocks)."""
    N, d = cfg.num_tokens, cfg.width
    h = int(d * cfg.mlp_ratio)
    if rank is None:
        per_weight = N + 2 * K if step else K               # (3N + 2K) - 2N, or (N + K) - N
        return cfg.layers * 2 * d * h * per_weight
    per_token = K * rank * (d + h) * 2                      # both matrices, K r (in + out) each
    return cfg.layers * N * per_token * (2 if step else 1)  # step: + the input gradient (gy a_t reused for w's)


def limits(cfg: VisionConfig, experts: int, router_depth: int = 2, rank: int | None = None) -> dict:
    """The arithmetic limits of WEMoE's time relative to the plain tower (same shapes)."""
    p = _plain(cfg)
    # the plain step: forward, then input gradients of every linear layer (1x) and of the two
    # N x N products (2x each); the patch embedding needs none (images carry no gradient)
    plain_inf = sum(p.values())
    plain_step = plain_inf + p["attn_lin"] + 2 * p["attn_nn"] + p["mlp"] + p["proj"]
    router = _router(cfg, experts, router_depth)
    inf = (plain_inf + router + _expert_extra(cfg, experts, rank, False)) / plain_inf
    step = (plain_step + 3 * router + _expert_extra(cfg, experts, rank, True)) / plain_step
    N = cfg.num_tokens
    return {"inference": inf, "tta_step": step,
            "mlp_only_inference": (N + experts) / N if rank is None else None,
            "mlp_only_tta_step": (3 * N + 2 * experts) / (2 * N) if rank is None else None,
            "plain_gmacs_per_image": plain_inf / 1e9, "mlp_share_of_plain": p["mlp"] / plain_inf,
            "router_share_of_plain": router / plain_inf, "rank": rank, "experts": experts,
            "router_depth": router_depth}


def share(measured: float | None, limit: float | None) -> float | None:
    """limit / measured (1.0: at the limit)."""
    if measured is None or limit is None or measured == 0:
        return None
    return limit / measured
