"""Real CLIP pools without the network: the shipped pool files, a whole pool served from a fake
Hugging Face cache (download path, key mapping, heads, data, WEMoE on top), zero-shot heads
against a straightforward reference, and offline availability that answers fast."""
from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import wemoe_core as wc
from tests.core import clip_fakes as fk
from wemoe_core.model.data import labeled_batches
from wemoe_core.model.towers import VisionConfig, state_of
from wemoe_core.pools.clip import ClipPool
from wemoe_core.sources import hub
from wemoe_core.sources.zeroshot import cached_heads, zero_shot_weights

torch.set_num_threads(1)
ASSETS = Path(__file__).resolve().parents[2] / "assets" / "pools"
SHARED_TASKS = Path(__file__).resolve().parents[3] / "shared" / "data" / "clip8_tasks.json"


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return fk.register_arch(tmp_path_factory.mktemp("open_clip_cfg"))


@pytest.fixture
def env(tmp_path, monkeypatch):
    """An empty Hub cache, offline, private model/data/cache folders."""
    for name, sub in (("HF_HUB_CACHE", "hub"), ("WEMOE_MODEL_DIR", "models"), ("WEMOE_DATA_DIR", "data"),
                      ("WEMOE_CACHE_DIR", "cache")):
        (tmp_path / sub).mkdir()
        monkeypatch.setenv(name, str(tmp_path / sub))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return tmp_path


@pytest.mark.parametrize("name,arch_name", [("clip-vit-b32", "ViT-B-32"), ("clip-vit-b16", "ViT-B-16"),
                                            ("clip-vit-l14", "ViT-L-14")])
def test_shipped_pool_files(name, arch_name):
    pool = ClipPool.from_file(ASSETS / f"{name}.json")
    hf = {"ViT-B-32": "base-patch32", "ViT-B-16": "base-patch16", "ViT-L-14": "large-patch14"}[arch_name]
    assert pool.info.vision_config == VisionConfig.from_open_clip(arch_name, quick_gelu=True)
    assert pool.tasks == ["sun397", "stanford_cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd"]
    assert pool.spec["pretrained"] == "openai"
    assert pool._tasks["stanford_cars"].finetuned == f"tanganke/clip-vit-{hf}_stanford-cars"
    assert pool._tasks["svhn"].dataset == {"repo": "ufldl-stanford/svhn", "split": "test", "config": "cropped_digits"}
    if SHARED_TASKS.is_file():
        shared = json.loads(SHARED_TASKS.read_text())["tasks"]
        for t in pool.tasks:
            assert list(pool._tasks[t].classnames) == shared[t]["classnames"]
            assert list(pool._tasks[t].templates) == shared[t]["templates"]


def test_offline_availability_is_fast_and_says_what_to_do(env):
    pool = ClipPool.from_file(ASSETS / "clip-vit-b32.json")
    t0 = time.perf_counter()
    a = pool.availability()
    assert time.perf_counter() - t0 < 2.0
    assert not a.ok
    assert "HF_HUB_OFFLINE" in a.reason and "Tiny-8" in a.reason and "8 fine-tuned checkpoints" in a.reason
    with pytest.raises(hub.HubUnavailable, match="Tiny-8"):
        pool.finetuned_source("svhn")()


