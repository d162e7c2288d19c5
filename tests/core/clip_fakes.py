"""Tiny stand-ins for the real CLIP pools: a registered tiny open_clip architecture, random
CLIP models, a fake Hugging Face cache laid out like the Hub's, and parquet test sets."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from wemoe_core.model import keys
from wemoe_core.model.towers import state_of

ARCH = "WEMoE-Test-Tiny"
# A 32-wide, 2-block ViT on 16-px images and a 1-block text tower: seconds on a CPU.
ARCH_CFG = {
    "embed_dim": 16, "quick_gelu": True,
    "vision_cfg": {"image_size": 16, "patch_size": 4, "width": 32, "layers": 2, "head_width": 8, "mlp_ratio": 2.0},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 4, "layers": 1},
}
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def register_arch(tmp_dir: Path) -> str:
    """Make ``ARCH`` known to open_clip (its model-config registry is global)."""
    import open_clip

    if open_clip.get_model_config(ARCH) is None:
        path = Path(tmp_dir) / f"{ARCH}.json"
        path.write_text(json.dumps(ARCH_CFG))
        open_clip.add_model_config(path)
    return ARCH


def tiny_clip(seed: int = 0):
    """A random tiny open_clip ``CLIP`` (QuickGELU), eval mode."""
    import open_clip

    torch.manual_seed(seed)
    return open_clip.create_model(ARCH, pretrained=None, force_quick_gelu=True).eval()


def fake_repo(cache: Path, repo: str, files: dict[str, bytes], repo_type: str = "model", ref: str = "main",
              commit: str = COMMIT) -> Path:
    """Write ``files`` into ``cache`` exactly where huggingface_hub keeps a downloaded repo (at
    the revision ``ref``, e.g. ``refs/convert/parquet`` for the Hub's parquet conversion)."""
    folder = Path(cache) / f"{repo_type}s--{repo.replace('/', '--')}"
    snap = folder / "snapshots" / commit
    for name, data in files.items():
        (snap / name).parent.mkdir(parents=True, exist_ok=True)
        (snap / name).write_bytes(data)
    (folder / "refs" / ref).parent.mkdir(parents=True, exist_ok=True)
    (folder / "refs" / ref).write_text(commit)
    return snap


def safetensors_bytes(state: dict, tmp: Path, metadata: dict | None = None) -> bytes:
    path = Path(tmp) / "_tmp.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(path), metadata=metadata)
    data = path.read_bytes()
    path.unlink()
    return data


def hf_vision_files(state: dict, tmp: Path, *, with_projection: bool = False) -> dict[str, bytes]:
    """A Hugging Face ``CLIPVisionModel`` repo (config.json + model.safetensors) holding the
    open_clip tower ``state`` (its projection dropped unless asked)."""
    hf = keys.open_clip_to_hf(state)
    if not with_projection:
        hf.pop("visual_projection.weight", None)
    v = ARCH_CFG["vision_cfg"]
    config = {"model_type": "clip_vision_model", "hidden_size": v["width"], "num_hidden_layers": v["layers"],
              "num_attention_heads": v["width"] // v["head_width"], "intermediate_size": int(v["width"] * v["mlp_ratio"]),
              "image_size": v["image_size"], "patch_size": v["patch_size"], "projection_dim": ARCH_CFG["embed_dim"]}
    return {"config.json": json.dumps(config).encode(), "model.safetensors": safetensors_bytes(hf, tmp)}


def perturbed(state: dict, seed: int, noise: float = 0.05) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {k: v + noise * torch.randn(v.shape, generator=g) for k, v in state.items()}


def png(seed: int, size: int = 20) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def parquet_bytes(labels: list[int], tmp: Path, row_group_size: int = 4, image: str = "image",
                  label: str = "label") -> bytes:
    """A Hub-style parquet test split: ``image`` = {bytes, path}, ``label`` = int (column names as given)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = [{"bytes": png(i), "path": f"{i}.png"} for i in range(len(labels))]
    table = pa.table({image: images, label: labels})
    path = Path(tmp) / "_tmp.parquet"
    pq.write_table(table, path, row_group_size=row_group_size)
    data = path.read_bytes()
    path.unlink()
    return data


def vision_state(clip) -> dict:
    return state_of(clip.visual)
