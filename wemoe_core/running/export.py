"""Write a workbench run to files: the merged model (safetensors, recipe in its metadata), the
router-only checkpoint of a WEMoE, and the recipe as JSON. Used by the app's Export tab."""
from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path
from typing import Iterator

import torch

from ..merging.wemoe import WEMoE
from ..pools.base import Pool
from ..sources.files import atomic_write_text, save_merged, save_routers, save_wemoe
from .workbench import Run


def kind(run: Run) -> str:
    """``wemoe`` (routers and experts), ``merged`` (one plain vision tower, also an adapted
    AdaMerging), or ``per_task`` (one model per task: nothing single to save)."""
    enc = run.model.encoder
    if getattr(enc, "needs_task", False):
        return "per_task"
    return "wemoe" if isinstance(enc, WEMoE) else "merged"


def safe_stem(text: str) -> str:
    """A file-name-safe version of a label: ``"WEMoE #2"`` -> ``"wemoe-2"``."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "model"


@contextlib.contextmanager
def _on_cpu(run: Run) -> Iterator[None]:
    """Save from the CPU (and put the model back where it was)."""
    first = next(iter(run.model.buffers()), None)
    device = first.device if first is not None else torch.device("cpu")
    if device.type != "cpu":
        run.model.cpu()
    try:
        yield
    finally:
        if device.type != "cpu":
            run.model.to(device)


def export_run(run: Run, pool: Pool, folder: str | Path, stem: str | None = None) -> dict[str, Path]:
    """Write the run's files into ``folder``; returns {"model", "routers" (WEMoE), "recipe"}.
    A per-task run (individual, oracle) gets only its recipe: it has no single merged model."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    stem = safe_stem(stem or run.name)
    out: dict[str, Path] = {}
    cfg, enc, k = pool.info.vision_config, run.model.encoder, kind(run)
    with _on_cpu(run):
        if k == "wemoe":
            out["model"] = save_wemoe(folder / f"{stem}.safetensors", enc, cfg, run.recipe)
            out["routers"] = save_routers(folder / f"{stem}-routers.safetensors", enc, run.recipe)
        elif k == "merged":
            state = enc.merged_state() if hasattr(enc, "merged_state") else enc.state_dict()
            out["model"] = save_merged(folder / f"{stem}.safetensors", {n: v.detach() for n, v in state.items()},
                                       cfg, run.recipe)
    recipe = folder / f"{stem}-recipe.json"
    atomic_write_text(recipe, json.dumps(json.loads(run.recipe.to_json()), indent=1) + "\n")
    out["recipe"] = recipe
    return out
