"""Messages in a visitor's words. Every bad input of the catalogue (tests/reliability) goes
through every door that takes it (the API on a live server, the page's callbacks, a job that
fails), and every text a visitor could read is collected: none holds an exception class name,
a traceback, a ``.py`` file or a path of this server. The server log keeps the details."""
from __future__ import annotations

import json
import logging
import re

import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import api, callbacks, explore
from app.jobs import FAILED, JOBS
from app.messages import FORBIDDEN, for_visitor
from app.sessions import STORE
from tests.app.test_callbacks import values_for

from .conftest import png_bomb, write
from .test_bad_inputs import MERGE_CASES
from .test_faults import fail_at
from .test_images import REFUSED

pytestmark = pytest.mark.timeout(600)
SERVER_PATHS = re.compile(r"/tmp/|/work/|/root/|/home/|/srv/|site-packages")


def plain(text: str) -> str:
    assert text, "an empty message"
    bad = FORBIDDEN.search(text) or SERVER_PATHS.search(text)
    assert not bad, f"{bad.group(0)!r} in a visitor's message: {text!r}"
    return text


def test_the_rule_itself():
    for raw, bad in (("the file is not a readable image (UnidentifiedImageError): upload a PNG", "Unidentified"),
                     ("step 3: failed (KeyError: '/srv/secret/x'); keep going", "KeyError"),
                     ("OSError: [Errno 28] No space left on device: '/tmp/export-1/m.safetensors'", "/tmp/"),
                     ('Traceback (most recent call last):\n  File "/work/app/api.py", line 3', "Traceback"),
                     ("a torch.OutOfMemoryError in wemoe.py", "Error")):
        assert FORBIDDEN.search(raw) or SERVER_PATHS.search(raw)
        assert bad not in plain(for_visitor(raw))
    kept = "density=2 is out of range; use a value in (0.0, 1.0]; see https://arxiv.org/abs/2306.01708, step 3/200"
    assert for_visitor(kept) == kept and plain(kept)


@pytest.fixture(scope="module")
def client(live_app):
    return Client(live_app, verbose=False)


def _app_error(call) -> str:
    with pytest.raises(AppError) as e:
        call()
    return str(e.value)


def test_every_refusal_of_the_api_is_plain(client, tmp_path):
    texts = [_app_error(lambda a=args: client.predict(*a, api_name="/merge")) for args, _ in MERGE_CASES]
    files = {**REFUSED, "bomb": (png_bomb(8000), None)}
    for i, (name, (data, _)) in enumerate(files.items()):
        path = write(tmp_path / f"bad{i}.png", data)
        if data:                         # gradio_client refuses to send an empty file itself
            texts.append(_app_error(lambda p=path: client.predict(handle_file(p), api_name="/predict")))
    good = write(tmp_path / "ok.png", b"")
    Image.new("RGB", (9, 9), (1, 2, 3)).save(good)
    for args in (("", 0), ("", "abc"), ("WEMoE #9", 5)):
        texts.append(_app_error(lambda a=args: client.predict(handle_file(good), *a, api_name="/predict")))
    texts.append(_app_error(lambda: client.predict(api_name="/export")))
    for text in texts:
        plain(text)
    assert len(texts) >= len(MERGE_CASES) + len(REFUSED) + 3


def test_every_refusal_of_the_page_is_plain(tiny8_dir, tmp_path):
    from wemoe_core.pools import load_pool

    pool = load_pool("tiny8")
    sid = STORE.resume(None).id
    texts = []
    for tasks, method, change in (([], "ties", {}), (["scenes"], "ties", {}), (pool.tasks[:2], "ties", {"density": 2.0}),
                                  (pool.tasks[:2], "wemoe", {"steps": -5}), (pool.tasks[:2], "wemoe", {"lr": None}),
                                  (pool.tasks[:2], "nope", {}), (pool.tasks[:2], "wemoe", {"steps": 10**9})):
        texts.append(callbacks.start(sid, "tiny8", tasks, method, *values_for(pool, "ties" if method == "nope" else method,
                                                                              **change))[0])
    for i, (data, _) in enumerate({**REFUSED, "bomb": (png_bomb(8000), None)}.values()):
        texts.append(explore.use_upload(sid, write(tmp_path / f"u{i}.png", data))[1])
    texts.append(callbacks.select_pool(sid, "../../etc/passwd")[-1])
    texts.append(callbacks.select_pool(sid, "clip-vit-b32")[-1])
    texts.append(callbacks.select_tasks(sid, []))
    texts.append(callbacks.export(sid, None)[1])
    texts.append(explore.predict(sid, [], None, None, None)[-1])
    for text in texts:
        plain(text)
    assert sum(t.startswith("⚠️") for t in texts) >= len(texts) - 1


def test_failed_jobs_and_unforeseen_errors_are_plain(tiny8_dir, monkeypatch, caplog):
    """A step that raises, a build that raises something nobody foresaw, a broken checkpoint,
    and a bug inside a callback: the page and the API say what happened without internals."""
    from wemoe_core.pools import load_pool
    from wemoe_core.running import workbench

    caplog.set_level(logging.INFO)
    pool = load_pool("tiny8")
    texts = []

    def run(method="wemoe", steps=5):
        sid = STORE.resume(None).id
        callbacks.start(sid, "tiny8", pool.tasks[:2], method, *values_for(pool, method, steps=steps))
        s = STORE.get(sid)
        job = JOBS.get(s.id, s.job_id)
        assert job.done.wait(180) and job.progress.state == FAILED, job.progress.message
        texts.extend([callbacks.poll(sid, -1)[1], job.progress.message])

    fail_at(2, KeyError("/srv/secret/detail"), monkeypatch)                          # inside a step
    run()
    monkeypatch.undo()
    monkeypatch.setattr(workbench, "build_model", lambda *a, **k: {}["boom"])          # a bug while building
    run()
    monkeypatch.undo()
    real = pool.finetuned_source

    def broken(task):
        load = real(task)
        return (lambda: {**load(), "ln_post.weight": torch.full((2,), float("nan"))}) if task == pool.tasks[1] else load
    monkeypatch.setattr(pool, "finetuned_source", broken)                              # a corrupt checkpoint
    run("ties")
    monkeypatch.undo()
    with pytest.raises(Exception) as e:
        api.guarded("/predict")(lambda: json.loads("{")["x"])()                        # a bug in a callback
    texts.append(str(e.value))
    for text in texts:
        plain(text)
    assert "KeyError" in caplog.text and "/srv/secret/detail" in caplog.text          # the log keeps them


def test_the_pool_list_is_plain(tmp_path, monkeypatch):
    """Reasons a pool cannot be used (a local checkpoint that is missing, a file outside the
    server's folders) are shown without the server's paths."""
    models, pools = tmp_path / "models", tmp_path / "pools"
    models.mkdir()
    pools.mkdir()
    monkeypatch.setenv("WEMOE_MODEL_DIR", str(models))
    monkeypatch.setenv("WEMOE_POOL_DIR", str(pools))
    for name, finetuned in (("msg-missing", "my/missing/folder"), ("msg-outside", str(tmp_path))):
        spec = {"arch": "ViT-B-32", "pretrained": "openai", "tasks": [
            {"name": "a", "finetuned": finetuned, "classnames": ["x"], "templates": ["{c}"], "dataset": {"repo": "x/y"}}]}
        (pools / f"{name}.json").write_text(json.dumps(spec))
    callbacks._pools_cached.cache_clear()
    text = callbacks.pools_status()[1]
    callbacks._pools_cached.cache_clear()
    assert "msg-missing" in text and "msg-outside" in text
    plain(text)
