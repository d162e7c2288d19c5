"""Absurd hyperparameters, empty and single selections, unknown names and wrong types, through
every door: the Python API, the CLI, the app's API (a live server) and the page's callbacks.
Each gets a message naming the value and what to use; none starts a job or crashes."""
from __future__ import annotations

import math
import os
import re
import subprocess
import sys

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import wemoe_core as wc
from tests.conftest import make_pool
from wemoe_core import cli
from wemoe_core.model.towers import Heads, MultiTaskModel, state_of
from wemoe_core.sources.files import load_merged

pytestmark = pytest.mark.timeout(300)
NAN = float("nan")


# --- Python API --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pool3():
    pre, fts, heads = make_pool(num_tasks=3)
    return pre, [state_of(f) for f in fts], heads


@pytest.mark.parametrize("hp, message", [
    ({"density": 0}, r"density=0 is out of range; use a value in \(0\.0, 1\.0\]"),
    ({"density": 2}, r"density=2 is out of range"),
    ({"density": NAN}, r"density must be a finite number"),
    ({"scale": -1}, r"scale=-1 is out of range; use a value in \[0\.0, 2\.0\]"),
    ({"scale": "big"}, r"scale='big' is not a number"),
    ({"topk": "all"}, r"topk='all' is not allowed; choose one of \['global', 'per_tensor'\]"),
    ({"lr": 1e-3}, r"unknown hyperparameter 'lr' for TIES-merging; valid names: scale, density, topk"),
])
def test_python_api_refuses_absurd_merge_settings(pool3, hp, message):
    pre, fts, _ = pool3
    with pytest.raises(ValueError, match=message):
        wc.merge("ties", state_of(pre), fts, **hp)


def test_python_api_refuses_absurd_wemoe_and_adaptation_settings(pool3):
    pre, fts, heads = pool3
    with pytest.raises(ValueError, match="init_lambda must be a finite number"):
        wc.upscale(pre, fts, init_lambda=NAN)
    with pytest.raises(ValueError, match=r"density=2 is out of range"):
        wc.upscale(pre, fts, params=wc.WEMoEParams(density=2))          # a hand-made dataclass is checked too
    model = MultiTaskModel(wc.upscale(pre, fts, task_names=["task0", "task1", "task2"]), heads)
    data = {t: iter(lambda: torch.randn(2, 3, 16, 16), None) for t in model.tasks}
    for params, message in ((wc.AdaptParams(steps=-5), r"steps=-5 is out of range; use a value in \[1, 100000\] steps"),
                            (wc.AdaptParams(steps=0), r"steps=0 is out of range"),
                            (wc.AdaptParams(lr=NAN), r"lr must be a finite number"),
                            (wc.AdaptParams(lr=0.0), r"lr=0\.0 is out of range; use a value in \(0\.0, 1\.0\]"),
                            (wc.AdaptParams(batch_size=0), r"batch_size=0 is out of range"),
                            ({"steps": 3, "objective": "accuracy"}, r"objective='accuracy' is not allowed")):
        with pytest.raises(ValueError, match=message):
            wc.adapt(model, data, params)
    assert wc.adapt(model, data, {"steps": 2, "lr": 1e-3}).steps_done == 2     # a dict of good values works


def test_python_api_empty_selection_and_single_task(pool3):
    pre, fts, heads = pool3
    for call in (lambda: wc.merge("task_arithmetic", state_of(pre), []), lambda: wc.upscale(pre, []),
                 lambda: wc.build("wemoe", pre, [], [])):
        with pytest.raises(ValueError, match=r"at least one"):
            call()
    with pytest.raises(ValueError, match=r"2 fine-tuned models for 1 tasks"):
        wc.build("ties", pre, fts[:2], ["a"])
    with pytest.raises(ValueError, match=r"merge\(\) supports average, task_arithmetic, ties; got 'wemoe' \(it learns"):
        wc.merge("wemoe", state_of(pre), fts)
    # one task is a well-defined merge: the pre-trained model plus lambda times its task vector
    one = wc.merge("task_arithmetic", state_of(pre), fts[:1], scale=0.5)
    k = "proj"
    torch.testing.assert_close(one[k], pre.state_dict()[k] + 0.5 * (fts[0][k] - pre.state_dict()[k]))
    single = MultiTaskModel(wc.upscale(pre, fts[:1], task_names=["task0"]), Heads({"task0": heads.weight("task0")}))
    assert single.logits(torch.randn(2, 3, 16, 16), "task0").shape == (2, 5)


