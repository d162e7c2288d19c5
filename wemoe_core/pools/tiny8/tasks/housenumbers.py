"""`housenumbers` (mirrors SVHN): crops of 2-4 digit house numbers on coloured plates.

The label is the digit in the centre of the crop; its neighbours (random digits, same style)
are partly visible at the sides. Digits are stroke glyphs in two styles (rounded / squared) with
random stroke weight, slant, width, rotation, shadow and blur; plates have random colours with
a contrasting ink, lighting gradients and wall/frame clutter.
"""
from __future__ import annotations

import numpy as np

from ._glyphs import digit_atlas
from ._render import (F, X, Y, U, col, cov, d_box, finish, glyph_coords, hsv, noise, paint,
                      pick, shade, tint)

CLASSNAMES = tuple(str(d) for d in range(10))


def render(rng, labels, **_):
    m = len(labels)
    atlas = digit_atlas()
    # plate and ink colours: light-on-dark or dark-on-light, random hue
    hue = rng.random(m, dtype=F)
    dark_plate = rng.random(m) < 0.5
    pv = np.where(dark_plate, U(rng, 0.12, 0.4, m), U(rng, 0.65, 0.95, m))
    iv = np.where(dark_plate, U(rng, 0.75, 1.0, m), U(rng, 0.05, 0.3, m))
    plate = hsv(hue, U(rng, 0.0, 0.7, m), pv)
    ink = hsv(np.where(rng.random(m) < 0.5, hue, rng.random(m, dtype=F)), U(rng, 0.0, 0.6, m), iv)
    wall = hsv(rng.random(m, dtype=F), U(rng, 0.0, 0.5, m), U(rng, 0.2, 0.8, m))
    img = tint(wall, F(0.85) + F(0.3) * noise(rng, m, 8))
    # plate rectangle: covers the digits' band, its top/bottom edges sometimes visible
    ph = U(rng, 16, 20, m)
    pcx = U(rng, 24, 40, m)
    plate_d = d_box(X, Y, col(pcx), col(U(rng, 31, 33, m)), col(U(rng, 34, 60, m)), col(ph))
    paint(img, cov(plate_d + F(1.5)), plate * F(0.6))
    paint(img, cov(plate_d), plate)
    # digits: centre one labelled, neighbours random; 2-4 digits in total
    height = U(rng, 26, 33, m)
    aspect = U(rng, 0.85, 1.25, m)
    gap = U(rng, 0.2, 0.32, m)
    style = rng.integers(0, 2, m)
    slant = U(rng, -0.18, 0.12, m)
    ang = U(rng, -0.12, 0.12, m)
    hw = U(rng, 0.06, 0.095, m)                   # stroke half width (glyph units)
    cx, cy = U(rng, 29, 35, m), U(rng, 30, 34, m)
    n_left = pick(rng, (0, 1, 1, 1, 1, 2, 2), m)
    n_right = np.where(n_left == 0, pick(rng, (1, 2), m), pick(rng, (0, 1, 1, 1, 2), m))
    # glyph per slot (left neighbour, centre, right neighbour); absent neighbours -> index 20
    glyph = np.stack([rng.integers(0, 10, m), labels, rng.integers(0, 10, m)], 1) + style[:, None] * 10
    glyph[:, 0] = np.where(n_left > 0, glyph[:, 0], 20)
    glyph[:, 2] = np.where(n_right > 0, glyph[:, 2], 20)
    step = col(F(0.6) + gap)                       # glyph units between digit origins
    gu, gv = glyph_coords(cx, cy, height, ang, slant, aspect, anchor=(0.0, 0.5))
    slot = np.clip(np.floor(gu / step + F(0.5)), -1, 1)
    gu = gu - slot * step + F(0.3)
    kk = np.take(glyph.reshape(-1), (np.arange(m) * 3 + 1)[:, None, None] + slot.astype(np.intp))
    dist = atlas.sample(kk, gu, gv)
    cover = cov((dist - col(hw)) * col(height) / col(pick(rng, (1.0, 1.0, 1.5, 2.2), m)))
    sh = np.flatnonzero(rng.random(m) < 0.4)
    if len(sh):
        o = 2
        shadow = np.zeros((len(sh), 64, 64), F)
        shadow[:, o:, o:] = cover[sh, :-o, :-o]
        img[sh] *= (F(1) - F(0.5) * shadow)[:, None]
    paint(img, cover, ink)
    # lighting gradient
    gx, gy = U(rng, -0.008, 0.008, m), U(rng, -0.008, 0.008, m)
    shade(img, F(1) + col(gx) * (X - F(32)) + col(gy) * (Y - F(32)))
    return finish(img, rng, 0.04, gain=U(rng, 0.7, 1.2, m))
