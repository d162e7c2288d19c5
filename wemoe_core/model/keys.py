"""Every fact about parameter names of the vision tower lives in this module.

The tower is open_clip's ``VisionTransformer``; its state-dict names are the lingua franca of
the library (``transformer.resblocks.{i}.mlp.c_fc.weight``). Hugging Face ``CLIPVisionModel``
names are mapped onto them here and nowhere else.
"""
from __future__ import annotations

import re

import torch

StateDict = dict[str, torch.Tensor]

BLOCK_PREFIX = "transformer.resblocks.{i}."
# The four tensors of a block's MLP (c_fc -> GELU -> c_proj) and of its attention.
MLP_LINEARS = ("mlp.c_fc", "mlp.c_proj")
MLP_KEYS = ("mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias")
ATTN_KEYS = ("attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias")
NORM_KEYS = ("ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias")
# Parameters outside the blocks: patch embedding, tokens, the norms around the blocks, projection.
SHARED_KEYS = (
    "conv1.weight", "class_embedding", "positional_embedding",
    "ln_pre.weight", "ln_pre.bias", "ln_post.weight", "ln_post.bias", "proj",
)
_BLOCK_RE = re.compile(r"^transformer\.resblocks\.(\d+)\.")


def block_key(i: int, name: str) -> str:
    """Full name of parameter ``name`` (e.g. ``"mlp.c_fc.weight"``) of block ``i``."""
    return BLOCK_PREFIX.format(i=i) + name


def mlp_keys(i: int) -> list[str]:
    return [block_key(i, k) for k in MLP_KEYS]


def attn_keys(i: int) -> list[str]:
    return [block_key(i, k) for k in ATTN_KEYS]


def block_index(key: str) -> int | None:
    """Index of the block a key belongs to, or None for shared keys."""
    m = _BLOCK_RE.match(key)
    return int(m.group(1)) if m else None


def num_blocks(state: StateDict) -> int:
    idx = [block_index(k) for k in state]
    return 1 + max(i for i in idx if i is not None)


def resolve_blocks(n_blocks: int, blocks: int | list[int] | None) -> list[int]:
    """Which blocks to upscale: None -> all, an int k -> the last k, a list -> those."""
    if blocks is None:
        return list(range(n_blocks))
    if isinstance(blocks, int):
        if not 1 <= blocks <= n_blocks:
            raise ValueError(f"blocks={blocks}: choose between 1 and {n_blocks} (the last k blocks)")
        return list(range(n_blocks - blocks, n_blocks))
    out = sorted(set(int(b) for b in blocks))
    if not out or out[0] < 0 or out[-1] >= n_blocks:
        raise ValueError(f"blocks={blocks}: indices must lie in 0..{n_blocks - 1}")
    return out


def is_float(t: torch.Tensor) -> bool:
    return torch.is_floating_point(t)


# --- Hugging Face CLIPVisionModel <-> open_clip ----------------------------------------------
_HF_SIMPLE = {
    "vision_model.embeddings.class_embedding": "class_embedding",
    "vision_model.embeddings.patch_embedding.weight": "conv1.weight",
    "vision_model.embeddings.position_embedding.weight": "positional_embedding",
    "vision_model.pre_layrnorm.weight": "ln_pre.weight",
    "vision_model.pre_layrnorm.bias": "ln_pre.bias",
    "vision_model.post_layernorm.weight": "ln_post.weight",
    "vision_model.post_layernorm.bias": "ln_post.bias",
}
_HF_BLOCK = {
    "self_attn.out_proj.weight": "attn.out_proj.weight",
    "self_attn.out_proj.bias": "attn.out_proj.bias",
    "layer_norm1.weight": "ln_1.weight",
    "layer_norm1.bias": "ln_1.bias",
    "layer_norm2.weight": "ln_2.weight",
    "layer_norm2.bias": "ln_2.bias",
    "mlp.fc1.weight": "mlp.c_fc.weight",
    "mlp.fc1.bias": "mlp.c_fc.bias",
    "mlp.fc2.weight": "mlp.c_proj.weight",
    "mlp.fc2.bias": "mlp.c_proj.bias",
}
_HF_LAYER = "vision_model.encoder.layers.{i}."
_HF_IGNORED = ("vision_model.embeddings.position_ids",)


_HF_BARE = ("embeddings.", "encoder.layers.", "pre_layrnorm.", "post_layernorm.")


