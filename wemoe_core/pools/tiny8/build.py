"""Build the Tiny-8 zoo from scratch: pre-train one tower on a broad generated mixture (generic
scenes plus each task's domain under coarse labels, as web data holds house numbers and road signs
captioned loosely), fit a frozen cosine head per task (the stand-in for CLIP's zero-shot heads),
fine-tune one tower per task, evaluate, and write safetensors plus a manifest.

Fine-tuning moves every weight, as CLIP's fine-tunes do, at a small learning rate, and keeps the
pre-trained features of generic reference images (a feature-preservation term, as in LwF-style
distillation). That term gives the tiny tower some of the weight disentanglement CLIP gets from
web-scale pre-training: a task vector moves its own task's features more than the others'
(2.3x against 1.2x without it), so task vectors add up.

Reproducible bit for bit for the same seed, torch version and thread count (``threads``).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import multiprocessing as mp
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..._version import __version__
from ...model.towers import VisionConfig, build_vision
from .pool import MEAN, STD

log = logging.getLogger(__name__)
BUILD_COMMAND = "python -m wemoe_core build-tiny8 --out assets/tiny8"


# Fine-tuning optimizers (a sweep knob): AdamW as CLIP's fine-tunes; SGD with momentum, whose
# updates follow the gradients' magnitudes (heavier-tailed task vectors; README, Tiny-8 sweep).
FINETUNE_OPTIMIZERS = {
    "adamw": torch.optim.AdamW,
    "sgd": lambda params, **kw: torch.optim.SGD(params, momentum=0.9, **kw),
}


@dataclass(frozen=True)
class BuildConfig:
    seed: int = 0
    image_size: int = 64
    patch_size: int = 16            # 4 x 4 patches + CLS = 17 tokens
    width: int = 128
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    output_dim: int = 128
    pretrain_steps: int = 2000      # pre-training on the generated mixture
    pretrain_batch: int = 128
    pretrain_lr: float = 1e-3
    pretrain_images: int = 32000    # generated once, then shuffled each epoch
    pretrain_task_images: int = 4000  # per task: images of each task's domain seen in pre-training...
    pretrain_coarse: int = 5        # ...labelled only with a coarse label (classes merged into this many groups)
    pretrain_task_weight: float = 1.0
    pretrain_act_l1: float = 0.0    # L1 penalty on the MLPs' hidden activations (sparse, selective units)
    pretrain_domain: bool = False   # also classify which domain (generic or one of the tasks) an image is from
    train_per_task: int = 5000      # labeled train images per task (probes and fine-tuning)
    test_per_task: int = 500        # test images per task (evaluation and adaptation)
    logit_scale: float = 20.0       # of the frozen cosine heads
    head_shots: int = 16            # heads = class means of this many pre-trained features per class
    probe_steps: int = 0            # > 0: then train the heads as cosine probes on all train images
    finetune_steps: int = 800
    finetune_batch: int = 64
    finetune_lr: float = 3e-4
    finetune_wd: float = 0.0
    finetune_params: str = "all"     # "blocks": attention + MLP weights; "all": every weight (CLIP's fine-tunes)
    finetune_other_lr: float = 1.0   # lr multiplier of every weight outside the MLPs (sweep knob; 1 = one lr)
    finetune_warmup: float = 0.1     # fraction of fine-tuning steps with a linear warm-up
    finetune_optim: str = "adamw"    # "adamw" (CLIP's fine-tunes) or "sgd" (momentum 0.9: updates follow the gradients' magnitudes)
    finetune_keep: float = 10.0      # weight of a feature-preservation term on reference images (0 = off)
    keep_generic: int = 2000         # reference images from the generic pre-training mixture...
    keep_domains: int = 0            # ...and this many per OTHER task domain (pre-training split)
    keep_batch: int = 64
    threads: int = 2                # of pre-training; fixed: CPU reductions depend on the thread count
    workers: int = 2                # processes fine-tuning tasks in parallel (one thread each)

    def __post_init__(self):
        if self.finetune_optim not in FINETUNE_OPTIMIZERS:
            raise ValueError(f"finetune_optim={self.finetune_optim!r}: choose one of {sorted(FINETUNE_OPTIMIZERS)}")

    def vision(self) -> VisionConfig:
        return VisionConfig(image_size=self.image_size, patch_size=self.patch_size, width=self.width,
                            layers=self.layers, heads=self.heads, mlp_ratio=self.mlp_ratio, output_dim=self.output_dim)


QUICK = BuildConfig(pretrain_steps=30, pretrain_batch=32, pretrain_images=512, pretrain_task_images=32,
                    train_per_task=128, test_per_task=64, finetune_steps=6, finetune_batch=32, keep_generic=64,
                    keep_batch=16)


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 (N, H, W, 3) -> normalised float (N, 3, H, W)."""
    x = images.permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _cosine_lr(opt, steps: int, warmup: int):
    f = lambda s: min(1.0, (s + 1) / max(1, warmup)) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))  # noqa: E731
    return torch.optim.lr_scheduler.LambdaLR(opt, f)


