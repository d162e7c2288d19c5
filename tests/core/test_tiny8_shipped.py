"""The shipped zoo (assets/tiny8) is what its manifest says: the files hash as recorded, the
fine-tuned models score what the build measured (re-evaluated here through the pool, not read
back), every weight moved as CLIP's fine-tunes move them (MLPs most, a few percent of the
pre-trained norm), and the recipes are valid hyperparameters."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wemoe_core.merging.registry import get_method
from wemoe_core.model.params import validate
from wemoe_core.model.towers import build_vision
from wemoe_core.pools.tiny8.build import is_finetuned_param
from wemoe_core.pools.tiny8.pool import Tiny8Pool
from wemoe_core.running.adapt import AdaptParams
from wemoe_core.running.recipes import VARIANTS

ZOO = Path(__file__).resolve().parents[2] / "assets" / "tiny8"
pytestmark = pytest.mark.skipif(not (ZOO / "manifest.json").is_file(), reason="no shipped zoo in assets/tiny8")


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((ZOO / "manifest.json").read_text())


def test_every_weight_file_hashes_as_the_manifest_records(manifest):
    files = {str(p.relative_to(ZOO)) for p in ZOO.rglob("*.safetensors")}
    assert files == set(manifest["sha256"])
    for rel, digest in manifest["sha256"].items():
        assert hashlib.sha256((ZOO / rel).read_bytes()).hexdigest() == digest, rel


def test_manifest_claims_strong_experts_over_weak_heads(manifest):
    acc = manifest["accuracy"]
    assert acc["individual"]["avg"] >= 90.0                     # issue 12's floor for the zoo
    assert acc["pretrained"]["avg"] < acc["individual"]["avg"] - 20
    assert manifest["build"]["command"].startswith("python -m wemoe_core build-tiny8")


def test_finetunes_moved_every_weight_mlps_most(manifest):
    """Like CLIP's fine-tunes: every tensor moved, by a few percent of the pre-trained norm in
    all (not the 15-32 % of the first zoo), the MLPs relatively more than the rest."""
    pre = load_file(str(ZOO / "pretrained.safetensors"))
    rel = lambda d, keys: float(torch.cat([d[k].flatten() for k in keys]).norm() / torch.cat([pre[k].flatten() for k in keys]).norm())  # noqa: E731
    mlp = [k for k in pre if ".mlp." in k]
    rest = [k for k in pre if ".mlp." not in k]
    for task in (t["name"] for t in manifest["tasks"]):
        ft = load_file(str(ZOO / "finetuned" / f"{task}.safetensors"))
        assert all(is_finetuned_param(k, "all") and not torch.equal(pre[k], ft[k]) for k in pre), task
        tau = {k: ft[k] - pre[k] for k in pre}
        assert 0.01 < rel(tau, list(pre)) < 0.10, task
        assert rel(tau, mlp) > rel(tau, rest), task


@torch.no_grad()
def test_individual_models_score_what_the_manifest_says(manifest):
    """Re-evaluate two fine-tuned models on their full test sets through the pool's own data,
    heads and preprocessing: the same accuracies as the builder measured."""
    pool = Tiny8Pool(ZOO)
    heads = pool.heads(pool.tasks)
    for task in ("digits", "textures"):
        tower = build_vision(pool.info.vision_config)
        tower.load_state_dict(pool.finetuned_source(task)())
        tower.eval()
        data = pool.dataset(task, "test")
        x = torch.stack([data[i][0] for i in range(len(data))])
        y = torch.tensor([int(data[i][1]) for i in range(len(data))])
        pred = heads(tower(x), task).argmax(-1)
        acc = round(100.0 * float((pred == y).float().mean()), 2)
        assert acc == pytest.approx(manifest["accuracy"]["individual"][task], abs=0.01), task


def test_recipes_are_valid_hyperparameters():
    recipes = json.loads((ZOO / "recipes.json").read_text())["recipes"]
    assert {"wemoe", "wemoe_paper", "adamerging_layer"} <= set(recipes)
    for name, recipe in recipes.items():
        get_method(VARIANTS.get(name, (name,))[0]).hparams(**recipe.get("hparams", {}))
        validate(AdaptParams, recipe["adapt"])
