"""Numbers that explain merging to a person: what a model sees of an image, how big each way of
serving T tasks is, how far "pick one fine-tuned model per input" gets, how much task vectors
interfere, and how task arithmetic depends on λ. Plain arrays and DataFrames out; the app draws.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..model import keys
from ..model.towers import materialise, state_of
from ..pools.base import Pool
from .adapt import entropy
from .evaluate import Explanation, explain
from .workbench import Run, build_model, evaluate_run, evaluation_data

MB = 4 / 2**20          # megabytes per fp32 parameter


# --- images ------------------------------------------------------------------------------------
def _span(pool: Pool) -> tuple[torch.Tensor, torch.Tensor]:
    """The pool's input normalisation, found by pre-processing a black and a white image: any
    resize or crop maps a constant image to a constant, so x = black + pixel * (white - black)."""
    black = pool.preprocess(Image.new("RGB", (8, 8), (0, 0, 0)))
    white = pool.preprocess(Image.new("RGB", (8, 8), (255, 255, 255)))
    lo, hi = black[:, :1, :1], white[:, :1, :1]                   # (3, 1, 1)
    return lo, hi - lo


def to_pixels(pool: Pool, x: torch.Tensor) -> np.ndarray:
    """A pre-processed image (3, H, W) back to uint8 pixels (H, W, 3)."""
    lo, span = _span(pool)
    img = ((x.detach().cpu().float() - lo) / span).clamp(0, 1)
    return (img.permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def model_view(pool: Pool, image: Image.Image) -> np.ndarray:
    """The image exactly as the model sees it (resized, cropped), as uint8 pixels (H, W, 3):
    patch p of the model covers the same square of this array."""
    return to_pixels(pool, pool.preprocess(image))


def example_images(pool: Pool, task: str, n: int = 2) -> list[tuple[np.ndarray, str]]:
    """The first ``n`` test images of a task as (pixels, class name)."""
    names = pool.task(task).classnames
    ds = pool.dataset(task, "test", limit=n)
    out = []
    for i in range(min(n, len(ds))):
        x, y = ds[i]
        out.append((to_pixels(pool, x), names[int(y)] if 0 <= int(y) < len(names) else "?"))
    return out


def explain_image(run: Run, pool: Pool, image: Image.Image, topk: int = 5,
                  device: str | torch.device = "cpu") -> Explanation:
    """``explain`` for a session's run and a PIL image (every task head; routing if WEMoE)."""
    x = pool.preprocess(image).to(device)
    return explain(run.model, x, classnames=pool.classnames(), topk=topk)


# --- memory -------------------------------------------------------------------------------------
def param_counts(encoder: torch.nn.Module) -> dict[str, int]:
    """Stored numbers of an encoder, split into shared weights, experts (task vectors of routed
    modules) and routers. Buffers count too: frozen experts are buffers."""
    out = {"shared": 0, "experts": 0, "routers": 0}
    for name, t in encoder.state_dict().items():
        kind = "routers" if "router" in name else "experts" if ".experts." in name else "shared"
        out[kind] += t.numel()
    out["total"] = sum(out.values())
    return out


def memory_table(pool: Pool, tasks: Sequence[str], rank: int = 16) -> pd.DataFrame:
    """How many parameters each way of serving the tasks keeps in memory (heads excluded: every
    way needs the same heads). Rows: keep T fine-tuned models, one static merge, one WEMoE (the
    pool's recipe), and one WEMoE with rank-``rank`` experts."""
    tasks = pool.check_tasks(tasks)
    one = sum(v.numel() for v in state_of(pool.pretrained()).values())
    rows = {f"{len(tasks)} fine-tuned models": {"shared": 0, "experts": len(tasks) * one, "routers": 0},
            "one static merge (TA, TIES)": {"shared": one, "experts": 0, "routers": 0}}
    for label, hp in (("one WEMoE", {}), (f"one WEMoE, rank-{rank} experts", {"compress": "lowrank", "rank": rank})):
        run = build_model(pool, tasks, "wemoe", hp)
        c = param_counts(run.model.encoder)
        rows[label] = {k: c[k] for k in ("shared", "experts", "routers")}
        del run
    df = pd.DataFrame.from_dict(rows, orient="index")
    df["total"] = df.sum(axis=1)
    df["MB (fp32)"] = (df["total"] * MB).round(1)
    df["x one model"] = (df["total"] / one).round(2)
    df.index.name = "way to serve the tasks"
    return df


# --- "pick one fine-tuned model per input" ------------------------------------------------------
@torch.no_grad()
def selection_baseline(pool: Pool, tasks: Sequence[str], limit: int | None = None) -> pd.DataFrame:
    """Keep the T fine-tuned models; for each test image of task t run ALL of them, read head t
    (the benchmark's protocol: the head is the task's, the model is not told the task), and
    answer with the model whose prediction has the lowest entropy. Columns: accuracy (%),
    own (% of images where the task's own model was picked), individual (the task's own model,
    which needs the task id); row ``avg`` = mean over tasks."""
    tasks = pool.check_tasks(tasks)
    run = build_model(pool, tasks, "individual")
    model = run.model.eval()
    data = evaluation_data(pool, tasks, limit=limit)
    rows = {}
    for t in tasks:
        hit = own = total = 0
        for images, labels in data[t]:
            logits = torch.stack([model.heads(model.features(images, e), t) for e in tasks])  # (T, B, C)
            pick = entropy(logits).argmin(0)                                                  # (B,)
            pred = logits[pick, torch.arange(len(pick))].argmax(-1)
            hit += int((pred == labels).sum())
            own += int((pick == tasks.index(t)).sum())
            total += len(labels)
        rows[t] = {"accuracy": 100 * hit / max(total, 1), "own": 100 * own / max(total, 1),
                   "individual": pool.task(t).individual_accuracy}
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.loc["avg"] = df.mean(numeric_only=True)
    df.index.name = "task"
    return df


# --- interference and λ --------------------------------------------------------------------------
def task_vector_cosine(pool: Pool, tasks: Sequence[str], max_entries: int = 2_000_000) -> pd.DataFrame:
    """Cosine similarity of the task vectors (fine-tuned minus pre-trained, all float tensors
    flattened). Above ``max_entries`` entries, a fixed evenly spaced subset is used."""
    tasks = pool.check_tasks(tasks)
    pre = state_of(pool.pretrained())
    names = sorted(k for k, v in pre.items() if keys.is_float(v))
    flat_pre = torch.cat([pre[k].flatten().float() for k in names])
    stride = max(1, flat_pre.numel() // max_entries)
    vecs = []
    for src in pool.finetuned_sources(tasks):                    # one checkpoint in memory at a time
        ft = materialise(src)
        vecs.append(torch.cat([ft[k].flatten().float() for k in names])[::stride] - flat_pre[::stride])
        del ft
    v = torch.nn.functional.normalize(torch.stack(vecs), dim=1)
    return pd.DataFrame((v @ v.T).numpy(), index=tasks, columns=tasks)


def lambda_sweep(pool: Pool, tasks: Sequence[str], lambdas: Sequence[float] = tuple(np.round(np.linspace(0, 1, 11), 2)),
                 limit: int | None = 200) -> pd.DataFrame:
    """Task arithmetic's accuracy (%) for each λ: rows λ, columns tasks and ``avg``."""
    tasks = pool.check_tasks(tasks)
    rows = {}
    for lam in lambdas:
        run = build_model(pool, tasks, "task_arithmetic", {"scale": float(lam)})
        rows[float(lam)] = evaluate_run(run, pool, limit=limit)["accuracy"].to_dict()
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "lambda"
    return df
