"""What every pool offers: a pre-trained tower, one fine-tuned tower per task, frozen heads,
pre-processing, and labeled test data. Pools never know about methods."""
from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Sequence

from ..model.config import VisionConfig

if TYPE_CHECKING:  # describing a pool (its name, tasks, recipes) needs no torch
    import torch
    from PIL import Image
    from torch import nn
    from torch.utils.data import Dataset

    from ..model.keys import StateDict
    from ..model.towers import Heads


@dataclass(frozen=True)
class TaskInfo:
    name: str                          # "svhn", "digits"
    title: str                         # "SVHN", "Digits"
    classnames: tuple[str, ...]
    description: str = ""
    individual_accuracy: float | None = None    # test accuracy (%) of the fine-tuned model, if known


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""                   # why not, and what to do


@dataclass
class PoolInfo:
    name: str
    title: str
    description: str
    tasks: list[TaskInfo]
    vision_config: VisionConfig
    source: str = ""                   # where the weights come from
    extra: dict = field(default_factory=dict)


class Pool(abc.ABC):
    """A pre-trained model plus one fine-tuned model per task, with heads and data."""

    info: PoolInfo
    # Recommended settings per registry method: {"wemoe": {"hparams": {...}, "adapt": {...}}}.
    recipes: dict = {}

    @property
    def name(self) -> str:
        return self.info.name

    @property
    def tasks(self) -> list[str]:
        return [t.name for t in self.info.tasks]

    def task(self, name: str) -> TaskInfo:
        for t in self.info.tasks:
            if t.name == name:
                return t
        raise ValueError(f"pool {self.name!r} has no task {name!r}; it has {', '.join(self.tasks)}")

    def classnames(self) -> dict[str, tuple[str, ...]]:
        return {t.name: t.classnames for t in self.info.tasks}

    def check_tasks(self, tasks: Sequence[str] | None, minimum: int = 1) -> list[str]:
        tasks = list(tasks) if tasks else self.tasks
        for t in tasks:
            self.task(t)
        if len(tasks) < minimum:
            raise ValueError(f"select at least {minimum} tasks (got {len(tasks)})")
        if len(set(tasks)) != len(tasks):
            raise ValueError("a task is selected twice")
        return tasks

    def availability(self) -> Availability:
        return Availability(True)

    def local_files(self) -> list[tuple[str, str]]:
        """The local files and folders this pool's definition names, as (``"model"`` or
        ``"data"``, the path as written): what a server confines to its own folders before a
        visitor may use the pool. Names that are Hub ids may appear too (the reader decides)."""
        return []

    @abc.abstractmethod
    def pretrained(self) -> nn.Module:
        """The pre-trained open_clip VisionTransformer, frozen, in eval mode."""

    @abc.abstractmethod
    def finetuned_source(self, task: str) -> Callable[[], StateDict]:
        """A zero-argument loader of the task's fine-tuned state dict (open_clip names), so
        merging code can stream checkpoints one at a time."""

    @abc.abstractmethod
    def heads(self, tasks: Sequence[str] | None = None) -> Heads:
        """Frozen classification heads of the tasks (CLIP zero-shot form)."""

    @abc.abstractmethod
    def preprocess(self, image: Image.Image) -> torch.Tensor:
        """A PIL image -> the model's input tensor (C, H, W)."""

    @abc.abstractmethod
    def dataset(self, task: str, split: str = "test", limit: int | None = None) -> Dataset:
        """Items are (pre-processed image tensor, label)."""

    def finetuned_sources(self, tasks: Sequence[str]) -> list[Callable[[], StateDict]]:
        return [self.finetuned_source(t) for t in tasks]
