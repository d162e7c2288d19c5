"""WEMoE against the identities of WEMOE.md and a straightforward per-sample reference loop."""
import contextlib

import pytest
import torch

import wemoe_core as wc
from wemoe_core.merging.adamerging import AdaMerging, AdaMergingParams
from wemoe_core.merging import experts as experts_mod
from wemoe_core.merging.experts import EnsembleLinear, LowRankExperts, _PerSampleLinear
from wemoe_core.merging.wemoe import Router
from wemoe_core.model import keys
from wemoe_core.model.towers import copy_frozen, state_of

TASKS = ["task0", "task1", "task2"]


def zero_routers(model, bias):
    """Router weights zeroed and output bias set: every image gets the weights ``bias``."""
    with torch.no_grad():
        for _, r in model.routings():
            for p in r.router.parameters():
                p.zero_()
            out_bias = r.router.bias if r.router.depth == 0 else r.router.net[-1].bias
            out_bias.fill_(bias)


def ta_tower(pre, fts, lam):
    tower = copy_frozen(pre)
    tower.load_state_dict(wc.merge("task_arithmetic", state_of(pre), [state_of(f) for f in fts], scale=lam))
    return tower


@pytest.mark.parametrize("depth", [0, 1, 2])
@pytest.mark.parametrize("attention", [False, True])
def test_zeroed_routers_give_task_arithmetic(pool, images, depth, attention):
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, init_lambda=0.3, router_depth=depth, upscale_attention=attention)
    zero_routers(model, 0.3)
    assert torch.allclose(model(images), ta_tower(pre, fts, 0.3)(images), atol=1e-5)


def test_initial_model_is_close_to_but_not_exactly_task_arithmetic(pool, images):
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, init_lambda=0.3)
    diff = (model(images) - ta_tower(pre, fts, 0.3)(images)).abs().max()
    assert 0 < diff < 0.05


def test_one_task_lambda_one_is_the_finetuned_model_and_zero_the_pretrained(pool, images):
    pre, fts, _ = pool
    for lam, target in [(1.0, fts[0]), (0.0, pre)]:
        model = wc.upscale(pre, fts[:1], init_lambda=lam, upscale_attention=True)
        zero_routers(model, lam)
        assert torch.allclose(model(images), target(images), atol=1e-5)


def test_only_routers_train_and_their_names_say_so(pool):
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, upscale_attention=True)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("router" in n for n in trainable)
    assert {id(p) for p in model.router_parameters()} == {id(p) for p in model.parameters() if p.requires_grad}


def test_routing_weights_shape_and_blocks_option(pool, images):
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, blocks=2)
    model(images)
    assert model.routing_weights().shape == (2, 6, 3)      # (layers, batch, experts)
    assert model.routed_names == ["block1.mlp", "block2.mlp"]
    both = wc.upscale(pre, fts, upscale_attention=True)
    both(images)
    assert both.routing_weights().shape == (6, 6, 3)


@pytest.mark.parametrize("depth,count", [(2, 7_160_928), (1, 73_824), (0, 96)])
def test_router_parameter_counts_match_the_paper_for_vit_b32(depth, count):
    n = sum(p.numel() for p in Router(768, 8, depth).parameters()) * 12
    assert n == count


def test_router_parameter_count_vit_l14():
    assert sum(p.numel() for p in Router(1024, 8, 2).parameters()) * 24 == 25_387_200


# --- the per-sample reference loop ------------------------------------------------------------
def _reference_forward(self, x, w):
    """The public implementation's algorithm: per sample, build the merged weights with a loop
    over experts, then apply them."""
    delta, dbias = self.experts.delta(), self.experts.bias
    outs = []
    for b in range(x.shape[0]):
        wb = w if w.dim() == 1 else w[b]
        W, bias = self.weight.clone(), self.bias.clone()
        for t in range(delta.shape[0]):
            W = W + wb[t] * delta[t]
            bias = bias + wb[t] * dbias[t]
        outs.append(x[b] @ W.t() + bias)
    return torch.stack(outs)


@contextlib.contextmanager
def reference_linears():
    original = EnsembleLinear.forward
    EnsembleLinear.forward = _reference_forward
    try:
        yield
    finally:
        EnsembleLinear.forward = original


def _loop_outputs(model, images):
    with reference_linears():
        return torch.cat([model(images[i:i + 1]) for i in range(len(images))])


def _assert_equals_per_sample_loop(model, images):
    """Forward and router gradients of ``model`` equal those of the per-sample loop over it."""
    target = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))
    out = model(images)
    (out * target).sum().backward()
    grads = [p.grad.clone() for p in model.router_parameters()]
    model.zero_grad()
    ref = _loop_outputs(model, images)
    (ref * target).sum().backward()
    assert torch.allclose(out, ref, atol=1e-5)
    for g, p in zip(grads, model.router_parameters()):
        assert torch.allclose(g, p.grad, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("impl", ["weights", "outputs"])
@pytest.mark.parametrize("attention", [False, True])
def test_vectorised_equals_per_sample_loop_forward_and_gradients(pool, images, impl, attention):
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, upscale_attention=attention)
    for m in model.modules():
        if isinstance(m, EnsembleLinear):
            m.impl = impl
    _assert_equals_per_sample_loop(model, images)


