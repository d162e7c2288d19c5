"""Pickled checkpoints (task_vectors' ``ImageEncoder`` files), only on explicit opt-in.

Unpickling can run arbitrary code, so ``torch.load`` is always called with
``weights_only=True`` first; plain state dicts load that way. A file that holds whole pickled
objects is refused unless the caller passes ``allow_pickle=True`` or the environment sets
``WEMOE_ALLOW_PICKLE=1``. With the opt-in, classes outside torch and a few builtins are replaced
by empty stand-in modules (so task_vectors' and open_clip 2.0.2's classes need not be
importable, and their code is not run); the tensors are then read off the rebuilt module tree.
This reduces, but does not remove, the risk: only opt in for files you trust.
"""
from __future__ import annotations

import logging
import os
import pickle
import types
from pathlib import Path

import torch
from torch import nn

from ..model.keys import StateDict

log = logging.getLogger(__name__)

PICKLE_ENV = "WEMOE_ALLOW_PICKLE"
# Classes and functions that are resolved for real; anything else becomes a stand-in.
_REAL_ROOTS = ("torch", "numpy", "_codecs", "copyreg")
_REAL_BUILTINS = {"set", "frozenset", "slice", "range", "complex", "bytearray", "dict", "list", "tuple",
                  "int", "float", "str", "bool", "object", "bytes"}
_REAL = {("collections", "OrderedDict"), ("collections", "defaultdict")}


class PickleRefused(ValueError):
    """A checkpoint needs unpickling (runs code) and nobody opted in."""


def pickle_allowed(allow_pickle: bool | None = None) -> bool:
    """The explicit argument wins; otherwise ``WEMOE_ALLOW_PICKLE=1`` opts in. Default: no."""
    if allow_pickle is not None:
        return bool(allow_pickle)
    return os.environ.get(PICKLE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


class _Stub(nn.Module):
    """Stand-in for a class we refuse to import: keeps the pickled attributes, runs no code."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:     # (dict, slots)
            state = {**(state[0] or {}), **(state[1] or {})}
        if isinstance(state, dict):
            nn.Module.__setstate__(self, state)
            for name in ("_parameters", "_buffers", "_modules"):
                self.__dict__.setdefault(name, {})
        else:
            self.__dict__["_stub_state"] = state


_STUBS: dict[tuple[str, str], type] = {}


def _stub_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _STUBS:
        _STUBS[key] = type(name, (_Stub,), {"__module__": f"wemoe_core.stub.{module}"})
    return _STUBS[key]


class _StubUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        root = module.split(".")[0]
        if root in _REAL_ROOTS or (module, name) in _REAL or (root == "builtins" and name in _REAL_BUILTINS):
            return super().find_class(module, name)
        log.debug("pickle: %s.%s replaced by a stand-in", module, name)
        return _stub_class(module, name)


_stub_pickle = types.ModuleType("wemoe_stub_pickle")
_stub_pickle.Unpickler = _StubUnpickler
_stub_pickle.load = lambda f, **kw: _StubUnpickler(f, **kw).load()


def _tensors_of(obj, label: str) -> StateDict:
    if isinstance(obj, nn.Module):
        return {k: v.detach() for k, v in obj.state_dict().items()}
    if isinstance(obj, dict):
        if "state_dict" in obj and isinstance(obj["state_dict"], dict):
            obj = obj["state_dict"]
        out = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
        if out:
            return out
    raise ValueError(f"{label} holds a {type(obj).__name__}, not a model or a state dict")


def load_torch(path: str | os.PathLike, *, allow_pickle: bool | None = None) -> StateDict:
    """Tensors of a ``torch.save`` file (.pt/.bin/.pth): safely (weights only) when it is a
    state dict, through stand-ins when it is a pickled object and the caller opted in."""
    label = Path(path).name
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        if "unsupported global" not in str(e).lower():      # not an object pickle: a damaged file
            raise ValueError(f"{label} is not a readable PyTorch checkpoint ({str(e).splitlines()[-3:]}); "
                             "re-download or re-export it") from None
        if not pickle_allowed(allow_pickle):
            raise PickleRefused(
                f"{label} is a pickled Python object (for instance a task_vectors ImageEncoder); loading it "
                f"would run code from the file. If you trust it, pass allow_pickle=True or set {PICKLE_ENV}=1; "
                "better, convert it once to safetensors.") from None
        log.warning("unpickling %s (opted in): only do this for files you trust", label)
        obj = _load_stubbed(path, label)
    except Exception as e:
        raise ValueError(f"{label} is not a readable PyTorch checkpoint ({type(e).__name__}: {e}); "
                         "re-download or re-export it") from None
    return _tensors_of(obj, label)


def _load_stubbed(path, label: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=False, pickle_module=_stub_pickle)
    except Exception as e:
        raise ValueError(f"{label} could not be unpickled ({type(e).__name__}: {e})") from None
