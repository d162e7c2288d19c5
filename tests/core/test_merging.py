import dataclasses
import math

import pytest
import torch

import wemoe_core as wc
from wemoe_core.merging import static as merging
from wemoe_core.model.towers import state_of
from tests.conftest import TINY, make_pool


def _sd(pool):
    pre, fts, _ = pool
    return state_of(pre), [state_of(f) for f in fts]


def _close(a, b, atol=1e-6):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=atol), k


def test_task_arithmetic_at_zero_is_pretrained(pool):
    pre, fts = _sd(pool)
    _close(wc.merge("task_arithmetic", pre, fts, scale=0.0), pre)


def test_one_task_at_one_is_the_finetuned_model(pool):
    pre, fts = _sd(pool)
    _close(wc.merge("task_arithmetic", pre, fts[:1], scale=1.0), fts[0])


def test_task_arithmetic_formula(pool):
    pre, fts = _sd(pool)
    out = wc.merge("task_arithmetic", pre, fts, scale=0.3)
    k = "transformer.resblocks.1.mlp.c_fc.weight"
    expected = pre[k] + 0.3 * sum(ft[k] - pre[k] for ft in fts)
    assert torch.allclose(out[k], expected, atol=1e-6)


def test_average_is_the_mean(pool):
    pre, fts = _sd(pool)
    out = wc.merge("average", pre, fts)
    k = "proj"
    assert torch.allclose(out[k], sum(ft[k] for ft in fts) / len(fts), atol=1e-6)


@pytest.mark.parametrize("topk", ["global", "per_tensor"])
def test_ties_density_one_single_task_is_task_arithmetic(pool, topk):
    pre, fts = _sd(pool)
    _close(wc.merge("ties", pre, fts[:1], scale=0.7, density=1.0, topk=topk),
           wc.merge("task_arithmetic", pre, fts[:1], scale=0.7))


def test_ties_trims_to_density(pool):
    pre, fts = _sd(pool)
    tv = merging.task_vectors(pre, fts[:1])[0]
    kept = merging._trim(tv, 0.2, "global")
    n = sum(v.numel() for v in tv.values())
    nz = sum(int((v != 0).sum()) for v in kept.values())
    assert abs(nz / n - 0.2) < 0.01
    per = merging._trim(tv, 0.2, "per_tensor")
    for k, v in per.items():   # per tensor: every moved tensor keeps about 20 % on its own
        if v.numel() >= 20 and tv[k].abs().amax() > 0:
            assert abs(float((v != 0).float().mean()) - 0.2) < 0.05, k


def test_ties_elects_sign_and_takes_disjoint_mean():
    pre = {"w": torch.zeros(4)}
    fts = [{"w": torch.tensor([1.0, -2.0, 3.0, 0.0])}, {"w": torch.tensor([3.0, 1.0, -1.0, 0.0])}]
    out = wc.merge("ties", pre, fts, scale=1.0, density=1.0)["w"]
    # entry 0: both positive -> mean 2; entry 1: sum -1 -> elect '-', only -2 agrees; entry 2: sum 2 -> '+', 3
    assert torch.allclose(out, torch.tensor([2.0, -2.0, 3.0, 0.0]))


@pytest.mark.parametrize("bad", [{"density": 0.0}, {"density": 2.0}, {"density": float("nan")},
                                 {"scale": -1.0}, {"scale": "abc"}, {"topk": "random"}, {"alpha": 1}])
def test_ties_rejects_absurd_hyperparameters_with_a_clear_message(pool, bad):
    pre, fts = _sd(pool)
    with pytest.raises(ValueError) as e:
        wc.merge("ties", pre, fts, **bad)
    assert next(iter(bad)) in str(e.value)


def test_incompatible_checkpoint_names_the_tensor():
    pre, fts, _ = make_pool(2)
    other = make_pool(1, cfg=dataclasses.replace(TINY, mlp_ratio=4.0))[0]
    with pytest.raises(ValueError, match="mlp.c_fc.weight"):
        wc.merge("task_arithmetic", state_of(pre), [state_of(fts[0]), state_of(other)])


def test_nan_checkpoint_is_refused(pool):
    pre, fts = _sd(pool)
    fts[1]["proj"] = fts[1]["proj"].clone()
    fts[1]["proj"][0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN"):
        wc.merge("average", pre, fts)


def test_merge_refuses_learned_methods(pool):
    pre, fts = _sd(pool)
    with pytest.raises(ValueError, match="adapt"):
        wc.merge("wemoe", pre, fts)


def test_registry_declares_every_method():
    for name, m in wc.METHODS.items():
        assert m.name == name and m.pretty_name and m.reference_url.startswith("https://")
        m.hparams()   # defaults are valid
    assert {"average", "task_arithmetic", "ties", "pretrained", "individual",
            "adamerging_task", "adamerging_layer", "wemoe"} <= set(wc.METHODS)


@pytest.mark.parametrize("name", ["pretrained", "average", "task_arithmetic", "ties", "individual"])
def test_build_static_methods_gives_working_encoders(pool, images, name):
    pre, fts, heads = pool
    enc = wc.build(name, pre, fts, ["task0", "task1", "task2"])
    model = wc.MultiTaskModel(enc, heads)
    assert model.logits(images, "task1").shape == (6, 5)
    if name == "individual":
        assert torch.allclose(model.features(images, "task2"), fts[2](images), atol=1e-6)


class _Tracked(dict):
    """A state dict that counts how many of its kind are alive."""

    alive = 0
    peak = 0

    def __init__(self, *a):
        super().__init__(*a)
        _Tracked.alive += 1
        _Tracked.peak = max(_Tracked.peak, _Tracked.alive)

    def __del__(self):
        _Tracked.alive -= 1


@pytest.mark.parametrize("name", ["average", "task_arithmetic", "ties"])
def test_static_merges_stream_checkpoints_one_at_a_time(name):
    pre, fts, _ = make_pool(5)
    sources = [lambda f=f: _Tracked(state_of(f)) for f in fts]
    _Tracked.alive = _Tracked.peak = 0
    enc = wc.build(name, pre, sources, [f"t{i}" for i in range(5)])
    eager = wc.merge(name, state_of(pre), [state_of(f) for f in fts])
    assert all(torch.allclose(v, eager[k], atol=1e-6) for k, v in enc.state_dict().items())
    assert _Tracked.peak <= 2     # the model being read, and at most the previous one
