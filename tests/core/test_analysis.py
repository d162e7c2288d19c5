"""wemoe_core.running.analysis and wemoe_core.running.export on a tiny in-memory pool (random towers, 16 px)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import TINY, make_pool
from wemoe_core.model.data import TensorImages
from wemoe_core.pools.base import Pool, PoolInfo, TaskInfo
from wemoe_core.running import analysis as an
from wemoe_core.running.export import export_run, kind, safe_stem
from wemoe_core.running.workbench import build_model, evaluate_run
from wemoe_core.sources.files import load_merged, load_routers, load_wemoe

MEAN, STD = (0.5, 0.4, 0.3), (0.25, 0.2, 0.3)


class FakePool(Pool):
    """Three tasks of five classes; test images are random, labels are the own model's answers."""

    def __init__(self, duplicate: bool = False):
        pre, fts, heads = make_pool(3)
        if duplicate:                      # task2's model is task0's: identical task vectors
            fts[2] = fts[0]
        self._pre, self._fts, self._heads = pre, fts, heads
        names = [f"task{t}" for t in range(3)]
        g = torch.Generator().manual_seed(3)
        self._images = {t: torch.randint(0, 256, (12, 16, 16, 3), generator=g, dtype=torch.uint8) for t in names}
        self._labels = {}
        for i, t in enumerate(names):
            x = TensorImages(self._images[t], None, MEAN, STD)
            with torch.no_grad():
                self._labels[t] = heads(fts[i](torch.stack([x[j] for j in range(len(x))])), t).argmax(-1)
        tasks = [TaskInfo(t, t.title(), tuple(f"c{k}" for k in range(5)), "", 100.0) for t in names]
        self.info = PoolInfo("fake", "Fake", "", tasks, TINY)

    def pretrained(self):
        return self._pre

    def finetuned_source(self, task):
        ft = self._fts[self.tasks.index(task)]
        return lambda: {k: v.clone() for k, v in ft.state_dict().items()}

    def heads(self, tasks=None):
        from wemoe_core.model.towers import Heads
        tasks = self.check_tasks(tasks)
        return Heads({t: self._heads.weight(t) for t in tasks}, logit_scale=self._heads.logit_scale)

    def preprocess(self, image):
        img = image.convert("RGB").resize((16, 16), Image.BICUBIC)
        return TensorImages(torch.from_numpy(np.asarray(img).copy())[None], None, MEAN, STD)[0]

    def dataset(self, task, split="test", limit=None):
        n = limit or 12
        return TensorImages(self._images[task][:n], self._labels[task][:n], MEAN, STD)


@pytest.fixture(scope="module")
def fake():
    return FakePool()


def test_model_view_returns_the_pixels_the_model_sees(fake):
    pixels = fake._images["task1"][0].numpy()
    view = an.model_view(fake, Image.fromarray(pixels))
    assert view.shape == (16, 16, 3) and view.dtype == np.uint8
    assert np.abs(view.astype(int) - pixels.astype(int)).max() <= 1
    (img, label), = an.example_images(fake, "task1", 1)
    assert np.array_equal(img, view) and label.startswith("c")


def test_param_counts_split_shared_experts_and_routers(fake):
    run = build_model(fake, fake.tasks, "wemoe", {"router_depth": 1})
    c = an.param_counts(run.model.encoder)
    d, hidden, L, T = TINY.width, int(TINY.width * TINY.mlp_ratio), TINY.layers, 3
    mlp = 2 * d * hidden + hidden + d
    assert c["experts"] == L * T * mlp                       # every block's MLP task vectors
    assert c["routers"] == L * (d * T + T)                   # depth 1: one linear per block
    assert c["total"] == c["shared"] + c["experts"] + c["routers"]


def test_memory_table_counts_models(fake):
    df = an.memory_table(fake, fake.tasks, rank=2)
    assert df.loc["3 fine-tuned models", "x one model"] == 3.0
    assert df.loc["one static merge (TA, TIES)", "x one model"] == 1.0
    assert df.loc["one WEMoE, rank-2 experts", "total"] < df.loc["one WEMoE", "total"]


def test_selection_baseline_with_one_task_is_the_individual_model(fake):
    df = an.selection_baseline(fake, ["task1"])
    assert df.loc["task1", "own"] == 100.0 and df.loc["task1", "accuracy"] == 100.0
    full = an.selection_baseline(fake, fake.tasks)
    assert list(full.index) == [*fake.tasks, "avg"]
    assert ((full["own"] >= 0) & (full["own"] <= 100)).all()


def test_task_vector_cosine_is_symmetric_with_unit_diagonal():
    df = an.task_vector_cosine(FakePool(duplicate=True), ["task0", "task1", "task2"])
    m = df.to_numpy()
    assert np.allclose(np.diag(m), 1, atol=1e-5) and np.allclose(m, m.T, atol=1e-6)
    assert m[0, 2] == pytest.approx(1.0, abs=1e-5)           # the same task vector twice
    assert abs(m[0, 1]) < 0.5                                 # independent random task vectors


def test_lambda_zero_is_the_pretrained_model(fake):
    sweep = an.lambda_sweep(fake, fake.tasks, lambdas=(0.0, 0.5), limit=None)
    pre = evaluate_run(build_model(fake, fake.tasks, "pretrained"), fake)
    assert sweep.loc[0.0, "avg"] == pytest.approx(pre.loc["avg", "accuracy"])


def test_explain_image_gives_predictions_and_routing(fake):
    run = build_model(fake, fake.tasks, "wemoe")
    ex = an.explain_image(run, fake, Image.new("RGB", (40, 30), (10, 200, 30)), topk=3)
    assert set(ex.predictions) == set(fake.tasks) and len(ex.predictions["task0"]) == 3
    assert ex.routing.shape == (TINY.layers, 3)
    assert ex.token_routing.shape == (TINY.layers, TINY.num_tokens, 3)


def test_export_round_trips(fake, tmp_path):
    wemoe = build_model(fake, fake.tasks, "wemoe")
    files = export_run(wemoe, fake, tmp_path, "WEMoE #1")
    assert {p.name for p in files.values()} == {"wemoe-1.safetensors", "wemoe-1-routers.safetensors", "wemoe-1-recipe.json"}
    model, recipe = load_wemoe(files["model"])
    assert recipe.method == "wemoe" and recipe.tasks == fake.tasks
    assert load_routers(model, files["routers"]).method == "wemoe"
    ta = build_model(fake, fake.tasks, "task_arithmetic", {"scale": 0.5})
    tower, recipe = load_merged(export_run(ta, fake, tmp_path)["model"])
    assert recipe.hparams["scale"] == 0.5
    ind = build_model(fake, fake.tasks, "individual")
    assert kind(ind) == "per_task" and set(export_run(ind, fake, tmp_path)) == {"recipe"}
    assert safe_stem("Task arithmetic (λ=0.3) #2") == "task-arithmetic-0-3-2"
