"""`digits` (mirrors MNIST): real handwritten digits from scikit-learn's bundled 8x8 set.

The 1797 source images are split once, by a fixed seed, into 600 test sources (60 per class)
and 1197 train sources; every image of a split comes from that split's sources only. Each
source is upsampled smoothly (Catmull-Rom, 8 -> 32 px) once, then placed on a dark 64 px canvas
with a random scale (the 8x8 box spans 42-52 px), shift, rotation, shear, stroke weight and
stroke colour.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ._render import F, U, FieldAtlas, col, finish, hsv, jitter_colors, local, noise, paint, tint

CLASSNAMES = tuple(str(d) for d in range(10))
TEST_PER_CLASS = 60
_SPLIT_SEED = 20240229
_UP = 4            # 8 -> 32
_PAD = 3           # zero border (in 32-grid pixels) so that sampling outside gives 0


def _catmull_rom_weights(t):
    t2, t3 = t * t, t * t * t
    return np.stack([-0.5 * t3 + t2 - 0.5 * t, 1.5 * t3 - 2.5 * t2 + 1.0,
                     -1.5 * t3 + 2.0 * t2 + 0.5 * t, 0.5 * t3 - 0.5 * t2], -1)


def _upsample(imgs):
    """(N, 8, 8) in [0, 1] -> (N, 32, 32) smooth upsampling, elementwise float64 ops only."""
    n = imgs.shape[0]
    src = np.zeros((n, 12, 12))
    src[:, 2:10, 2:10] = imgs
    pos = (np.arange(8 * _UP) + 0.5) / _UP - 0.5        # output pixel centres in source coords
    base = np.floor(pos).astype(int)
    w = np.round(_catmull_rom_weights(pos - base), 12)
    rows = np.zeros((n, 8 * _UP, 12))
    for j in range(4):
        rows += w[:, j][None, :, None] * src[:, base + j + 1, :]
    out = np.zeros((n, 8 * _UP, 8 * _UP))
    for j in range(4):
        out += w[:, j][None, None, :] * rows[:, :, base + j + 1]
    return np.clip(out, 0, 1)


@lru_cache(maxsize=None)
def _data():
    from sklearn.datasets import load_digits

    d = load_digits()
    imgs = d.images.astype(np.float64) / 16.0
    up = np.round(_upsample(imgs), 5)
    S2 = 8 * _UP + 2 * _PAD
    fields = np.zeros((len(imgs), 1, S2, S2), F)
    fields[:, 0, _PAD:-_PAD, _PAD:-_PAD] = up
    atlas = FieldAtlas(fields, (-_PAD, -_PAD, 8 * _UP + _PAD - 1, 8 * _UP + _PAD - 1), 1)
    target = d.target.astype(np.int64)
    rng = np.random.Generator(np.random.PCG64(_SPLIT_SEED))
    test, train = [], []
    for c in range(10):
        idx = np.flatnonzero(target == c)
        idx = idx[rng.permutation(len(idx))]
        test.append(np.sort(idx[:TEST_PER_CLASS]))
        train.append(np.sort(idx[TEST_PER_CLASS:]))
    return atlas, target, {"train": train, "test": test}


def source_indices(split):
    """Indices into sklearn's load_digits() used by a split, per class (for tests)."""
    return [a.copy() for a in _data()[2][split]]


def render(rng, labels, split="train", occ=None, seed=0, **_):
    m = len(labels)
    atlas, _, pools = _data()
    si = {"train": 0, "test": 1, "pretrain": 2}[split]
    split = "test" if split == "test" else "train"     # pre-training images reuse the train sources
    if occ is None:
        occ = np.arange(m)
    src = np.empty(m, np.intp)
    for c in range(10):
        sel = np.flatnonzero(labels == c)
        if not len(sel):
            continue
        pool = pools[split][c]
        order = np.random.Generator(np.random.PCG64([int(seed), 6, si, 1000 + c])).permutation(len(pool))
        src[sel] = pool[order[occ[sel] % len(pool)]]
    size = U(rng, 42, 52, m)                       # pixels spanned by the 8x8 box
    u, v = local(U(rng, 29, 35, m), U(rng, 29, 35, m), size / F(8 * _UP), U(rng, -0.16, 0.16, m))
    u = u + col(U(rng, -0.15, 0.15, m)) * v + F(4 * _UP - 0.5)
    v = v + F(4 * _UP - 0.5)
    val = atlas.sample(src, u, v, outside=False)[0]
    lo = col(U(rng, 0.3, 0.55, m))
    ink = np.clip((val - lo) / F(0.25), 0, 1)
    bg = jitter_colors(rng, (0.04, 0.04, 0.05), 0.04, m)
    img = tint(bg, F(0.85) + F(0.3) * noise(rng, m, 4))
    stroke = hsv(rng.random(m, dtype=F), U(rng, 0.0, 0.5, m) * (rng.random(m) < 0.3), U(rng, 0.75, 1.0, m))
    paint(img, ink, stroke)
    return finish(img, rng, 0.03)
