"""Weight-ensembled linear layers: ``y = x (W0 + sum_t w_t dW_t)^T + (b0 + sum_t w_t db_t)``
with routing weights ``w`` per sample (shape (B, T)) or shared by the batch (shape (T,)).

Two exact implementations of the per-sample case (the tests prove them equal to a per-sample
Python loop, forward and backward); ``EnsembleLinear.choose_impl`` picks one per layer:
- ``"weights"``: materialise each sample's weights and apply them with a batched matmul, a chunk
  of samples and a block of output rows at a time in a reused workspace. Backward keeps only ``x``
  and ``w`` and rebuilds the block's weights, so no per-sample weight copies outlive a block (the public code keeps
  ~29 GB of them per ViT-B/32 step). Cost per sample: N tokens x (out x in) to apply, plus T
  (out x in) multiply-adds to build, which are memory-bound.
- ``"outputs"``: the output-space identity ``x W0^T + sum_t w_t (x dW_t^T)``: no per-sample
  weights, but (T + 1) times the matmul work; wins only for very short sequences.
Compressed experts save memory: low-rank factors (``LowRankExperts``, ``dW_t ~ a_t b_t^T``,
applied in output space at T r (in + out) per token, in float32 or, with ``math="bfloat16"``,
with bfloat16 inputs and float32 accumulation) or sparse top-k entries (``SparseExperts``,
scattered back into a dense transient each forward, then as above).
"""
from __future__ import annotations

import threading

import torch
import torch.nn.functional as F
from torch import nn

# Per-sample weights are built for at least CHUNK_SAMPLES samples at a time (more for small
# layers, up to CHUNK_BYTES), in one reused per-thread workspace: no page faults from fresh
# allocations, which dominated on CPU.
CHUNK_SAMPLES = 16
# Transients of either form (per-sample weights, per-expert outputs) up to this, chunking the batch.
CHUNK_BYTES = 64 * 2**20
# A chunk's weights are built and applied this many bytes at a time (whole output rows), so a
# block is read back while still in cache: on a quiet 2-core CPU, one B/32 c_fc at 16 images ran
# 2.1-2.4x a plain product in 12-25 MB blocks against 3.0x built whole (README, Performance).
BLOCK_BYTES = 16 * 2**20
# Building one expert into a sample's weights costs as much as applying the weights to this many
# tokens (memory-bound build vs compute-bound matmul). Measured on a 2-core CPU; the GPU value is
# the H200's bandwidth/compute ratio, pending measurement by `benchmarks/gpu.sh`.
BUILD_COST_TOKENS = {"cpu": 4.0, "cuda": 256.0}
# Low-rank experts in bfloat16 arithmetic add their part to the float32 output this many bytes
# of it at a time, while the block is in cache (no grad only; README, Performance).
ADD_BLOCK_BYTES = 4 * 2**20
# The arithmetic of low-rank experts' products (``LowRankExperts.math``).
FACTOR_MATHS = ("float32", "bfloat16")

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


def _stack_view(W0: torch.Tensor, dW: torch.Tensor) -> torch.Tensor | None:
    """The stack [dW_1 .. dW_T; W0] (T + 1, out, in) as a view, when ``dW`` (T, out, in) and ``W0``
    (out, in) are consecutive parts of one contiguous buffer; else None."""
    T, o, i = dW.shape
    if (W0.dtype != dW.dtype or W0.device != dW.device or not dW.is_contiguous() or not W0.is_contiguous()
            or W0.untyped_storage().data_ptr() != dW.untyped_storage().data_ptr()
            or W0.storage_offset() != dW.storage_offset() + T * o * i):
        return None
    return dW.as_strided((T + 1, o, i), (o * i, i, 1))


