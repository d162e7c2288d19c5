import math

import pytest
import torch

import wemoe_core as wc
from wemoe_core.model.towers import MultiTaskModel
from wemoe_core.running.adapt import AdaptationError, entropy

TASKS = ["task0", "task1", "task2"]


def streams(seed=0, n=4):
    g = torch.Generator().manual_seed(seed)
    data = {t: torch.randn(32, 3, 16, 16, generator=g) for t in TASKS}

    def endless(x):
        i = 0
        while True:
            yield x[(i * n) % 32:(i * n) % 32 + n]
            i += 1
    return {t: endless(x) for t, x in data.items()}


def wemoe_model(pool, **kw):
    pre, fts, heads = pool
    return MultiTaskModel(wc.upscale(pre, fts, task_names=TASKS, **kw), heads)


def mean_entropy(model, data):
    with torch.no_grad():
        return sum(float(entropy(model.logits(next(data[t]), t)).mean()) for t in TASKS)


@pytest.mark.parametrize("method", ["wemoe", "adamerging_task", "adamerging_layer"])
def test_adaptation_lowers_the_entropy_on_a_toy_problem(pool, method):
    pre, fts, heads = pool
    model = MultiTaskModel(wc.build(method, pre, fts, TASKS), heads)
    before = mean_entropy(model, streams(seed=5))
    res = wc.adapt(model, streams(), wc.AdaptParams(steps=30, lr=1e-2, batch_size=4))
    assert res.steps_done == 30 and not res.stopped
    assert mean_entropy(model, streams(seed=5)) < 0.95 * before


def test_adaptation_is_deterministic_for_a_seed(pool):
    runs = []
    for _ in range(2):
        model = wemoe_model(pool)
        wc.adapt(model, streams(), wc.AdaptParams(steps=5, lr=1e-2))
        runs.append(torch.cat([p.flatten() for p in model.encoder.router_parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_callback_reports_every_step_and_stop_takes_effect_between_steps(pool):
    model = wemoe_model(pool)
    seen = []
    res = wc.adapt(model, streams(), wc.AdaptParams(steps=50, lr=1e-3), callback=seen.append,
                   should_stop=lambda: len(seen) >= 3)
    assert res.stopped and res.steps_done == 3 and [s.step for s in seen] == [1, 2, 3]
    info = seen[-1]
    assert set(info.entropy) == set(TASKS) and math.isfinite(info.loss)
    assert info.routing.shape == (3, 3, 3)   # (tasks, layers, experts)
    assert 0 < info.lr <= 1e-3


def test_adamerging_callback_reports_coefficients(pool):
    pre, fts, heads = pool
    model = MultiTaskModel(wc.build("adamerging_task", pre, fts, TASKS), heads)
    seen = []
    wc.adapt(model, streams(), wc.AdaptParams(steps=2), callback=seen.append)
    assert seen[-1].coefficients.shape == (3,) and seen[-1].routing is None


def test_tiny8_levers_run_and_balance_needs_softmax_routing(pool):
    model = wemoe_model(pool, routing="softmax")
    res = wc.adapt(model, streams(), wc.PRESETS["tiny8"].__class__(**{**vars(wc.PRESETS["tiny8"]), "steps": 3}))
    assert res.steps_done == 3
    w = model.encoder.routing_weights()
    assert torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)), atol=1e-5)
    with pytest.raises(ValueError, match="softmax"):
        wc.adapt(wemoe_model(pool), streams(), wc.AdaptParams(steps=1, balance=1.0))


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_last_good_state(pool):
    model = wemoe_model(pool)
    wc.adapt(model, streams(), wc.AdaptParams(steps=2, lr=1e-2))
    good = [p.detach().clone() for p in model.encoder.router_parameters()]
    data = streams()
    data["task1"] = iter(lambda: torch.full((4, 3, 16, 16), float("nan")), None)
    with pytest.raises(AdaptationError, match="last good"):
        wc.adapt(model, data, wc.AdaptParams(steps=5, lr=1e-2))
    assert all(torch.equal(a, b) for a, b in zip(good, model.encoder.router_parameters()))


def test_nothing_to_adapt_is_refused(pool):
    pre, fts, heads = pool
    model = MultiTaskModel(wc.build("task_arithmetic", pre, fts, TASKS), heads)
    with pytest.raises(ValueError, match="nothing to adapt"):
        wc.adapt(model, streams(), wc.AdaptParams(steps=1))