@pytest.mark.parametrize("factors", ["float32", "bfloat16"])
def test_lowrank_experts_equal_their_per_sample_loop_forward_and_gradients(pool, images, factors):
    """Compressed experts are approximate, but the model they define is applied exactly: the
    output-space low-rank path equals the per-sample loop over its own (decompressed) experts."""
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, upscale_attention=True, compress="lowrank", rank=3, factors=factors)
    low = [m.experts for m in model.modules() if isinstance(m, EnsembleLinear)]
    assert all(e.a.dtype == getattr(torch, factors) for e in low)
    model.to(torch.float32)                                    # moving keeps the storage dtype
    assert all(e.a.dtype == getattr(torch, factors) for e in low)
    _assert_equals_per_sample_loop(model, images)


def test_lowrank_bfloat16_math_is_the_float32_model_to_bfloat16_rounding(pool, images, monkeypatch):
    """bfloat16 arithmetic of the factors changes only the experts' part of each routed output,
    by bf16 rounding (its inputs carry 8 significant bits): the outputs differ from the exact
    float32 path on the same factors, by under 2 % of the outputs' scale, and the router gradients
    by under 2 % of theirs. The blocked
    in-place add used without grad gives what the one-piece add gives with grad."""
    pre, fts, _ = pool
    exact = wc.upscale(pre, fts, upscale_attention=True, compress="lowrank", rank=3, factors="bfloat16")
    fast = wc.upscale(pre, fts, upscale_attention=True, compress="lowrank", rank=3, factors="bfloat16",
                      factor_math="bfloat16")
    lin = [m for m in fast.modules() if isinstance(m, EnsembleLinear)]
    assert lin and all(m.experts.math == "bfloat16" for m in lin)
    assert all(m.experts.math == "float32" for m in exact.modules() if isinstance(m, EnsembleLinear))
    target = torch.randn(6, 16, generator=torch.Generator().manual_seed(3))
    outs, grads = [], []
    for model in (exact, fast):
        out = model(images)
        (out * target).sum().backward()
        outs.append(out.detach())
        grads.append([p.grad.clone() for p in model.router_parameters()])
    gap = (outs[1] - outs[0]).abs().max()
    assert 0 < gap < 0.02 * outs[0].abs().max()                # the arithmetic did change, and only a little
    for g0, g1 in zip(*grads):
        assert torch.allclose(g1, g0, atol=0.02 * float(g0.abs().max()))
    with torch.no_grad():
        whole = fast(images)
        monkeypatch.setattr(experts_mod, "ADD_BLOCK_BYTES", 64)   # a few rows per block
        assert torch.allclose(fast(images), whole, atol=1e-5)
    assert torch.allclose(whole, outs[1], atol=1e-5)


def test_lowrank_math_is_checked():
    with pytest.raises(ValueError, match="float32, bfloat16"):
        LowRankExperts(torch.zeros(2, 4, 1), torch.zeros(2, 3, 1), None, math="fp8")
    with pytest.raises(ValueError, match="factor_math"):
        wc.upscale(torch.nn.Linear(2, 2), [], compress="lowrank", factor_math="half")


def test_per_sample_linear_gradcheck_with_chunks():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 4, 6, dtype=torch.float64, generator=g, requires_grad=True)
    w = torch.randn(5, 3, dtype=torch.float64, generator=g, requires_grad=True)
    W0 = torch.randn(7, 6, dtype=torch.float64, generator=g)
    dW = torch.randn(3, 7, 6, dtype=torch.float64, generator=g)
    assert torch.autograd.gradcheck(lambda a, b: _PerSampleLinear.apply(a, b, torch.cat([dW, W0[None]]), 2), (x, w))


def test_an_image_does_not_depend_on_its_batch_mates(pool, images):
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, upscale_attention=True)
    zero_routers(model, 0.0)
    with torch.no_grad():   # make routing strongly input-dependent
        for n, p in model.named_parameters():
            if "router" in n and p.dim() == 2:
                p.normal_(0, 0.5)
    alone = model(images[:1])
    for mates in (images[1:3], images[3:], torch.randn(9, 3, 16, 16)):
        mixed = model(torch.cat([images[:1], mates]))[:1]
        assert torch.allclose(alone, mixed, atol=1e-5)


def test_batch_scope_shares_weights_and_so_leaks_batch_mates(pool, images):
    pre, fts, _ = pool
    model = wc.upscale(pre, fts, scope="batch")
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "router" in n and p.dim() == 2:
                p.normal_(0, 0.5)
    alone = model(images[:1])
    mixed = model(images)[:1]
    assert (alone - mixed).abs().max() > 1e-4


