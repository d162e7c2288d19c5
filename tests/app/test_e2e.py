"""End to end through gradio_client against ``python app.py`` on a free port."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from wemoe_core.sources.files import load_routers, load_wemoe


@pytest.fixture(scope="module")
def client(app_url):
    return Client(app_url, verbose=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "red.png"
    Image.new("RGB", (50, 40), (200, 30, 30)).save(path)
    return str(path)


def test_named_endpoints_and_defaults(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert {"/predict", "/merge", "/export"} <= set(api)
    assert all(p["parameter_has_default"] for p in api["/predict"]["parameters"][1:])
    assert all(p["parameter_has_default"] for p in api["/merge"]["parameters"])


def test_predict_on_a_fresh_start(app_url, image):
    out = Client(app_url, verbose=False).predict(handle_file(image), api_name="/predict")
    assert out["model"].startswith("Task arithmetic (default")
    assert len(out["predictions"]) == 8 and out["routing"] is None
    top = out["predictions"]["signs"]
    assert len(top) == 5 and top[0]["probability"] >= top[-1]["probability"]


def test_merge_adapt_predict_export(client, image, tmp_path):
    static = client.predict("ties", {"density": 0.5}, ["scenes", "signs"], api_name="/merge")
    assert static["status"] == "done" and static["variant"] == "custom"
    assert [r["task"] for r in static["accuracy"]] == ["scenes", "signs", "avg"]
    job = client.submit("wemoe", {}, ["scenes", "vehicles", "signs"], {"steps": 4}, api_name="/merge")
    outputs = list(job)
    final = outputs[-1]
    assert final["status"] == "done" and final["steps_done"] == 4 and final["variant"] in ("tiny8 recipe", "paper")
    assert final["routing_share"] and final["recipe"]["adapt"]["steps_done"] == 4
    assert any(o.get("status") == "running" for o in outputs[:-1])           # progress events came first
    pred = client.predict(handle_file(image), api_name="/predict")
    assert pred["model"] == final["model"]
    w = pred["routing"]["weights"]
    assert len(w) == len(pred["routing"]["modules"]) and len(w[0]) == 3
    assert len(pred["token_routing"]["weights"][0]) == 17                    # CLS + 4 x 4 patches
    files = [Path(p) for p in client.predict(api_name="/export")]
    by_name = {p.name: p for p in files}
    model, recipe = load_wemoe(by_name["wemoe-2.safetensors"])
    assert recipe.method == "wemoe" and recipe.tasks == ["scenes", "vehicles", "signs"]
    assert load_routers(model, by_name["wemoe-2-routers.safetensors"]).adapt["steps_done"] == 4
    assert json.loads(by_name["wemoe-2-recipe.json"].read_text())["hparams"] == recipe.hparams
    rows = list(csv.DictReader(by_name["results.csv"].open()))
    assert [r["model"] for r in rows] == ["TIES-merging #1", "WEMoE #2"]


def test_bad_input_gets_a_message(client, app_url, image, tmp_path):
    text = tmp_path / "x.png"
    text.write_text("hello")
    with pytest.raises(AppError, match="upload a PNG"):
        client.predict(handle_file(str(text)), api_name="/predict")
    with pytest.raises(AppError, match="range"):
        client.predict("task_arithmetic", {"scale": 50}, api_name="/merge")
    with pytest.raises(AppError, match="at least 2"):
        client.predict("average", {}, ["scenes"], api_name="/merge")
    stranger = Client(app_url, verbose=False)                                 # another session sees nothing
    with pytest.raises(AppError, match="no model"):
        stranger.predict(handle_file(image), "WEMoE #2", api_name="/predict")
