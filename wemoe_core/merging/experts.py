"""Weight-ensembled linear layers: ``y = x (W0 + sum_t w_t dW_t)^T + (b0 + sum_t w_t db_t)``
with routing weights ``w`` per sample (shape (B, T)) or shared by the batch (shape (T,)).

Two exact implementations of the per-sample case (the tests prove them equal to a per-sample
Python loop, forward and backward); ``EnsembleLinear.choose_impl`` picks one per layer:
- ``"weights"``: materialise each sample's weights and apply them with a batched matmul, a chunk
  of samples at a time in a reused workspace. Backward keeps only ``x`` and ``w`` and rebuilds
  the chunk's weights, so no per-sample weight copies outlive a chunk (the public code keeps
  ~29 GB of them per ViT-B/32 step). Cost per sample: N tokens x (out x in) to apply, plus T
  (out x in) multiply-adds to build, which are memory-bound.
- ``"outputs"``: the output-space identity ``x W0^T + sum_t w_t (x dW_t^T)``: no per-sample
  weights, but (T + 1) times the matmul work; wins only for very short sequences.
Compressed experts save memory: low-rank factors (``LowRankExperts``, ``dW_t ~ a_t b_t^T``,
applied in output space at T r (in + out) per token) or sparse top-k entries (``SparseExperts``,
scattered back into a dense transient each forward, then as above).
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

# Per-sample weights are built for at least CHUNK_SAMPLES samples at a time (more for small
# layers, up to CHUNK_BYTES), in one reused per-thread workspace: few large ops (robust when other
# processes share the cores) and no page faults from fresh allocations, which dominated on CPU.
CHUNK_SAMPLES = 16
# Transients of either form (per-sample weights, per-expert outputs) up to this, chunking the batch.
CHUNK_BYTES = 64 * 2**20
# Building one expert into a sample's weights costs as much as applying the weights to this many
# tokens (memory-bound build vs compute-bound matmul). Measured on a 2-core CPU; the GPU value is
# the H200's bandwidth/compute ratio, pending measurement by `benchmarks/gpu.sh`.
BUILD_COST_TOKENS = {"cpu": 4.0, "cuda": 256.0}

_local = threading.local()


def workspace(numel: int, like: torch.Tensor) -> torch.Tensor:
    """A reused CPU buffer of ``numel`` elements (one per thread and dtype); elsewhere a fresh one
    (CUDA has its own caching allocator)."""
    if like.device.type != "cpu":
        return like.new_empty(numel)
    bufs = _local.__dict__.setdefault("buffers", {})
    buf = bufs.get(like.dtype)
    if buf is None or buf.numel() < numel:
        buf = bufs[like.dtype] = like.new_empty(numel)
    return buf[:numel]


def release_workspace() -> None:
    """Free this thread's workspace (it is re-created on the next per-sample forward)."""
    _local.__dict__.pop("buffers", None)


def _build(w: torch.Tensor, W0: torch.Tensor, dW: torch.Tensor) -> torch.Tensor:
    """Per-sample weights W0 + sum_t w[b, t] dW[t] in the workspace: (c, T) -> (c, out, in)."""
    T, o, i = dW.shape
    flat = workspace(w.shape[0] * o * i, dW).view(w.shape[0], o * i)
    torch.addmm(W0.reshape(1, -1), w.to(dW.dtype), dW.reshape(T, -1), out=flat)
    return flat.view(-1, o, i)


class _PerSampleLinear(torch.autograd.Function):
    """y[b] = x[b] @ (W0 + sum_t w[b, t] dW[t])^T, ``chunk`` samples at a time, rebuilding the
    per-sample weights in backward instead of keeping them."""

    @staticmethod
    def forward(ctx, x, w, W0, dW, chunk: int):
        # x: (B, N, in), w: (B, T), W0: (out, in), dW: (T, out, in) -> (B, N, out)
        ctx.save_for_backward(x, w, W0, dW)
        ctx.chunk = chunk
        out = x.new_empty(*x.shape[:2], W0.shape[0])
        for s in range(0, x.shape[0], chunk):
            W = _build(w[s:s + chunk], W0, dW)                               # (c, out, in)
            torch.bmm(x[s:s + chunk], W.transpose(1, 2), out=out[s:s + chunk])
        return out

    @staticmethod
    def backward(ctx, gy):
        x, w, W0, dW = ctx.saved_tensors
        T = dW.shape[0]
        gx = torch.empty_like(x) if ctx.needs_input_grad[0] else None
        gw = torch.empty(w.shape, dtype=dW.dtype) if ctx.needs_input_grad[1] else None
        for s in range(0, x.shape[0], ctx.chunk):
            sl = slice(s, s + ctx.chunk)
            if gx is not None:
                torch.bmm(gy[sl], _build(w[sl], W0, dW), out=gx[sl])
            if gw is not None:   # gw[b, t] = <dL/dW_b, dW_t>, dL/dW_b = gy_b^T x_b, in the workspace
                c, o, i = gy[sl].shape[0], *W0.shape
                G = workspace(c * o * i, dW).view(c, o, i)
                torch.bmm(gy[sl].transpose(1, 2), x[sl].to(dW.dtype), out=G)
                torch.mm(G.view(c, -1), dW.reshape(T, -1).t(), out=gw[sl])
        return gx, (gw.to(w.dtype) if gw is not None else None), None, None, None


