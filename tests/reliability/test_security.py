"""Security: no unpickling without the operator's opt-in (and no payload runs even with it),
``weights_only=True`` on every ``torch.load``, local paths confined to their folders at the
server's door (the library takes the paths its caller gives), the server reads no file a visitor names, uploads and exports live in temporary folders that are
removed, and a Hugging Face token never reaches a log or a message."""
from __future__ import annotations

import ast
import json
import logging
import os
import pickle
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import torch

import wemoe_core as wc
from wemoe_core.sources import hub, paths
from wemoe_core.sources.pickled import PICKLE_ENV

from .conftest import SECRET

pytestmark = pytest.mark.timeout(300)
ROOT = Path(__file__).resolve().parents[2]
CODE_DIRS = ("app", "wemoe_core", "benchmarks", "scripts")


def _sources():
    files = [ROOT / "app.py"] + [p for d in CODE_DIRS for p in sorted((ROOT / d).rglob("*.py"))]
    return [(p, ast.parse(p.read_text(), filename=str(p))) for p in files if p.is_file()]


def _calls(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            f = node.func
            name = f"{getattr(f.value, 'id', '?')}.{f.attr}" if isinstance(f, ast.Attribute) else getattr(f, "id", "")
            yield name, {k.arg: k.value for k in node.keywords}, node


def test_every_torch_load_uses_weights_only():
    """Parsed, not grepped: every ``torch.load(...)`` (and open_clip's loader) passes
    ``weights_only=True``. The one exception is the opt-in stand-in unpickler of pickled.py,
    reached only after ``pickle_allowed()`` said yes (tested below)."""
    seen, unsafe = 0, []
    for path, tree in _sources():
        for name, kw, node in _calls(tree):
            if name in ("torch.load", "open_clip.load_checkpoint"):
                seen += 1
                ok = isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True
                opt_in = path.name == "pickled.py" and "pickle_module" in kw
                if not ok and not opt_in:
                    unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno}")
            if name in ("pickle.load", "pickle.loads", "joblib.load", "dill.load") or (
                    name.endswith(".load") and isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value):
                unsafe.append(f"{path.relative_to(ROOT)}:{node.lineno} {name}")
    assert seen >= 2 and not unsafe, unsafe


def test_nothing_in_the_app_opts_into_unpickling():
    for path, tree in _sources():
        if path.name == "pickled.py":
            continue
        for _, kw, node in _calls(tree):
            v = kw.get("allow_pickle")
            assert not (isinstance(v, ast.Constant) and v.value is True), f"{path}:{node.lineno}"
        assert PICKLE_ENV not in path.read_text() or "wemoe_core" in path.parts, path


class _Payload:
    """Unpickling this runs ``os.system`` (a classic malicious checkpoint)."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_malicious_pickle_never_runs(tmp_path, monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("WEMOE_MODEL_DIR", str(root))
    monkeypatch.delenv(PICKLE_ENV, raising=False)
    marker = tmp_path / "pwned"
    for name, dump, refusal in (
            ("evil.pt", lambda f: torch.save({"x": torch.zeros(1), "y": _Payload(marker)}, f),
             rf"would run code from the file.*{PICKLE_ENV}=1"),
            ("evil.bin", lambda f: pickle.dump(_Payload(marker), f), r"not a readable PyTorch checkpoint")):   # a bare pickle
        with open(root / name, "wb") as f:
            dump(f)
        with pytest.raises(ValueError, match=refusal):
            wc.load_vision(name)
        with pytest.raises(ValueError):                  # opted in: stand-ins, still no code
            wc.load_vision(name, allow_pickle=True)
        assert not marker.exists()


def _pool_file(folder: Path, name: str, model: str = "owner/ft", data="x/data") -> str:
    spec = {"arch": "ViT-B-32", "pretrained": "openai", "title": name,
            "tasks": [{"name": "a", "finetuned": model, "classnames": ["x"], "templates": ["{c}"],
                       "dataset": data if data != "x/data" else {"repo": data}}]}
    (folder / f"{name}.json").write_text(json.dumps(spec))
    return name


def test_local_paths_stay_in_their_folders_at_the_servers_door(tmp_path, monkeypatch):
    """A visitor names pools, and a pool names local files: the server uses a pool only when
    they lie inside $WEMOE_MODEL_DIR / $WEMOE_DATA_DIR (`../`, absolute paths elsewhere, symlinks
    leading out are refused, on the page, in the pool list and through /merge), and says so
    without naming the server's folders."""
    from app import callbacks

    models, data, outside, pools = (tmp_path / d for d in ("models", "data", "secret", "pools"))
    for d in (models, data, outside, pools):
        d.mkdir()
    (outside / "model.safetensors").write_bytes(b"x")
    (models / "escape").symlink_to(outside)
    (data / "escape").symlink_to(outside)
    for var, d in (("WEMOE_MODEL_DIR", models), ("WEMOE_DATA_DIR", data), ("WEMOE_POOL_DIR", pools)):
        monkeypatch.setenv(var, str(d))
    bad_paths = ("../secret", "../secret/model.safetensors", str(outside), "escape/model.safetensors",
                 "a/../../secret", "/etc/passwd")
    for i, bad in enumerate(bad_paths):
        for kind, name in (("model", _pool_file(pools, f"door-m{i}", model=bad)),
                           ("data", _pool_file(pools, f"door-d{i}", data=bad))):
            with pytest.raises(ValueError, match=rf"outside the server's {kind} folder \(\$WEMOE_{kind.upper()}_DIR\)") as e:
                callbacks.usable_pool(name)
            assert str(tmp_path) not in str(e.value) and bad not in str(e.value)
    callbacks._pools_cached.cache_clear()
    listed = callbacks.pools_status()[1]
    assert listed.count("cannot be used on this server") == 2 * len(bad_paths) and str(tmp_path) not in listed
    (models / "mine").mkdir()
    (data / "imgs").mkdir()
    from app import confine
    from wemoe_core.pools import load_pool

    confine.check_pool(load_pool(_pool_file(pools, "door-ok", model="mine", data="imgs")))   # inside: fine
    confine.check_pool(load_pool(_pool_file(pools, "door-hub", model="owner/ft")))         # a Hub id: fine