def test_unreachable_hub_answers_within_the_timeout(env, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setenv("HF_ENDPOINT", "http://10.255.255.1")      # unroutable: connects never
    hub._probe_cache.clear()
    t0 = time.perf_counter()
    a = ClipPool.from_file(ASSETS / "clip-vit-b32.json").availability()
    assert time.perf_counter() - t0 < hub.PROBE_TIMEOUT_S + 1.5
    assert not a.ok and "not reachable" in a.reason


@torch.no_grad()
def test_zero_shot_heads_match_reference(arch, env):
    import open_clip

    clip, tok = fk.tiny_clip(), open_clip.get_tokenizer(arch)
    classnames, templates = ["cat", "dog", "red car"], ["a photo of a {c}.", "a drawing of the {c}", "{c}!"]
    got = zero_shot_weights(clip.encode_text, tok, classnames, templates, batch_size=4)
    ref = []
    for c in classnames:                          # one prompt at a time, the textbook way
        feats = [F.normalize(clip.encode_text(tok([t.format(c=c)]))[0], dim=0) for t in templates]
        ref.append(F.normalize(torch.stack(feats).mean(0), dim=0))
    torch.testing.assert_close(got, torch.stack(ref), atol=1e-6, rtol=0)

    calls = []
    heads = cached_heads("tiny", {"pets": (classnames, templates)}, lambda: calls.append(1) or (clip.encode_text, tok))
    again = cached_heads("tiny", {"pets": (classnames, templates)}, lambda: pytest.fail("cache missed"))
    assert calls == [1] and heads.logit_scale == 100.0
    torch.testing.assert_close(again.weight("pets"), got, atol=1e-6, rtol=0)
    assert list((env / "cache" / "heads" / "tiny").glob("pets-*.safetensors"))


def _fake_pool(env, arch) -> tuple[ClipPool, object, dict]:
    """A two-task pool whose every file comes from a fake Hub cache."""
    cache, clip = env / "hub", fk.tiny_clip(seed=0)
    fk.fake_repo(cache, "fake/tiny-clip", {"open_clip_model.safetensors": fk.safetensors_bytes(state_of(clip), env)})
    pre = fk.vision_state(clip)
    tuned = {t: fk.perturbed(pre, seed=i + 1) for i, t in enumerate(["a", "b"])}
    for t, state in tuned.items():     # Hugging Face CLIPVisionModel: no projection in the file
        fk.fake_repo(cache, f"fake/tiny-ft-{t}", fk.hf_vision_files(state, env))
    parquet = fk.parquet_bytes([0, 1, 2, 0, 1, 2, 0, 1, 2, 0], env)
    fk.fake_repo(cache, "fake/tiny-data", {"data/test-00000-of-00001.parquet": parquet}, repo_type="dataset")
    task = lambda t: {"name": t, "finetuned": f"fake/tiny-ft-{t}", "dataset": {"repo": "fake/tiny-data"},  # noqa: E731
                      "classnames": ["zero", "one", "two"], "templates": ["a photo of {c}", "{c}"]}
    spec = {"arch": arch, "pretrained": "hf-hub:fake/tiny-clip", "tasks": [task("a"), task("b")]}
    path = env / "tiny.json"
    path.write_text(json.dumps(spec))
    return ClipPool.from_file(path), clip, tuned


def test_pool_from_fake_hub_end_to_end(env, arch):
    pool, clip, tuned = _fake_pool(env, arch)
    assert pool.availability().ok
    x = torch.randn(2, 3, 16, 16)
    pre = pool.pretrained()
    with torch.no_grad():
        torch.testing.assert_close(pre(x), clip.visual(x), atol=0, rtol=0)
    state = pool.finetuned_source("a")()
    assert set(state) == set(state_of(pre))
    for k, v in tuned["a"].items():               # exact mapping; proj from the pre-trained model
        want = state_of(pre)["proj"] if k == "proj" else v
        torch.testing.assert_close(state[k], want, atol=0, rtol=0)
    heads = pool.heads()
    assert heads.weight("a").shape == (3, 16)
    model = wc.MultiTaskModel(wc.upscale(pre, pool.finetuned_sources(pool.tasks), router_depth=1), heads)
    data = pool.dataset("a")
    assert len(data) == 10 and len(pool.dataset("a", limit=4)) == 4
    table = wc.evaluate(model, {t: labeled_batches(pool.dataset(t), batch_size=4) for t in pool.tasks})
    assert table.loc["avg", "n"] == 20


def test_incompatible_pool_checkpoint_is_named(env, arch):
    pool, _, tuned = _fake_pool(env, arch)
    bad = dict(tuned["b"])
    bad["transformer.resblocks.1.mlp.c_fc.weight"] = torch.zeros(8, 32)
    fk.fake_repo(env / "hub", "fake/tiny-ft-b", fk.hf_vision_files(bad, env))
    with pytest.raises(ValueError, match=r"b checkpoint.*resblocks\.1\.mlp\.c_fc\.weight"):
        pool.finetuned_source("b")()


def test_local_folder_checkpoints_in_a_pool(env, arch):
    pool, _, tuned = _fake_pool(env, arch)
    snap = fk.fake_repo(env / "models", "local/ft-a", fk.hf_vision_files(tuned["a"], env))
    spec = {**pool.spec, "tasks": [{**pool.spec["tasks"][0], "finetuned": str(snap)}]}
    local = ClipPool(spec, "local")
    torch.testing.assert_close(local.finetuned_source("a")()["conv1.weight"], tuned["a"]["conv1.weight"])
    assert ("model", str(snap)) in local.local_files()
    spec["tasks"][0]["finetuned"] = "../outside"
    assert "no checkpoint" in ClipPool(spec, "bad").availability().reason


@pytest.mark.network
def test_real_b32_checkpoint_from_the_hub():
    """Needs the Hub: the real SVHN checkpoint maps onto open_clip ViT-B-32 exactly."""
    if hub.probe():
        pytest.skip(f"no Hub here: {hub.probe()}")
    model = wc.load_vision("tanganke/clip-vit-base-patch32_svhn", arch="ViT-B-32")
    assert model.proj.shape == (768, 512)
    with torch.no_grad():
        assert model(torch.zeros(1, 3, 224, 224)).shape == (1, 512)


@pytest.mark.network
def test_real_eurosat_test_split_streams():
    """Needs the Hub: a small real test set (EuroSAT, 2,700 images) streams pre-processed."""
    if hub.probe():
        pytest.skip(f"no Hub here: {hub.probe()}")
    pool = ClipPool.from_file(ASSETS / "clip-vit-b32.json")
    ds = pool.dataset("eurosat")
    assert len(ds) == 2700
    items = list(itertools.islice(ds, 4))
    assert all(x.shape == (3, 224, 224) and 0 <= y < 10 for x, y in items)
