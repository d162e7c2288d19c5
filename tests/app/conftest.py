"""App fixtures: a Tiny-8 zoo (the shipped one when present, else a seconds-long mini build in a
temporary folder), and the app launched with ``python app.py`` on a free port.

tests/browser imports these fixtures too; pytest then holds two definitions of each, so the zoo
and the server are kept in ``_SHARED`` and made once per test session."""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.load import wait_ready

ROOT = Path(__file__).resolve().parents[2]
SHIPPED = ROOT / "assets" / "tiny8"
# What TINY8.md found to work on Tiny-8; written beside a mini zoo so the app offers a recipe.
RECIPES = {"recipes": {
    "wemoe": {"hparams": {"routing": "softmax", "upscale_attention": True},
              "adapt": {"steps": 200, "lr": 0.003, "objective": "infomax", "normalize": True, "balance": 1.0,
                        "logit_scale": 10.0, "grad_clip": 1.0}},
    "adamerging_layer": {"adapt": {"steps": 200, "lr": 0.003, "objective": "infomax", "normalize": True,
                                   "logit_scale": 10.0, "grad_clip": 1.0}},
}}


def build_mini_zoo(out: Path) -> Path:
    """A Tiny-8 zoo with the real builder, shrunk to seconds (accuracy is not the point here)."""
    from wemoe_core.pools.tiny8.build import QUICK, build

    cfg = dataclasses.replace(QUICK, pretrain_steps=2, pretrain_batch=16, train_per_task=32, test_per_task=32,
                              probe_steps=2, finetune_steps=2, finetune_batch=16, threads=1)
    build(out, cfg, report=lambda m: None)
    (out / "recipes.json").write_text(json.dumps(RECIPES))
    return out


_SHARED: dict = {}


@pytest.fixture(scope="session")
def tiny8_dir(tmp_path_factory) -> Path:
    """The Tiny-8 zoo the app tests use; sets WEMOE_TINY8_DIR for this process."""
    if "zoo" not in _SHARED:
        shipped = (SHIPPED / "manifest.json").is_file()
        _SHARED["zoo"] = SHIPPED if shipped else build_mini_zoo(tmp_path_factory.mktemp("tiny8"))
    path = _SHARED["zoo"]
    old = os.environ.get("WEMOE_TINY8_DIR")
    os.environ["WEMOE_TINY8_DIR"] = str(path)
    from wemoe_core.pools.registry import load_pool

    load_pool.cache_clear()
    yield path
    load_pool.cache_clear()
    if old is None:
        os.environ.pop("WEMOE_TINY8_DIR", None)
    else:
        os.environ["WEMOE_TINY8_DIR"] = old


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(url: str, proc: subprocess.Popen, timeout: float = 180.0) -> float:
    return wait_ready(url, proc, timeout)


@pytest.fixture(scope="session")
def app_url(tiny8_dir, tmp_path_factory) -> str:
    """``python app.py`` on a free port (GRADIO_SERVER_PORT), stopped at the end of the session."""
    if "server" not in _SHARED:
        _SHARED["server"] = start_app(tiny8_dir, tmp_path_factory.mktemp("app") / "app.log")
    proc, url = _SHARED["server"]
    _SHARED["users"] = _SHARED.get("users", 0) + 1
    yield url
    _SHARED["users"] -= 1
    if _SHARED["users"] == 0:
        del _SHARED["server"]
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def start_app(zoo: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {**os.environ, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port),
           "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "WEMOE_TINY8_DIR": str(zoo),
           "WEMOE_THREADS": "1", "WEMOE_MAX_STEPS": "500", "PYTHONUNBUFFERED": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(url, proc)
    except Exception:
        proc.kill()
        print(log.read_text()[-3000:])
        raise
    return proc, url
