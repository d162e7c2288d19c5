"""Build the Tiny-8 zoo from scratch: pre-train one tower on a broad generated mixture, fit a
frozen cosine probe per task (the stand-in for CLIP's zero-shot heads), fine-tune one tower per
task, evaluate, and write safetensors plus a manifest.

Fine-tuning moves only the attention and MLP weights of the transformer blocks; the patch
embedding, tokens, all layer norms and the projection stay pre-trained. So a WEMoE that routes
attention and MLP one-hot to a task's expert is exactly that task's fine-tuned model.

Reproducible bit for bit for the same seed, torch version and thread count (``threads``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from ... import __version__
from ...models import VisionConfig, build_vision
from .pool import MEAN, STD

log = logging.getLogger(__name__)
BUILD_COMMAND = "python -m wemoe_core build-tiny8 --out assets/tiny8"


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    image_size: int = 64
    patch_size: int = 16            # 4 x 4 patches + CLS = 17 tokens
    width: int = 128
    layers: int = 4
    heads: int = 4
    output_dim: int = 128
    pretrain_steps: int = 2000      # pre-training on the generated mixture
    pretrain_batch: int = 128
    pretrain_lr: float = 1e-3
    train_per_task: int = 5000      # labeled train images per task (probes and fine-tuning)
    test_per_task: int = 500        # test images per task (evaluation and adaptation)
    logit_scale: float = 20.0       # of the frozen cosine heads
    probe_steps: int = 300
    finetune_steps: int = 200
    finetune_batch: int = 64
    finetune_lr: float = 3e-4
    threads: int = 2                # fixed: CPU reductions depend on the thread count

    def vision(self) -> VisionConfig:
        return VisionConfig(image_size=self.image_size, patch_size=self.patch_size, width=self.width,
                            layers=self.layers, heads=self.heads, mlp_ratio=4.0, output_dim=self.output_dim)


QUICK = BuildConfig(pretrain_steps=30, pretrain_batch=32, train_per_task=128, test_per_task=64,
                    probe_steps=20, finetune_steps=6, finetune_batch=32)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _cosine_lr(opt, steps: int, warmup: int):
    f = lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def pretrain(cfg: BuildConfig, report: Callable[[str], None]) -> nn.Module:
    """Multi-attribute classification on generic generated scenes (the 'web-scale' stand-in)."""
    from .tasks import PRETRAIN_ATTRIBUTES, pretrain_batch

    torch.manual_seed(cfg.seed)
    model = build_vision(cfg.vision())
    probes = nn.ModuleDict({a: nn.Linear(cfg.output_dim, len(names)) for a, names in PRETRAIN_ATTRIBUTES.items()})
    params = list(model.parameters()) + list(probes.parameters())
    opt = torch.optim.AdamW(params, lr=cfg.pretrain_lr, weight_decay=0.05)
    sched = _cosine_lr(opt, cfg.pretrain_steps, warmup=cfg.pretrain_steps // 20)
    rng = np.random.default_rng([cfg.seed, 1000])
    model.train()
    for step in range(cfg.pretrain_steps):
        images, attrs = pretrain_batch(rng, cfg.pretrain_batch)
        feats = model(to_input(torch.from_numpy(images)))
        loss = sum(F.cross_entropy(probes[a](feats), torch.from_numpy(y)) for a, y in attrs.items())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if step % 100 == 0 or step == cfg.pretrain_steps - 1:
            report(f"pre-train step {step + 1}/{cfg.pretrain_steps} loss {float(loss.detach()):.3f}")
    return model.eval()


@torch.no_grad()
def features(model: nn.Module, images: torch.Tensor, batch: int = 500) -> torch.Tensor:
    return torch.cat([model(to_input(images[i:i + batch])) for i in range(0, len(images), batch)])


def fit_probe(feats: torch.Tensor, labels: torch.Tensor, n_classes: int, cfg: BuildConfig) -> torch.Tensor:
    """A cosine classifier on frozen features: class weights (C, D), rows L2-normalised."""
    f = F.normalize(feats, dim=-1)
    w = torch.stack([f[labels == c].mean(0) for c in range(n_classes)]).clone().requires_grad_(True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(cfg.probe_steps):
        loss = F.cross_entropy(cfg.logit_scale * f @ F.normalize(w, dim=-1).t(), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return F.normalize(w.detach(), dim=-1)


def accuracy(model: nn.Module, head: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> float:
    pred = (F.normalize(features(model, images), dim=-1) @ head.t()).argmax(-1)
    return round(100.0 * float((pred == labels).float().mean()), 2)


def is_finetuned_param(name: str) -> bool:
    """Fine-tunes move the blocks' attention and MLP weights only."""
    return name.startswith("transformer.resblocks.") and (".attn." in name or ".mlp." in name)


