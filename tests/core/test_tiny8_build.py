"""The Tiny-8 builder on a reduced scale, so it cannot rot: it runs end to end, is bit-for-bit
reproducible, and what it writes loads as a pool that merges and predicts."""
import dataclasses
import json

import pytest
import torch

import wemoe_core as wc
from wemoe_core.pools.tiny8.build import QUICK, BuildConfig, build, is_finetuned_param
from wemoe_core.pools.tiny8.pool import Tiny8Pool

SMALL = dataclasses.replace(QUICK, pretrain_steps=4, pretrain_batch=16, pretrain_images=64, train_per_task=40, workers=1,
                            test_per_task=24, probe_steps=3, finetune_steps=2, finetune_batch=16, threads=1)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory):
    out = tmp_path_factory.mktemp("zoo")
    return out, build(out, SMALL, report=lambda m: None)


def test_builder_is_bit_for_bit_reproducible_serial_or_parallel(zoo, tmp_path):
    """A second build, with the tasks fine-tuned in two worker processes, writes the same bytes."""
    _, first = zoo
    second = build(tmp_path, dataclasses.replace(SMALL, workers=2), report=lambda m: None)
    assert first["sha256"] == second["sha256"] and first["accuracy"] == second["accuracy"]


def test_manifest_records_what_a_user_needs(zoo):
    out, m = zoo
    assert json.loads((out / "manifest.json").read_text())["sha256"] == m["sha256"]
    assert [t["name"] for t in m["tasks"]] == ["scenes", "vehicles", "aerial", "landcover", "housenumbers",
                                               "signs", "digits", "textures"]
    assert all(t["classnames"] and t["mirrors"] for t in m["tasks"])
    assert set(m["accuracy"]) == {"pretrained", "individual"} and "avg" in m["accuracy"]["individual"]
    assert m["build"]["command"].startswith("python -m wemoe_core build-tiny8")
    assert len(m["sha256"]) == 10        # pre-trained, heads, 8 fine-tuned


def test_finetunes_move_what_the_config_names(zoo, tmp_path):
    """By default every weight moves (as CLIP's fine-tunes); "blocks" moves only the blocks'
    attention and MLP weights, so one-hot routing of both reproduces a fine-tuned model."""
    out, _ = zoo
    pool = Tiny8Pool(out)
    pre = pool.pretrained().state_dict()
    ft = pool.finetuned_source("digits")()
    assert all(not torch.equal(pre[k], ft[k]) for k in pre)
    blocks = dataclasses.replace(SMALL, finetune_params="blocks", finetune_keep=0.0)
    build(tmp_path, blocks, report=lambda m: None, pretrained=out / "pretrained.safetensors")
    ft = Tiny8Pool(tmp_path).finetuned_source("digits")()
    moved = {k for k in pre if not torch.equal(pre[k], ft[k])}
    assert moved and all(is_finetuned_param(k, "blocks") for k in moved)
    assert not any(".ln_" in k for k in moved)


def test_finetune_optimizer_is_a_knob_checked_before_any_work(zoo, tmp_path):
    """``finetune_optim="sgd"`` fine-tunes the same tower with SGD (other task vectors, same
    files); an unknown optimizer fails at once, naming the choices, not after pre-training."""
    with pytest.raises(ValueError, match="'adamw', 'sgd'"):
        BuildConfig(finetune_optim="lbfgs")
    out, first = zoo
    sgd = build(tmp_path, dataclasses.replace(SMALL, finetune_optim="sgd", finetune_lr=1e-2), report=lambda m: None,
                pretrained=out / "pretrained.safetensors")
    assert sgd["build"]["finetune_optim"] == "sgd" and first["build"]["finetune_optim"] == "adamw"
    assert sgd["sha256"]["pretrained.safetensors"] == first["sha256"]["pretrained.safetensors"]
    pre = Tiny8Pool(out).pretrained().state_dict()
    adam_tau, sgd_tau = ({k: v - pre[k] for k, v in Tiny8Pool(d).finetuned_source("digits")().items()} for d in (out, tmp_path))
    assert all(sgd_tau[k].abs().sum() > 0 for k in pre)
    assert any(not torch.allclose(adam_tau[k], sgd_tau[k]) for k in pre)


def test_pretraining_splits_are_disjoint_from_train_and_test():
    from wemoe_core.pools.tiny8.tasks import generate

    for task in ("digits", "signs"):
        test, train, pre = (generate(task, split, 16)[0] for split in ("test", "train", "pretrain"))
        assert not any((pre[i] == other[j]).all() for i in range(16) for other in (train, test) for j in range(16))


def test_built_zoo_loads_as_a_pool_that_merges_and_predicts(zoo):
    out, m = zoo
    pool = Tiny8Pool(out)
    assert pool.tasks[0] == "scenes" and pool.task("digits").individual_accuracy == m["accuracy"]["individual"]["digits"]
    x, y = pool.dataset("signs")[0]
    assert x.shape == (3, 64, 64) and 0 <= int(y) < len(pool.task("signs").classnames)
    tasks = ["signs", "digits"]
    model = wc.MultiTaskModel(wc.build("wemoe", pool.pretrained(), pool.finetuned_sources(tasks), tasks,
                                       upscale_attention=True), pool.heads(tasks))
    ex = wc.explain(model, x, classnames=pool.classnames())
    assert ex.routing.shape == (8, 2) and ex.token_routing.shape == (8, 17, 2)


def test_suite_runs_the_tuned_and_the_paper_wemoe_and_reports_both_routings(zoo, tmp_path):
    """With a tuned recipe in the pool (attention routed too), ``wemoe_paper`` still routes only
    the MLPs, densely, and the suite's JSON carries the routing share of both variants."""
    import shutil

    from wemoe_core.running.suite import run_suite

    out, _ = zoo
    shutil.copytree(out, tmp_path / "z")
    (tmp_path / "z" / "recipes.json").write_text(json.dumps({"recipes": {
        "wemoe": {"hparams": {"routing": "softmax", "upscale_attention": True}, "adapt": {"objective": "infomax"}},
        "wemoe_paper": {"adapt": {"lr": 1.5e-3}}}}))
    res = run_suite(Tiny8Pool(tmp_path / "z"), ["wemoe", "wemoe_paper"], steps=2, eval_limit=8)
    shares = res["routing_shares"]
    assert set(shares) == {"wemoe", "wemoe_paper"} and res["routing_share"] == shares["wemoe"]
    assert any(m.endswith(".attn") for m in shares["wemoe"]["digits"])
    assert all(m.endswith(".mlp") for m in shares["wemoe_paper"]["digits"])
