"""Real CLIP pools, defined by one JSON file each (``assets/pools/*.json``).

A pool file names the open_clip architecture (``"arch": "ViT-B-32"``), where the pre-trained
weights come from (``"pretrained": "openai"``: vision and text towers), and per task the
fine-tuned checkpoint (a Hub id or a local path), the test data (a Hub parquet split or a local
folder), the class names and the prompt templates. Optional: ``"pretrained_vision"`` (a
vision-only checkpoint, then ``"heads"``: a safetensors file of per-task head weights),
``"recipes"`` (recommended hyperparameters per method), ``"download_gb"`` (what a first use
fetches), ``"quick_gelu"`` (default true, as OpenAI CLIP needs).

Checkpoints are loaded one at a time (``finetuned_source`` returns a loader), mapped onto
open_clip names and checked against the pre-trained architecture before anything is merged.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import torch
from PIL import Image
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import Dataset

from ..model.keys import StateDict
from ..model.towers import Heads, VisionConfig, freeze
from ..sources import checkpoints, clip as clip_model, hub, paths
from ..sources.zeroshot import CLIP_LOGIT_SCALE, cached_heads
from . import clip_data
from .base import Availability, Pool, PoolInfo, TaskInfo

log = logging.getLogger(__name__)

_WHAT_TO_DO = ("With network access, unset HF_HUB_OFFLINE and run once to cache the files; "
               "until then use the Tiny-8 pool, or checkpoints in a local folder (under $WEMOE_MODEL_DIR).")


@dataclass(frozen=True)
class ClipTask:
    """One task of a pool file."""

    name: str
    title: str
    finetuned: str                     # Hub id or local path of the fine-tuned vision tower
    dataset: dict | str | None         # {"repo", "split", "config"} or a local folder / zip
    classnames: tuple[str, ...]
    templates: tuple[str, ...]         # "{c}" marks the class name
    individual_accuracy: float | None = None
    description: str = ""

    @classmethod
    def from_dict(cls, d: dict) -> "ClipTask":
        missing = [k for k in ("name", "finetuned", "classnames", "templates") if not d.get(k)]
        if missing:
            raise ValueError(f"task {d.get('name', '?')!r} lacks {', '.join(missing)}")
        return cls(name=d["name"], title=d.get("title", d["name"]), finetuned=d["finetuned"], dataset=d.get("dataset"),
                   classnames=tuple(d["classnames"]), templates=tuple(d["templates"]),
                   individual_accuracy=d.get("individual_accuracy"), description=d.get("description", ""))


def _summary(models: list[str], data: list[str]) -> str:
    """'the pre-trained model, 8 fine-tuned checkpoints and 8 test sets'."""
    parts = ["the pre-trained model"] if "pre-trained" in models else []
    tuned = [m for m in models if m != "pre-trained"]
    if tuned:
        parts.append(f"{len(tuned)} fine-tuned checkpoint{'s' * (len(tuned) > 1)}" if len(tuned) > 2 else
                     f"the fine-tuned checkpoint of {' and '.join(tuned)}")
    if data:
        parts.append(f"{len(data)} test set{'s' * (len(data) > 1)}")
    return ", ".join(parts[:-1]) + " and " + parts[-1] if len(parts) > 1 else parts[0]


class ClipPool(Pool):
    """A pre-trained open_clip CLIP and one fine-tuned vision tower per task (see module doc)."""

    def __init__(self, spec: dict, name: str, *, allow_pickle: bool | None = None):
        if not spec.get("arch") or not spec.get("tasks"):
            raise ValueError("a pool file needs 'arch' and a non-empty 'tasks' list")
        if not spec.get("pretrained") and not spec.get("pretrained_vision"):
            raise ValueError("a pool file needs 'pretrained' (open_clip weights) or 'pretrained_vision'")
        self.spec, self.arch = spec, spec["arch"]
        self.quick_gelu = bool(spec.get("quick_gelu", True))
        self.allow_pickle = allow_pickle
        self._tasks = {t.name: t for t in map(ClipTask.from_dict, spec["tasks"])}
        if len(self._tasks) != len(spec["tasks"]):
            raise ValueError("two tasks share a name")
        self.recipes = spec.get("recipes", {})
        self.info = PoolInfo(
            name=name, title=spec.get("title", name), description=spec.get("description", ""),
            tasks=[TaskInfo(t.name, t.title, t.classnames, t.description, t.individual_accuracy) for t in self._tasks.values()],
            vision_config=VisionConfig.from_open_clip(self.arch, quick_gelu=self.quick_gelu),
            source=f"open_clip {self.arch} ({spec.get('pretrained') or spec.get('pretrained_vision')}); "
                   f"fine-tuned: {', '.join(t.finetuned for t in self._tasks.values())}",
            extra={"download_gb": spec.get("download_gb", {})},
        )
        self._proj: torch.Tensor | None = None
        self._transform = None

    @classmethod
    def from_file(cls, path: str | Path, **kwargs) -> "ClipPool":
        """A pool from its JSON file (the pool's name is the file's stem)."""
        path = Path(path)
        try:
            spec = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path.name} is not valid JSON ({e})") from None
        try:
            return cls(spec, path.stem, **kwargs)
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{path.name}: {e}") from None

    # --- what must be on this machine -------------------------------------------------------
    @property
    def model_key(self) -> str:
        """Names the pre-trained model in caches (zero-shot heads)."""
        return f"{self.arch}-{self.spec.get('pretrained') or self.spec.get('pretrained_vision')}"

    def _needs(self, tasks: Sequence[str] | None = None) -> tuple[list[tuple[str, str, tuple]], list[str]]:
        """(Hub files [(what, repo, alternative names)], Hub datasets not cached [what])."""
        files: list[tuple[str, str, tuple]] = []
        if self.spec.get("pretrained") and not self.spec.get("pretrained_vision"):
            files += [("pre-trained", r, n) for r, n in clip_model.hub_files(self.arch, self.spec["pretrained"])]
            if not files:                                  # a local open_clip checkpoint
                paths.local_model_path(self.spec["pretrained"])
        srcs = [("pre-trained", self.spec["pretrained_vision"])] if self.spec.get("pretrained_vision") else []
        srcs += [(t, self._tasks[t].finetuned) for t in tasks or self.tasks]
        for what, src in srcs:
            kind, where = checkpoints.locate(src)
            if kind == "hub":
                files += [(what, r, n) for r, n in checkpoints.hub_files(where)]
        data = []
        for t in tasks or self.tasks:
            ds = self._tasks[t].dataset
            if isinstance(ds, dict):
                split = clip_data.HubSplit.from_dict(ds)
                if not hub.is_cached(split.repo, split.patterns(), revision=split.revision):
                    data.append(t)
            elif isinstance(ds, str):
                paths.local_data_path(ds)
        return files, data

    def local_files(self) -> list[tuple[str, str]]:
        """Every model and data source of the pool file that may be a local path (Hub ids and
        open_clip tags included: whether they name a local file is decided when reading)."""
        out = []
        pre = self.spec.get("pretrained")
        if pre and not self.spec.get("pretrained_vision") and not pre.startswith(clip_model.HF_PREFIX):
            out.append(("model", pre))
        for key in ("pretrained_vision", "heads"):
            if self.spec.get(key):
                out.append(("model", self.spec[key]))
        for t in self._tasks.values():
            out.append(("model", t.finetuned))
            if isinstance(t.dataset, str) and not t.dataset.startswith(clip_data.HUB_PREFIX):
                out.append(("data", t.dataset))
        return out

    def availability(self) -> Availability:
        """Whether the pool can be used here, fast (a 2-second Hub probe at most), and why not."""
        try:
            files, data = self._needs()
        except (ValueError, FileNotFoundError) as e:
            return Availability(False, str(e))
        missing = sorted({what for what, repo, names in files if not any(hub.cached_file(repo, n) for n in names)})
        if not missing and not data:
            return Availability(True, "all checkpoints and test data are on this machine")
        reason = hub.probe()
        todo = _summary(missing, data)
        if reason:
            return Availability(False, f"not on this machine yet: {todo}; and {reason}. {_WHAT_TO_DO}")
        gb = self.info.extra.get("download_gb") or {}
        size = f" (the whole pool: about {sum(gb.values()):.1f} GB)" if gb else ""
        return Availability(True, f"first use downloads {todo}{size} from the Hugging Face Hub")

    # --- models -----------------------------------------------------------------------------
    def pretrained(self) -> nn.Module:
        """The pre-trained vision tower (open_clip ``VisionTransformer``), frozen, eval mode."""
        src = self.spec.get("pretrained_vision")
        if src:
            ckpt = checkpoints.read_checkpoint(src, allow_pickle=self.allow_pickle)
        else:      # only the vision tower's tensors of the open_clip file: no CLIP is built
            ckpt = checkpoints.read_local(clip_model.weights_file(self.arch, self.spec["pretrained"]))
        state = checkpoints.with_projection(ckpt.state, None, self.arch, "the pre-trained model")
        checkpoints.check_vision(state, self.info.vision_config, "the pre-trained model")
        self._proj = state["proj"].clone()
        return freeze(checkpoints.tower_from_state(state, self.info.vision_config))

    def _projection(self) -> torch.Tensor:
        if self._proj is None:
            self.pretrained()
        return self._proj

    def finetuned_source(self, task: str) -> Callable[[], StateDict]:
        """A loader of the task's fine-tuned tower (open_clip names), checked against the
        pre-trained architecture. A Hugging Face ``CLIPVisionModel`` has no visual projection:
        the pre-trained ``proj`` is used (fine-tuning left it untouched; task vector zero)."""
        t = self._task_spec(task)
        label = f"the {task} checkpoint ({t.finetuned})"

        def load() -> StateDict:
            ckpt = checkpoints.read_checkpoint(t.finetuned, allow_pickle=self.allow_pickle)
            state = checkpoints.with_projection(ckpt.state, self._projection(), self.arch, label)
            checkpoints.check_vision(state, self.info.vision_config, label)
            return state

        return load

    def _task_spec(self, task: str) -> ClipTask:
        self.task(task)                                   # the base class's clear error
        return self._tasks[task]

    def heads(self, tasks: Sequence[str] | None = None) -> Heads:
        """Zero-shot heads (class names x templates through the text tower), cached on disk."""
        tasks = self.check_tasks(tasks)
        scale = float(self.spec.get("logit_scale", CLIP_LOGIT_SCALE))
        if self.spec.get("heads"):
            stored = load_file(str(paths.local_model_path(self.spec["heads"])))
            missing = [t for t in tasks if t not in stored]
            if missing:
                raise ValueError(f"the heads file of pool {self.name!r} lacks tasks {missing}")
            return Heads({t: stored[t] for t in tasks}, logit_scale=scale)
        if not self.spec.get("pretrained"):
            raise ValueError(f"pool {self.name!r} has no text tower ('pretrained') and no 'heads' file")
        texts = {t: (self._tasks[t].classnames, self._tasks[t].templates) for t in tasks}
        return cached_heads(self.model_key, texts, self._text_model, logit_scale=scale)

    def _text_model(self):
        import open_clip

        clip = clip_model.load_open_clip(self.arch, self.spec["pretrained"], quick_gelu=self.quick_gelu)
        return clip.encode_text, open_clip.get_tokenizer(self.arch)

    # --- data -------------------------------------------------------------------------------
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """open_clip's validation transform: a PIL image -> (3, H, W)."""
        if self._transform is None:
            self._transform = clip_model.preprocess_transform(self.arch, self.spec.get("pretrained") or "openai")
        return self._transform(image.convert("RGB"))

    def dataset(self, task: str, split: str = "test", limit: int | None = None) -> Dataset:
        """The task's labeled images, streamed and pre-processed; ``limit`` keeps evenly spaced ones."""
        t = self._task_spec(task)
        if t.dataset is None:
            raise ValueError(f"task {task!r} of pool {self.name!r} names no data set")
        source = {**t.dataset, "split": split} if isinstance(t.dataset, dict) else t.dataset
        return clip_data.open_images(source, self.preprocess, classnames=t.classnames, split=split, limit=limit)

    def images(self, source, task: str | None = None, *, limit: int | None = None,
               root: str | Path | None = None) -> Dataset:
        """Any other source of images for adaptation or evaluation: a Hub split
        (``"hf-hub:owner/name"`` or a dict), a folder or a zip (relative paths from ``root``,
        default ``$WEMOE_DATA_DIR``); class subfolders are matched to ``task``'s class names."""
        classnames = self._task_spec(task).classnames if task else None
        return clip_data.open_images(source, self.preprocess, classnames=classnames, limit=limit, root=root)
