"""Vision towers from every supported checkpoint format, in open_clip's parameter names.

Formats:
- a Hub id of a Hugging Face ``CLIPVisionModel`` (``tanganke/clip-vit-base-patch32_svhn``:
  ``config.json`` + ``model.safetensors``), downloaded once into the Hugging Face cache;
- a local Hugging Face-format folder (``config.json`` + ``model.safetensors``, sharded or
  ``pytorch_model.bin``);
- a local safetensors file with open_clip names (a bare ``VisionTransformer``, a whole ``CLIP``,
  or a file written by :mod:`wemoe_core.sources.files`) or Hugging Face names;
- a local ``torch.save`` state dict (loaded with ``weights_only=True``), and task_vectors'
  pickled ``ImageEncoder`` files only on explicit opt-in (see :mod:`wemoe_core.sources.pickled`).

Hugging Face names are mapped by :func:`wemoe_core.model.keys.hf_to_open_clip`; transformers is never
imported. Local paths are read as given (relative ones from :func:`wemoe_core.sources.paths.model_root`);
a server confines its visitors' paths at its own door.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open

from ..model import keys
from ..model.keys import StateDict
from ..model.towers import VisionConfig, build_vision, check_pair, infer_config
from . import hub, paths
from .clip import OPEN_CLIP_WEIGHTS, weights_file
from .files import clear_errors as _clear_errors
from .pickled import load_torch

if TYPE_CHECKING:  # importing open_clip takes seconds: only where a tower is built
    from open_clip.transformer import VisionTransformer

log = logging.getLogger(__name__)

HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*$")
# Hugging Face omits fields equal to CLIPVisionConfig's defaults when it saves a config.
_HF_DEFAULTS = {"hidden_size": 768, "intermediate_size": 3072, "projection_dim": 512, "num_hidden_layers": 12,
                "num_attention_heads": 12, "image_size": 224, "patch_size": 32, "hidden_act": "quick_gelu"}
# open_clip names of the OpenAI architectures, by (width, layers, patch, image size).
KNOWN_ARCHS = {(768, 12, 32, 224): "ViT-B-32", (768, 12, 16, 224): "ViT-B-16", (1024, 24, 14, 224): "ViT-L-14"}


@dataclass
class Checkpoint:
    """A vision tower's tensors in open_clip names, with its architecture when the file says."""

    state: StateDict                # "proj" is missing for a Hugging Face CLIPVisionModel
    config: VisionConfig | None     # from config.json or our own metadata; None if unknown
    source: str                     # where it came from, for messages


_FILE_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".json")


def is_hub_id(source: str) -> bool:
    """``owner/name`` as the Hub spells repository ids (no ``..``, no leading ``/``, not a
    checkpoint file name such as ``sub/model.safetensors``)."""
    return (isinstance(source, str) and bool(_HUB_ID.match(source)) and ".." not in source
            and not source.lower().endswith(_FILE_SUFFIXES))


def arch_name(cfg: VisionConfig) -> str | None:
    """open_clip's name for an OpenAI CLIP architecture (``"ViT-B-32"``), or None."""
    return KNOWN_ARCHS.get((cfg.width, cfg.layers, cfg.patch_size, cfg.image_size))


def hf_config_to_vision(config: dict) -> VisionConfig:
    """A ``VisionConfig`` from a Hugging Face ``config.json`` (CLIPVisionConfig or CLIPConfig)."""
    inner = config.get("vision_config", config) if isinstance(config, dict) else None
    if not isinstance(inner, dict):
        raise ValueError("expected a JSON object (with a 'vision_config' object for a CLIPConfig)")
    v = {**_HF_DEFAULTS, **inner}
    width = v["hidden_size"]
    return VisionConfig(
        image_size=v["image_size"], patch_size=v["patch_size"], width=width, layers=v["num_hidden_layers"],
        heads=v["num_attention_heads"], mlp_ratio=v["intermediate_size"] / width,
        output_dim=config.get("projection_dim", v["projection_dim"]), quick_gelu=v["hidden_act"] == "quick_gelu",
    )


def _to_open_clip(state: StateDict, config: VisionConfig | None, label: str) -> Checkpoint:
    try:
        state = keys.hf_to_open_clip(state) if keys.is_hf_state(state) else keys.extract_vision(state)
    except KeyError as e:
        raise ValueError(f"{label}: {e.args[0]}") from None
    # Half-precision files are widened: merging arithmetic runs in float32.
    state = {k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v for k, v in state.items()}
    return Checkpoint(state, config, label)


def _read_safetensors_file(path: Path) -> tuple[StateDict, dict]:
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
        return load_file(str(path)), meta
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{path.name} is not a readable safetensors file ({e}); re-download or re-export it") from None


