"""Scale-out on torch.distributed, proven against one process: 2 CPU ranks (gloo on loopback, a
free port, one thread each, bounded in time) adapt and evaluate tiny random pools, data parallel
and with sharded experts, and must give what one process gives on the same global batches. Then
the failures: a rank that dies or hangs, ranks that disagree, a batch the ranks cannot share, no
rendezvous. The rank workers live in ``dist_ranks.py``."""
from __future__ import annotations

import re

import pytest
import torch

from tests.core import dist_ranks as dr
from wemoe_core.running import data_parallel, distributed

pytestmark = pytest.mark.timeout(300)

# Options of the tiny8 recipe that are not sample-separable (infomax: the batch-mean prediction;
# balance: the batch-mean routing; normalize: the step-0 loss) are all on in the first case.
LEVERS = dict(objective="infomax", normalize=True, balance=1.0, logit_scale=10.0, grad_clip=1.0)
CASES = {
    "wemoe, tiny8 levers": ("wemoe", {"routing": "softmax"}, dict(steps=5, lr=1e-3, batch_size=4, **LEVERS)),
    "wemoe, paper, attention upscaled": ("wemoe", {"upscale_attention": True}, dict(steps=5, lr=1e-3, batch_size=4)),
    "adamerging layer-wise, infomax": ("adamerging_layer", {},
                                       dict(steps=5, lr=1e-3, batch_size=4, objective="infomax", normalize=True)),
}


SHARDED = {"dense+attention": {"routing": "softmax", "upscale_attention": True},
           "lowrank": {"compress": "lowrank", "rank": 4}}


def sharded_adapt(hparams: dict) -> dict:
    return dict(steps=4, lr=1e-3, batch_size=4, **(LEVERS if hparams.get("routing") == "softmax" else {}))


def float64_case():
    method, hparams, adapt = CASES["wemoe, tiny8 levers"]
    return method, hparams, {**adapt, "lr": 1e-2}


@pytest.fixture(scope="module")
def ranks() -> dict[str, list[dict]]:
    """Every scenario that keeps the process group alive, in ONE launch of 2 ranks (starting the
    processes is most of the time): scenario name -> each rank's {"value"} or {"error"}."""
    scenarios = {name: (dr.adapt_scenario, case) for name, case in CASES.items()}
    scenarios["again"] = (dr.adapt_scenario, CASES["wemoe, tiny8 levers"])
    scenarios["float64"] = (dr.adapt_scenario, (*float64_case(), 0, "float64"))
    scenarios |= {f"sharded {name}": (dr.sharded_scenario, (hp, sharded_adapt(hp))) for name, hp in SHARDED.items()}
    scenarios["sharded float64"] = (dr.sharded_scenario, (SHARDED["dense+attention"], sharded_adapt({}), "float64"))
    scenarios["batch of 3"] = (dr.adapt_scenario, ("wemoe", {}, {"steps": 2, "batch_size": 3}))
    scenarios |= {f"other {what}": (dr.mismatch_scenario, (what,)) for what in ("pool", "recipe")}
    results = dr.run_ranks(dr.scenarios_worker, 2, scenarios, timeout=280)
    for r in results:
        assert r["exitcode"] == 0, f"rank {r['rank']}: {r.get('error')}\n{r.get('trace', '')}"
    return {name: [r["value"][name] for r in results] for name in scenarios}


