"""`landcover` (mirrors EuroSAT): hazy, low-detail Sentinel-2-like tiles of ten land-cover classes.

Shares building blocks with `aerial` (fields, roads, rivers, roofs) but is coarser, texture-like
and seen through a bluish haze with low contrast, like EuroSAT's RGB bands.
"""
from __future__ import annotations

import numpy as np

from ._render import (F, U, col, cov, finish, fractal, frac, jitter_colors, lerp_img, local,
                      noise, paint, paint_img, palette_pick, shade, sin, tint, tri)

CLASSNAMES = ("annual crop", "forest", "herbaceous vegetation", "highway", "industrial",
              "pasture", "permanent crop", "residential", "river", "sea or lake")

_CROP = np.array([[0.55, 0.48, 0.36], [0.42, 0.52, 0.28], [0.62, 0.56, 0.4], [0.35, 0.45, 0.25],
                  [0.5, 0.42, 0.32], [0.6, 0.6, 0.45]], F)
_GREENS = ((0.12, 0.24, 0.13), (0.18, 0.3, 0.15), (0.25, 0.3, 0.15), (0.3, 0.4, 0.22),
           (0.36, 0.5, 0.26), (0.4, 0.45, 0.3))


def _fields(rng, m, pal, fu=(16, 28), fv=(10, 20), rot=0.6):
    u, v = local(U(rng, 20, 44, m), U(rng, 20, 44, m), None, U(rng, -rot, rot, m))
    su, sv = col(U(rng, *fu, m)), col(U(rng, *fv, m))
    ci = np.floor(u / su).astype(np.intp) & 7
    ri = np.floor(v / sv).astype(np.intp) & 7
    rows = np.arange(m)[:, None, None]
    fidx = rng.integers(0, len(pal), (m, 8, 8))
    img = np.moveaxis(pal[fidx[rows, ri, ci]], -1, 1).copy()
    return img, u, v, su, sv


def _annual_crop(rng, m):
    img, u, v, su, sv = _fields(rng, m, _CROP, (10, 22), (6, 12))
    shade(img, F(0.92) + F(0.08) * tri(u / F(3)) + F(0.1) * noise(rng, m, 8))
    return img


def _forest(rng, m):
    img = tint(palette_pick(rng, _GREENS[:3], m, 0.03),
               F(0.7) + F(0.35) * fractal(rng, m, 8, 3) + F(0.25) * noise(rng, m, 32))
    return img


def _herbaceous(rng, m):
    t = fractal(rng, m, 4, 4)
    img = lerp_img(palette_pick(rng, _GREENS[2:], m, 0.04),
                   palette_pick(rng, ((0.52, 0.5, 0.34), (0.5, 0.42, 0.3), (0.45, 0.48, 0.3)), m),
                   np.clip((t - F(0.35)) * F(3), 0, 1))
    shade(img, F(0.85) + F(0.3) * noise(rng, m, 32))
    return img


def _highway(rng, m):
    img, u, v, su, sv = _fields(rng, m, _CROP * F(1.05), (18, 30), (14, 24))
    shade(img, F(0.92) + F(0.12) * noise(rng, m, 8))
    a, b = local(U(rng, 24, 40, m), U(rng, 24, 40, m), None, U(rng, 0, 6.2832, m))
    c = col(U(rng, 0, 5, m)) * sin(a * F(0.06) + col(U(rng, 0, 6.3, m)))
    d = np.abs(b - c)
    w = col(U(rng, 1.6, 2.6, m))
    paint(img, cov(d - w, 1.5), jitter_colors(rng, (0.62, 0.6, 0.58), 0.04, m))
    ramp = (rng.random(m) < 0.5)[:, None, None]
    d2 = np.abs(np.sqrt((a - F(10)) ** 2 + (b - F(9)) ** 2) - F(8))
    paint(img, cov(d2 - F(1.2), 1.5) * ramp * F(0.8), (0.6, 0.6, 0.58))
    return img


def _industrial(rng, m):
    img = tint(jitter_colors(rng, (0.45, 0.44, 0.42), 0.04, m), F(0.9) + F(0.2) * noise(rng, m, 16))
    u, v = local(U(rng, 20, 44, m), U(rng, 20, 44, m), None, U(rng, -0.4, 0.4, m))
    su, sv = col(U(rng, 12, 20, m)), col(U(rng, 10, 16, m))
    lu, lv = frac(u / su) * su, frac(v / sv) * sv
    rows = np.arange(m)[:, None, None]
    ci = np.floor(u / su).astype(np.intp) & 7
    ri = np.floor(v / sv).astype(np.intp) & 7
    tone = U(rng, 0.55, 0.95, m * 64).reshape(m, 8, 8)[rows, ri, ci]
    blue = (rng.random((m, 8, 8)) < 0.2)[rows, ri, ci]
    fw = U(rng, 0.2, 0.48, m * 64).reshape(m, 8, 8)[rows, ri, ci]
    fh = U(rng, 0.2, 0.46, m * 64).reshape(m, 8, 8)[rows, ri, ci]
    bld = np.maximum(np.abs(lu - su * F(0.5)) - su * fw, np.abs(lv - sv * F(0.5)) - sv * fh)
    roof = np.stack([tone, tone, tone + blue * F(0.12)], 1)
    a = cov(bld, 1.5)[:, None]
    img += a * (roof - img)
    return img


