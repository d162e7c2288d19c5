"""The broad "pre-training" mixture: generic compositions of primitives with attribute labels.

Each image: a background (plain / gradient / horizon split / blotches), an optional texture
patch, 1-4 copies of one shape in one hue placed in distinct cells of a 3x3 grid, and an
optional glyph-like mark in another cell. None of the task generators is used, so a model
trained to predict the attributes learns generic features (colour, shape, counting, layout,
strokes, texture) that transfer to, but do not solve, the Tiny-8 tasks.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ._glyphs import MARK_NAMES, mark_atlas
from ._render import (F, X, Y, U, FieldAtlas, col, cov, d_box, d_halfplanes, d_seg, finish, frac,
                      hsv, jitter_colors, lerp_img, local, ngon_planes, noise, paint, tri, vgrad,
                      cos, sin)

SHAPES = ("circle", "square", "triangle", "ring", "cross", "diamond", "hexagon", "bar")
HUES = ("red", "orange", "yellow", "green", "cyan", "blue", "purple", "magenta")
_HUE_CENTRES = (0.0, 0.08, 0.15, 0.33, 0.5, 0.62, 0.75, 0.87)
TEXTURES = ("none", "stripes", "checks", "dots", "waves", "grid")
BACKGROUNDS = ("plain", "gradient", "horizon", "blotches")

PRETRAIN_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "shape": SHAPES,
    "count": ("1", "2", "3", "4"),
    "hue": HUES,
    "size": ("small", "medium", "large"),
    "position": tuple(f"{r}-{c}" for r in ("top", "middle", "bottom")
                      for c in ("left", "centre", "right")),
    "texture": TEXTURES,
    "glyph": ("none",) + MARK_NAMES,
    "background": BACKGROUNDS,
}


_CELLMAP = ((np.arange(64) >= 21.5).astype(np.intp) + (np.arange(64) >= 42.5))[:, None] * 3 \
    + ((np.arange(64) >= 21.5).astype(np.intp) + (np.arange(64) >= 42.5))[None, :]   # (64, 64)


def _shape_fn(name):
    def fn(u, v):
        if name == "circle":
            d = np.sqrt(u * u + v * v) - 0.85
        elif name == "square":
            d = d_box(u, v, 0.0, 0.0, 0.72, 0.72)
        elif name == "triangle":
            n, o = ngon_planes(3, 1.0, 30.0)
            d = d_halfplanes(u, v - 0.18, n, o)
        elif name == "ring":
            d = np.abs(np.sqrt(u * u + v * v) - 0.68) - 0.22
        elif name == "cross":
            d = np.minimum(d_box(u, v, 0.0, 0.0, 0.85, 0.25), d_box(u, v, 0.0, 0.0, 0.25, 0.85))
        elif name == "diamond":
            n, o = ngon_planes(4, 0.95, 0.0)
            d = d_halfplanes(u, v, n, o)
        elif name == "hexagon":
            n, o = ngon_planes(6, 0.9, 0.0)
            d = d_halfplanes(u, v, n, o)
        else:  # bar
            d = d_seg(u, v, -0.75, 0.0, 0.75, 0.0) - 0.25
        return (d,)
    return fn


@lru_cache(maxsize=None)
def _atlas():
    fns = [_shape_fn(s) for s in SHAPES] + [lambda u, v: (np.full(np.shape(u * v), 1e3),)]
    return FieldAtlas.from_functions(fns, (-1.2, -1.2, 1.2, 1.2), 40)


def _background(rng, m, kind):
    c1 = hsv(rng.random(m, dtype=F), U(rng, 0.0, 0.6, m), U(rng, 0.15, 0.95, m))
    c2 = hsv(rng.random(m, dtype=F), U(rng, 0.0, 0.6, m), U(rng, 0.15, 0.95, m))
    img = vgrad(c1, c1)
    g = kind == 1
    if g.any():
        img[g] = vgrad(c1[g], c2[g])
    h = kind == 2
    if h.any():
        k = int(h.sum())
        img[h] = lerp_img(c1[h], c2[h], cov(col(U(rng, 20, 44, k)) - Y) + X * F(0))
    b = kind == 3
    if b.any():
        k = int(b.sum())
        img[b] = lerp_img(c1[b], c2[b], np.clip((noise(rng, k, 4) - F(0.5)) * F(4) + F(0.5), 0, 1))
    return img


def _texture(rng, m, kind):
    u, v = local(U(rng, 0, 64, m), U(rng, 0, 64, m), U(rng, 5, 10, m), U(rng, 0, 3.1416, m))
    t = np.zeros((m, 64, 64), F)
    for k, fn in enumerate((None,
                            lambda u, v: tri(u) > 0.5,
                            lambda u, v: (tri(u) > 0.5) ^ (tri(v) > 0.5),
                            lambda u, v: (frac(u) - 0.5) ** 2 + (frac(v) - 0.5) ** 2 < 0.07,
                            lambda u, v: tri(v + F(0.4) * tri(u * F(0.5))) > 0.5,
                            lambda u, v: np.minimum(tri(u), tri(v)) < 0.2)):
        sel = np.flatnonzero(kind == k)
        if fn is None or not len(sel):
            continue
        t[sel] = fn(u[sel], v[sel])
    return t


def pretrain_batch(rng: np.random.Generator, n: int):
    """(n, 64, 64, 3) uint8 images and {attribute: (n,) int64 labels}; see PRETRAIN_ATTRIBUTES."""
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not isinstance(rng, np.random.Generator):
        raise ValueError("rng must be a numpy.random.Generator")
    n = int(n)
    out = np.empty((n, 64, 64, 3), np.uint8)
    labels = {k: np.empty(n, np.int64) for k in PRETRAIN_ATTRIBUTES}
    for s in range(0, n, 256):
        m = min(256, n - s)
        x, lab = _batch(rng, m)
        out[s:s + m] = x
        for k in labels:
            labels[k][s:s + m] = lab[k]
    return out, labels


def _batch(rng, m):
    bg_kind = rng.integers(0, len(BACKGROUNDS), m)
    img = _background(rng, m, bg_kind)
    # texture patch over a random rectangle
    tex = rng.integers(0, len(TEXTURES), m)
    t = _texture(rng, m, tex)
    rect = cov(d_box(X, Y, col(U(rng, 16, 48, m)), col(U(rng, 16, 48, m)),
                     col(U(rng, 14, 26, m)), col(U(rng, 14, 26, m))))
    tc = hsv(rng.random(m, dtype=F), U(rng, 0.2, 0.8, m), U(rng, 0.2, 0.9, m))
    paint(img, t * rect * col(tex > 0) * F(0.85), tc)
    # objects: `count` copies of one shape in distinct cells of a 3x3 grid
    shape = rng.integers(0, len(SHAPES), m)
    count = rng.integers(1, 5, m)
    hue = rng.integers(0, len(HUES), m)
    size = rng.integers(0, 3, m)
    cells = np.argsort(rng.random((m, 9)), axis=1)        # random distinct cells per image
    radius = (F(5.0) + F(2.0) * size.astype(F)) * U(rng, 0.9, 1.05, m)
    # per-cell object tables; every pixel looks up the object of its own cell (one atlas
    # lookup for all objects: objects stay inside their 21 px cell)
    present = np.zeros((m, 9), bool)
    ocx = np.zeros((m, 9), F)
    ocy = np.zeros((m, 9), F)
    rows = np.arange(m)
    for j in range(4):
        present[rows, cells[:, j]] = count > j
    jx, jy = U(rng, -1.5, 1.5, 9 * m).reshape(m, 9), U(rng, -1.5, 1.5, 9 * m).reshape(m, 9)
    ocx[:] = (np.arange(9) % 3).astype(F) * F(21) + F(11) + jx
    ocy[:] = (np.arange(9) // 3).astype(F) * F(21) + F(11) + jy
    ang = U(rng, 0, 6.2832, 9 * m).reshape(m, 9)
    fi = (rows * 9)[:, None, None] + _CELLMAP[None]
    px = np.take(ocx.reshape(-1), fi)
    py = np.take(ocy.reshape(-1), fi)
    ca = np.take(cos(ang).reshape(-1), fi)
    sa = np.take(sin(ang).reshape(-1), fi)
    inv = col(F(1) / radius)
    dx, dy = (X - px) * inv, (Y - py) * inv
    k = np.where(np.take(present.reshape(-1), fi), shape[:, None, None], len(SHAPES))
    dist = _atlas().sample(k, ca * dx + sa * dy, ca * dy - sa * dx, nearest=True, outside=False)[0]
    cxs, cys = np.zeros(m, np.float64), np.zeros(m, np.float64)
    for j in range(9):                                     # fixed summation order
        cxs += np.where(present[:, j], ocx[:, j], 0)
        cys += np.where(present[:, j], ocy[:, j], 0)
    hc = np.asarray(_HUE_CENTRES, F)[hue] + U(rng, -0.03, 0.03, m)
    obj_c = hsv(frac(hc + F(1)), U(rng, 0.65, 1.0, m), U(rng, 0.6, 1.0, m))
    edge = cov((dist + F(0.12)) * col(radius))
    paint(img, edge, obj_c * F(0.35))
    paint(img, cov(dist * col(radius)), obj_c)
    mx, my = cxs / count, cys / count
    position = (np.clip(my // (64 / 3), 0, 2) * 3 + np.clip(mx // (64 / 3), 0, 2)).astype(np.int64)
    # glyph mark in the first free cell
    glyph = rng.integers(0, len(MARK_NAMES) + 1, m)
    gcell = cells[:, 4]
    gx = (gcell % 3).astype(F) * F(21) + F(11) + U(rng, -2, 2, m)
    gy = (gcell // 3).astype(F) * F(21) + F(11) + U(rng, -2, 2, m)
    gs = U(rng, 7, 10, m)
    gu, gv = local(gx, gy, gs, U(rng, -0.3, 0.3, m))
    gd = mark_atlas().sample(np.maximum(glyph - 1, 0), gu, gv)
    # ink contrasting with the background at the mark's centre (no reductions: reproducible)
    yi, xi = np.clip(gy, 0, 63).astype(np.intp), np.clip(gx, 0, 63).astype(np.intp)
    rows = np.arange(m)
    bright = (img[rows, 0, yi, xi] + img[rows, 1, yi, xi] + img[rows, 2, yi, xi]) > F(1.5)
    gc = np.where(bright[:, None], F(0.05), F(0.97)) * np.ones((1, 3), F)
    paint(img, cov((gd - F(0.14)) * col(gs)) * col(glyph > 0), jitter_colors(rng, gc, 0.05, m))
    x = finish(img, rng, 0.04, gain=U(rng, 0.85, 1.1, m))
    return x, {"shape": shape, "count": count - 1, "hue": hue, "size": size,
               "position": position, "texture": tex, "glyph": glyph, "background": bg_kind}