def _extend(w: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """(B, T) routing weights -> (B, T + 1) with a last column of ones (the pre-trained weights')."""
    return torch.cat([w.to(dtype), w.new_ones(w.shape[0], 1, dtype=dtype)], dim=1)


def _rows(S: torch.Tensor, r: int, rr: int) -> torch.Tensor:
    """Rows r..r+rr of every matrix of the stack, as a (T + 1, rr * in) strided view (no copy)."""
    K1, o, i = S.shape
    return S.view(K1, o * i)[:, r * i:(r + rr) * i]


class _PerSampleLinear(torch.autograd.Function):
    """y[b] = x[b] @ (W0 + sum_t w[b, t] dW[t])^T, ``chunk`` samples at a time and ``rows`` output
    rows at a time: a block of the chunk's weights (c, rows, in) is built in the workspace and
    applied at once, so it is still in cache when it is read (whole matrices: ``rows`` >= out).
    Backward keeps no per-sample weights: per block it rebuilds them for the input gradient, then
    overwrites them with the per-sample weight gradients gy_b^T x_b, contracted with the experts
    for the routing weights' gradient. ``S``: the stack (T + 1, out, in)."""

    @staticmethod
    def forward(ctx, x, w, S, chunk: int, rows: int | None = None):
        # x: (B, N, in), w: (B, T), S: (T + 1, out, in) -> (B, N, out)
        ctx.save_for_backward(x, w, S)
        K1, o, i = S.shape
        ctx.chunk, ctx.rows = chunk, min(rows or o, o)
        w1 = _extend(w, S.dtype)
        out = x.new_empty(*x.shape[:2], o)
        for s in range(0, x.shape[0], chunk):
            sl = slice(s, s + chunk)
            c = x[sl].shape[0]
            for r in range(0, o, ctx.rows):
                rr = min(ctx.rows, o - r)
                W = workspace(c * rr * i, S).view(c, rr * i)
                torch.mm(w1[sl], _rows(S, r, rr), out=W)                      # (c, rr, in)
                W = W.view(c, rr, i)
                if rr == o:
                    torch.bmm(x[sl], W.transpose(1, 2), out=out[sl])
                else:
                    out[sl, :, r:r + rr] = torch.bmm(x[sl], W.transpose(1, 2))
        return out

    @staticmethod
    def backward(ctx, gy):
        x, w, S = ctx.saved_tensors
        gx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        gw = torch.zeros(w.shape, dtype=S.dtype) if ctx.needs_input_grad[1] else None
        w1, (K1, o, i) = _extend(w, S.dtype), S.shape
        T = K1 - 1
        for s in range(0, x.shape[0], ctx.chunk):
            sl = slice(s, s + ctx.chunk)
            xs, gys = x[sl].to(S.dtype), gy[sl].to(S.dtype)
            c = xs.shape[0]
            for r in range(0, o, ctx.rows):
                rr = min(ctx.rows, o - r)
                g = gys[:, :, r:r + rr]
                B = workspace(c * rr * i, S).view(c, rr * i)
                if gx is not None:       # gx_b += gy_b[:, rows] @ W_b[rows]
                    torch.mm(w1[sl], _rows(S, r, rr), out=B)
                    gx[sl].baddbmm_(g, B.view(c, rr, i))
                if gw is not None:       # gw[b, t] += <gy_b[:, rows]^T x_b, dW_t[rows]>
                    torch.bmm(g.transpose(1, 2), xs, out=B.view(c, rr, i))
                    gw[sl].addmm_(B, _rows(S, r, rr)[:T].t())
        return gx, (gw.to(w.dtype) if gw is not None else None), None, None, None


class _PerSampleOutputs(torch.autograd.Function):
    """The same map in output space: sum_t w1[b, t] (x_b @ S_t^T) over the stack's T + 1 matrices
    (the last, W0, weighted by 1): T + 1 products over all tokens, no per-sample weights and
    no transient larger than x or y. Backward reuses each gy @ S_t for both gradients."""

    @staticmethod
    def forward(ctx, x, w, S):
        ctx.save_for_backward(x, w, S)
        w1 = _extend(w, S.dtype)
        B, N, i = x.shape
        out = x.new_zeros(B * N, S.shape[1])
        for t in range(S.shape[0]):
            out.addmm_((x * w1[:, t, None, None]).view(B * N, i), S[t].t())
        return out.view(B, N, -1)

    @staticmethod
    def backward(ctx, gy):
        x, w, S = ctx.saved_tensors
        B, N, i = x.shape
        w1 = _extend(w, S.dtype)
        gx = torch.zeros_like(x) if ctx.needs_input_grad[0] else None
        gw = torch.empty(w.shape, dtype=S.dtype) if ctx.needs_input_grad[1] else None
        for t in range(S.shape[0]):
            q = (gy.reshape(B * N, -1) @ S[t]).view(B, N, i)                # gy @ S_t
            if gx is not None:
                gx.add_(q * w1[:, t, None, None])
            if gw is not None and t < w.shape[1]:
                gw[:, t] = (q * x).sum(dim=(1, 2))
        return gx, (gw.to(w.dtype) if gw is not None else None), None


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
    """Task vectors compressed to rank r: dW_t = a_t @ b_t^T, a: (T, out, r), b: (T, in, r).
    The factors may be stored in bf16 (half the bytes). ``math`` is the arithmetic of their two
    products: ``"float32"`` (the input's dtype; exact for the model the factors define) or
    ``"bfloat16"`` (bf16 inputs, float32 accumulation inside each product, the experts' part
    rounded to bf16 before it joins the float32 output; several times faster on CPUs with AMX or
    AVX512-BF16 and on recent GPUs, slower elsewhere). The pre-trained weights stay float32."""

    def __init__(self, a: torch.Tensor, b: torch.Tensor, bias: torch.Tensor | None, math: str = "float32"):
        super().__init__()
        if math not in FACTOR_MATHS:
            raise ValueError(f"math={math!r}: choose one of {', '.join(FACTOR_MATHS)}")
        self.register_buffer("a", a)
        self.register_buffer("b", b)
        self.register_buffer("bias", bias)
        self.math = math

    def extra_repr(self) -> str:
        return f"experts={self.a.shape[0]}, rank={self.a.shape[-1]}, factors={self.a.dtype}, math={self.math}"

    @classmethod
    def from_dense(cls, weight: torch.Tensor, bias: torch.Tensor | None, rank: int,
                   dtype: torch.dtype | None = None, math: str = "float32") -> LowRankExperts:
        """Truncated SVD per task: the best rank-r approximation in Frobenius norm, split as
        a = U sqrt(S), b = V sqrt(S) (balanced, so bf16 rounds both alike); factors in ``dtype``
        (default: the weight's)."""
        U, S, Vh = torch.linalg.svd(weight.float(), full_matrices=False)      # (T,out,k) (T,k) (T,k,in)
        r = min(rank, S.shape[-1])
        root = S[:, None, :r].sqrt()
        dtype = dtype or weight.dtype
        a = (U[..., :r] * root).to(dtype).contiguous()
        b = (Vh[:, :r, :].transpose(1, 2) * root).to(dtype).contiguous()
        return cls(a, b, bias, math)

    def _apply(self, fn, recurse=True):
        """Moving the model keeps bf16 factors bf16 (``model.to(torch.float32)`` would widen them)."""
        keep = self.a.dtype if self.a.dtype == torch.bfloat16 else None
        super()._apply(fn, recurse)
        if keep is not None and self.a.dtype != keep and self.a.is_floating_point():
            self.a, self.b = self.a.to(keep), self.b.to(keep)
        return self

    @property
    def num_experts(self) -> int:
        return self.a.shape[0]

    def delta(self) -> torch.Tensor:
        dt = torch.promote_types(self.a.dtype, torch.float32)
        return self.a.to(dt) @ self.b.to(dt).transpose(1, 2)

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
    """A linear layer whose weights are the pre-trained ones plus routed task vectors.

    With dense experts the pre-trained weights live right after the task vectors in one buffer,
    ``[dW_1 .. dW_T; W0]`` (T + 1, out, in): ``weight`` (out, in) and ``experts.weight``
    (T, out, in) are views of it, so a sample's weights are one product ``[w_b, 1] @ stack``
    with no copy of W0. Moving the layer (``.to``) re-stacks it; where the two are not adjacent
    (e.g. loaded with ``assign=True``) the stack is concatenated per forward: slower, equal."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, experts: nn.Module, impl: str = "auto"):
        super().__init__()
        if impl not in ("auto", "weights", "outputs"):
            raise ValueError(f"impl={impl!r}: choose 'auto', 'weights' or 'outputs'")
        self.register_buffer("weight", weight)          # (out, in), the PRE-TRAINED weights
        self.register_buffer("bias", bias)              # (out,)
        self.experts = experts
        self.impl = impl
        self.restack()

    def restack(self) -> None:
        """Put dense experts and the pre-trained weights into one (T + 1, out, in) buffer."""
        W0 = self.weight
        dW = getattr(self.experts, "weight", None) if isinstance(self.experts, DenseExperts) else None
        if dW is None or W0 is None or dW.dtype != W0.dtype or dW.device != W0.device or _stack_view(W0, dW) is not None:
            return
        T, o, i = dW.shape
        stack = torch.empty((T + 1, o, i), dtype=W0.dtype, device=W0.device)
        stack[:-1].copy_(dW)
        stack[-1].copy_(W0)
        self.experts.weight, self.weight = stack[:-1], stack[-1]

    def _apply(self, fn, recurse=True):
        super()._apply(fn, recurse)
        self.restack()
        return self

    def stack(self) -> torch.Tensor:
        """(T + 1, out, in): the task vectors, then the pre-trained weights."""
        dW = self.experts.delta()      # dense experts: the buffer itself; sparse: decompressed
        view = _stack_view(self.weight, dW)
        if view is not None:
            return view
        return torch.cat([dW, self.weight.unsqueeze(0).to(dW.dtype)])

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
            return _lowrank_matmul(x, w, self.weight, self.experts.a, self.experts.b, self.experts.math)
        S = self.stack()                                # (T + 1, out, in)
        K1, o, i = S.shape
        if w.dim() == 1:   # one weight vector for the whole batch: merge once, plain matmul
            return F.linear(x, (_extend(w[None], S.dtype) @ S.reshape(K1, o * i)).view(o, i))
        if self.choose_impl(x.shape[1], x.device.type) == "outputs":
            return _PerSampleOutputs.apply(x, w, S)
        chunk = max(CHUNK_SAMPLES, CHUNK_BYTES // (o * i * S.element_size()))
        rows = max(1, BLOCK_BYTES // (min(chunk, x.shape[0]) * i * S.element_size()))
        return _PerSampleLinear.apply(x, w, S, chunk, rows)

    def choose_impl(self, tokens: int, device: str = "cpu") -> str:
        """Per sample, in units of one token through one (out x in) matrix: materialising costs
        ``tokens + k T`` (apply + build, k = ``BUILD_COST_TOKENS``), the output space costs
        ``tokens (T + 1)``; so materialise iff ``tokens >= k``. Both keep only x and w for
        backward and bound their transients (CHUNK_SAMPLES, CHUNK_BYTES), so memory does not decide."""
        if self.impl != "auto":
            return self.impl
        k = BUILD_COST_TOKENS.get(device, BUILD_COST_TOKENS["cpu"])
        return "weights" if tokens >= k else "outputs"


def _lowrank_matmul(x: torch.Tensor, w: torch.Tensor, W0: torch.Tensor, a: torch.Tensor, b: torch.Tensor,
                    math: str = "float32") -> torch.Tensor:
    """x W0^T + sum_t w_t (x b_t) a_t^T for per-sample (B, T) or shared (T,) weights, as two flat
    products over all tokens: z = x [b_1 .. b_T] (B N, T r), scaled by each sample's w_t, then
    x W0^T + z [a_1 .. a_T]^T. In float32 ``math`` the last two are one addmm, and factors stored
    in a narrower dtype (bf16) are widened to x's. In bfloat16 ``math`` x, the factors and w are
    rounded to bf16 for the two products (float32 accumulation inside each); x W0^T stays in x's
    dtype, and without grad the experts' part is added to it a cache-sized block of rows at a time."""
    T, i, r = b.shape
    dt = torch.bfloat16 if math == "bfloat16" else x.dtype
    bs = b.to(dt).permute(1, 0, 2).reshape(i, T * r)             # (in, T r)
    at = a.to(dt).permute(0, 2, 1).reshape(T * r, a.shape[1])    # (T r, out)
    x2 = x.reshape(-1, i)
    z = (x2.to(dt) @ bs).view(*x.shape[:-1], T, r)
    z = (z * (w[:, None, :, None] if w.dim() == 2 else w[:, None]).to(dt)).view(-1, T * r)
    if dt == x.dtype:
        return torch.addmm(F.linear(x2, W0), z, at).view(*x.shape[:-1], -1)
    y = F.linear(x2, W0)
    if torch.is_grad_enabled() and (y.requires_grad or z.requires_grad):
        y = y + z @ at
    else:
        rows = max(1, ADD_BLOCK_BYTES // (at.shape[1] * y.element_size()))
        for s in range(0, y.shape[0], rows):
            y[s:s + rows] += z[s:s + rows] @ at
    return y.view(*x.shape[:-1], -1)