def test_the_library_takes_the_paths_it_is_given(tmp_path, monkeypatch):
    """Confinement is the server's: a Python caller (or the CLI) may load a checkpoint from an
    absolute path outside $WEMOE_MODEL_DIR, or `../` relative to it."""
    from safetensors.torch import save_file

    from wemoe_core.model.towers import VisionConfig, build_vision, state_of

    models, outside = tmp_path / "models", tmp_path / "elsewhere"
    models.mkdir()
    outside.mkdir()
    monkeypatch.setenv("WEMOE_MODEL_DIR", str(models))
    # 64-wide heads and QuickGELU: what load_vision assumes of a bare file
    tower = build_vision(VisionConfig(image_size=16, patch_size=8, width=32, layers=1, heads=1, output_dim=8,
                                      quick_gelu=True)).eval()
    save_file(state_of(tower), str(outside / "tower.safetensors"))
    x = torch.randn(2, 3, 16, 16)
    for given in (str(outside / "tower.safetensors"), "../elsewhere/tower.safetensors"):
        with torch.no_grad():
            torch.testing.assert_close(wc.load_vision(given)(x), tower(x), atol=0, rtol=0)
    assert paths.local_model_path(str(outside)) == outside


@pytest.mark.parametrize("target", ["/etc/hostname", "app/config.py", "{root}/app/config.py", "{root}/../../etc/passwd"])
def test_the_server_serves_no_file_a_visitor_names(live_app, target):
    url = live_app + "gradio_api/file=" + target.format(root=ROOT)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(url, timeout=30)
    assert refused.value.code in (403, 404)


def test_the_server_reads_no_file_a_request_names(live_app):
    """A hand-made request whose image 'file' is a server path is refused before our code runs."""
    body = json.dumps({"data": [{"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}, "", 5]}).encode()
    req = urllib.request.Request(live_app + "gradio_api/call/predict", data=body, headers={"Content-Type": "application/json"})
    event = json.loads(urllib.request.urlopen(req, timeout=30).read())["event_id"]
    stream = urllib.request.urlopen(live_app + "gradio_api/call/predict/" + event, timeout=60).read().decode()
    assert "event: error" in stream and "not uploaded by a user" in stream
    assert open("/etc/hostname").read().strip() not in stream.replace("/etc/hostname", "")


def test_exports_live_in_a_temporary_folder_removed_at_exit(tmp_path):
    code = ("from app.sessions import export_root\nr = export_root()\n(r / 'x.safetensors').write_bytes(b'1')\n"
            "print(r)\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    folder = Path(out.stdout.strip())
    assert out.returncode == 0 and folder.is_relative_to(Path(os.environ.get("TMPDIR", "/tmp")).resolve())
    assert not folder.exists()


def test_a_token_never_reaches_logs_or_messages(monkeypatch, caplog, tmp_path, tiny8_dir):
    """With HF_TOKEN set, go through everything that talks about the Hub or fails loudly: the
    pool list, a download that cannot happen, a refused probe, a failed job, an unexpected
    error; then the CLI in a process of its own with verbose logging."""
    from app import api, callbacks
    from app.jobs import JOBS
    from app.sessions import STORE
    from tests.app.test_callbacks import values_for
    from wemoe_core.pools import load_pool

    monkeypatch.setenv("HF_TOKEN", SECRET)
    monkeypatch.setenv("HUGGING_FACE_HUB_TOKEN", SECRET)
    caplog.set_level(logging.DEBUG)
    messages = [callbacks.pools_status()[1]]
    with pytest.raises(hub.HubUnavailable) as e:
        hub.download("tanganke/clip-vit-base-patch32_svhn", "config.json")
    messages.append(str(e.value))
    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    hub._probe_cache.clear()
    messages.append(str(hub.probe(timeout=1.0)))
    hub._probe_cache.clear()
    monkeypatch.undo()
    monkeypatch.setenv("HF_TOKEN", SECRET)
    pool = load_pool("tiny8")
    sid = STORE.resume(None).id
    messages.append(callbacks.start(sid, "tiny8", pool.tasks[:2], "wemoe", *values_for(pool, "wemoe", lr=1.0, steps=3))[0])
    s = STORE.get(sid)
    JOBS.get(s.id, s.job_id).done.wait(120)
    messages.append(callbacks.poll(sid, -1)[1])
    with pytest.raises(Exception) as e:
        api.guarded("test")(lambda: {}["boom"])()
    messages.append(str(e.value))
    env = {**os.environ, "HF_TOKEN": SECRET, "WEMOE_TINY8_DIR": str(tiny8_dir)}
    cli = subprocess.run([sys.executable, "-m", "wemoe_core", "-v", "pools"], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=240)
    assert cli.returncode == 0 and "tiny8" in cli.stdout
    everything = "\n".join([caplog.text, *messages, cli.stdout, cli.stderr])
    assert "unavailable" in everything and "failed unexpectedly; the server logged it" in everything
    assert SECRET not in everything and SECRET[3:20] not in everything
