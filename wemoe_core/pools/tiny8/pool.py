"""The shipped Tiny-8 zoo as a ``Pool``: weights from ``assets/tiny8`` (safetensors + manifest),
images generated on demand from the task generators (deterministic, cached in memory).

Opening the pool reads its manifest only; torch, the weights and the images are loaded when
first asked for (a page can list the pool's tasks and recipes without importing torch)."""
from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from ...model.config import VisionConfig
from ..base import Availability, Pool, PoolInfo, TaskInfo

if TYPE_CHECKING:
    import torch
    from PIL import Image

    from ...model.data import TensorImages
    from ...model.towers import Heads

MEAN = (0.5, 0.5, 0.5)
STD = (0.25, 0.25, 0.25)


class Tiny8Pool(Pool):
    """Eight tiny fine-tuned ViTs that mirror the 8-task CLIP benchmark; built by
    ``python -m wemoe_core build-tiny8`` and shipped in ``assets/tiny8``."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        manifest = self.root / "manifest.json"
        if not manifest.is_file():
            raise ValueError(f"no Tiny-8 zoo at {self.root}: run `python -m wemoe_core build-tiny8` to build it")
        self.manifest = json.loads(manifest.read_text())
        m = self.manifest
        acc = m["accuracy"]["individual"]
        tasks = [TaskInfo(t["name"], t["title"], tuple(t["classnames"]), t["description"], acc.get(t["name"]))
                 for t in m["tasks"]]
        self.info = PoolInfo("tiny8", "Tiny-8 (offline, CPU)", m["description"], tasks,
                             VisionConfig.from_dict(m["vision_config"]), source=str(self.root),
                             extra={"mirrors": {t["name"]: t["mirrors"] for t in m["tasks"]}})
        self.seed = int(m["seed"])
        recipes = self.root / "recipes.json"
        self.recipes = json.loads(recipes.read_text())["recipes"] if recipes.is_file() else {}
        self.test_size = int(m["build"]["test_per_task"])

    def availability(self) -> Availability:
        return Availability(True)

    @functools.cached_property
    def _pretrained(self) -> torch.nn.Module:
        from safetensors.torch import load_file

        from ...model.towers import build_vision, freeze

        model = build_vision(self.info.vision_config)
        model.load_state_dict(load_file(str(self.root / "pretrained.safetensors")))
        return freeze(model)

    def pretrained(self) -> torch.nn.Module:
        return self._pretrained

    def finetuned_source(self, task: str):
        self.task(task)
        path = self.root / "finetuned" / f"{task}.safetensors"

        def load():
            from safetensors.torch import load_file

            return load_file(str(path))
        return load

    @functools.cached_property
    def _heads(self) -> dict[str, torch.Tensor]:
        from safetensors.torch import load_file

        return load_file(str(self.root / "heads.safetensors"))

    def heads(self, tasks: Sequence[str] | None = None) -> Heads:
        from ...model.towers import Heads

        tasks = self.check_tasks(tasks)
        return Heads({t: self._heads[t] for t in tasks}, logit_scale=float(self.manifest["logit_scale"]))

    def preprocess(self, image: Image.Image) -> torch.Tensor:
        import numpy as np
        import torch
        from PIL import Image

        from ...model.data import TensorImages

        size = self.info.vision_config.image_size
        img = image.convert("RGB").resize((size, size), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy())
        return TensorImages(x[None], None, MEAN, STD)[0]

    def dataset(self, task: str, split: str = "test", limit: int | None = None) -> TensorImages:
        from ...model.data import TensorImages

        images, labels = self.arrays(task, split)
        if limit is not None:
            images, labels = images[:limit], labels[:limit]
        return TensorImages(images, labels, MEAN, STD)

    @functools.lru_cache(maxsize=16)
    def arrays(self, task: str, split: str = "test") -> tuple[torch.Tensor, torch.Tensor]:
        """uint8 images (N, 64, 64, 3) and labels, generated deterministically from the seed."""
        import torch

        from .tasks import generate

        self.task(task)
        n = self.test_size if split == "test" else int(self.manifest["build"]["train_per_task"])
        images, labels = generate(task, split, n, seed=self.seed)
        return torch.from_numpy(images), torch.from_numpy(labels)