def finetune(pre: nn.Module, head: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
             cfg: BuildConfig, task_index: int, report: Callable[[str], None]) -> nn.Module:
    model = build_vision(cfg.vision())
    model.load_state_dict(pre.state_dict())
    params = []
    for name, p in model.named_parameters():
        p.requires_grad_(is_finetuned_param(name))
        if p.requires_grad:
            params.append(p)
    opt = torch.optim.AdamW(params, lr=cfg.finetune_lr, weight_decay=0.0)
    sched = _cosine_lr(opt, cfg.finetune_steps, warmup=cfg.finetune_steps // 10)
    gen = torch.Generator().manual_seed(cfg.seed * 1000 + task_index)
    model.train()
    order = torch.randperm(len(images), generator=gen)
    pos = 0
    for step in range(cfg.finetune_steps):
        if pos + cfg.finetune_batch > len(order):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx = order[pos:pos + cfg.finetune_batch]
        pos += cfg.finetune_batch
        logits = cfg.logit_scale * F.normalize(model(to_input(images[idx])), dim=-1) @ head.t()
        loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    report(f"  fine-tuned {cfg.finetune_steps} steps, last loss {float(loss):.3f}")
    return model.eval()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def build(out: str | Path, cfg: BuildConfig = BuildConfig(), report: Callable[[str], None] = log.info) -> dict:
    """Build the whole zoo into ``out``; returns the manifest (also written as manifest.json)."""
    from .tasks import TASKS, generate

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    (out / "finetuned").mkdir(parents=True, exist_ok=True)
    pre = pretrain(cfg, report)
    heads, acc = {}, {"pretrained": {}, "individual": {}}
    finetuned = {}
    for i, (name, spec) in enumerate(TASKS.items()):
        tr_x, tr_y = (torch.from_numpy(a) for a in generate(name, "train", cfg.train_per_task, seed=cfg.seed))
        te_x, te_y = (torch.from_numpy(a) for a in generate(name, "test", cfg.test_per_task, seed=cfg.seed))
        heads[name] = fit_probe(features(pre, tr_x), tr_y, len(spec.classnames), cfg)
        acc["pretrained"][name] = accuracy(pre, heads[name], te_x, te_y)
        report(f"{name}: probe on pre-trained features {acc['pretrained'][name]:.1f} %")
        finetuned[name] = finetune(pre, heads[name], tr_x, tr_y, cfg, i, report)
        acc["individual"][name] = accuracy(finetuned[name], heads[name], te_x, te_y)
        report(f"{name}: fine-tuned {acc['individual'][name]:.1f} %")
    for kind in acc:
        acc[kind]["avg"] = round(sum(acc[kind].values()) / len(TASKS), 2)
    save_file({k: v.contiguous() for k, v in pre.state_dict().items()}, str(out / "pretrained.safetensors"))
    for name, model in finetuned.items():
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "finetuned" / f"{name}.safetensors"))
    save_file(heads, str(out / "heads.safetensors"))
    manifest = _manifest(out, cfg, TASKS, acc, time.perf_counter() - t0)
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return manifest


def _manifest(out: Path, cfg: BuildConfig, tasks, acc, wall: float) -> dict:
    files = sorted(p for p in out.rglob("*.safetensors"))
    return {
        "name": "tiny8",
        "description": "Eight tiny ViTs fine-tuned on procedural 64 px tasks that mirror the 8-task CLIP "
                       "merging benchmark; built offline on a CPU.",
        "architecture": "open_clip.transformer.VisionTransformer",
        "vision_config": cfg.vision().to_dict(),
        "logit_scale": cfg.logit_scale,
        "seed": cfg.seed,
        "finetuned_parameters": "transformer blocks: attention and MLP weights (embeddings, layer norms, proj frozen)",
        "tasks": [{"name": s.name, "title": s.title, "mirrors": s.mirrors, "classnames": list(s.classnames),
                   "description": s.description} for s in tasks.values()],
        "accuracy": acc,
        "build": dataclasses.asdict(cfg) | {"command": BUILD_COMMAND, "wall_s": round(wall, 1),
                                            "torch": torch.__version__, "wemoe_core": __version__,
                                            "python": platform.python_version()},
        "sha256": {str(p.relative_to(out)): _sha256(p) for p in files},
    }
