"""The architecture of a CLIP-style vision tower, as a plain dataclass: torch-free, so a pool or a
page can describe its models without importing torch (``towers.build_vision`` builds one)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping


@dataclass(frozen=True)
class VisionConfig:
    """Architecture of a CLIP-style vision tower (the fields open_clip's config files use)."""

    image_size: int = 224     # input side, px
    patch_size: int = 32      # patch side, px (tokens = (image_size / patch_size)^2 + 1)
    width: int = 768          # token dimension d
    layers: int = 12          # transformer blocks
    heads: int = 12           # attention heads
    mlp_ratio: float = 4.0    # MLP hidden width = mlp_ratio * width
    output_dim: int = 512     # dimension after ``proj`` (the joint image-text space)
    quick_gelu: bool = False  # OpenAI CLIP weights were trained with QuickGELU

    @property
    def num_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1

    @classmethod
    def from_open_clip(cls, name: str, *, quick_gelu: bool = True) -> "VisionConfig":
        """Config of an open_clip architecture such as ``"ViT-B-32"``."""
        import open_clip

        cfg = open_clip.get_model_config(name)
        if cfg is None:
            raise ValueError(f"unknown open_clip architecture {name!r}; try 'ViT-B-32', 'ViT-B-16' or 'ViT-L-14'")
        v = cfg["vision_cfg"]
        width = v["width"]
        return cls(
            image_size=v["image_size"], patch_size=v["patch_size"], width=width, layers=v["layers"],
            heads=width // v.get("head_width", 64), mlp_ratio=v.get("mlp_ratio", 4.0),
            output_dim=cfg["embed_dim"], quick_gelu=quick_gelu,
        )

    @classmethod
    def from_dict(cls, d: Mapping) -> "VisionConfig":
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})

    def to_dict(self) -> dict:
        return asdict(self)
