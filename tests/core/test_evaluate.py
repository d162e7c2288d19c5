import numpy as np
import pytest
import torch

import wemoe_core as wc
from wemoe_core.model.towers import MultiTaskModel
from wemoe_core.running.evaluate import routing_counts

TASKS = ["task0", "task1", "task2"]


def labeled(pool, n=10, seed=0):
    """Labels = what the individual fine-tuned model predicts, so 'individual' scores 100 %."""
    pre, fts, heads = pool
    g = torch.Generator().manual_seed(seed)
    data = {}
    for t, ft in zip(TASKS, fts):
        x = torch.randn(n, 3, 16, 16, generator=g)
        with torch.no_grad():
            y = heads(ft(x), t).argmax(-1)
        data[t] = [(x[:6], y[:6]), (x[6:], y[6:])]
    return data


def test_individual_scores_100_and_normalised_accuracy_is_relative(pool):
    pre, fts, heads = pool
    data = labeled(pool)
    ind = wc.evaluate(MultiTaskModel(wc.build("individual", pre, fts, TASKS), heads), data)
    assert list(ind.index) == TASKS + ["avg"] and (ind["accuracy"] == 100.0).all()
    assert list(ind["n"]) == [10, 10, 10, 30]
    individual = ind["accuracy"].drop("avg").to_dict()
    ta = wc.evaluate(MultiTaskModel(wc.build("pretrained", pre, fts, TASKS), heads), data, individual=individual)
    assert np.allclose(ta["normalized"], ta["accuracy"])             # individual is 100 %
    assert ta.loc["avg", "accuracy"] == pytest.approx(ta["accuracy"].drop("avg").mean())


def test_routing_share_counts_the_strongest_expert(pool):
    pre, fts, heads = pool
    enc = wc.upscale(pre, fts, task_names=TASKS, router_depth=0)
    with torch.no_grad():
        for _, r in enc.routings():
            r.router.bias.copy_(torch.tensor([0.1, 0.9, 0.2]))       # expert task1 always wins
    model = MultiTaskModel(enc, heads)
    data = labeled(pool)
    counts = routing_counts(model, data)
    assert counts.shape == (3, 3, 3) and (counts[:, :, 1] == 10).all()
    share = wc.routing_share(model, data)
    assert list(share.index) == TASKS and list(share.columns) == enc.routed_names
    assert (share.loc["task1"] == 100.0).all() and (share.loc["task0"] == 0.0).all()


def test_explain_gives_top_k_per_task_and_routing(pool, images):
    pre, fts, heads = pool
    model = MultiTaskModel(wc.upscale(pre, fts, task_names=TASKS, upscale_attention=True), heads)
    names = {t: [f"{t}-class{i}" for i in range(5)] for t in TASKS}
    ex = wc.explain(model, images[0], classnames=names, topk=3)
    assert set(ex.predictions) == set(TASKS)
    probs = [p for _, p in ex.predictions["task1"]]
    assert len(probs) == 3 and probs == sorted(probs, reverse=True) and all(0 <= p <= 1 for p in probs)
    assert ex.predictions["task1"][0][0].startswith("task1-class")
    assert ex.routing.shape == (6, 3) and ex.token_routing.shape == (6, 17, 3)
    # the per-image weights are the token mean of the per-token weights
    assert np.allclose(ex.token_routing.mean(1), ex.routing, atol=1e-5)
    plain = wc.explain(MultiTaskModel(wc.build("task_arithmetic", pre, fts, TASKS), heads), images[0])
    assert plain.routing is None and len(plain.predictions["task0"]) == 5
