"""The per-sample linear kernels, the implementation choice, the workspace and sparse experts.
(The whole-model identities and the per-sample reference loop live in test_wemoe.py.)"""
import threading

import pytest
import torch

import wemoe_core as wc
from wemoe_core.merging import experts as ensemble
from wemoe_core.merging.experts import DenseExperts, EnsembleLinear, LowRankExperts, SparseExperts, _PerSampleLinear, _PerSampleOutputs


def _problem(B=5, N=4, i=6, o=7, T=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(B, N, i, dtype=dtype, generator=g, requires_grad=True)
    w = torch.randn(B, T, dtype=dtype, generator=g, requires_grad=True)
    W0 = torch.randn(o, i, dtype=dtype, generator=g)
    dW = torch.randn(T, o, i, dtype=dtype, generator=g)
    return x, w, W0, dW


def _run(fn, x, w, W0, dW, chunk):
    """A kernel on (W0, dW): the materialising one takes them stacked, [dW; W0]."""
    S = torch.cat([dW, W0[None]])
    return fn.apply(x, w, S, chunk) if fn is _PerSampleLinear else fn.apply(x, w, S)


def _loop(x, w, W0, dW):
    """One sample at a time, weights merged expert by expert (the public algorithm)."""
    return torch.stack([x[b] @ (W0 + torch.einsum("t,toi->oi", w[b], dW)).t() for b in range(x.shape[0])])


@pytest.mark.parametrize("fn", [_PerSampleLinear, _PerSampleOutputs])
@pytest.mark.parametrize("chunk", [1, 2, 16])
def test_kernels_pass_gradcheck_for_any_chunking(fn, chunk):
    x, w, W0, dW = _problem()
    assert torch.autograd.gradcheck(lambda a, b: _run(fn, a, b, W0, dW, chunk), (x, w))


@pytest.mark.parametrize("fn", [_PerSampleLinear, _PerSampleOutputs])
def test_kernels_equal_the_loop_and_skip_unneeded_gradients(fn):
    x, w, W0, dW = _problem(B=7, dtype=torch.float32)
    y = _run(fn, x, w, W0, dW, 3)
    assert torch.allclose(y, _loop(x, w, W0, dW), atol=1e-5)
    gw = torch.autograd.grad(_run(fn, x.detach(), w, W0, dW, 3).sum(), w)[0]        # x needs no grad
    ref = torch.autograd.grad(_loop(x.detach(), w, W0, dW).sum(), w)[0]
    assert torch.allclose(gw, ref, atol=1e-4)
    gx = torch.autograd.grad(_run(fn, x, w.detach(), W0, dW, 3).sum(), x)[0]        # w needs no grad
    assert torch.allclose(gx, torch.autograd.grad(_loop(x, w.detach(), W0, dW).sum(), x)[0], atol=1e-4)


def test_the_workspace_holds_one_chunk_and_chunks_give_the_same_values_and_gradients():
    x, w, W0, dW = _problem(B=5, i=5, o=13)
    S = torch.cat([dW, W0[None]])                                       # (T + 1, out, in)
    whole = _PerSampleLinear.apply(x, w, S, 5)
    ensemble.release_workspace()
    assert torch.allclose(_PerSampleLinear.apply(x, w, S, 2), whole)
    assert ensemble._local.buffers[torch.float64].numel() == 2 * 13 * 5   # one chunk's weights, reused
    assert torch.autograd.gradcheck(lambda a, b: _PerSampleLinear.apply(a, b, S, 2), (x, w))


def test_dense_experts_share_one_buffer_with_the_pretrained_weights():
    W0, dW = torch.randn(7, 6), torch.randn(3, 7, 6)
    lin = EnsembleLinear(W0, torch.zeros(7), DenseExperts(dW, torch.zeros(3, 7)))
    S = lin.stack()
    assert S.shape == (4, 7, 6) and S.data_ptr() == lin.experts.weight.data_ptr()       # a view, no copy
    assert torch.equal(S[-1], W0) and torch.equal(S[:-1], dW)
    assert torch.equal(lin.weight, W0) and torch.equal(lin.experts.weight, dW)
    lin.to(torch.float64)                                       # moved: stacked again
    assert lin.stack().data_ptr() == lin.experts.weight.data_ptr() and lin.weight.dtype == torch.float64
    state = {k: v.clone() for k, v in lin.state_dict().items()}
    lin.load_state_dict(state, assign=True)                     # not adjacent any more: equal, concatenated
    assert torch.equal(lin.stack(), S.double())


def test_choose_impl_materialises_long_sequences_only():
    lin = EnsembleLinear(torch.zeros(4, 3), None, DenseExperts(torch.zeros(8, 4, 3), None))
    k = ensemble.BUILD_COST_TOKENS["cpu"]
    assert lin.choose_impl(50) == "weights" and lin.choose_impl(int(k)) == "weights"
    assert lin.choose_impl(1) == "outputs"
    assert lin.choose_impl(50, "cuda") == "outputs"          # building is costlier on a GPU
    lin.impl = "outputs"
    assert lin.choose_impl(1000) == "outputs"
    with pytest.raises(ValueError, match="impl"):
        EnsembleLinear(torch.zeros(4, 3), None, DenseExperts(torch.zeros(8, 4, 3), None), impl="fast")


@pytest.mark.parametrize("tokens", [1, 50])
def test_auto_impl_equals_both_explicit_ones(tokens):
    x, w, W0, dW = _problem(B=3, N=tokens, dtype=torch.float32)
    b0, db = torch.randn(7), torch.randn(3, 7)
    outs = []
    for impl in ("auto", "weights", "outputs"):
        lin = EnsembleLinear(W0, b0, DenseExperts(dW, db), impl=impl)
        outs.append(lin(x, w))
    assert torch.allclose(outs[0], outs[1], atol=1e-5) and torch.allclose(outs[0], outs[2], atol=1e-5)


def test_workspace_is_reused_per_thread_and_released():
    like = torch.zeros(1)
    ensemble.release_workspace()
    a = ensemble.workspace(100, like)
    assert ensemble.workspace(50, like).data_ptr() == a.data_ptr()        # reused, no new allocation
    other = []
    t = threading.Thread(target=lambda: other.append(ensemble.workspace(100, like).data_ptr()))
    t.start()
    t.join()
    assert other[0] != a.data_ptr()                                       # threads never share one
    ensemble.release_workspace()
    assert not getattr(ensemble._local, "buffers", None)


def test_concurrent_forwards_in_threads_give_the_serial_results():
    x, w, W0, dW = _problem(B=6, N=5, dtype=torch.float32)
    xs = [x.detach() + k for k in range(4)]
    S = torch.cat([dW, W0[None]])
    serial = [_PerSampleLinear.apply(xi, w.detach(), S, 2) for xi in xs]
    results = [None] * len(xs)

    def run(k):
        for _ in range(20):
            results[k] = _PerSampleLinear.apply(xs[k], w.detach(), S, 2)
    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(xs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(a, b) for a, b in zip(serial, results))


def test_sparse_experts_keep_the_largest_entries_and_cost_two_times_density():
    weight, bias = torch.randn(3, 10, 20), torch.randn(3, 10)
    sp = SparseExperts.from_dense(weight, bias, density=0.1)
    assert sp.values.shape == (3, 20) and sp.indices.dtype == torch.int32
    d = sp.delta()
    for t in range(3):
        kept = d[t] != 0
        assert kept.sum() == 20 and weight[t].abs()[~kept].max() <= weight[t].abs()[kept].min()
        assert torch.equal(d[t][kept], weight[t][kept])
    dense_bytes = weight.numel() * 4 + bias.numel() * 4
    assert sp.nbytes() == pytest.approx(2 * 0.1 * weight.numel() * 4 + bias.numel() * 4)
    assert sp.nbytes() < dense_bytes
    assert torch.equal(SparseExperts.from_dense(weight, bias, 1.0).delta(), weight)


def test_sparse_at_full_density_equals_dense_and_round_trips(pool, images, tmp_path):
    from wemoe_core.sources import files as io
    from tests.conftest import TINY

    pre, fts, _ = pool
    dense = wc.upscale(pre, fts, upscale_attention=True)
    sparse = wc.upscale(pre, fts, upscale_attention=True, compress="sparse", density=1.0)
    assert torch.allclose(dense(images), sparse(images), atol=1e-5)
    half = wc.upscale(pre, fts, compress="sparse", density=0.5, task_names=["a", "b", "c"])
    path = io.save_wemoe(tmp_path / "s.safetensors", half, TINY, io.Recipe(method="wemoe", tasks=["a", "b", "c"]))
    loaded, _ = io.load_wemoe(path)
    assert torch.equal(loaded(images), half(images))


def test_lowrank_and_sparse_save_expert_memory():
    weight = torch.randn(2, 64, 32)
    dense = DenseExperts(weight, None).nbytes()
    assert LowRankExperts.from_dense(weight, None, rank=4).nbytes() == dense * 4 * (64 + 32) // (64 * 32)
    assert SparseExperts.from_dense(weight, None, density=0.125).nbytes() == dense // 4


@pytest.mark.parametrize("rows", [1, 4, 13])
def test_row_blocks_give_the_same_values_and_gradients(rows):
    """Weights built and applied a block of output rows at a time (13 rows in blocks of 4: 4, 4,
    4, 1) equal the whole matrices, forward and backward, within and across chunks."""
    x, w, W0, dW = _problem(B=5, i=5, o=13)
    S = torch.cat([dW, W0[None]])
    assert torch.allclose(_PerSampleLinear.apply(x, w, S, 2, rows), _loop(x, w, W0, dW))
    assert torch.autograd.gradcheck(lambda a, b: _PerSampleLinear.apply(a, b, S, 2, rows), (x, w))
    ensemble.release_workspace()
    _PerSampleLinear.apply(x, w, S, 2, rows)
    assert ensemble._local.buffers[torch.float64].numel() == 2 * min(rows, 13) * 5   # one block, reused


def test_linear_layers_build_in_blocks_of_block_bytes(monkeypatch):
    """EnsembleLinear picks rows so that one chunk's block stays under BLOCK_BYTES."""
    seen = []
    real = _PerSampleLinear.apply
    monkeypatch.setattr(ensemble._PerSampleLinear, "apply", lambda *a: seen.append(a[3:]) or real(*a))
    monkeypatch.setattr(ensemble, "BLOCK_BYTES", 3 * 6 * 4 * 4)        # 3 samples x 6 inputs x 4 rows, fp32
    x, w, W0, dW = _problem(B=3, N=8, i=6, o=10, dtype=torch.float32)
    lin = EnsembleLinear(W0, None, DenseExperts(dW, None), impl="weights")
    assert torch.allclose(lin(x, w), _loop(x, w, W0, dW), atol=1e-5)
    assert seen == [(max(ensemble.CHUNK_SAMPLES, ensemble.CHUNK_BYTES // (10 * 6 * 4)), 4)]
