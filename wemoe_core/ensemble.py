"""Weight-ensembled linear layers: ``y = x (W0 + sum_t w_t dW_t)^T + (b0 + sum_t w_t db_t)``
with routing weights ``w`` per sample (shape (B, T)) or shared by the batch (shape (T,)).

Three exact implementations of the per-sample case (the tests prove them equal to a per-sample
Python loop, forward and backward):
- ``"weights"``: materialise each sample's weight matrix and use one batched matmul. A custom
  autograd function keeps only ``x`` and ``w`` for backward and rebuilds the per-sample weights
  there, so no per-sample weight copies live across the step (the public code keeps ~29 GB of
  them for ViT-B/32). Work is chunked over the batch to bound the transient memory.
- ``"outputs"``: the output-space identity ``x W0^T + sum_t w_t (x dW_t^T)``: no per-sample
  weights at all, T+1 matmuls' worth of work.
- low-rank experts (``LowRankExperts``): ``dW_t ~ A_t B_t^T``, applied in output space at a
  cost of ``T * r * (in + out)`` per token.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# Transient memory budget for one chunk of materialised per-sample weights.
CHUNK_BYTES = 256 * 2**20


class _PerSampleLinear(torch.autograd.Function):
    """y[b] = x[b] @ (W0 + sum_t w[b, t] dW[t])^T, recomputing per-sample weights in backward."""

    @staticmethod
    def forward(ctx, x, w, W0, dW, chunk: int):
        # x: (B, N, in), w: (B, T), W0: (out, in), dW: (T, out, in) -> (B, N, out)
        ctx.save_for_backward(x, w, W0, dW)
        ctx.chunk = chunk
        B, N, _ = x.shape
        out = x.new_empty(B, N, W0.shape[0])
        for s in range(0, B, chunk):
            W = _weights(w[s:s + chunk], W0, dW)                        # (c, out, in)
            torch.bmm(x[s:s + chunk], W.transpose(1, 2), out=out[s:s + chunk])
        return out

    @staticmethod
    def backward(ctx, gy):
        x, w, W0, dW = ctx.saved_tensors
        T = dW.shape[0]
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        gw = torch.empty_like(w) if ctx.needs_input_grad[1] else None
        for s in range(0, x.shape[0], ctx.chunk):
            sl = slice(s, s + ctx.chunk)
            if gx is not None:
                torch.bmm(gy[sl], _weights(w[sl], W0, dW), out=gx[sl])
            if gw is not None:
                G = torch.bmm(gy[sl].transpose(1, 2), x[sl])               # (c, out, in) = dL/dW_b
                gw[sl] = (G.flatten(1) @ dW.reshape(T, -1).t()).to(w.dtype)  # <G_b, dW_t>
        return gx, gw, None, None, None


def _weights(w: torch.Tensor, W0: torch.Tensor, dW: torch.Tensor) -> torch.Tensor:
    """Per-sample weights W0 + sum_t w[b, t] dW[t]: (c, T) -> (c, out, in)."""
    T, o, i = dW.shape
    flat = torch.addmm(W0.reshape(1, -1), w.to(dW.dtype), dW.reshape(T, -1))
    return flat.view(-1, o, i)


class DenseExperts(nn.Module):
    """The task vectors of one linear layer, stored dense: weight (T, out, in), bias (T, out)."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("weight", weight)
        self.register_buffer("bias", bias)

    @property
    def num_experts(self) -> int:
        return self.weight.shape[0]

    def delta(self) -> torch.Tensor:
        return self.weight

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())


class LowRankExperts(nn.Module):
    """Task vectors compressed to rank r: dW_t = a_t @ b_t^T, a: (T, out, r), b: (T, in, r)."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None):
        super().__init__()
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.register_buffer("bias", bias)

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None, rank: int) -> "LowRankExperts":
        # Truncated SVD per task: the best rank-r approximation in Frobenius norm.
        U, S, Vh = torch.linalg.svd(weight.float(), full_matrices=False)      # (T,out,k) (T,k) (T,k,in)
        r = min(rank, S.shape[-1])
        a = (U[..., :r] * S[:, None, :r]).to(weight.dtype).contiguous()
        b = Vh[:, :r, :].transpose(1, 2).to(weight.dtype).contiguous()
        return cls(a, b, bias)

    @property
    def num_experts(self) -> int:
        return self.a.shape[0]

    def delta(self) -> torch.Tensor:
        return self.a @ self.b.transpose(1, 2)

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())


class EnsembleLinear(nn.Module):
    """A linear layer whose weights are the pre-trained ones plus routed task vectors."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, experts: nn.Module, impl: str = "auto"):
        super().__init__()
        if impl not in ("auto", "weights", "outputs"):
            raise ValueError(f"impl={impl!r}: choose 'auto', 'weights' or 'outputs'")
        self.register_buffer("weight", weight)          # (out, in), the PRE-TRAINED weights
        self.register_buffer("bias", bias)              # (out,)
        self.experts = experts
        self.impl = impl

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """x: (B, N, in); w: (B, T) per sample or (T,) shared by the batch -> (B, N, out)."""
        w = w.to(x.dtype)
        y = self._matmul(x, w)
        if self.bias is not None:
            y = y + self._bias(w).unsqueeze(-2)
        return y

    def _bias(self, w: torch.Tensor) -> torch.Tensor:
        if self.experts.bias is None:
            return self.bias
        return self.bias + w @ self.experts.bias       # (B, out) or (out,)

    def _matmul(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        if isinstance(self.experts, LowRankExperts):
            return F.linear(x, self.weight) + _lowrank_delta(x, w, self.experts.a, self.experts.b)
        dW = self.experts.weight
        if w.dim() == 1:   # one weight vector for the whole batch: merge once, plain matmul
            return F.linear(x, self.weight + torch.tensordot(w, dW, dims=1))
        if self.choose_impl(x.shape[1]) == "outputs":
            T, o, _ = dW.shape
            per_task = F.linear(x, dW.reshape(T * o, -1)).unflatten(-1, (T, o))   # (B, N, T, out)
            return F.linear(x, self.weight) + torch.einsum("bt,bnto->bno", w, per_task)
        chunk = max(1, CHUNK_BYTES // (dW[0].numel() * dW.element_size()))
        return _PerSampleLinear.apply(x, w, self.weight, dW, chunk)

    def choose_impl(self, tokens: int) -> str:
        """Cost per sample, in multiply-adds of one (out x in) matrix: materialising weights
        costs T (build) + N (apply); the output-space form costs N (T + 1)."""
        if self.impl != "auto":
            return self.impl
        T = self.experts.num_experts
        return "weights" if T + tokens <= tokens * (T + 1) else "outputs"


def _lowrank_delta(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_t w_t (x b_t) a_t^T for per-sample (B, T) or shared (T,) weights."""
    T, o, r = a.shape
    z = torch.einsum("bni,tir->bntr", x, b)                              # (B, N, T, r)
    z = z * (w[:, None, :, None] if w.dim() == 2 else w[:, None])
    return torch.einsum("bntr,tor->bno", z, a)
