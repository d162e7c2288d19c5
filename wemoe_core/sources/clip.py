"""Pre-trained open_clip models (vision and text towers) and their image pre-processing.

``pretrained`` names where the weights come from:
- an open_clip tag of the architecture, such as ``"openai"`` (resolved through open_clip's own
  table to its Hugging Face repository, e.g. ``timm/vit_base_patch32_clip_224.openai``);
- ``"hf-hub:owner/name"``: a Hub repository with ``open_clip_model.safetensors``;
- a local open_clip checkpoint of the whole CLIP model (relative paths: from the model folder).
Downloads go through :mod:`wemoe_core.sources.hub` (cached; offline-safe).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import torch
from PIL import Image

from . import hub, paths

log = logging.getLogger(__name__)

OPEN_CLIP_WEIGHTS = ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")
HF_PREFIX = "hf-hub:"
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


def is_open_clip_tag(arch: str, pretrained: str) -> bool:
    import open_clip

    return pretrained in open_clip.list_pretrained_tags_by_model(arch)


def hub_files(arch: str, pretrained: str) -> list[tuple[str, tuple[str, ...]]]:
    """``[(repo, alternative file names)]`` the weights need from the Hub; empty if local."""
    import open_clip

    if pretrained.startswith(HF_PREFIX):
        return [(pretrained[len(HF_PREFIX):], OPEN_CLIP_WEIGHTS)]
    if is_open_clip_tag(arch, pretrained):
        hf = open_clip.get_pretrained_cfg(arch, pretrained).get("hf_hub", "")
        if not hf:
            raise ValueError(f"open_clip's {arch}/{pretrained} weights are not on the Hugging Face Hub")
        repo, name = os.path.split(hf)
        return [(repo, (name,) if name else OPEN_CLIP_WEIGHTS)]
    return []


def weights_file(arch: str, pretrained: str, root: str | Path | None = None) -> Path:
    """Local path of the weights (downloaded into the Hugging Face cache if needed)."""
    needs = hub_files(arch, pretrained)
    if needs:
        repo, names = needs[0]
        return Path(hub.download_first(repo, names))
    return paths.local_model_path(pretrained, root)


def load_open_clip(arch: str, pretrained: str = "openai", *, quick_gelu: bool = True,
                   root: str | Path | None = None) -> torch.nn.Module:
    """open_clip's ``CLIP`` model ``arch`` with the given pre-trained weights, frozen, eval mode.
    OpenAI weights need QuickGELU (``quick_gelu=True``), or outputs drift."""
    import open_clip

    path = weights_file(arch, pretrained, root)
    model = open_clip.create_model(arch, pretrained=None, force_quick_gelu=quick_gelu)
    try:
        open_clip.load_checkpoint(model, str(path), weights_only=True)
    except (RuntimeError, KeyError, ValueError) as e:
        raise ValueError(f"the weights in {path.name} do not fit open_clip's {arch}: {str(e)[:300]}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def preprocess_transform(arch: str, pretrained: str = "openai") -> Callable[[Image.Image], torch.Tensor]:
    """open_clip's validation transform for ``arch`` (resize, center crop, CLIP mean/std); no
    augmentation. Uses the pre-trained tag's settings when open_clip knows the tag."""
    import open_clip

    cfg = open_clip.get_pretrained_cfg(arch, pretrained) if is_open_clip_tag(arch, pretrained) else {}
    size = open_clip.get_model_config(arch)["vision_cfg"]["image_size"]
    return open_clip.image_transform(
        size, is_train=False, mean=cfg.get("mean", OPENAI_MEAN), std=cfg.get("std", OPENAI_STD),
        resize_mode=cfg.get("resize_mode", "shortest"), interpolation=cfg.get("interpolation", "bicubic"),
    )
