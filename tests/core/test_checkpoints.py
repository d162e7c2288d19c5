"""Checkpoint formats: the Hugging Face -> open_clip mapping is exact (against transformers'
own forward), open_clip files round-trip, bad files fail clearly, pickles need an opt-in, and
local paths stay inside the model folder."""
from __future__ import annotations

import json
import os
import sys
import types

import pytest
import torch
from safetensors.torch import save_file

from tests.core.clip_fakes import register_arch
from wemoe_core import load_vision
from wemoe_core.model import keys
from wemoe_core.model.towers import VisionConfig, build_vision, state_of
from wemoe_core.sources.checkpoints import read_checkpoint
from wemoe_core.sources.pickled import PICKLE_ENV, PickleRefused

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def arch(tmp_path_factory):
    return register_arch(tmp_path_factory.mktemp("open_clip_cfg"))


@pytest.fixture
def models(tmp_path, monkeypatch):
    root = tmp_path / "models"
    root.mkdir()
    monkeypatch.setenv("WEMOE_MODEL_DIR", str(root))
    monkeypatch.delenv(PICKLE_ENV, raising=False)
    return root


@pytest.fixture
def tower(arch):
    torch.manual_seed(0)
    return build_vision(VisionConfig.from_open_clip(arch)).eval()


def _images(n=3, size=16):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(5))


