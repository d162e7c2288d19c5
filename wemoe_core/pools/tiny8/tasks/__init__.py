"""Tiny-8: eight procedural 64 px image tasks that mirror the 8-task CLIP merging benchmark.

Pure numpy (scikit-learn only for its bundled handwritten digits); no downloads, no fonts.

    generate(task, split, n, seed) -> (n, 64, 64, 3) uint8 images, (n,) int64 labels
    pretrain_batch(rng, n)        -> images, {attribute: (n,) int64 labels}

Determinism: the output depends only on (task, split, n, seed) (and on numpy's PCG64 stream):
labels come from a SeedSequence of (seed, task index, split index), images are rendered in
chunks of CHUNK images, each chunk with its own child seed, using only bit-reproducible float
operations (see `_render`). Train and test use different seeds by construction (split index);
`digits` also uses disjoint source images.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib import import_module

import numpy as np

from .pretrain import PRETRAIN_ATTRIBUTES, pretrain_batch

IMAGE_SIZE = 64
CHUNK = 256
SPLITS = ("train", "test", "pretrain")

__all__ = ["TaskSpec", "TASKS", "IMAGE_SIZE", "generate", "pretrain_batch", "PRETRAIN_ATTRIBUTES"]


@dataclass(frozen=True)
class TaskSpec:
    name: str
    title: str
    mirrors: str
    classnames: tuple[str, ...]
    description: str


# name -> (module, title, mirrors, description)
_DEFS = (
    ("scenes", "scenes", "Scenes", "SUN397",
     "Outdoor scene layouts (sky, horizon, ground) such as beach, forest, city or sunset."),
    ("vehicles", "vehicles", "Vehicles", "Stanford Cars",
     "Side-view silhouettes of vehicle types in random colours on a street background."),
    ("aerial", "aerial", "Aerial", "RESISC45",
     "Top-down aerial views of places such as runways, harbours, roundabouts and parking lots."),
    ("landcover", "landcover", "Land cover", "EuroSAT",
     "Hazy low-detail satellite tiles of the ten EuroSAT land-cover classes."),
    ("housenumbers", "housenumbers", "House numbers", "SVHN",
     "Multi-digit house-number plates; the label is the digit in the centre of the crop."),
    ("signs", "signs", "Traffic signs", "GTSRB",
     "Traffic-sign pictograms (shape, colour and symbol) on dim, blurry road backgrounds."),
    ("digits", "digits", "Handwritten digits", "MNIST",
     "Real handwritten digits (scikit-learn's 8x8 set) upscaled onto a dark canvas."),
    ("textures", "textures", "Textures", "DTD",
     "Full-frame texture patterns such as striped, checkered, marbled or woven."),
)


def _module(modname):
    return import_module(f"{__name__}.{modname}")


TASKS: dict[str, TaskSpec] = {
    name: TaskSpec(name, title, mirrors, tuple(_module(mod).CLASSNAMES), desc)
    for name, mod, title, mirrors, desc in _DEFS
}
_MODNAME = {name: mod for name, mod, *_ in _DEFS}
_ORDER = tuple(TASKS)


def generate(task: str, split: str, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(n, 64, 64, 3) uint8 images and (n,) int64 labels; split in {"train", "test", "pretrain"}
    ("pretrain": images the pre-training mixture may use, disjoint from both by seed).

    Labels are balanced (every class appears floor(n / C) or ceil(n / C) times) and shuffled.
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {list(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    n = int(n)
    ss = np.random.SeedSequence([int(seed), _ORDER.index(task), SPLITS.index(split)])
    nchunks = (n + CHUNK - 1) // CHUNK
    children = ss.spawn(1 + nchunks)
    C = len(TASKS[task].classnames)
    lrng = np.random.Generator(np.random.PCG64(children[0]))
    labels = lrng.permutation(np.arange(n, dtype=np.int64) % C).astype(np.int64)
    occ = np.empty(n, np.int64)  # rank of each image among the images of its class
    for k in range(C):
        idx = np.flatnonzero(labels == k)
        occ[idx] = np.arange(len(idx))
    render = _module(_MODNAME[task]).render
    images = np.empty((n, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    for c in range(nchunks):
        sl = slice(c * CHUNK, min(n, (c + 1) * CHUNK))
        rng = np.random.Generator(np.random.PCG64(children[1 + c]))
        images[sl] = render(rng, labels[sl], split=split, occ=occ[sl], seed=int(seed))
    return images, labels
