"""Vision towers (open_clip's own ``VisionTransformer``), classification heads, and the
``MultiTaskModel`` that every merging method yields: one encoder, one frozen head per task."""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import keys
from .config import VisionConfig  # noqa: F401 - defined there (torch-free), used and re-exported here

if TYPE_CHECKING:  # importing open_clip takes seconds: only where a tower is built
    from open_clip.transformer import VisionTransformer


def build_vision(cfg: VisionConfig) -> VisionTransformer:
    """A randomly initialised open_clip ``VisionTransformer`` with this architecture."""
    from open_clip.transformer import QuickGELU, VisionTransformer  # here: importing open_clip takes seconds

    return VisionTransformer(
        image_size=cfg.image_size, patch_size=cfg.patch_size, width=cfg.width, layers=cfg.layers,
        heads=cfg.heads, mlp_ratio=cfg.mlp_ratio, output_dim=cfg.output_dim,
        act_layer=QuickGELU if cfg.quick_gelu else nn.GELU,
    )


def infer_config(state: keys.StateDict, *, heads: int | None = None, quick_gelu: bool = False) -> VisionConfig:
    """Read the architecture off a state dict. The head count is not visible in the weights:
    pass it, or CLIP's convention (64-dimensional heads) is assumed."""
    width, _, patch, _ = state["conv1.weight"].shape
    grid = int(round((state["positional_embedding"].shape[0] - 1) ** 0.5))
    hidden = state[keys.block_key(0, "mlp.c_fc.weight")].shape[0]
    return VisionConfig(
        image_size=grid * patch, patch_size=patch, width=width, layers=keys.num_blocks(state),
        heads=heads or max(1, width // 64), mlp_ratio=hidden / width,
        output_dim=state["proj"].shape[1], quick_gelu=quick_gelu,
    )


def vision_from_state(state: keys.StateDict, cfg: VisionConfig) -> VisionTransformer:
    model = build_vision(cfg)
    model.load_state_dict(state, strict=True)
    return model


def freeze(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class Heads(nn.Module):
    """Frozen per-task classifiers in CLIP's zero-shot form:
    ``logits = logit_scale * normalize(features) @ normalize(weights).T``."""

    def __init__(self, weights: Mapping[str, torch.Tensor], logit_scale: float = 100.0):
        super().__init__()
        self.tasks = list(weights)
        self.logit_scale = float(logit_scale)
        for i, (task, w) in enumerate(weights.items()):
            # Registered by position: task names such as "stanford-cars" are not valid attribute names.
            self.register_buffer(f"w{i}", F.normalize(w.detach().float(), dim=-1))

    def weight(self, task: str) -> torch.Tensor:
        return getattr(self, f"w{self.tasks.index(task)}")

    def forward(self, features: torch.Tensor, task: str, scale: float | None = None) -> torch.Tensor:
        s = self.logit_scale if scale is None else scale
        return s * F.normalize(features, dim=-1) @ self.weight(task).t()


class PerTaskEncoder(nn.Module):
    """One encoder per task, chosen by the task id: the "individual" baseline and the oracle."""

    needs_task = True

    def __init__(self, encoders: Mapping[str, nn.Module]):
        super().__init__()
        self.tasks = list(encoders)
        self.encoders = nn.ModuleList(encoders.values())

    def forward(self, images: torch.Tensor, task: str) -> torch.Tensor:
        return self.encoders[self.tasks.index(task)](images)


class MultiTaskModel(nn.Module):
    """What every method yields: an image encoder plus one frozen head per task."""

    def __init__(self, encoder: nn.Module, heads: Heads):
        super().__init__()
        self.encoder = encoder
        self.heads = freeze(heads)

    @property
    def tasks(self) -> list[str]:
        return self.heads.tasks

    def features(self, images: torch.Tensor, task: str | None = None) -> torch.Tensor:
        if getattr(self.encoder, "needs_task", False):
            return self.encoder(images, task)
        return self.encoder(images)

    def logits(self, images: torch.Tensor, task: str, scale: float | None = None) -> torch.Tensor:
        return self.heads(self.features(images, task), task, scale)

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


def copy_frozen(model: nn.Module) -> nn.Module:
    return freeze(copy.deepcopy(model))


def state_of(model: nn.Module | keys.StateDict) -> keys.StateDict:
    """A detached state dict from a module, or the dict itself."""
    if isinstance(model, nn.Module):
        return {k: v.detach() for k, v in model.state_dict().items()}
    return dict(model)


def materialise(src) -> keys.StateDict:
    """A state dict from a module, a dict, or a zero-argument callable that loads one (so that
    large checkpoints can be streamed one at a time)."""
    if isinstance(src, nn.Module):
        return state_of(src)
    if callable(src):
        return src()
    return dict(src)


class LazyStates(Sequence):
    """A sequence of state dicts loaded on access from modules, dicts or zero-argument loaders."""

    def __init__(self, sources: Sequence):
        self.sources = list(sources)

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, i):
        return materialise(self.sources[i])


def check_compatible(pretrained: keys.StateDict, finetuned: Sequence[keys.StateDict], names: Sequence[str] | None = None) -> None:
    """Raise a ValueError naming the first tensor where a fine-tuned model differs in
    architecture from the pre-trained one (missing, extra, wrong shape, non-finite)."""
    for t, ft in enumerate(finetuned):
        label = names[t] if names else f"model {t}"
        check_pair(pretrained, ft, label)


def check_pair(pretrained: keys.StateDict, ft: keys.StateDict, label: str) -> None:
    missing = sorted(set(pretrained) - set(ft))
    extra = sorted(set(ft) - set(pretrained))
    if missing:
        raise ValueError(f"{label} is incompatible: tensor {missing[0]!r} is missing "
                         f"({len(missing)} missing). Pick checkpoints of the same architecture.")
    if extra:
        raise ValueError(f"{label} is incompatible: unexpected tensor {extra[0]!r} "
                         f"({len(extra)} extra). Pick checkpoints of the same architecture.")
    for k, v in pretrained.items():
        if ft[k].shape != v.shape:
            raise ValueError(f"{label} is incompatible: tensor {k!r} has shape {tuple(ft[k].shape)}, "
                             f"the pre-trained model has {tuple(v.shape)}. Pick checkpoints of the same architecture.")
        if keys.is_float(ft[k]) and not torch.isfinite(ft[k]).all():
            raise ValueError(f"{label} is corrupt: tensor {k!r} holds NaN or infinite values. "
                             "Re-download or re-export that checkpoint.")