def _strip_hf_prefix(state: StateDict) -> StateDict:
    """Accept CLIPVisionModel (``vision_model.*``; transformers 5 saves it without that prefix)
    and full CLIPModel checkpoints."""
    out = {}
    for k, v in state.items():
        if k.startswith("text_model.") or k in ("logit_scale", "text_projection.weight"):
            continue
        out["vision_model." + k if k.startswith(_HF_BARE) else k] = v
    return out


def hf_to_open_clip(state: StateDict) -> StateDict:
    """Map a Hugging Face CLIP vision state dict onto open_clip ``VisionTransformer`` names.

    q/k/v projections are concatenated into ``attn.in_proj_*`` (open_clip's fused layout), and the
    projection ``visual_projection.weight`` (out, in), when present, becomes ``proj`` (in, out).
    The mapping is exact: no tensor is changed except by concatenation or transposition.
    """
    state = _strip_hf_prefix(state)
    out: StateDict = {}
    used = set(_HF_IGNORED)
    for hf, oc in _HF_SIMPLE.items():
        if hf not in state:
            raise KeyError(f"not a CLIP vision checkpoint: tensor {hf!r} is missing")
        out[oc] = state[hf]
        used.add(hf)
    i = 0
    while (_HF_LAYER.format(i=i) + "mlp.fc1.weight") in state:
        pre = _HF_LAYER.format(i=i)
        for hf, oc in _HF_BLOCK.items():
            out[block_key(i, oc)] = state[pre + hf]
            used.add(pre + hf)
        for part in ("weight", "bias"):
            qkv = [pre + f"self_attn.{p}_proj.{part}" for p in "qkv"]
            out[block_key(i, f"attn.in_proj_{part}")] = torch.cat([state[k] for k in qkv], dim=0)
            used.update(qkv)
        i += 1
    if i == 0:
        raise KeyError("not a CLIP vision checkpoint: no 'vision_model.encoder.layers.*' tensors")
    if "visual_projection.weight" in state:
        out["proj"] = state["visual_projection.weight"].t().contiguous()
        used.add("visual_projection.weight")
    extra = sorted(set(state) - used)
    if extra:
        raise KeyError(f"unexpected tensors in CLIP vision checkpoint: {extra[:5]}")
    return out


def open_clip_to_hf(state: StateDict) -> StateDict:
    """Inverse of :func:`hf_to_open_clip` (used to write Hugging Face-style folders)."""
    out: StateDict = {hf: state[oc] for hf, oc in _HF_SIMPLE.items()}
    for i in range(num_blocks(state)):
        pre = _HF_LAYER.format(i=i)
        for hf, oc in _HF_BLOCK.items():
            out[pre + hf] = state[block_key(i, oc)]
        for part in ("weight", "bias"):
            q, k, v = state[block_key(i, f"attn.in_proj_{part}")].chunk(3, dim=0)
            for name, t in zip("qkv", (q, k, v)):
                out[pre + f"self_attn.{name}_proj.{part}"] = t.contiguous()
    if "proj" in state:
        out["visual_projection.weight"] = state["proj"].t().contiguous()
    return out


# --- open_clip checkpoints in other wrappings ------------------------------------------------
def is_hf_state(state: StateDict) -> bool:
    """True for Hugging Face CLIP names (``vision_model.*`` or, as transformers 5 saves a
    ``CLIPVisionModel``, ``embeddings.*``), False for open_clip names."""
    return any(k.startswith(("vision_model.", "embeddings.patch_embedding")) for k in state)


def extract_vision(state: StateDict) -> StateDict:
    """The vision tower of an open_clip-named state dict, whatever wraps it: a bare
    ``VisionTransformer`` (no prefix), a whole ``CLIP`` (``visual.``), task_vectors' pickled
    ``ImageEncoder`` (``model.visual.``), DataParallel (``module.``)."""
    anchors = [k[: -len("conv1.weight")] for k in state if k.endswith("conv1.weight")]
    prefixes = sorted((p for p in anchors if p + "class_embedding" in state), key=len)
    if not prefixes:
        raise KeyError("not a CLIP vision checkpoint: no 'conv1.weight' next to a 'class_embedding'")
    pre = prefixes[0]
    return {k[len(pre):]: v for k, v in state.items() if k.startswith(pre)}