def test_batch_scope_reports_the_weights_it_applied(pool, images):
    """With scope="batch" the routed layers merge every image with the batch mean of the
    routers' outputs: routing_weights() reports that mean in each image's row (not per-image
    outputs nobody used), forcing those weights reproduces the output, and the graph reaches
    the routers so auxiliary losses (load balancing) still train them."""
    pre, fts, _ = pool
    kw = dict(upscale_attention=True, routing="softmax", seed=3)
    batch, sample = wc.upscale(pre, fts, scope="batch", **kw), wc.upscale(pre, fts, scope="sample", **kw)
    for m in (batch, sample):
        with torch.no_grad():
            for n, p in m.named_parameters():
                if "router" in n and p.dim() == 2:
                    p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())) * 0.5)
    out = batch(images)
    applied = batch.routing_weights()                                   # (layers, batch, experts)
    assert applied.shape == (len(batch.routed_names), len(images), len(fts))
    assert torch.allclose(applied, applied[:, :1].expand_as(applied))   # one row for every image
    sample(images)
    per_image = sample.routing_weights()                                # the same routers, per image
    assert (per_image - per_image[:, :1]).abs().max() > 1e-3
    # Layer 0 sees the same input in both models, so its applied row is the mean of the per-image rows.
    assert torch.allclose(applied[0, 0], per_image[0].mean(0), atol=1e-6)
    for (_, r), w in zip(batch.routings(), applied):                    # force each layer's reported row
        r.forced = w[0]
    try:
        with torch.no_grad():
            torch.testing.assert_close(batch(images), out.detach(), atol=1e-5, rtol=1e-5)
    finally:
        for _, r in batch.routings():
            r.forced = None
    batch(images)
    w = batch.routing_weights(detach=False)
    p = w.mean(dim=1).clamp(min=1e-8)                                   # the balance loss of adapt
    (p * p.log()).sum().backward()
    assert all(q.grad is not None and q.grad.abs().sum() > 0 for q in batch.router_parameters() if q.dim() == 2)


def test_depth0_equals_mlp_only_layerwise_adamerging(pool, images):
    pre, fts, _ = pool
    lam = 0.3
    wemoe = wc.upscale(pre, fts, init_lambda=lam, router_depth=0)
    is_mlp = lambda k: any(k.endswith(s) for s in keys.MLP_KEYS)  # noqa: E731
    ada = AdaMerging(pre, fts, granularity="layer", params=AdaMergingParams(init=lam, clamp=False), learnable=is_mlp)
    biases = {}
    with torch.no_grad():
        for i, (name, r) in enumerate(wemoe.routings()):
            r.router.bias.copy_(torch.randn(3) * 0.5)
            biases[i] = r.router.bias.clone()
        for g, k in enumerate(ada.group_names):
            ada.coefficients_raw[g] = biases[keys.block_index(k)]
    target = torch.randn(6, 16)
    out_w, out_a = wemoe(images), ada(images)
    assert torch.allclose(out_w, out_a, atol=1e-5)
    (out_w * target).sum().backward()
    (out_a * target).sum().backward()
    for i, (_, r) in enumerate(wemoe.routings()):
        rows = [g for g, k in enumerate(ada.group_names) if keys.block_index(k) == i]
        assert torch.allclose(r.router.bias.grad, ada.coefficients_raw.grad[rows].sum(0), atol=1e-4)


def test_lowrank_experts_at_full_rank_equal_dense(pool, images):
    pre, fts, _ = pool
    dense = wc.upscale(pre, fts, upscale_attention=True)
    low = wc.upscale(pre, fts, upscale_attention=True, compress="lowrank", rank=64)
    assert torch.allclose(dense(images), low(images), atol=1e-4)


def test_forced_one_hot_routing_selects_one_expert(pool, images):
    pre, fts, _ = pool
    only_mlp = []
    for ft in fts:   # fine-tunes that moved only the MLPs: one-hot routing must equal them
        sd = state_of(pre)
        sd.update({k: v for k, v in state_of(ft).items() if any(k.endswith(s) for s in keys.MLP_KEYS)})
        tower = copy_frozen(pre)
        tower.load_state_dict(sd)
        only_mlp.append(tower)
    model = wc.upscale(pre, only_mlp)
    with model.forced_routing(torch.tensor([0.0, 1.0, 0.0])):
        assert torch.allclose(model(images), only_mlp[1](images), atol=1e-5)


@pytest.mark.parametrize("compress", [{}, {"compress": "lowrank", "rank": 2}])
def test_upscale_hands_every_task_vector_stack_to_its_layer(pool, monkeypatch, compress):
    """The build's memory: each routed layer takes its task vectors out of the collected stacks
    (re-stacked or compressed there), so upscale never holds two copies of them all; measured by
    `benchmarks --only build` (ViT-B/32, 8 checkpoints: 4,184 -> 2,528 MB above the start)."""
    import wemoe_core.merging.wemoe as wm

    pre, fts, _ = pool
    collected = []
    real = wm._collect
    monkeypatch.setattr(wm, "_collect", lambda *a, **k: collected.append(real(*a, **k)) or collected[-1])
    model = wc.upscale(pre, fts, upscale_attention=True, **compress)
    deltas, _ = collected[0]
    assert deltas == {}
    assert sum(isinstance(m, EnsembleLinear) for m in model.modules()) == 4 * keys.num_blocks(state_of(pre))
