"""Explore, Learn, figures, configuration and the ZeroGPU wrapper, as plain functions."""
from __future__ import annotations

import sys
import types

import gradio as gr
import numpy as np
import pytest
from PIL import Image

from app import callbacks, explore, figures, learn
from app.config import device, limits
from app.jobs import gpu
from app.sessions import STORE
from tests.app.test_callbacks import run_to_end, values_for


@pytest.fixture(scope="module")
def wemoe_sid(tiny8_dir):
    """A session with task arithmetic and a (3-step) WEMoE on three tasks."""
    from wemoe_core.pools import load_pool

    pool = load_pool("tiny8")
    sid = STORE.resume(None).id
    for method, extra in (("task_arithmetic", {}), ("wemoe", {"steps": 3})):
        callbacks.start(sid, "tiny8", pool.tasks[:3], method, *values_for(pool, method, **extra))
        run_to_end(sid)
    return sid


def select(index: int) -> gr.SelectData:
    return gr.SelectData(None, {"index": index, "value": None, "selected": True})


def test_bad_uploads_say_what_to_do(tmp_path, monkeypatch, tiny8_dir):
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ValueError, match="upload a PNG"):
        explore.open_image(text)
    big = tmp_path / "big.png"
    Image.new("RGB", (300, 300)).save(big)
    monkeypatch.setenv("WEMOE_MAX_IMAGE_PIXELS", "1000")
    with pytest.raises(ValueError, match="resize it"):
        explore.open_image(big)
    sid = STORE.resume(None).id
    assert explore.use_upload(sid, str(text))[1].startswith("⚠️")
    assert "Upload an image" in explore.predict(sid, None, None, None, None)[-1]


def test_predict_side_by_side_with_heatmap_and_overlay(wemoe_sid):
    img, note = explore.use_example(wemoe_sid, select(0))
    assert isinstance(img, Image.Image) and note.startswith("example of")
    html, heat, over, layer, expert, status = explore.predict(wemoe_sid, ["m1", "m2"], "m2", None, None)
    assert "Task arithmetic #1" in html and "WEMoE #2" in html and "this image" in html
    assert heat.data[0].type == "heatmap" and "%{z" in heat.data[0].hovertemplate
    assert np.asarray(heat.data[0].z).shape == (len(layer["choices"]), 3)
    assert [t.type for t in over.data] == ["image", "heatmap"]
    assert np.asarray(over.data[1].z).shape == (4, 4)                      # Tiny-8: 4 x 4 patches
    assert layer["value"] == layer["choices"][-1] and "ms" in status
    one = explore.redraw_overlay(wemoe_sid, "m2", layer["choices"][0], "1")
    assert "Vehicles" in one.data[1].hovertemplate


def test_predict_without_models_uses_the_shared_default(tiny8_dir):
    sid = STORE.resume(None).id
    explore.use_example(sid, select(3))
    html, heat, *_ , status = explore.predict(sid, None, None, None, None)
    assert "default, all tasks" in html and "Run WEMoE" in heat.layout.annotations[0].text


def test_gallery_has_examples_of_every_task(tiny8_dir):
    from wemoe_core.pools import load_pool

    items = explore.gallery(STORE.resume(None).id)
    assert len(items) == 2 * len(load_pool("tiny8").tasks)
    assert all(Image.open(p).size == (64, 64) for p, _ in items[:2])


def test_learn_measures_every_figure(wemoe_sid):
    names = learn.figure_names()
    assert set(names) == {"cosine", "lambda", "routing", "memory", "selection", "own"}
    *_, last = learn.figures_for(wemoe_sid)
    status, figs = last[0], dict(zip(names, last[1:]))
    assert "Measured live" in status
    assert figs["cosine"].data[0].type == "heatmap"
    assert len(figs["lambda"].data) == 4                                   # 3 tasks + average
    assert any("WEMoE" in tr.name for tr in figs["selection"].data)
    assert len(figs["routing"].data) == 2                                   # two images side by side


def test_compare_and_share_views(wemoe_sid):
    s = STORE.get(wemoe_sid)
    df = callbacks.compare_frame(s)
    assert list(df["model"]) == ["Task arithmetic #1", "WEMoE #2"] and {"avg", "normalised", "seconds"} <= set(df)
    assert callbacks.share_figure(wemoe_sid, "m2").data[0].type == "heatmap"
    assert "Run WEMoE" in callbacks.share_figure(wemoe_sid, "m1").layout.annotations[0].text


def test_live_figures_from_plain_arrays():
    fig = figures.routing_live(np.eye(3), {"a": [0.1, 0.5]}, [1, 2], ["a", "b", "c"], {}, "routing")
    assert [t.type for t in fig.data] == ["heatmap", "scatter", "scatter", "scatter"]
    coef = figures.routing_live(np.ones((5, 3)), {}, [1], ["a", "b", "c"], {}, "coefficients")
    assert len(coef.data[0].y) == 5


def test_gpu_wrapper_is_a_no_op_without_spaces(monkeypatch):
    def f(x):
        return x + 1

    monkeypatch.setitem(sys.modules, "spaces", None)                      # import spaces -> ImportError
    assert gpu(f) is f
    fake = types.ModuleType("spaces")
    fake.GPU = lambda duration: (lambda fn: ("wrapped", fn, duration))
    monkeypatch.setitem(sys.modules, "spaces", fake)
    assert gpu(f)[0] == "wrapped"


def test_configuration_from_the_environment(monkeypatch):
    monkeypatch.setenv("WEMOE_MAX_STEPS", "abc")
    monkeypatch.setenv("WEMOE_MAX_JOBS", "0")
    lim = limits()
    assert lim.max_steps == 2000 and lim.max_jobs == 1                   # bad -> default; floor 1
    device.cache_clear()
    monkeypatch.setenv("WEMOE_DEVICE", "cuda:3")
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert device() == "cpu"
    device.cache_clear()
