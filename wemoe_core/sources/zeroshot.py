"""Zero-shot classification heads from class names and prompt templates, cached on disk.

CLIP's recipe: for each class, encode every template filled with the class name with the
pre-trained text tower, L2-normalise, average over templates, L2-normalise again. Logits are
``100 * normalise(image features) @ heads.T`` (see :class:`wemoe_core.model.towers.Heads`).
Heads are cached as safetensors under ``$WEMOE_CACHE_DIR/heads/<model>/<task>-<digest>``,
keyed by the model and by a digest of the class names and templates.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from ..model.towers import Heads
from . import paths
from .files import atomic_save, read_metadata

log = logging.getLogger(__name__)

CLIP_LOGIT_SCALE = 100.0
HEAD_FORMAT = "wemoe-explorer/zero-shot-head"
EncodeText = Callable[[torch.Tensor], torch.Tensor]        # token ids (n, context) -> features (n, d)
Tokenize = Callable[[list[str]], torch.Tensor]             # n strings -> token ids (n, context)
TaskText = tuple[Sequence[str], Sequence[str]]             # (class names, templates with "{c}")


def prompts(classnames: Sequence[str], templates: Sequence[str]) -> list[str]:
    """Class-major list of prompts: class 0 with every template, then class 1, ..."""
    return [t.replace("{c}", c) for c in classnames for t in templates]


@torch.no_grad()
def zero_shot_weights(encode_text: EncodeText, tokenize: Tokenize, classnames: Sequence[str],
                      templates: Sequence[str], *, batch_size: int = 256) -> torch.Tensor:
    """Head weights (classes, d): per class, the normalised mean of normalised template features."""
    if not classnames or not templates:
        raise ValueError("zero-shot heads need at least one class name and one template")
    texts = prompts(classnames, templates)
    feats = torch.cat([encode_text(tokenize(texts[i:i + batch_size])).float()
                       for i in range(0, len(texts), batch_size)])               # (C*T, d)
    feats = F.normalize(feats, dim=-1).view(len(classnames), len(templates), -1)  # (C, T, d)
    return F.normalize(feats.mean(dim=1), dim=-1)                                 # (C, d)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "model"


def cache_file(model_key: str, task: str, classnames: Sequence[str], templates: Sequence[str],
               cache_dir: str | Path | None = None) -> Path:
    """Where the head of ``task`` for ``model_key`` is cached."""
    digest = hashlib.sha256(json.dumps([list(classnames), list(templates)]).encode()).hexdigest()[:12]
    root = Path(cache_dir) if cache_dir else paths.cache_root() / "heads"
    return root / _slug(model_key) / f"{_slug(task)}-{digest}.safetensors"


def _read_cached(path: Path, n_classes: int) -> torch.Tensor | None:
    if not path.is_file():
        return None
    try:
        if read_metadata(path).get("format") != HEAD_FORMAT:
            return None
        w = load_file(str(path))["weight"]
    except (ValueError, KeyError, OSError):
        log.warning("ignoring an unreadable cached head at %s", path)
        return None
    return w if w.shape[0] == n_classes else None


def cached_heads(model_key: str, tasks: Mapping[str, TaskText], text_model: Callable[[], tuple[EncodeText, Tokenize]],
                 *, cache_dir: str | Path | None = None, logit_scale: float = CLIP_LOGIT_SCALE) -> Heads:
    """Heads of ``tasks`` (task -> (class names, templates)), read from the cache or built with
    the text tower that ``text_model()`` returns (called at most once, only on a cache miss)."""
    weights: dict[str, torch.Tensor] = {}
    encoder = None
    for task, (classnames, templates) in tasks.items():
        path = cache_file(model_key, task, classnames, templates, cache_dir)
        w = _read_cached(path, len(classnames))
        if w is None:
            encoder = encoder or text_model()
            log.info("building the zero-shot head of %s (%d classes x %d templates)", task, len(classnames), len(templates))
            w = zero_shot_weights(*encoder, classnames, templates)
            atomic_save({"weight": w}, path, {"format": HEAD_FORMAT, "model": model_key, "task": task,
                                               "classes": str(len(classnames))})
        weights[task] = w
    return Heads(weights, logit_scale=logit_scale)
