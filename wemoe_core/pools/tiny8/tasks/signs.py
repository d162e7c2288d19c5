"""`signs` (mirrors GTSRB): traffic-sign pictograms on dim, blurry road-side backgrounds.

A class is a (shape, colour scheme, symbol) triple. Every class is baked once into three
distance fields in sign units (radius 1): the outer plate, the inner field and the symbol;
images sample them with a random size, position, small rotation and perspective squeeze.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ._glyphs import SIGN_GLYPHS
from ._render import (F, X, Y, U, FieldAtlas, GlyphAtlas, col, cov, finish, fractal, hsv,
                      jitter_colors, local, ngon_planes, paint, d_halfplanes, lerp_img, pick,
                      shade)

CLASSNAMES = ("stop", "yield", "no entry", "speed limit 30", "speed limit 60", "turn left",
              "turn right", "priority road", "pedestrian crossing", "roundabout")

RED, WHITE, BLUE, YELLOW, BLACK = ((0.78, 0.1, 0.12), (0.95, 0.95, 0.95), (0.1, 0.3, 0.7),
                                   (0.98, 0.78, 0.1), (0.08, 0.08, 0.08))
# shape, outer colour, inner colour, inner scale, symbol, symbol colour, symbol half width, scale
_CLASSES = (
    ("octagon", WHITE, RED, 0.9, "stop", WHITE, 0.055, 0.75),
    ("tri_down", RED, WHITE, 0.55, "none", WHITE, 0.1, 1.0),
    ("circle", RED, RED, 0.9, "bar", WHITE, 0.16, 1.0),
    ("circle", RED, WHITE, 0.78, "30", BLACK, 0.07, 0.95),
    ("circle", RED, WHITE, 0.78, "60", BLACK, 0.07, 0.95),
    ("circle", WHITE, BLUE, 0.92, "left", WHITE, 0.1, 1.0),
    ("circle", WHITE, BLUE, 0.92, "right", WHITE, 0.1, 1.0),
    ("diamond", WHITE, YELLOW, 0.62, "none", WHITE, 0.1, 1.0),
    ("tri_up", RED, WHITE, 0.58, "pedestrian", BLACK, 0.065, 0.62),
    ("circle", WHITE, BLUE, 0.92, "roundabout", WHITE, 0.08, 1.0),
)


def _shape_sdf(shape, u, v, r):
    if shape == "circle":
        return np.sqrt(u * u + v * v) - r
    n, rot, shift = {"octagon": (8, 22.5, 0.0), "tri_up": (3, 30.0, 0.18),
                     "tri_down": (3, 90.0, -0.18), "diamond": (4, 0.0, 0.0)}[shape]
    if n == 3:
        r = r * 1.22                               # triangles look small otherwise
    normals, offsets = ngon_planes(n, r, rot)
    return d_halfplanes(u, v - shift * (r / 1.22 if n == 3 else r), normals, offsets)


@lru_cache(maxsize=None)
def _atlas():
    box = (-1.3, -1.3, 1.3, 1.3)
    glyphs = GlyphAtlas([SIGN_GLYPHS[c[4]] for c in _CLASSES], box, res=48)
    gf = glyphs.tables[0].reshape(len(_CLASSES), glyphs.H, glyphs.W)

    fields = []
    gy, gx = np.mgrid[0:glyphs.H, 0:glyphs.W].astype(np.float64)
    gx, gy = box[0] + gx / 48, box[1] + gy / 48
    for i, (shape, _, _, inner, sym, _, hw, sc) in enumerate(_CLASSES):
        outer = _shape_sdf(shape, gx, gy, 1.0)
        inn = _shape_sdf(shape, gx, gy, inner)
        if sym == "none":
            g = np.full(gx.shape, 1e3)
        else:
            # symbol scaled by sc around the centre: resample the glyph field by nearest lookup
            sx = np.clip(np.round((gx / sc - box[0]) * 48).astype(int), 0, glyphs.W - 1)
            sy = np.clip(np.round((gy / sc - box[1]) * 48).astype(int), 0, glyphs.H - 1)
            g = gf[i][sy, sx].astype(np.float64) * sc - hw
        fields.append(np.round(np.stack([outer, inn, g]), 5))
    return FieldAtlas(np.stack(fields), box, 48)


_COLS = np.array([[c[1], c[2], c[5]] for c in _CLASSES], F)   # (10, 3 layers, 3)


def _background(rng, m):
    t = fractal(rng, m, 2, 3)
    a = hsv(rng.random(m, dtype=F) * F(0.5) + F(0.15), U(rng, 0.1, 0.5, m), U(rng, 0.08, 0.35, m))
    b = hsv(rng.random(m, dtype=F), U(rng, 0.0, 0.35, m), U(rng, 0.2, 0.6, m))
    img = lerp_img(a, b, np.clip((t - col(U(rng, 0.3, 0.6, m))) * F(3) + F(0.5), 0, 1))
    return img


def render(rng, labels, **_):
    m = len(labels)
    img = _background(rng, m)
    R = U(rng, 15, 27, m)
    cx, cy = U(rng, 24, 40, m), U(rng, 24, 40, m)
    pole = np.flatnonzero(rng.random(m) < 0.4)
    pole_c = jitter_colors(rng, (0.5, 0.5, 0.5), 0.08, m)
    if len(pole):
        sub = img[pole]
        paint(sub, cov(np.abs(X - col(cx[pole])) - F(1.6)) * (Y > col(cy[pole])), pole_c[pole])
        img[pole] = sub
    u, v = local(cx, cy, R, U(rng, -0.2, 0.2, m))
    u = u / col(U(rng, 0.82, 1.0, m))             # perspective squeeze
    outer, inner, sym = _atlas().sample(labels, u, v, nearest=True, outside=False)
    Rs = col(R) / col(pick(rng, (1.0, 1.0, 1.4, 2.0), m))   # blur via soft edges
    cols = jitter_colors(rng, _COLS[labels].reshape(-1, 3), 0.06, m * 3).reshape(m, 3, 3)
    paint(img, cov((outer - F(0.07)) * Rs), jitter_colors(rng, (0.85, 0.85, 0.85), 0.06, m))
    paint(img, cov(outer * Rs), cols[:, 0])
    paint(img, cov(inner * Rs), cols[:, 1])
    paint(img, cov(sym * Rs), cols[:, 2])
    # lighting: GTSRB is often dark and low-contrast, with a gradient across the sign
    g = U(rng, -0.012, 0.012, m)
    shade(img, F(1) + col(g) * (X - F(32)) + col(g[::-1]) * (Y - F(32)))
    img *= U(rng, 0.8, 1.2, 3 * m).reshape(m, 3, 1, 1)         # light colour / white balance
    return finish(img, rng, 0.035, gain=U(rng, 0.6, 1.15, m))