def _hf_model(with_projection: bool):
    from transformers import CLIPVisionConfig, CLIPVisionModel, CLIPVisionModelWithProjection

    cfg = CLIPVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                           patch_size=4, image_size=16, projection_dim=16, hidden_act="quick_gelu")
    torch.manual_seed(1)
    model = (CLIPVisionModelWithProjection if with_projection else CLIPVisionModel)(cfg).eval()
    with torch.no_grad():    # transformers initialises biases and norms to constants: randomise all
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_hf_folder_matches_transformers_forward(models):
    hf = _hf_model(with_projection=True)
    hf.save_pretrained(models / "hf_tiny")
    ours = load_vision("hf_tiny")
    x = _images()
    with torch.no_grad():
        want = hf(pixel_values=x).image_embeds
        got = ours(x)
    assert ours.proj.shape == (32, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


def test_hf_vision_model_without_projection_takes_given_proj(models):
    hf = _hf_model(with_projection=False)
    hf.save_pretrained(models / "hf_noproj")
    proj = torch.randn(32, 16)
    ours = load_vision("hf_noproj", proj=proj)
    x = _images()
    with torch.no_grad():
        want = hf(pixel_values=x).pooler_output @ proj       # post_layernorm(CLS) @ proj
        torch.testing.assert_close(ours(x), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="no visual projection"):
        load_vision("hf_noproj")


def test_open_clip_safetensors_bare_whole_clip_and_ours(models, tower, arch):
    """open_clip files carry no architecture: ``arch`` names it (or our own metadata does)."""
    x = _images()
    state = state_of(tower)
    save_file(state, str(models / "bare.safetensors"))
    save_file({"visual." + k: v for k, v in state.items()} | {"logit_scale": torch.ones(())}, str(models / "clip.safetensors"))
    cfg = VisionConfig.from_open_clip(arch)
    save_file(state, str(models / "ours.safetensors"), metadata={"vision_config": json.dumps(cfg.to_dict())})
    with torch.no_grad():
        want = tower(x)
        for name, a in (("bare.safetensors", arch), ("clip.safetensors", arch), ("ours.safetensors", None)):
            torch.testing.assert_close(load_vision(name, arch=a)(x), want, atol=0, rtol=0)


def test_state_dict_pt_loads_without_opt_in(models, tower):
    torch.save(state_of(tower), models / "sd.pt")
    assert set(read_checkpoint("sd.pt").state) == set(state_of(tower))


def test_incompatible_checkpoint_names_the_tensor(models, tower, arch):
    state = state_of(tower)
    state[keys.block_key(1, "mlp.c_fc.weight")] = torch.zeros(10, 32)
    save_file(state, str(models / "bad_shape.safetensors"))
    with pytest.raises(ValueError, match=r"transformer\.resblocks\.1\.mlp\.c_fc\.weight.*shape"):
        load_vision("bad_shape.safetensors", arch=arch)
    state = state_of(tower)
    del state[keys.block_key(0, "ln_2.bias")]
    save_file(state, str(models / "missing.safetensors"))
    with pytest.raises(ValueError, match=r"transformer\.resblocks\.0\.ln_2\.bias"):
        load_vision("missing.safetensors", arch=arch)


def test_corrupt_checkpoints_fail_clearly(models, tower, arch):
    state = state_of(tower)
    state["ln_post.weight"] = state["ln_post.weight"].clone().fill_(float("nan"))
    save_file(state, str(models / "nan.safetensors"))
    with pytest.raises(ValueError, match="corrupt.*ln_post.weight"):
        load_vision("nan.safetensors", arch=arch)
    good = models / "good.safetensors"
    save_file(state_of(tower), str(good))
    (models / "truncated.safetensors").write_bytes(good.read_bytes()[:1000])
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_vision("truncated.safetensors")
    (models / "junk.pt").write_bytes(os.urandom(256))
    with pytest.raises(ValueError, match="not a readable PyTorch checkpoint"):
        load_vision("junk.pt")
    save_file({"foo": torch.zeros(2)}, str(models / "other.safetensors"))
    with pytest.raises(ValueError, match="not a CLIP vision checkpoint"):
        load_vision("other.safetensors")


@pytest.fixture
def pickled_encoder(models, tower):
    """A task_vectors-style pickle: a whole ImageEncoder object of a module that is gone when
    the file is read (as task_vectors' ``src.modeling`` is for our users)."""
    mod = types.ModuleType("fake_task_vectors_modeling")

    class ImageEncoder(torch.nn.Module):
        def __init__(self, visual):
            super().__init__()
            self.model = torch.nn.Module()
            self.model.visual = visual
            self.train_preprocess = {"note": "stand-in for torchvision transforms"}

    ImageEncoder.__module__, ImageEncoder.__qualname__ = mod.__name__, "ImageEncoder"
    mod.ImageEncoder = ImageEncoder
    sys.modules[mod.__name__] = mod
    try:
        torch.save(ImageEncoder(tower), models / "finetuned.pt")
    finally:
        del sys.modules[mod.__name__]
    return "finetuned.pt"


def test_pickles_refused_by_default(pickled_encoder, monkeypatch):
    with pytest.raises(PickleRefused, match=PICKLE_ENV):
        load_vision(pickled_encoder)
    monkeypatch.setenv(PICKLE_ENV, "1")
    with pytest.raises(PickleRefused):
        load_vision(pickled_encoder, allow_pickle=False)   # the explicit argument wins


@pytest.mark.parametrize("how", ["argument", "env"])
def test_pickled_image_encoder_with_opt_in(pickled_encoder, tower, arch, monkeypatch, how):
    if how == "env":
        monkeypatch.setenv(PICKLE_ENV, "1")
    model = load_vision(pickled_encoder, arch=arch, allow_pickle=True if how == "argument" else None)
    x = _images()
    with torch.no_grad():
        torch.testing.assert_close(model(x), tower(x), atol=0, rtol=0)


def test_local_paths_are_taken_as_given(models, tmp_path, tower, arch):
    """The library reads the path a caller names, inside $WEMOE_MODEL_DIR or not (confining
    paths is the server's job, at its door: tests/reliability/test_security.py); relative
    paths are read relative to $WEMOE_MODEL_DIR."""
    outside = tmp_path / "outside.safetensors"
    save_file(state_of(tower), str(outside))
    x = _images()
    (models / "link.safetensors").symlink_to(outside)
    for given in (str(outside), "../outside.safetensors", "link.safetensors"):
        with torch.no_grad():
            torch.testing.assert_close(load_vision(given, arch=arch)(x), tower(x), atol=0, rtol=0)
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_vision("sub/missing.safetensors")
    inside = models / "ok.safetensors"
    save_file(state_of(tower), str(inside))
    assert load_vision("ok.safetensors") is not None and load_vision(str(inside)) is not None


def test_hf_config_defaults_and_arch_names():
    """transformers writes only non-default fields: an empty config is CLIP ViT-B/32."""
    from wemoe_core.sources.checkpoints import arch_name, hf_config_to_vision, is_hub_id

    cfg = hf_config_to_vision({"model_type": "clip_vision_model"})
    assert cfg == VisionConfig.from_open_clip("ViT-B-32", quick_gelu=True)
    full = {"projection_dim": 768, "vision_config": {"hidden_size": 1024, "num_hidden_layers": 24, "patch_size": 14,
                                                    "num_attention_heads": 16, "intermediate_size": 4096}}
    assert arch_name(hf_config_to_vision(full)) == "ViT-L-14"
    assert is_hub_id("tanganke/clip-vit-base-patch32_svhn") and is_hub_id("timm/vit_base_patch32_clip_224.openai")
    assert not any(map(is_hub_id, ["../x", "/abs/path", "a/b/c", "dir/model.safetensors", "./x"]))