def _pasture(rng, m):
    img = tint(palette_pick(rng, _GREENS[2:], m, 0.04),
               F(0.88) + F(0.2) * fractal(rng, m, 2, 3))
    u, v = local(U(rng, 20, 44, m), U(rng, 20, 44, m), None, U(rng, -0.5, 0.5, m))
    su = col(U(rng, 24, 40, m))
    hedge = np.maximum(np.abs((frac(u / su) - F(0.5)) * su), np.abs((frac(v / su) - F(0.5)) * su))
    edge = su * F(0.5) - hedge
    paint(img, cov(edge - F(0.8), 1.5) * (rng.random(m) < 0.6)[:, None, None] * F(0.6),
          (0.15, 0.28, 0.12))
    return img


def _permanent_crop(rng, m):
    img, u, v, su, sv = _fields(rng, m, np.array([[0.45, 0.45, 0.3], [0.38, 0.45, 0.26],
                                                   [0.5, 0.46, 0.34]], F), (18, 30), (14, 26))
    per = col(U(rng, 3.0, 4.0, m))
    rows_ = tri(u / per)
    dots = tri(v / per)
    orchard = (rng.random(m) < 0.5)[:, None, None]
    pat = np.where(orchard, rows_ * dots, rows_)
    shade(img, F(0.72) + F(0.45) * pat)
    return img


def _residential(rng, m):
    img = tint(jitter_colors(rng, (0.42, 0.44, 0.34), 0.04, m), F(0.9) + F(0.2) * noise(rng, m, 8))
    u, v = local(U(rng, 20, 44, m), U(rng, 20, 44, m), None, U(rng, 0, 6.2832, m))
    cell = col(U(rng, 3.2, 4.2, m))
    lu, lv = frac(u / cell), frac(v / cell)
    house = (np.abs(lu - F(0.5)) < 0.3) & (np.abs(lv - F(0.5)) < 0.3)
    bw = col(U(rng, 12, 18, m))
    street = (frac(u / bw) < 0.15) | (frac(v / bw) < 0.18)
    rows = np.arange(m)[:, None, None]
    tone = U(rng, 0.55, 0.85, m * 256).reshape(m, 16, 16)
    t = tone[rows, np.floor(v / cell).astype(np.intp) & 15, np.floor(u / cell).astype(np.intp) & 15]
    occ = (tone > 0.6)[rows, np.floor(u / cell).astype(np.intp) & 15, np.floor(v / cell).astype(np.intp) & 15]
    red = F(0.1) * (t > 0.7)
    paint_img(img, (house & ~street & occ) * F(0.8), np.stack([t + red, t * F(0.9), t * F(0.85)], 1))
    paint(img, street * F(0.7), (0.62, 0.6, 0.58))
    return img


def _river(rng, m):
    img, u, v, su, sv = _fields(rng, m, _CROP, (16, 28), (12, 22))
    shade(img, F(0.92) + F(0.12) * noise(rng, m, 8))
    a, b = local(U(rng, 26, 38, m), U(rng, 26, 38, m), None, U(rng, 0, 6.2832, m))
    c = col(U(rng, 4, 12, m)) * sin(a * col(U(rng, 0.06, 0.14, m)) + col(U(rng, 0, 6.3, m)))
    w = col(U(rng, 2.0, 4.0, m))
    paint(img, cov(np.abs(b - c) - w - F(2), 2), jitter_colors(rng, (0.2, 0.32, 0.16), 0.03, m))
    paint(img, cov(np.abs(b - c) - w, 1.5), palette_pick(rng, ((0.08, 0.14, 0.22), (0.06, 0.1, 0.12),
                                                              (0.12, 0.18, 0.2)), m, 0.03))
    return img


def _sea(rng, m):
    img = tint(palette_pick(rng, ((0.07, 0.13, 0.22), (0.05, 0.1, 0.12), (0.1, 0.18, 0.22),
                                  (0.12, 0.15, 0.15)), m, 0.03), F(0.9) + F(0.2) * noise(rng, m, 4))
    u, v = local(U(rng, 24, 40, m), U(rng, 24, 40, m), None, U(rng, 0, 6.2832, m))
    shore = col(U(rng, 34, 60, m)) + F(3) * sin(u * F(0.12))
    land = cov(shore - v, 2) * (rng.random(m) < 0.5)[:, None, None]
    paint(img, land, jitter_colors(rng, (0.38, 0.45, 0.28), 0.05, m))
    return img


_CLASS_FNS = (_annual_crop, _forest, _herbaceous, _highway, _industrial, _pasture, _permanent_crop,
              _residential, _river, _sea)


def render(rng, labels, **_):
    m = len(labels)
    img = np.empty((m, 3, 64, 64), F)
    for c in range(len(CLASSNAMES)):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            img[idx] = _CLASS_FNS[c](rng, len(idx))
    # Sentinel-2 look: low contrast towards a bluish haze, slight per-image colour cast
    contrast = U(rng, 0.45, 0.6, m)
    haze = jitter_colors(rng, (0.3, 0.37, 0.45), 0.02, m) * (F(1) - contrast)[:, None]
    img *= U(rng, 0.9, 1.1, 3 * m).reshape(m, 3, 1, 1)
    return finish(img, rng, 0.02, gain=contrast * U(rng, 0.85, 1.1, m), bias=haze)
