"""Checkpoints we did not write: random bytes, damaged headers and configs, files that point
outside their folder, incompatible or NaN weights, and a Hub that cannot be reached. Every one
gets a ValueError (or HubUnavailable) that names the file and what to do; nothing crashes,
hangs or builds a model from absurd sizes."""
from __future__ import annotations

import json
import socket
import struct
import threading

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

import wemoe_core as wc
from tests.conftest import TINY, make_pool
from wemoe_core.model import keys
from wemoe_core.model.towers import state_of
from wemoe_core.sources import hub, files as io

pytestmark = pytest.mark.timeout(120)     # a hang is a failure, not a 10-minute wait
FUZZ = settings(max_examples=60, deadline=5000, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CLEAR = r"(re-download|re-export|export it again|pick|not a CLIP vision|unsupported checkpoint|pass proj|plausible|outside)"


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("WEMOE_MODEL_DIR", str(root))
    monkeypatch.delenv("WEMOE_ALLOW_PICKLE", raising=False)
    return root


@pytest.fixture(scope="module")
def tower_state():
    pre, _, _ = make_pool(num_tasks=1)
    return state_of(pre)


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    h = json.dumps(header).encode()
    return struct.pack("<Q", len(h)) + h + data


def _refused(name: str, **kw) -> str:
    with pytest.raises(ValueError) as info:
        wc.load_vision(name, **kw)
    return str(info.value)


# --- fuzz ------------------------------------------------------------------------------------
@FUZZ
@given(data=st.binary(max_size=4096), kind=st.sampled_from(["x.safetensors", "x.pt", "x.bin", "hf", "open_clip"]))
def test_fuzz_random_bytes_as_every_checkpoint_format(models, data, kind):
    if kind == "hf":                        # a Hugging Face folder: random config and weights
        folder = models / "hf"
        folder.mkdir(exist_ok=True)
        (folder / "config.json").write_bytes(data[: len(data) // 2])
        (folder / "model.safetensors").write_bytes(data[len(data) // 2:])
    elif kind == "open_clip":
        folder = models / "open_clip"
        folder.mkdir(exist_ok=True)
        (folder / "open_clip_model.safetensors").write_bytes(data)
    else:
        (models / kind).write_bytes(data)
    msg = _refused(kind if "." in kind else kind)
    assert msg and len(msg) < 2000


_dtype = st.sampled_from(["F32", "F16", "BF16", "I64", "U8", "BOOL", "F64", "XX", 3])
_shape = st.lists(st.integers(-2, 10**13), max_size=4)
_entry = st.fixed_dictionaries({"dtype": _dtype, "shape": _shape,
                                "data_offsets": st.lists(st.integers(-1, 10**9), min_size=0, max_size=3)})


@FUZZ
@given(header=st.dictionaries(st.sampled_from(["conv1.weight", "proj", "class_embedding", "x", "__metadata__"]),
                              _entry, max_size=4),
       meta=st.dictionaries(st.sampled_from(["vision_config", "format", "recipe"]),
                            st.sampled_from(["{}", "[]", "null", '{"width": 1e12}', '{"layers": 1000000000}', "x"]),
                            max_size=3),
       tail=st.binary(max_size=256))
def test_fuzz_safetensors_headers(models, header, meta, tail):
    if meta:
        header = {**header, "__metadata__": meta}
    path = models / "h.safetensors"
    path.write_bytes(_safetensors(header, tail))
    _refused("h.safetensors")
    for loader in (io.load_merged, io.load_wemoe):
        with pytest.raises(ValueError):
            loader(path)


_json = st.recursive(st.none() | st.booleans() | st.integers(-10**12, 10**12) | st.floats() | st.text(max_size=8),
                     lambda kids: st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=12), kids, max_size=4),
                     max_leaves=12)
_config = st.dictionaries(st.sampled_from(["hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                           "patch_size", "image_size", "projection_dim", "hidden_act", "vision_config"]),
                          _json, max_size=6)


@FUZZ
@given(config=_config | _json)
def test_fuzz_config_json_next_to_good_weights(models, tower_state, config):
    folder = models / "cfg"
    folder.mkdir(exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(tower_state, str(folder / "model.safetensors"))
    try:
        tower = wc.load_vision("cfg")
    except ValueError as e:
        assert str(e)
    else:                                   # a config that happens to describe these weights
        assert sum(p.numel() for p in tower.parameters()) == sum(v.numel() for v in tower_state.values())


# --- crafted ---------------------------------------------------------------------------------
def test_absurd_architectures_are_refused_before_building_anything(models, tower_state):
    folder = models / "huge"
    folder.mkdir()
    save_file(tower_state, str(folder / "model.safetensors"))
    for cfg, what in (({"num_hidden_layers": 10**9}, "num_hidden_layers|layers"), ({"hidden_size": 0}, "hidden_size|width|division"),
                      ({"vision_config": []}, "JSON object"), ({"patch_size": 10**6}, "patch_size")):
        (folder / "config.json").write_text(json.dumps(cfg))
        assert any(w in _refused("huge") for w in what.split("|")), cfg


def test_a_shard_index_cannot_read_outside_its_folder(models, tmp_path, tower_state):
    save_file(tower_state, str(tmp_path / "elsewhere.safetensors"))
    folder = models / "sharded"
    folder.mkdir()
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"proj": "../../elsewhere.safetensors"}}))
    assert "outside the allowed folder" in _refused("sharded")
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": [1, 2]}))
    assert "weight_map" in _refused("sharded")


def test_nan_and_incompatible_weights_through_every_door(models, tower_state):
    pre, fts, _ = make_pool(num_tasks=2)
    good = [state_of(f) for f in fts]
    nan = {**good[1], "ln_post.weight": torch.full_like(good[1]["ln_post.weight"], float("nan"))}
    bad_shape = {**good[1], keys.block_key(1, "mlp.c_fc.weight"): torch.zeros(7, TINY.width)}
    missing = {k: v for k, v in good[1].items() if k != "proj"}
    for other, message in ((nan, r"corrupt.*ln_post\.weight.*NaN"), (bad_shape, r"incompatible.*resblocks\.1\.mlp\.c_fc\.weight.*shape"),
                           (missing, r"incompatible.*'proj' is missing")):
        with pytest.raises(ValueError, match=message):
            wc.merge("task_arithmetic", state_of(pre), [good[0], other])
        with pytest.raises(ValueError, match=message):
            wc.upscale(pre, [good[0], other])
        with pytest.raises(ValueError, match=message):
            wc.build("ties", pre, [good[0], other], ["a", "b"])
    save_file(nan, str(models / "nan.safetensors"))
    io.save_merged(models / "ours-nan.safetensors", nan, TINY, io.Recipe(method="average"))
    assert "corrupt" in _refused("ours-nan.safetensors")


# --- the Hub ---------------------------------------------------------------------------------
@pytest.mark.timeout(30)
def test_offline_hub_is_reported_as_unavailable_at_once(models, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(hub.HubUnavailable, match=r"HF_HUB_OFFLINE.*Tiny-8"):
        wc.load_vision("tanganke/clip-vit-base-patch32_svhn", arch="ViT-B-32")


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers (a Hub that hangs)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(8)
    held, stop = [], threading.Event()

    def accept():
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(srv.accept()[0])
            except OSError:
                pass
    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield srv.getsockname()[1]
    stop.set()
    t.join()
    for c in held:
        c.close()
    srv.close()


@pytest.mark.timeout(30)
@pytest.mark.parametrize("how", ["refused", "silent"])
def test_unreachable_hub_is_reported_as_unavailable_without_hanging(models, monkeypatch, tmp_path, silent_server, how):
    from tests.app.conftest import free_port

    port = silent_server if how == "silent" else free_port()      # nothing listens on a fresh free port
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "offline", lambda: False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    hub._probe_cache.clear()
    with pytest.raises(hub.HubUnavailable, match=r"not reachable.*Run once with network access"):
        wc.load_vision("tanganke/clip-vit-base-patch32_svhn", arch="ViT-B-32")
    hub._probe_cache.clear()
