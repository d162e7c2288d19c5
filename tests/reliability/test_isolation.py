"""Two visitors at once against ``python app.py``: each has its own models, jobs and files; one
can never see, ask, stop or download the other's. (Browser sessions: see the id tests in
tests/app/test_callbacks.py; every page callback looks a session up by its unguessable id.)"""
from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

pytestmark = pytest.mark.timeout(400)


@pytest.fixture(scope="module")
def image(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("img") / "blue.png"
    Image.new("RGB", (24, 24), (20, 20, 220)).save(path)
    return str(path)


def test_two_concurrent_visitors_never_see_each_other(app_url, image):
    alice, bob = Client(app_url, verbose=False), Client(app_url, verbose=False)
    assert alice.session_hash != bob.session_hash
    job = alice.submit("wemoe", {}, ["scenes", "vehicles", "signs"], {"steps": 400}, api_name="/merge")
    results: dict = {}

    def bob_works():                                # at the same time, Bob merges and exports his own model
        results["merge"] = bob.predict("ties", {"density": 0.5}, ["digits", "textures"], api_name="/merge")
        results["files"] = bob.predict(api_name="/export")
    t = threading.Thread(target=bob_works)
    t.start()
    end = time.monotonic() + 120
    while not any(o.get("status") == "running" and o.get("step", 0) >= 1 for o in job.outputs()):
        assert time.monotonic() < end and not job.done(), "Alice's job did not start"
        time.sleep(0.1)
    t.join(240)
    assert results["merge"]["model"] == "TIES-merging #1" and results["merge"]["tasks"] == ["digits", "textures"]

    # Bob cannot reach Alice's job or model by its label, and his own ids are his own
    with pytest.raises(AppError, match=r"no model 'WEMoE #1' in this session; models: TIES-merging #1"):
        bob.predict(handle_file(image), "WEMoE #1", api_name="/predict")
    assert bob.predict(handle_file(image), "m1", api_name="/predict")["model"] == "TIES-merging #1"
    bob_files = {Path(p).name: Path(p) for p in results["files"]}
    assert set(bob_files) == {"ties-merging-1.safetensors", "ties-merging-1-recipe.json", "results.csv"}
    assert [r["model"] for r in csv.DictReader(bob_files["results.csv"].open())] == ["TIES-merging #1"]

    # Alice sees nothing of Bob's, and her job ran on, untouched by Bob's requests
    with pytest.raises(AppError, match=r"no model 'TIES-merging #1' in this session"):
        alice.predict(handle_file(image), "TIES-merging #1", api_name="/predict")
    with pytest.raises(AppError, match=r"no model in this session yet"):
        alice.predict(api_name="/export")
    assert not job.done()
    job.cancel()                                    # Alice leaves the stream: her job stops, keeping what it learned
    end = time.monotonic() + 180
    while True:
        try:
            out = alice.predict(handle_file(image), "WEMoE #1", api_name="/predict")
            break
        except AppError:                            # measuring accuracy after the stop
            assert time.monotonic() < end, "Alice's stopped job never produced her model"
            time.sleep(0.5)
    assert out["model"] == "WEMoE #1" and len(out["routing"]["experts"]) == 3
    alice_files = {Path(p).name for p in alice.predict(api_name="/export")}
    assert "wemoe-1.safetensors" in alice_files and not alice_files & {"ties-merging-1.safetensors"}
    # and Bob's view is unchanged
    assert bob.predict(handle_file(image), api_name="/predict")["model"] == "TIES-merging #1"