def _read_weights(path: Path, allow_pickle: bool | None) -> tuple[StateDict, dict]:
    if path.suffix == ".safetensors":
        return _read_safetensors_file(path)
    if path.name.endswith(".safetensors.index.json"):      # sharded Hugging Face checkpoint
        state: StateDict = {}
        for shard in _shards(path):
            state.update(_read_safetensors_file(shard)[0])
        return state, {}
    if path.suffix in (".pt", ".pth", ".bin", ".ckpt"):
        return load_torch(path, allow_pickle=allow_pickle), {}
    raise ValueError(f"{path.name}: unsupported checkpoint format; use safetensors, a Hugging Face folder "
                     "or a PyTorch state dict (.pt/.bin)")


def _shards(index: Path) -> list[Path]:
    """The shard files a ``model.safetensors.index.json`` names, each confined to its folder."""
    try:
        weight_map = json.loads(index.read_text()).get("weight_map")
    except (ValueError, AttributeError) as e:
        raise ValueError(f"{index.name} is not a valid shard index ({e}); re-download the checkpoint") from None
    if not isinstance(weight_map, dict) or not weight_map or not all(isinstance(f, str) for f in weight_map.values()):
        raise ValueError(f"{index.name} has no usable 'weight_map'; re-download the checkpoint")
    return [paths.confine(f, index.parent, what="shard") for f in sorted(set(weight_map.values()))]


def _folder_weights(folder: Path) -> Path:
    for name in ("model.safetensors", "model.safetensors.index.json", *OPEN_CLIP_WEIGHTS, "pytorch_model.bin"):
        if (folder / name).is_file():
            return folder / name
    raise ValueError(f"{folder} holds no checkpoint: expected model.safetensors (Hugging Face) or "
                     "open_clip_model.safetensors")


def _read_config(path: Path) -> VisionConfig | None:
    if not path.is_file():
        return None
    try:
        return sane_config(hf_config_to_vision(json.loads(path.read_text())), str(path))
    except (ValueError, KeyError, TypeError, AttributeError, ArithmeticError) as e:
        raise ValueError(f"{path} is not a valid CLIP config.json ({e})") from None


def _meta_config(meta: dict) -> VisionConfig | None:
    if "vision_config" not in meta:
        return None
    try:
        return sane_config(VisionConfig.from_dict(json.loads(meta["vision_config"])), "the file's metadata")
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise ValueError(f"the file's metadata holds no valid vision_config ({e}); re-export it") from None


# Bounds far beyond any CLIP tower (ViT-bigG: width 1664, 48 layers): a config outside them is
# damaged or hostile, and building even an empty (meta) model of it could take forever.
_LIMITS = {"image_size": (1, 8192), "patch_size": (1, 1024), "width": (1, 16384), "layers": (1, 256),
           "heads": (1, 1024), "mlp_ratio": (1e-3, 64.0), "output_dim": (1, 65536)}


def sane_config(cfg: VisionConfig, label: str) -> VisionConfig:
    """``cfg`` if every field is a number within generous bounds, else a ValueError."""
    for name, (lo, hi) in _LIMITS.items():
        v = getattr(cfg, name)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not lo <= v <= hi:
            raise ValueError(f"{label}: {name}={v!r} is not a plausible vision tower setting (expected {lo}..{hi})")
    if cfg.patch_size > cfg.image_size or cfg.width % cfg.heads:
        raise ValueError(f"{label}: patch_size {cfg.patch_size} / image_size {cfg.image_size} / width "
                         f"{cfg.width} / heads {cfg.heads} do not fit together")
    return cfg


def read_local(path: Path, *, allow_pickle: bool | None = None) -> Checkpoint:
    """A checkpoint from a local file or folder (see the module docstring)."""
    with _clear_errors(Path(path).name):
        config = None
        if path.is_dir():
            config = _read_config(path / "config.json")
            path = _folder_weights(path)
        state, meta = _read_weights(path, allow_pickle)
        return _to_open_clip(state, config or _meta_config(meta), str(path))


def read_hub(repo: str) -> Checkpoint:
    """A Hugging Face ``CLIPVisionModel`` (or ``CLIPModel``) from the Hub, cached locally."""
    config = _read_config(Path(hub.download(repo, "config.json")))
    weights = Path(hub.download_first(repo, HF_WEIGHTS))
    state, _ = _read_weights(weights, allow_pickle=False)
    return _to_open_clip(state, config, repo)


def locate(source: str | Path, root: str | Path | None = None) -> tuple[str, Path | str]:
    """``("local", path)`` for an existing path (absolute, or relative to ``root``, default
    :func:`wemoe_core.sources.paths.model_root`), else ``("hub", id)`` for a Hub id; a missing
    local path raises a FileNotFoundError that says where it was looked up."""
    source_s = str(source)
    try:
        return "local", paths.local_model_path(source_s, root)
    except FileNotFoundError:
        if is_hub_id(source_s):
            return "hub", source_s
        raise