def max_diff(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    assert [x.shape for x in a] == [y.shape for y in b]
    return max(float((x - y).abs().max()) for x, y in zip(a, b))


def values(results: list[dict]) -> list:
    for rank, r in enumerate(results):
        assert "value" in r, f"rank {rank}: {r.get('error')}\n{r.get('trace', '')}"
    return [r["value"] for r in results]


@pytest.mark.parametrize("case", list(CASES))
def test_data_parallel_adaptation_equals_one_process(ranks, case):
    method, hparams, adapt = CASES[case]
    got = values(ranks[case])
    one = dr.adapt_case(method, hparams, adapt, distributed=False)
    for r in got:
        assert max_diff(r["trainable"], one["trainable"]) < 1e-5            # the routers / coefficients
        assert r["losses"] == pytest.approx(one["losses"], rel=1e-4)       # cancellation in infomax: ~1e-5
        assert r["entropy"][-1] == pytest.approx(one["entropy"][-1], rel=1e-5)
        assert r["accuracy"] == one["accuracy"] and r["n"] == one["n"]       # counts gathered: exact
        assert r.get("share") == one.get("share")
    # the ranks never drift apart: bit for bit the same parameters
    assert all(torch.equal(a, b) for a, b in zip(got[0]["trainable"], got[1]["trainable"]))


def test_data_parallel_is_deterministic_for_a_seed(ranks):
    first, again = values(ranks["wemoe, tiny8 levers"]), values(ranks["again"])
    for a, b in zip(first, again):
        assert all(torch.equal(x, y) for x, y in zip(a["trainable"], b["trainable"])) and a["losses"] == b["losses"]


def test_data_parallel_is_exact_up_to_rounding_in_float64(ranks):
    """In float64 the difference is rounding only (1e-13 here), at a learning rate 10x larger."""
    method, hparams, adapt = float64_case()
    one = dr.adapt_case(method, hparams, adapt, distributed=False, dtype="float64")
    assert max_diff(values(ranks["float64"])[0]["trainable"], one["trainable"]) < 1e-10


@pytest.mark.parametrize("name", list(SHARDED))
def test_sharded_experts_equal_one_process(ranks, name):
    """3 experts on 2 ranks (2 + 1): the same features, router gradients, adapted routers and
    accuracies as the whole model; each rank holds its share of the experts; the fingerprint of
    the whole model is recovered from the shares."""
    import wemoe_core as wc
    from tests.conftest import make_pool
    from wemoe_core.model.towers import MultiTaskModel
    from wemoe_core.running.expert_shard import expert_bytes
    from wemoe_core.sources.files import fingerprint

    hparams = SHARDED[name]
    pre, fts, heads = make_pool()
    whole = MultiTaskModel(wc.upscale(pre, fts, task_names=dr.TASKS, **hparams), heads)
    total, fp = expert_bytes(whole), fingerprint(whole.encoder)
    one = dr.sharded_checks(whole, sharded_adapt(hparams))
    got = values(ranks[f"sharded {name}"])
    for r in got:
        assert float((r["features"] - one["features"]).abs().max()) < 1e-5
        assert max_diff(r["grads"], one["grads"]) < 1e-5
        assert max_diff(r["trainable"], one["trainable"]) < 1e-5
        assert r["accuracy"] == one["accuracy"] and r["fingerprint"] == fp
    assert [r["expert_bytes"] for r in got] == [total * 2 // 3, total // 3]


def test_sharded_experts_are_exact_up_to_rounding_in_float64(ranks):
    import wemoe_core as wc
    from tests.conftest import make_pool
    from wemoe_core.model.towers import MultiTaskModel

    pre, fts, heads = make_pool()
    whole = MultiTaskModel(wc.upscale(pre, fts, task_names=dr.TASKS, **SHARDED["dense+attention"]), heads).double()
    one = dr.sharded_checks(whole, sharded_adapt({}))
    for r in values(ranks["sharded float64"]):
        assert float((r["features"] - one["features"]).abs().max()) < 1e-12
        assert max_diff(r["grads"], one["grads"]) < 1e-12 and max_diff(r["trainable"], one["trainable"]) < 1e-12


def test_ranks_must_share_the_batch_equally(ranks):
    for r in ranks["batch of 3"]:
        assert "batch_size=3 is not a multiple of the 2 ranks" in r["error"] and "e.g. 2" in r["error"]


@pytest.mark.parametrize("what,message", [
    ("pool", r"rank 1 has frozen_checksum=.* where rank 0 has frozen_checksum="),
    ("recipe", r"rank 1 has params\.lr=0\.002 where rank 0 has params\.lr=0\.001"),
])
def test_ranks_with_different_pools_or_recipes_are_stopped_at_the_start(ranks, what, message):
    for r in ranks[f"other {what}"]:
        assert r["error"].startswith("DistributedError: the ranks disagree on the adaptation"), r
        assert re.search(message, r["error"]), r["error"]


@pytest.mark.parametrize("how", ["die", "hang"])
def test_a_rank_that_dies_or_hangs_makes_the_others_exit_with_a_clear_message(how):
    """Rank 1 exits (or sleeps) after step 2; rank 0 fails in step 3 with a message, not a hang:
    at once when the peer's connection closes, after the 5-second time-out when it hangs."""
    results = dr.run_ranks(dr.die_worker, 2, how, 5.0, timeout=120, grace=1)
    first = results[0]
    assert first["exitcode"] == 1, first
    assert first["error"].startswith("DistributedError: rank 0: lost the other ranks during adaptation step 3")
    assert "died or stopped answering for longer than 5 s" in first["error"]
    assert first["seconds"] < 90
    if how == "die":
        assert results[1]["exitcode"] == 3


def test_a_missing_rendezvous_is_explained(monkeypatch):
    for k in ("MASTER_ADDR", "MASTER_PORT", "RANK"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(distributed.DistributedError, match=r"no rendezvous: MASTER_ADDR, MASTER_PORT, RANK are not "
                                                           r"set; launch with `torchrun --nproc_per_node N"):
        distributed.init()
    assert distributed.launched()
    import wemoe_core as wc

    with pytest.raises(distributed.DistributedError, match="distributed=True needs an initialised process group"):
        wc.adapt(dr.build("wemoe", {}), dr.streams(), wc.AdaptParams(steps=1), distributed=True)


def test_a_rank_that_never_comes_fails_the_rendezvous_in_time():
    results = dr.run_ranks(dr.init_worker, 2, 3.0, ranks=[0], timeout=90)
    r = results[0]
    assert r["exitcode"] == 1 and r["seconds"] < 60
    assert "rank 0 of 2: the rendezvous at 127.0.0.1:" in r["error"] and "failed within 3 s" in r["error"]


def test_one_process_is_untouched_without_a_process_group():
    assert distributed.current(None) is None and distributed.current(False) is None and distributed.is_main()


def test_expert_ranges_split_as_evenly_as_possible():
    from wemoe_core.running.expert_shard import expert_range

    assert [expert_range(20, r, 3) for r in range(3)] == [(0, 7), (7, 14), (14, 20)]
    assert [expert_range(8, r, 2) for r in range(2)] == [(0, 4), (4, 8)]
    with pytest.raises(ValueError, match="3 ranks cannot share 2 experts"):
        expert_range(2, 0, 3)


def test_test_sets_are_shared_out_without_overlap(tmp_path):
    """Each rank's share of a streamed parquet test set (only its rows are decoded), of a
    map-style dataset, and of a plain iterable: disjoint, and together the whole set in order."""
    from tests.core.clip_fakes import parquet_bytes
    from wemoe_core.pools.clip_data import ParquetImages

    labels = list(range(11))
    path = tmp_path / "test.parquet"
    path.write_bytes(parquet_bytes(labels, tmp_path, row_group_size=4))
    pq = ParquetImages([path], lambda im: torch.zeros(1), limit=9)           # evenly spaced 9 of 11
    everything = [y for _, y in pq]
    for ds, expected in [(pq, everything), (list(range(10)), list(range(10)))]:
        shares = [list(data_parallel.shard_dataset(ds, r, 2)) for r in range(2)]
        got = [y if not isinstance(y, tuple) else y[1] for y in shares[0] + shares[1]]
        assert sorted(got) == sorted(expected) and len(shares[0]) - len(shares[1]) in (0, 1)
        if ds is pq:
            assert [y for _, y in shares[0]] == everything[0::2] and len(data_parallel.shard_dataset(pq, 1, 2)) == 4