class _PerSampleOutputs(torch.autograd.Function):
    """The same map in output space: x W0^T + sum_t w[b, t] (x dW[t]^T), chunked over the batch,
    recomputing the per-expert outputs in backward instead of keeping them."""

    @staticmethod
    def forward(ctx, x, w, W0, dW, chunk: int):
        ctx.save_for_backward(x, w, W0, dW)
        ctx.chunk = chunk
        T, o, i = dW.shape
        out = F.linear(x, W0)
        for s in range(0, x.shape[0], chunk):
            P = F.linear(x[s:s + chunk], dW.view(T * o, i)).unflatten(-1, (T, o))  # (c, N, T, out)
            out[s:s + chunk] += torch.einsum("bt,bnto->bno", w[s:s + chunk].to(P.dtype), P)
        return out

    @staticmethod
    def backward(ctx, gy):
        x, w, W0, dW = ctx.saved_tensors
        T, o, i = dW.shape
        gx = gy @ W0 if ctx.needs_input_grad[0] else None
        gw = torch.empty(w.shape, dtype=dW.dtype) if ctx.needs_input_grad[1] else None
        for s in range(0, x.shape[0], ctx.chunk):
            sl = slice(s, s + ctx.chunk)
            ws = w[sl].to(dW.dtype)
            if gx is not None:   # sum_t w_t gy dW_t as one matmul over (T x out)
                scaled = (gy[sl].unsqueeze(-2) * ws[:, None, :, None]).flatten(-2)   # (c, N, T*out)
                gx[sl] += scaled @ dW.view(T * o, i)
            if gw is not None:
                P = F.linear(x[sl], dW.view(T * o, i)).unflatten(-1, (T, o))
                gw[sl] = torch.einsum("bno,bnto->bt", gy[sl], P)
        return gx, (gw.to(w.dtype) if gw is not None else None), None, None, None


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
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None, rank: int) -> LowRankExperts:
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


class SparseExperts(nn.Module):
    """Task vectors pruned to their top-k entries by magnitude (per expert and tensor), stored as
    values (T, k) and flat int32 indices (T, k): 8 bytes per kept entry, so a density d stores
    2d of the dense bytes. ``delta()`` scatters them back into a dense (T, out, in) transient."""

    def __init__(self, values: torch.Tensor, indices: torch.Tensor, bias: torch.Tensor | None, shape: tuple[int, int]):
        super().__init__()
        self.register_buffer("values", values)
        self.register_buffer("indices", indices)
        self.register_buffer("bias", bias)
        self.shape = tuple(shape)                       # (out, in) of one expert

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None, density: float) -> SparseExperts:
        T = weight.shape[0]
        flat = weight.reshape(T, -1)
        k = max(1, round(density * flat.shape[1]))
        idx = flat.abs().topk(k, dim=1, sorted=False).indices.sort(dim=1).values
        return cls(flat.gather(1, idx).contiguous(), idx.to(torch.int32), bias, weight.shape[1:])

    @property
    def num_experts(self) -> int:
        return self.values.shape[0]

    def delta(self) -> torch.Tensor:
        T = self.values.shape[0]
        dense = self.values.new_zeros(T, self.shape[0] * self.shape[1])
        dense.scatter_(1, self.indices.long(), self.values)
        return dense.view(T, *self.shape)

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
        dW = self.experts.delta()      # dense experts: the buffer itself; sparse: decompressed
        if w.dim() == 1:   # one weight vector for the whole batch: merge once, plain matmul
            return F.linear(x, self.weight + torch.tensordot(w, dW, dims=1))
        if self.choose_impl(x.shape[1], x.device.type) == "outputs":
            T, o, _ = dW.shape
            chunk = max(1, CHUNK_BYTES // (x.shape[1] * T * o * x.element_size()))
            return _PerSampleOutputs.apply(x, w, self.weight, dW, chunk)
        chunk = max(CHUNK_SAMPLES, CHUNK_BYTES // (dW[0].numel() * dW.element_size()))
        return _PerSampleLinear.apply(x, w, self.weight, dW, chunk)

    def choose_impl(self, tokens: int, device: str = "cpu") -> str:
        """Per sample, in units of one token through one (out x in) matrix: materialising costs
        ``tokens + k T`` (apply + build, k = ``BUILD_COST_TOKENS``), the output space costs
        ``tokens (T + 1)``; so materialise iff ``tokens >= k``. Both keep only x and w for
        backward and bound their transients (CHUNK_SAMPLES, CHUNK_BYTES), so memory does not decide."""
        if self.impl != "auto":
            return self.impl
        k = BUILD_COST_TOKENS.get(device, BUILD_COST_TOKENS["cpu"])
        return "weights" if tokens >= k else "outputs"


def _lowrank_delta(x: torch.Tensor, w: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """sum_t w_t (x b_t) a_t^T for per-sample (B, T) or shared (T,) weights."""
    z = torch.einsum("bni,tir->bntr", x, b)                              # (B, N, T, r)
    z = z * (w[:, None, :, None] if w.dim() == 2 else w[:, None])
    return torch.einsum("bntr,tor->bno", z, a)