def coarse_label(labels: np.ndarray, classes: int, groups: int) -> np.ndarray:
    """Class c of ``classes`` -> group c * groups // classes (10 classes, 5 groups: pairs)."""
    return (labels * groups) // classes


def _task_mixture(cfg: BuildConfig):
    """Each task's domain at ``pretrain_task_images`` per task, with coarse labels: (images, task, group)."""
    from .tasks import TASKS, generate

    xs, ts, gs = [], [], []
    for i, name in enumerate(TASKS):
        x, y = generate(name, "pretrain", cfg.pretrain_task_images, seed=cfg.seed)
        xs.append(x)
        ts.append(np.full(len(y), i, np.int64))
        gs.append(coarse_label(y, len(TASKS[name].classnames), cfg.pretrain_coarse))
    return torch.from_numpy(np.concatenate(xs)), torch.from_numpy(np.concatenate(ts)), torch.from_numpy(np.concatenate(gs))


class _Sampler:
    """Endless shuffled index batches, reproducible from a generator."""

    def __init__(self, n: int, batch: int, gen: torch.Generator):
        self.n, self.batch, self.gen = n, batch, gen
        self.order, self.pos = torch.randperm(n, generator=gen), 0

    def next(self) -> torch.Tensor:
        if self.pos + self.batch > self.n:
            self.order, self.pos = torch.randperm(self.n, generator=self.gen), 0
        idx = self.order[self.pos:self.pos + self.batch]
        self.pos += self.batch
        return idx