def read_checkpoint(source: str | Path, *, allow_pickle: bool | None = None, root: str | Path | None = None) -> Checkpoint:
    """Tensors (open_clip names) of a Hub id or a local path (see :func:`locate`); a local path
    of the same name wins over a Hub id."""
    kind, where = locate(source, root)
    return read_local(where, allow_pickle=allow_pickle) if kind == "local" else read_hub(where)


def hub_files(source: str) -> list[tuple[str, tuple[str, ...]]]:
    """What a Hub source needs from the Hub: ``[(repo, alternative file names), ...]``."""
    return [(source, ("config.json",)), (source, HF_WEIGHTS)]


def expected_state(cfg: VisionConfig) -> StateDict:
    """Names and shapes of a tower of this architecture (meta tensors: no memory)."""
    with torch.device("meta"):
        return build_vision(cfg).state_dict()


def check_vision(state: StateDict, cfg: VisionConfig, label: str) -> None:
    """A ValueError naming the first tensor that does not fit ``cfg`` (missing, extra, shape, NaN)."""
    check_pair(expected_state(cfg), state, label)


def with_projection(state: StateDict, proj: torch.Tensor | None, arch: str | None, label: str) -> StateDict:
    """``state`` with a ``proj`` tensor. A Hugging Face ``CLIPVisionModel`` has no visual
    projection (it lives in the full CLIP model): fine-tuning never touched it, so the
    pre-trained one is exact and its task vector is zero. It comes from ``proj`` when given,
    else from the pre-trained open_clip model of ``arch`` (``openai`` weights)."""
    if "proj" in state:
        return state
    if proj is None:
        if arch is None:
            raise ValueError(f"{label} has no visual projection (a CLIPVisionModel): pass proj= "
                             "(the pre-trained model's proj) or arch= (e.g. 'ViT-B-32')")
        proj = pretrained_projection(arch)
    return {**state, "proj": proj}


@functools.lru_cache(maxsize=4)
def pretrained_projection(arch: str, pretrained: str = "openai") -> torch.Tensor:
    """The visual projection (width, output_dim) of open_clip's pre-trained ``arch``."""
    return read_local(weights_file(arch, pretrained)).state["proj"].clone()


def tower_from_state(state: StateDict, cfg: VisionConfig) -> VisionTransformer:
    """A ``VisionTransformer`` that uses ``state``'s tensors as its parameters: built on the
    meta device and filled by assignment, so there is no random init and no copy (a
    memory-mapped safetensors file stays copy-on-write). Call :func:`check_vision` first."""
    with torch.device("meta"):
        model = build_vision(cfg)
    model.load_state_dict(state, strict=True, assign=True)
    return model.eval()


def load_vision(source: str | Path, *, arch: str | None = None, proj: torch.Tensor | None = None,
                allow_pickle: bool | None = None, root: str | Path | None = None) -> VisionTransformer:
    """An open_clip ``VisionTransformer`` (eval mode) from a Hub id, a Hugging Face-format
    folder, or an open_clip safetensors file.

    ``arch`` (``"ViT-B-32"``...) fixes the architecture, with QuickGELU as OpenAI CLIP needs;
    otherwise it is read from ``config.json``, our own metadata, or the tensors (64-wide heads
    and QuickGELU assumed). Checkpoints without a visual projection take ``proj``, or the
    pre-trained one of ``arch`` (see :func:`with_projection`). Local paths are read as given;
    relative ones from ``root`` (default ``$WEMOE_MODEL_DIR`` or ``./models``). Pickled files need
    ``allow_pickle=True`` or ``WEMOE_ALLOW_PICKLE=1``. Mismatches raise a ValueError naming the
    offending tensor.
    """
    ckpt = read_checkpoint(source, allow_pickle=allow_pickle, root=root)
    cfg = VisionConfig.from_open_clip(arch, quick_gelu=True) if arch else ckpt.config
    with _clear_errors(Path(ckpt.source).name):
        state = with_projection(ckpt.state, proj, arch or (cfg and arch_name(cfg)), ckpt.source)
        cfg = cfg or sane_config(infer_config(state, quick_gelu=True), ckpt.source)
        if not arch:   # the projection may come from elsewhere: its width decides
            proj_t = state["proj"]
            if proj_t.ndim != 2:
                raise ValueError(f"{ckpt.source}: 'proj' has shape {tuple(proj_t.shape)}, expected (width, output_dim)")
            cfg = sane_config(dataclasses.replace(cfg, output_dim=proj_t.shape[1]), ckpt.source)
        check_vision(state, cfg, ckpt.source)
        return tower_from_state(state, cfg)
