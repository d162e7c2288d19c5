"""Every limit of the README's configuration table, set small by its environment variable, is
enforced with a message that says what to do: upload size, image pixels, steps, jobs per
visitor and on the server, job wall time, queue length, models per visitor, visitors, and the
age of uploaded files."""
from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

from app import api, callbacks, explore
from app.jobs import DONE, JOBS, QUEUED, RUNNING, STOPPED, JobManager, JobRefused
from app.sessions import STORE, Session, SessionStore
from tests.app.test_callbacks import values_for

from .conftest import launch

pytestmark = pytest.mark.timeout(300)
LAUNCH_TEMP_DIR = os.environ.get("GRADIO_TEMP_DIR")        # as the default app is launched with


@pytest.fixture
def pool(tiny8_dir):
    from wemoe_core.pools import load_pool

    return load_pool("tiny8")


@pytest.fixture(scope="module")
def noise_png(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "noise.png"
    Image.effect_noise((900, 900), 100).convert("RGB").save(path)      # ~2.4 MB: incompressible
    return str(path)


def until(condition, timeout: float = 60.0, what: str = "condition"):
    """Wait for ``condition()`` (a generous deadline, not a timing assertion)."""
    end = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < end, f"{what} did not happen within {timeout:.0f} s"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def tight_app(live_app, tiny8_dir, tmp_path_factory):
    """The app launched with limits that take effect at launch: 1 MB uploads, a queue of one
    waiting request, uploaded files deleted after a second (in a temporary folder of its own).
    It asks for ``live_app`` first, so the module's default app is launched with the defaults
    whatever order the tests run in."""
    mp = pytest.MonkeyPatch()
    folder = tmp_path_factory.mktemp("gradio-files")
    for k, v in {"WEMOE_MAX_UPLOAD_MB": "1", "WEMOE_QUEUE_SIZE": "1", "WEMOE_FILES_TTL_S": "1",
                 "GRADIO_TEMP_DIR": str(folder)}.items():
        mp.setenv(k, v)
    url, demo = launch()
    yield SimpleNamespace(url=url, files=folder)
    demo.close()
    mp.undo()


def test_upload_size_is_enforced_at_the_door_and_in_the_loader(tight_app, noise_png, tmp_path, monkeypatch):
    assert Path(noise_png).stat().st_size > 2**20
    with pytest.raises(Exception, match=r"exceeds the maximum file size of 1048576 bytes"):     # gradio_client checks
        Client(tight_app.url, verbose=False).predict(handle_file(noise_png), api_name="/predict")
    boundary = "wemoe-boundary"                                 # a client that does not check: the server does
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"big.png\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + Path(noise_png).read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    req = urllib.request.Request(tight_app.url + "gradio_api/upload", data=body, method="POST",
                                 headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(req, timeout=60)
    assert refused.value.code == 413 and b"maximum allowed size" in refused.value.read()
    monkeypatch.setenv("WEMOE_MAX_UPLOAD_MB", "1")            # a file that reached us another way
    msg = explore.use_upload(STORE.resume(None).id, noise_png)[1]
    assert msg.startswith("⚠️") and "the limit is 1 MB: upload a smaller image" in msg


def test_image_pixels_are_enforced(live_app, tmp_path, monkeypatch):
    img = tmp_path / "wide.png"
    Image.new("RGB", (200, 100)).save(img)
    monkeypatch.setenv("WEMOE_MAX_IMAGE_PIXELS", "10000")     # read per request
    # Gradio checks an upload's folder against GRADIO_TEMP_DIR per request, process-wide: the
    # default app's folder, not the one `tight_app` sets (run alone, this module failed here).
    if LAUNCH_TEMP_DIR is None:
        monkeypatch.delenv("GRADIO_TEMP_DIR", raising=False)
    else:
        monkeypatch.setenv("GRADIO_TEMP_DIR", LAUNCH_TEMP_DIR)
    with pytest.raises(AppError, match=r"200 x 100 pixels; the limit is 10,000 pixels: resize it"):
        Client(live_app, verbose=False).predict(handle_file(str(img)), api_name="/predict")


def test_steps_limit_in_the_page(pool, monkeypatch):
    monkeypatch.setenv("WEMOE_MAX_STEPS", "50")
    sid = STORE.resume(None).id
    msg = callbacks.start(sid, "tiny8", pool.tasks[:2], "wemoe", *values_for(pool, "wemoe", steps=51))[0]
    assert msg.startswith("⚠️") and "steps=51 is over this server's limit; use at most 50" in msg
    from app.controls import LAYOUT, component
    steps = next(s for g, s in LAYOUT if s.name == "steps")
    assert component(steps, 10, 50).maximum == 50                # the slider stops there too


def test_one_running_job_per_visitor_through_the_api(live_app):
    client = Client(live_app, verbose=False)
    job = client.submit("wemoe", {}, ["scenes", "signs"], {"steps": 400}, api_name="/merge")
    until(lambda: job.status().code.name in ("ITERATING", "PROCESSING") and len(job.outputs()) > 0, what="job start")
    with pytest.raises(AppError, match=r"WEMoE #1 is still running: stop it or wait for it to finish \(at most 1 job per visitor\)"):
        client.predict("ties", api_name="/merge")
    other = Client(live_app, verbose=False).predict("ties", {}, ["scenes", "signs"], api_name="/merge")
    assert other["status"] == "done"                           # another visitor is not held up by the rule
    job.cancel()


def _blocking_work(started: threading.Event, release: threading.Event):
    def work(job):
        started.set()
        assert release.wait(60)
        return SimpleNamespace(stopped=False, error="")
    return work


def test_jobs_on_the_server_wait_in_line(monkeypatch):
    monkeypatch.setenv("WEMOE_MAX_JOBS", "1")
    monkeypatch.setenv("WEMOE_MAX_JOBS_PER_SESSION", "2")
    jobs = JobManager()
    a_in, a_go, b_in, b_go = (threading.Event() for _ in range(4))
    a = jobs.submit("s-a", "WEMoE #1", ["x"], 10, _blocking_work(a_in, a_go))
    assert a_in.wait(30)
    b = jobs.submit("s-b", "WEMoE #1", ["x"], 10, _blocking_work(b_in, b_go))
    c = jobs.submit("s-b", "TIES #2", ["x"], 0, _blocking_work(threading.Event(), threading.Event()))
    until(lambda: b.progress.state == QUEUED and "waiting: 1 job(s) are using this server" in b.progress.message)
    assert a.progress.state == RUNNING and not b_in.is_set()
    c.stop()                                                    # a queued job can be stopped before it starts
    assert c.done.wait(30) and c.progress.state == STOPPED and c.progress.message == "stopped before it started"
    d = jobs.submit("s-b", "Average #3", ["x"], 0, lambda j: SimpleNamespace(stopped=False, error=""))
    with pytest.raises(JobRefused, match=r"WEMoE #1 is still running.*at most 2 jobs per visitor"):
        jobs.submit("s-b", "Average #4", ["x"], 0, lambda j: None)    # b and d are alive: a third is refused
    a_go.set()
    assert b_in.wait(30)                                        # the line moves on
    b_go.set()
    for j in (a, b, d):
        assert j.done.wait(30) and j.progress.state == DONE


def test_job_wall_time(pool, monkeypatch):
    monkeypatch.setenv("WEMOE_JOB_TIMEOUT_S", "1")
    sid = STORE.resume(None).id
    assert callbacks.start(sid, "tiny8", pool.tasks[:2], "wemoe", *values_for(pool, "wemoe", steps=2000))[0].startswith("Started")
    s = STORE.get(sid)
    job = JOBS.get(s.id, s.job_id)
    assert job.done.wait(240) and job.progress.state == STOPPED
    assert "reached the time limit (1 s)" in job.progress.message and "keeps what it learned" in job.progress.message
    assert 0 < s.model(None).steps_done < 2000


def test_queue_length(tight_app, monkeypatch, tmp_path):
    """Four predictions run (the explain limit), one waits, the next is turned away."""
    inside, release, n = threading.Semaphore(0), threading.Event(), []
    real = api.ask

    def slow_ask(*a, **k):
        n.append(1)
        inside.release()
        assert release.wait(120)
        return real(*a, **k)
    monkeypatch.setattr(api, "ask", slow_ask)
    img = tmp_path / "q.png"
    Image.new("RGB", (16, 16)).save(img)
    clients = [Client(tight_app.url, verbose=False) for _ in range(6)]
    jobs = []
    for c in clients[:4]:                   # one at a time: each leaves the queue before the next comes
        jobs.append(c.submit(handle_file(str(img)), api_name="/predict"))
        assert inside.acquire(timeout=60)
    waiting = clients[4].submit(handle_file(str(img)), api_name="/predict")
    until(lambda: waiting.status().code.name == "IN_QUEUE", what="the fifth request to queue")
    with pytest.raises(Exception, match=r"Queue is full"):
        clients[5].predict(handle_file(str(img)), api_name="/predict")
    release.set()
    assert all(len(j.result(timeout=120)["predictions"]) == 8 for j in [*jobs, waiting])


def test_uploaded_files_are_deleted_after_their_time(tight_app, tmp_path):
    img = tmp_path / "mine.png"
    Image.new("RGB", (12, 12), (1, 2, 3)).save(img)
    Client(tight_app.url, verbose=False).predict(handle_file(str(img)), api_name="/predict")
    uploaded = [p for p in tight_app.files.rglob("mine.png")]
    assert uploaded, "the upload should land in the app's temporary folder"
    until(lambda: not any(p.exists() for p in uploaded), timeout=30, what="deletion of the upload")


def test_models_per_visitor_and_visitors(monkeypatch, tmp_path):
    monkeypatch.setenv("WEMOE_MAX_MODELS", "2")
    s = Session("s-" + "a" * 32)
    for i in range(3):
        s.add_model(lambda mid, n: SimpleNamespace(id=mid, label=f"M #{n}"))
    assert list(s.models) == ["m2", "m3"]                       # the oldest went
    monkeypatch.setenv("WEMOE_MAX_SESSIONS", "3")
    store = SessionStore()
    first = store.resume(None)
    folder = tmp_path / "export"
    folder.mkdir()
    first.export_dir = folder
    busy = store.resume(None)
    monkeypatch.setattr(JOBS, "busy_sessions", lambda: {busy.id})
    time.sleep(0.01)
    for _ in range(4):
        store.resume(None)
    assert len(store) == 3 and store.get(busy.id) is busy       # never the one whose job runs
    assert store.get(first.id) is None and not folder.exists()  # the oldest went, with its files


def test_launch_settings_follow_the_limits(tiny8_dir, monkeypatch):
    from app.ui import build_demo, launch_options

    for k, v in {"WEMOE_MAX_UPLOAD_MB": "3", "WEMOE_MAX_SESSIONS": "120", "WEMOE_QUEUE_SIZE": "9",
                 "WEMOE_FILES_TTL_S": "7200"}.items():
        monkeypatch.setenv(k, v)
    opts = launch_options()
    assert opts["max_file_size"] == "3mb" and opts["state_session_capacity"] == 240
    demo = build_demo()
    assert demo.delete_cache == (3600, 7200) and demo._queue.max_size == 9
