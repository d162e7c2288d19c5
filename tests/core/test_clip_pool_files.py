"""The real CLIP pool files in ``assets/pools/``: every one parses, names the right tasks with the
right number of class names each (the datasets' label lists), and the checkpoints FusionBench
names; the 14- and 20-task files are exactly what ``scripts/make_clip_pools.py`` writes from
``assets/tasks/clip20.json``; offline they are listed as unavailable with the reason."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from wemoe_core.pools.clip import ClipPool

ROOT = Path(__file__).resolve().parents[2]
POOLS = ROOT / "assets" / "pools"
# FusionBench's 20 tasks, in its order, as they appear in its checkpoint ids
# (config/model/clip-vit/clip-vit-base-patch32_TALL20.yaml); TALL14 is the first 14, TA8 the first 8.
FUSIONBENCH = ["sun397", "stanford-cars", "resisc45", "eurosat", "svhn", "gtsrb", "mnist", "dtd",
               "oxford_flowers102", "pcam", "fer2013", "oxford-iiit-pet", "stl10", "cifar100",
               "cifar10", "food101", "fashion_mnist", "emnist_letters", "kmnist", "rendered-sst2"]
# Number of classes of each data set's public label list.
CLASSES = {"sun397": 397, "stanford_cars": 196, "resisc45": 45, "eurosat": 10, "svhn": 10, "gtsrb": 43, "mnist": 10,
           "dtd": 47, "oxford_flowers102": 102, "pcam": 2, "fer2013": 7, "oxford_iiit_pet": 37, "stl10": 10,
           "cifar100": 100, "cifar10": 10, "food101": 101, "fashion_mnist": 10, "emnist_letters": 26, "kmnist": 10,
           "rendered_sst2": 2}
FILES = {"clip-vit-b32": ("ViT-B-32", "clip-vit-base-patch32", 8), "clip-vit-b16": ("ViT-B-16", "clip-vit-base-patch16", 8),
         "clip-vit-l14": ("ViT-L-14", "clip-vit-large-patch14", 8),
         "clip-vit-b32-tall14": ("ViT-B-32", "clip-vit-base-patch32", 14),
         "clip-vit-b32-tall20": ("ViT-B-32", "clip-vit-base-patch32", 20),
         "clip-vit-l14-tall14": ("ViT-L-14", "clip-vit-large-patch14", 14),
         "clip-vit-l14-tall20": ("ViT-L-14", "clip-vit-large-patch14", 20)}


def test_every_pool_file_is_listed_here():
    assert sorted(p.stem for p in POOLS.glob("*.json")) == sorted(FILES)


@pytest.mark.parametrize("stem", list(FILES))
def test_a_pool_file_names_fusionbench_checkpoints_and_full_label_lists(stem):
    arch, model, count = FILES[stem]
    pool = ClipPool.from_file(POOLS / f"{stem}.json")
    spec = json.loads((POOLS / f"{stem}.json").read_text())
    assert spec["arch"] == arch and spec["pretrained"] == "openai" and len(pool.tasks) == count
    for task, fb in zip(spec["tasks"], FUSIONBENCH[:count]):
        name = task["name"]
        assert fb.replace("-", "_") == name                           # the same tasks, in FusionBench's order
        assert task["finetuned"] == f"tanganke/{model}_{fb}"
        assert len(task["classnames"]) == CLASSES[name], name
        assert len(set(task["classnames"])) == CLASSES[name], f"{name}: a class name twice"
        assert task["templates"] and all("{c}" in t for t in task["templates"]), name
        assert task["dataset"]["repo"] and task["dataset"]["split"] in ("test", "validation")
        assert pool.task(name).classnames == tuple(task["classnames"])


def test_the_larger_pools_extend_the_eight_task_ones():
    for arch in ("b32", "l14"):
        eight = json.loads((POOLS / f"clip-vit-{arch}.json").read_text())["tasks"]
        for group in ("tall14", "tall20"):
            more = json.loads((POOLS / f"clip-vit-{arch}-{group}.json").read_text())["tasks"]
            for a, b in zip(eight, more):
                assert {k: a[k] for k in ("name", "finetuned", "dataset", "classnames", "templates")} == \
                       {k: b[k] for k in ("name", "finetuned", "dataset", "classnames", "templates")}


def test_the_pool_files_are_generated_from_the_task_data():
    run = subprocess.run([sys.executable, "scripts/make_clip_pools.py", "--check"], cwd=ROOT, capture_output=True,
                         text=True, timeout=60)
    assert run.returncode == 0, run.stderr


def test_the_new_pools_are_listed_as_unavailable_offline_with_the_reason(monkeypatch):
    from wemoe_core.pools import list_pools

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    entries = {e.name: e for e in list_pools()}
    for stem in ("clip-vit-b32-tall14", "clip-vit-b32-tall20", "clip-vit-l14-tall14", "clip-vit-l14-tall20"):
        e = entries[stem]
        assert not e.availability.ok and "HF_HUB_OFFLINE" in e.availability.reason
        assert f"{FILES[stem][2]} fine-tuned checkpoints" in e.availability.reason
