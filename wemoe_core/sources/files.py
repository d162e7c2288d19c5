"""Saving and loading: safetensors only, with a JSON recipe in the metadata; writes are atomic.

Three kinds of files, told apart by the metadata key ``format``:
- ``wemoe-explorer/merged``: a plain vision tower (any static merge or adapted AdaMerging);
- ``wemoe-explorer/wemoe``: a whole WEMoE model (shared weights, task vectors, routers);
- ``wemoe-explorer/routers``: the routers alone, which re-attach to a WEMoE model built from the
  same pool (checked by a fingerprint of the frozen weights).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from .._version import __version__
from ..merging.wemoe import WEMoE, WEMoEParams, skeleton
from ..model.params import validate
from ..model.towers import VisionConfig, build_vision, state_of

FORMAT_KEY = "format"


@dataclass
class Recipe:
    """How a merged model was made: enough to make it again."""

    method: str
    hparams: dict[str, Any] = field(default_factory=dict)
    pool: str = ""
    tasks: list[str] = field(default_factory=list)
    models: dict[str, str] = field(default_factory=dict)   # "pretrained" / task -> source id
    adapt: dict[str, Any] | None = None
    seed: int | None = None
    version: str = __version__
    created: str = field(default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Recipe":
        d = json.loads(text)
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file (JSON, CSV) the same way as :func:`atomic_save`: a temporary file beside
    ``path``, flushed to disk, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_save(tensors: dict[str, torch.Tensor], path: str | os.PathLike, metadata: dict[str, str]) -> Path:
    """Write safetensors to a temporary file beside ``path`` and rename it into place, so a
    killed process never leaves a half-written file under the final name."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().contiguous().clone() for k, v in tensors.items()}, tmp, metadata=metadata)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


@contextlib.contextmanager
def clear_errors(label: str):
    """Turn anything a damaged or hostile file makes our parsing raise (KeyError, TypeError,
    struct errors...) into a ValueError naming the file; our own messages (ValueError, a
    missing file, a Hub that cannot be reached) pass unchanged."""
    try:
        yield
    except (ValueError, OSError, MemoryError):
        raise
    except Exception as e:  # noqa: BLE001 - any other parsing failure: the file is not usable
        raise ValueError(f"{label} is not a usable checkpoint ({type(e).__name__}: {e}); "
                         "re-download or re-export it") from None


def read_metadata(path: str | os.PathLike) -> dict[str, str]:
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        raise ValueError(f"{Path(path).name} is not a readable safetensors file ({e}); "
                         "export it again or pick another file") from None


def _load(path, expected: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    meta = read_metadata(path)
    if meta.get(FORMAT_KEY) != expected:
        raise ValueError(f"{Path(path).name} holds {meta.get(FORMAT_KEY) or 'no WEMoE Explorer model'}, "
                         f"not {expected}; pick the matching file")
    try:
        return load_file(str(path)), meta
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{Path(path).name} is not a readable safetensors file ({e}); "
                         "export it again or pick another file") from None


def save_merged(path, model: nn.Module | dict, config: VisionConfig, recipe: Recipe) -> Path:
    meta = {FORMAT_KEY: "wemoe-explorer/merged", "vision_config": json.dumps(config.to_dict()), "recipe": recipe.to_json()}
    return atomic_save(state_of(model), path, meta)


def load_merged(path) -> tuple[nn.Module, Recipe]:
    state, meta = _load(path, "wemoe-explorer/merged")
    with clear_errors(Path(path).name):
        from .checkpoints import sane_config

        model = build_vision(sane_config(VisionConfig.from_dict(json.loads(meta["vision_config"])), Path(path).name))
        model.load_state_dict(state, strict=True)
        return model.eval(), Recipe.from_json(meta["recipe"])


def save_wemoe(path, model: WEMoE, config: VisionConfig, recipe: Recipe) -> Path:
    meta = {
        FORMAT_KEY: "wemoe-explorer/wemoe", "vision_config": json.dumps(config.to_dict()),
        "wemoe_params": json.dumps(dataclasses.asdict(model.params)), "tasks": json.dumps(model.task_names),
        "recipe": recipe.to_json(),
    }
    return atomic_save(model.state_dict(), path, meta)


def load_wemoe(path) -> tuple[WEMoE, Recipe]:
    state, meta = _load(path, "wemoe-explorer/wemoe")
    with clear_errors(Path(path).name):
        from .checkpoints import sane_config

        cfg = sane_config(VisionConfig.from_dict(json.loads(meta["vision_config"])), Path(path).name)
        params = validate(WEMoEParams, json.loads(meta["wemoe_params"]))
        model = skeleton(cfg, params, json.loads(meta["tasks"]), state)
        model.load_state_dict(state, strict=True)
        return model.eval(), Recipe.from_json(meta["recipe"])


FINGERPRINT_STRIDE = 997


def fingerprint(model: WEMoE) -> str:
    """A cheap hash of the frozen weights (every 997th value of each tensor, plus shapes)."""
    return fingerprint_of((name, tuple(t.shape), t.detach().flatten()[::FINGERPRINT_STRIDE])
                          for name, t in model.state_dict().items() if "router" not in name)


def fingerprint_of(items) -> str:
    """The hash of ``fingerprint`` from (name, shape, sampled values) of each frozen tensor."""
    h = hashlib.sha256()
    for name, shape, sample in sorted(items, key=lambda item: item[0]):
        h.update(name.encode() + str(tuple(shape)).encode())
        h.update(sample.float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


def save_routers(path, model: WEMoE, recipe: Recipe, *, weights_fingerprint: str | None = None) -> Path:
    """The routers and the recipe; ``weights_fingerprint`` stands for the frozen weights when this
    process holds only part of them (sharded experts: ``running.expert_shard.full_fingerprint``)."""
    meta = {
        FORMAT_KEY: "wemoe-explorer/routers", "wemoe_params": json.dumps(dataclasses.asdict(model.params)),
        "tasks": json.dumps(model.task_names), "fingerprint": weights_fingerprint or fingerprint(model),
        "recipe": recipe.to_json(),
    }
    return atomic_save(model.router_state(), path, meta)


def load_routers(model: WEMoE, path) -> Recipe:
    """Load router weights into ``model``; refuses routers trained on another pool or layout."""
    state, meta = _load(path, "wemoe-explorer/routers")
    with clear_errors(Path(path).name):
        return _attach_routers(model, state, meta)


def _attach_routers(model: WEMoE, state: dict, meta: dict) -> Recipe:
    if json.loads(meta["tasks"]) != model.task_names:
        raise ValueError(f"these routers were trained for tasks {json.loads(meta['tasks'])}, "
                         f"this model has {model.task_names}; build the model from the same pool and tasks")
    saved = WEMoEParams(**json.loads(meta["wemoe_params"]))
    if dataclasses.replace(saved, seed=model.params.seed) != model.params:   # the init seed may differ
        raise ValueError("these routers belong to a WEMoE built with other settings "
                         f"({meta['wemoe_params']}); upscale with the same settings first")
    if meta["fingerprint"] != fingerprint(model):
        raise ValueError("these routers were trained on other model weights (fingerprint differs); "
                         "load the pool they were trained on")
    own = dict(model.named_parameters())
    wanted = {k for k in own if "router" in k}
    if wanted != set(state) or any(own[k].shape != state[k].shape for k in wanted):
        raise ValueError("the router checkpoint does not match this model's routers; export the routers again")
    with torch.no_grad():
        for k, v in state.items():
            own[k].copy_(v)
    return Recipe.from_json(meta["recipe"])