def pretrain(cfg: BuildConfig, report: Callable[[str], None]) -> nn.Module:
    """Multi-attribute classification on generic generated scenes (the 'web-scale' stand-in),
    optionally mixed with images of each task's domain under coarse labels only (as web data
    holds house numbers and road signs, captioned loosely, not the benchmark's classes)."""
    from .tasks import PRETRAIN_ATTRIBUTES, TASKS, pretrain_batch

    torch.manual_seed(cfg.seed)
    model = build_vision(cfg.vision())
    probes = nn.ModuleDict({a: nn.Linear(cfg.output_dim, len(names)) for a, names in PRETRAIN_ATTRIBUTES.items()})
    task_probe = nn.Linear(cfg.output_dim, len(TASKS) * cfg.pretrain_coarse)
    domain_probe = nn.Linear(cfg.output_dim, len(TASKS) + 1)
    params = (list(model.parameters()) + list(probes.parameters()) + list(task_probe.parameters())
              + list(domain_probe.parameters()))
    acts: list[torch.Tensor] = []
    if cfg.pretrain_act_l1 > 0:
        for block in model.transformer.resblocks:
            block.mlp.gelu.register_forward_hook(lambda m, i, o: acts.append(o))
    opt = torch.optim.AdamW(params, lr=cfg.pretrain_lr, weight_decay=0.05)
    sched = _cosine_lr(opt, cfg.pretrain_steps, warmup=cfg.pretrain_steps // 20)
    images, attrs = pretrain_batch(np.random.default_rng([cfg.seed, 1000]), cfg.pretrain_images)
    images, attrs = torch.from_numpy(images), {a: torch.from_numpy(y) for a, y in attrs.items()}
    mixed = cfg.pretrain_task_images > 0
    if mixed:
        t_images, t_task, t_group = _task_mixture(cfg)
    report(f"generated {len(images)} pre-training images" + (f" + {len(t_images)} of the tasks' domains" if mixed else ""))
    gen = torch.Generator().manual_seed(cfg.seed)
    generic = _Sampler(len(images), cfg.pretrain_batch, gen)
    domains = _Sampler(len(t_images), cfg.pretrain_batch, gen) if mixed else None
    model.train()
    for step in range(cfg.pretrain_steps):
        idx = generic.next()
        x = images[idx]
        if mixed:
            jdx = domains.next()
            x = torch.cat([x, t_images[jdx]])
        acts.clear()
        feats = model(to_input(x))
        g = feats[:len(idx)]
        loss = sum(F.cross_entropy(probes[a](g), y[idx]) for a, y in attrs.items())
        if mixed:
            z = task_probe(feats[len(idx):]).view(len(jdx), len(TASKS), cfg.pretrain_coarse)
            z = z[torch.arange(len(jdx)), t_task[jdx]]
            loss = loss + cfg.pretrain_task_weight * F.cross_entropy(z, t_group[jdx])
            if cfg.pretrain_domain:
                dom = torch.cat([torch.zeros(len(idx), dtype=torch.long), t_task[jdx] + 1])
                loss = loss + F.cross_entropy(domain_probe(feats), dom)
        if acts:
            loss = loss + cfg.pretrain_act_l1 * sum(a.abs().mean() for a in acts) / len(acts)
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
    """A frozen cosine head (C, D), rows L2-normalised. Like CLIP's zero-shot heads it is a set of
    class prototypes: the mean normalised pre-trained feature of ``head_shots`` images per class
    (weak on purpose, as zero-shot heads are), optionally refined as a probe (``probe_steps``)."""
    f = F.normalize(feats, dim=-1)
    shots = cfg.head_shots or len(labels)
    w = torch.stack([f[labels == c][:shots].mean(0) for c in range(n_classes)]).clone().requires_grad_(True)
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


def is_finetuned_param(name: str, which: str = "blocks") -> bool:
    """Which weights a fine-tune moves: "blocks" = the blocks' attention and MLP weights only;
    "all" = every weight of the tower (as CLIP's fine-tunes do)."""
    if which == "all":
        return True
    if which == "mlp":
        return name.startswith("transformer.resblocks.") and ".mlp." in name
    return name.startswith("transformer.resblocks.") and (".attn." in name or ".mlp." in name)


def reference_images(cfg: BuildConfig, task: str) -> torch.Tensor:
    """Images whose pre-trained features a fine-tune of ``task`` keeps: generic pre-training images
    and, if asked, pre-training images of the other tasks' domains."""
    from .tasks import TASKS, generate, pretrain_batch

    parts = [torch.from_numpy(pretrain_batch(np.random.default_rng([cfg.seed, 1000]), cfg.keep_generic)[0])]
    if cfg.keep_domains:
        parts += [torch.from_numpy(generate(t, "pretrain", cfg.keep_domains, seed=cfg.seed)[0]) for t in TASKS if t != task]
    return torch.cat(parts)


def finetune(pre: nn.Module, head: torch.Tensor, images: torch.Tensor, labels: torch.Tensor,
             cfg: BuildConfig, task_index: int, report: Callable[[str], None],
             keep: torch.Tensor | None = None) -> nn.Module:
    """Cross-entropy through the frozen head; with ``keep`` (reference images), plus ``finetune_keep``
    x the squared distance of their normalised features to the pre-trained ones."""
    if keep is not None:
        ref = F.normalize(features(pre, keep), dim=-1)
    model = build_vision(cfg.vision())
    model.load_state_dict(pre.state_dict())
    mlp, other = [], []
    for name, p in model.named_parameters():
        p.requires_grad_(is_finetuned_param(name, cfg.finetune_params))
        if p.requires_grad:
            (mlp if ".mlp." in name else other).append(p)
    groups = [{"params": mlp}] + ([{"params": other, "lr": cfg.finetune_lr * cfg.finetune_other_lr}] if other else [])
    opt = FINETUNE_OPTIMIZERS[cfg.finetune_optim](groups, lr=cfg.finetune_lr, weight_decay=cfg.finetune_wd)
    sched = _cosine_lr(opt, cfg.finetune_steps, warmup=int(cfg.finetune_steps * cfg.finetune_warmup))
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
        if keep is not None:
            kdx = torch.randint(len(keep), (cfg.keep_batch,), generator=gen)
            f = F.normalize(model(to_input(keep[kdx])), dim=-1)
            loss = loss + cfg.finetune_keep * (f - ref[kdx]).pow(2).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    report(f"  fine-tuned {cfg.finetune_steps} steps, last loss {float(loss.detach()):.3f}")
    return model.eval()


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def task_job(name: str, index: int, pre_state: dict, cfg: BuildConfig) -> tuple[torch.Tensor, dict, float, float]:
    """Everything one task needs, independent of the others (so tasks run in parallel processes):
    generate its data, fit its probe on pre-trained features, fine-tune, evaluate both.
    Returns (head, fine-tuned state, probe accuracy %, fine-tuned accuracy %)."""
    from .tasks import TASKS, generate

    torch.set_num_threads(1)            # one thread per task process: fixed, so results are exact
    pre = build_vision(cfg.vision())
    pre.load_state_dict(pre_state)
    pre.eval()
    tr_x, tr_y = (torch.from_numpy(a) for a in generate(name, "train", cfg.train_per_task, seed=cfg.seed))
    te_x, te_y = (torch.from_numpy(a) for a in generate(name, "test", cfg.test_per_task, seed=cfg.seed))
    head = fit_probe(features(pre, tr_x), tr_y, len(TASKS[name].classnames), cfg)
    probe_acc = accuracy(pre, head, te_x, te_y)
    keep = reference_images(cfg, name) if cfg.finetune_keep > 0 else None
    model = finetune(pre, head, tr_x, tr_y, cfg, index, lambda m: None, keep)
    return head, {k: v.contiguous() for k, v in model.state_dict().items()}, probe_acc, accuracy(model, head, te_x, te_y)


def _run_tasks(pre_state: dict, cfg: BuildConfig, report: Callable[[str], None]) -> dict:
    from .tasks import TASKS

    jobs = [(name, i, pre_state, cfg) for i, name in enumerate(TASKS)]
    if cfg.workers <= 1:
        return {j[0]: task_job(*j) for j in jobs}
    ctx = mp.get_context("spawn")
    with ProcessPoolExecutor(max_workers=cfg.workers, mp_context=ctx) as pool:
        futures = {name: pool.submit(task_job, *j) for j, name in zip(jobs, TASKS)}
        out = {}
        for name, fut in futures.items():
            out[name] = fut.result()
            report(f"{name}: probe {out[name][2]:.1f} %, fine-tuned {out[name][3]:.1f} %")
        return out


def build(out: str | Path, cfg: BuildConfig = BuildConfig(), report: Callable[[str], None] = log.info,
          pretrained: str | Path | None = None) -> dict:
    """Build the whole zoo into ``out``; returns the manifest (also written as manifest.json).
    ``pretrained``: reuse a pre-trained tower from an earlier build with the same config (for
    experiments on fine-tuning); the manifest then records that file's hash."""
    from .tasks import TASKS

    t0 = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    out = Path(out)
    (out / "finetuned").mkdir(parents=True, exist_ok=True)
    if pretrained is None:
        pre_state = {k: v.contiguous() for k, v in pretrain(cfg, report).state_dict().items()}
        save_file(pre_state, str(out / "pretrained.safetensors"))
    else:
        pre_state = load_file(str(pretrained))
        if Path(pretrained).resolve() != (out / "pretrained.safetensors").resolve():
            save_file(pre_state, str(out / "pretrained.safetensors"))
    results = _run_tasks(pre_state, cfg, report)
    acc = {"pretrained": {n: r[2] for n, r in results.items()}, "individual": {n: r[3] for n, r in results.items()}}
    for kind in acc:
        acc[kind]["avg"] = round(sum(acc[kind].values()) / len(TASKS), 2)
    for name, (_, state, _, _) in results.items():
        save_file(state, str(out / "finetuned" / f"{name}.safetensors"))
    save_file({n: r[0] for n, r in results.items()}, str(out / "heads.safetensors"))
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
        "finetuned_parameters": (f"every weight ({cfg.finetune_params}); MLPs at lr {cfg.finetune_lr:g}, the rest at "
                                 f"{cfg.finetune_other_lr:g} x that; feature preservation {cfg.finetune_keep:g}")
                                if cfg.finetune_params == "all" else cfg.finetune_params,
        "tasks": [{"name": s.name, "title": s.title, "mirrors": s.mirrors, "classnames": list(s.classnames),
                   "description": s.description} for s in tasks.values()],
        "accuracy": acc,
        "build": dataclasses.asdict(cfg) | {"command": BUILD_COMMAND, "wall_s": round(wall, 1),
                                            "torch": torch.__version__, "wemoe_core": __version__,
                                            "python": platform.python_version()},
        "sha256": {str(p.relative_to(out)): _sha256(p) for p in files},
    }