# --- CLI -------------------------------------------------------------------------------------
@pytest.fixture
def tiny8(tiny8_dir):
    return tiny8_dir


@pytest.mark.parametrize("args, message", [
    (["--method", "ties", "--set", "density=2"], r"density=2 is out of range"),
    (["--method", "ties", "--set", "density=0"], r"density=0 is out of range"),
    (["--method", "ties", "--set", "density=NaN"], r"density must be a finite number"),
    (["--method", "ties", "--set", "density"], r"--set expects NAME=VALUE"),
    (["--method", "ties", "--set", "rank=3"], r"unknown hyperparameter 'rank'"),
    (["--method", "wemoe", "--steps", "-5"], r"steps=-5 is out of range"),
    (["--method", "wemoe", "--steps", "0"], r"steps=0 is out of range"),
    (["--method", "ties", "--steps", "5"], r"ties does not adapt: drop --steps"),
    (["--method", "ties", "--tasks", "scenes,scenes"], r"name each task once"),
    (["--method", "ties", "--tasks", "scenes,,signs"], r"name each task once"),
    (["--method", "ties", "--tasks", "scenes,nope"], r"has no task 'nope'; it has scenes"),
    (["--method", "nope"], r"unknown method 'nope'"),
    (["--method", "ties", "--pool", "clip-vit-b32"], r"HF_HUB_OFFLINE|unavailable|Hub"),
])
def test_cli_answers_absurd_settings_with_a_message_and_code_2(tiny8, tmp_path, capsys, args, message):
    out = tmp_path / "m.safetensors"
    rc = cli.main(["merge", *args, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error: ")
    assert re.search(message, err), err
    assert not out.exists()


def test_cli_single_task_merge_works(tiny8, tmp_path, capsys):
    out = tmp_path / "one.safetensors"
    assert cli.main(["merge", "--method", "task_arithmetic", "--tasks", "signs", "--out", str(out)]) == 0
    model, recipe = load_merged(out)
    assert recipe.tasks == ["signs"]


def test_cli_process_prints_no_traceback(tiny8, tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WEMOE_TINY8_DIR": str(tiny8)}
    proc = subprocess.run([sys.executable, "-m", "wemoe_core", "merge", "--method", "ties", "--set", "density=0",
                           "--out", str(tmp_path / "x.safetensors")], capture_output=True, text=True, env=env, timeout=240)
    assert proc.returncode == 2
    assert "error: density=0 is out of range" in proc.stderr and "Traceback" not in proc.stderr


# --- the app's API on a live server ------------------------------------------------------------
@pytest.fixture(scope="module")
def client(live_app):
    return Client(live_app, verbose=False)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "ok.png"
    Image.new("RGB", (20, 20), (10, 200, 10)).save(path)
    return str(path)


MERGE_CASES = [
    (("ties", {"density": 0}), r"density=0 is out of range"),
    (("ties", {"density": 2}), r"density=2 is out of range"),
    (("ties", {"density": "nan"}), r"density must be a finite number"),
    (("ties", {"scale": "big"}), r"scale='big' is not a number"),
    (("ties", "not json"), r"hyperparameters must be a JSON object"),
    (("ties", [1, 2]), r"hyperparameters must be a dict"),
    (("ties", {}, []), r"select at least 2 tasks \(got 0\)"),
    (("ties", {}, ["scenes"]), r"select at least 2 tasks \(got 1\)"),
    (("ties", {}, ["scenes", "scenes"]), r"a task is selected twice"),
    (("ties", {}, ["scenes", "nope"]), r"has no task 'nope'; it has scenes"),
    (("ties", {}, [1, 2]), r"tasks must be a list of task names"),
    (("nope",), r"unknown method 'nope'"),
    (("wemoe", {}, None, {"steps": -5}), r"steps=-5 is out of range"),
    (("wemoe", {}, None, {"steps": 0}), r"steps=0 is out of range"),
    (("wemoe", {}, None, {"steps": 10**9}), r"steps=1000000000 is out of range"),
    (("wemoe", {}, None, {"lr": "nan"}), r"lr must be a finite number"),
    (("wemoe", {}, None, {"batch_size": 0}), r"batch_size=0 is out of range"),
    (("ties", {}, None, {"steps": 5}), r"TIES-merging does not adapt"),
    (("ties", {}, None, None, "../../etc/passwd"), r"unknown pool '\.\./\.\./etc/passwd'"),
    (("ties", {}, None, None, "clip-vit-b32"), r"unavailable.*HF_HUB_OFFLINE"),
]


@pytest.mark.parametrize("args, message", MERGE_CASES, ids=[str(a)[:60] for a, _ in MERGE_CASES])
def test_api_merge_refuses_with_a_message(client, args, message):
    with pytest.raises(AppError, match=message):
        client.predict(*args, api_name="/merge")


def test_api_limits_and_predict_arguments(client, image, monkeypatch):
    monkeypatch.setenv("WEMOE_MAX_STEPS", "7")                          # read per request
    with pytest.raises(AppError, match=r"steps=8 is over this server's limit; use at most 7"):
        client.predict("wemoe", {}, None, {"steps": 8}, api_name="/merge")
    for topk in (-1, 0, 0.5):
        with pytest.raises(AppError, match=r"topk=.*whole number from 1 to 20"):
            client.predict(handle_file(image), "", topk, api_name="/predict")
    with pytest.raises(AppError, match=r"topk='abc': use a whole number from 1 to 20"):
        client.predict(handle_file(image), "", "abc", api_name="/predict")
    with pytest.raises(AppError, match=r"no model 'WEMoE #9' in this session"):
        client.predict(handle_file(image), "WEMoE #9", api_name="/predict")
    with pytest.raises(AppError, match=r"no model in this session yet"):
        client.predict(api_name="/export")
    out = client.predict(handle_file(image), "", 500, api_name="/predict")      # clamped to 20
    assert max(len(v) for v in out["predictions"].values()) <= 20
    assert math.isfinite(out["predictions"]["signs"][0]["probability"])


# --- the page's callbacks --------------------------------------------------------------------
def test_page_refuses_empty_selection_and_absurd_values(tiny8):
    from app import callbacks
    from app.sessions import STORE
    from tests.app.test_callbacks import values_for
    from wemoe_core.pools import load_pool

    pool = load_pool("tiny8")
    sid = STORE.resume(None).id
    cases = [([], "ties", {}, r"Select at least 2 tasks .*\(got 0\)"),
             (["scenes"], "ties", {}, r"Select at least 2 tasks .*\(got 1\)"),
             (pool.tasks[:2], "ties", {"density": 0.0}, r"density=0(\.0)? is out of range"),
             (pool.tasks[:2], "ties", {"density": 2.0}, r"density=2(\.0)? is out of range"),
             (pool.tasks[:2], "wemoe", {"steps": -5}, r"steps=-5 is out of range"),
             (pool.tasks[:2], "wemoe", {"lr": None}, r"lr=None is not a number"),          # a cleared number box
             (pool.tasks[:2], "nope", {}, r"unknown method 'nope'")]
    for tasks, method, change, message in cases:
        values = values_for(pool, method if method != "nope" else "ties", **change)
        status = callbacks.start(sid, "tiny8", tasks, method, *values)[0]
        assert status.startswith("⚠️") and re.search(message, status), (tasks, method, change, status)
    assert STORE.get(sid).job_id is None                                # no job was started
