"""`aerial` (mirrors RESISC45): bright, detailed top-down views of ten kinds of places.

All layouts are drawn in rotated local coordinates (aerial images have no "up").
"""
from __future__ import annotations

import numpy as np

from ._render import (F, U, col, cov, d_circle, finish, fractal, frac, jitter_colors, lerp_img,
                      local, noise, paint, paint_img, palette_pick, pick, shade, sin, tint, tri)

CLASSNAMES = ("airport runway", "harbor", "baseball diamond", "roundabout", "parking lot",
              "dense residential", "river", "farmland", "storage tanks", "bridge")

_ROOFS = np.array([[0.7, 0.3, 0.22], [0.55, 0.3, 0.2], [0.6, 0.6, 0.62], [0.8, 0.78, 0.74],
                   [0.35, 0.35, 0.4], [0.75, 0.5, 0.3]], F)
_CARS = np.array([[0.9, 0.9, 0.9], [0.1, 0.1, 0.1], [0.7, 0.1, 0.1], [0.15, 0.25, 0.6],
                  [0.6, 0.6, 0.62], [0.85, 0.85, 0.8], [0.2, 0.2, 0.22]], F)


_GRASS = ((0.36, 0.46, 0.24), (0.45, 0.5, 0.3), (0.28, 0.38, 0.2), (0.5, 0.48, 0.32))
_SOIL = ((0.58, 0.52, 0.4), (0.62, 0.6, 0.52), (0.5, 0.42, 0.32), (0.55, 0.55, 0.5))
_WATER = ((0.12, 0.3, 0.38), (0.08, 0.18, 0.3), (0.2, 0.32, 0.26), (0.28, 0.35, 0.4),
          (0.25, 0.28, 0.22))


def water(rng, m):
    return palette_pick(rng, _WATER, m, 0.04)


def ground(rng, m, grass=None, soil=None, k0=4):
    """Mottled grass / soil background shared by the aerial-looking generators (season and
    region vary: the palette is drawn per image unless given)."""
    t = fractal(rng, m, k0, 3)
    grass = palette_pick(rng, _GRASS, m) if grass is None else jitter_colors(rng, grass, 0.05, m)
    soil = palette_pick(rng, _SOIL, m) if soil is None else jitter_colors(rng, soil, 0.05, m)
    g = lerp_img(grass, soil,
                 smoothstep01((t - col(U(rng, 0.3, 0.7, m))) * F(4) + F(0.5)))
    shade(g, F(0.88) + F(0.24) * noise(rng, m, 16))
    return g


def smoothstep01(x):
    x = np.clip(x, 0, 1)
    return x * x * (F(3) - F(2) * x)


def _rot(rng, m, jit=10.0):
    return local(U(rng, 32 - jit, 32 + jit, m), U(rng, 32 - jit, 32 + jit, m), None,
                 U(rng, 0, 6.2832, m))


def _runway(rng, m):
    img = ground(rng, m)
    u, v = _rot(rng, m, 6)
    w = col(U(rng, 4.5, 6.5, m))
    asphalt = palette_pick(rng, ((0.42, 0.42, 0.43), (0.6, 0.6, 0.58), (0.3, 0.3, 0.32)), m)
    paint(img, cov(np.abs(v) - w), asphalt)
    dash = (np.abs(v) < 0.8) & (frac(u / F(9)) < 0.45)
    edge = np.abs(np.abs(v) - w + F(1.2)) < 0.5
    paint(img, (dash | edge) * F(0.9), (0.95, 0.95, 0.95))
    off = col(U(rng, 14, 20, m)) * col(pick(rng, (-1.0, 1.0), m))
    link = np.maximum(np.abs(u - col(U(rng, -15, 15, m))) - F(2),
                      (v - off * F(0.5)) * np.sign(off) - np.abs(off) * F(0.5))
    taxi = np.minimum(np.abs(v - off) - F(2), link)
    paint(img, cov(taxi), jitter_colors(rng, (0.5, 0.5, 0.5), 0.04, m))
    return img


def _harbor(rng, m):
    img = tint(palette_pick(rng, _SOIL, m), F(0.9) + F(0.2) * noise(rng, m, 16))
    u, v = _rot(rng, m, 4)
    shore = col(U(rng, -24, -14, m))
    paint(img, cov(shore - v), water(rng, m))
    per = col(U(rng, 12, 17, m))
    cu = (frac(u / per) - F(0.5)) * per
    plen = col(U(rng, 26, 40, m))
    pier = np.maximum(np.abs(cu) - F(1.0), np.maximum(shore - v, v - shore - plen))
    paint(img, cov(pier), (0.85, 0.85, 0.82))
    # moored boats: small capsules on both sides of each pier, some berths empty
    side = cu < 0
    bu = np.abs(cu) - F(3.2)
    slot = (v - shore) / F(5.5)
    bl = (frac(slot) - F(0.5)) * F(5.5)
    boat = np.maximum(np.abs(bu) - F(1.3), np.abs(bl) - F(1.6))
    boat = np.maximum(boat, v - shore - plen)
    occ = rng.random((m, 2, 16), dtype=F) < col(U(rng, 0.4, 0.8, m))
    rows = np.arange(m)[:, None, None]
    berth = (np.floor(slot).astype(np.intp) + np.floor(u / per).astype(np.intp) * 5) & 15
    o = occ[rows, side.astype(np.intp), berth]
    paint(img, cov(boat) * o * (v > shore + 2), jitter_colors(rng, (0.95, 0.95, 0.95), 0.04, m))
    return img


def _baseball(rng, m):
    img = ground(rng, m, grass=(0.3, 0.5, 0.22), soil=(0.4, 0.5, 0.28))
    cx, cy = U(rng, 22, 42, m), U(rng, 22, 42, m)
    s = col(U(rng, 0.85, 1.15, m))
    u, v = local(cx, cy, s[:, 0, 0], U(rng, 0, 6.2832, m))
    # home plate at (0, 16); the field opens towards -v
    hv = F(16) - v
    wedge = np.abs(u) - hv
    r = np.sqrt(u * u + hv * hv)
    shade(img, np.where((wedge < 0) & (frac(r / F(7)) < 0.5) & (r < 44), F(1.1), F(1)))
    dirt_c = palette_pick(rng, ((0.72, 0.55, 0.38), (0.62, 0.38, 0.28), (0.6, 0.5, 0.4)), m)
    paint(img, cov(np.maximum(wedge - F(2), r - F(25)) * s), dirt_c)
    infield = np.abs(u) + np.abs(hv - F(11)) - F(8.5)
    paint(img, cov(infield * s), jitter_colors(rng, (0.32, 0.58, 0.24), 0.04, m))
    paint(img, cov(d_circle(u, hv, F(0), F(11), F(2.2)) * s), dirt_c)
    paint(img, cov((np.abs(r - F(44)) - F(1.2)) * s) * (wedge < 0), dirt_c * F(0.8))
    line = np.maximum(np.abs(np.abs(u) - hv) * F(0.7071) - F(0.45), r - F(44))
    paint(img, cov(line * s) * (hv > 0), (0.95, 0.95, 0.95))
    return img


def _roundabout(rng, m):
    img = ground(rng, m)
    u, v = local(U(rng, 26, 38, m), U(rng, 26, 38, m), None, U(rng, 0, 6.2832, m))
    R = col(U(rng, 10, 15, m))
    road_c = jitter_colors(rng, (0.5, 0.5, 0.52), 0.05, m)
    rd = np.sqrt(u * u + v * v)
    roads = np.minimum(np.abs(u) - F(2.8), np.maximum(np.abs(v) - F(2.8), -u))
    roads = np.maximum(roads, R - rd)
    three = pick(rng, (0, 1), m)[:, None, None] > 0
    roads = np.minimum(roads, np.where(three, F(1e3), np.maximum(np.abs(v) - F(2.8), R - rd)))
    paint(img, cov(np.minimum(np.abs(rd - R) - F(3.5), roads)), road_c)
    paint(img, cov(rd - R + F(3.5)), jitter_colors(rng, (0.3, 0.5, 0.22), 0.06, m))
    paint(img, cov(np.abs(rd - R) - F(0.4)) * (frac(rd * F(0.5) + u * F(0.15)) < 2), road_c * F(1.1))
    return img


def _parking(rng, m):
    img = tint(palette_pick(rng, ((0.45, 0.45, 0.46), (0.32, 0.32, 0.34), (0.58, 0.56, 0.52)), m),
               F(0.92) + F(0.16) * noise(rng, m, 16))
    u, v = local(U(rng, 28, 36, m), U(rng, 28, 36, m), None,
                 U(rng, -0.3, 0.3, m) + pick(rng, (0.0, 1.5708), m))
    cw, rh = F(4.0), F(13.0)
    ci = np.floor(u / cw).astype(np.intp) & 15
    ri = np.floor(v / rh).astype(np.intp) & 7
    lu = (frac(u / cw) - F(0.5)) * cw
    lv = frac(v / rh) * rh
    car_row = np.abs(lv - F(6.5)) - F(5.0)
    rows = np.arange(m)[:, None, None]
    occ = rng.random((m, 8, 16), dtype=F) < col(U(rng, 0.55, 0.95, m))
    cidx = rng.integers(0, len(_CARS), (m, 8, 16))
    car = np.maximum(np.abs(lu) - F(1.2), np.abs(np.abs(lv - F(6.5)) - F(2.6)) - F(2.0))
    line = (np.abs(lu) > F(1.5)) & (car_row < 0) & (np.abs(lu) > F(1.9 - 0.0))
    paint(img, line * F(0.7), (0.85, 0.85, 0.85))
    col_img = np.moveaxis(_CARS[cidx[rows, ri, ci]], -1, 1)
    paint_img(img, cov(car) * occ[rows, ri, ci], col_img)
    return img


def _residential(rng, m):
    img = ground(rng, m)
    u, v = local(U(rng, 28, 36, m), U(rng, 28, 36, m), None, U(rng, 0, 6.2832, m))
    bw, bh = col(U(rng, 18, 24, m)), col(U(rng, 12, 16, m))
    lu, lv = frac(u / bw) * bw, frac(v / bh) * bh
    street = np.minimum(lu, lv) - F(2.5)
    paint(img, cov(street), jitter_colors(rng, (0.55, 0.55, 0.55), 0.04, m))
    hw = F(4.5)
    hu = (frac(lu / hw) - F(0.5)) * hw
    hv = np.abs(lv - bh * F(0.5) - F(1.2)) - F(2.8)
    house = np.maximum(np.maximum(np.abs(hu) - F(1.5), np.abs(hv) - F(1.6)), F(3.5) - lu)
    house = np.maximum(house, lu - bw + F(1.5))
    hi = (np.floor(u / hw).astype(np.intp) * 7 + np.floor(v / bh * 2).astype(np.intp) * 3) & 63
    roofs = rng.integers(0, len(_ROOFS), (m, 64))
    rows = np.arange(m)[:, None, None]
    roof_img = np.moveaxis(_ROOFS[roofs[rows, hi]], -1, 1)
    shade(img, F(1) - cov(house - F(1)) * F(0.35))
    paint_img(img, cov(house), roof_img)
    return img


def _river(rng, m):
    img = ground(rng, m)
    u, v = local(U(rng, 28, 36, m), U(rng, 28, 36, m), None, U(rng, 0, 6.2832, m))
    c = col(U(rng, 8, 16, m)) * sin(u * col(U(rng, 0.07, 0.12, m)) + col(U(rng, 0, 6.3, m)))
    w = col(U(rng, 3.5, 6, m))
    d = np.abs(v - c)
    trees = (noise(rng, m, 16) > 0.5) * cov(d - w - F(5))
    paint(img, trees * F(0.8), jitter_colors(rng, (0.15, 0.3, 0.12), 0.04, m))
    paint(img, cov(d - w - F(1)), jitter_colors(rng, (0.7, 0.65, 0.5), 0.05, m))
    paint(img, cov(d - w), water(rng, m))
    return img


def _farmland(rng, m):
    u, v = local(U(rng, 28, 36, m), U(rng, 28, 36, m), None, U(rng, -0.5, 0.5, m))
    fu, fv = col(U(rng, 14, 24, m)), col(U(rng, 10, 18, m))
    ci = (np.floor(u / fu).astype(np.intp) & 7)
    ri = (np.floor(v / fv).astype(np.intp) & 7)
    pal = np.array([[0.45, 0.6, 0.25], [0.7, 0.65, 0.35], [0.55, 0.45, 0.3], [0.35, 0.5, 0.2],
                    [0.75, 0.72, 0.5], [0.5, 0.55, 0.3]], F)
    fidx = rng.integers(0, len(pal), (m, 8, 8))
    rows = np.arange(m)[:, None, None]
    img = np.moveaxis(pal[fidx[rows, ri, ci]], -1, 1)
    dirn = rng.random((m, 8, 8)) < 0.5
    dd = dirn[rows, ri, ci]
    stripes = tri(np.where(dd, u, v) / F(2.5))
    shade(img, F(0.9) + F(0.12) * stripes + F(0.1) * noise(rng, m, 8))
    edge = np.minimum(np.abs((frac(u / fu) - F(0.5)) * fu) - fu * F(0.5) + F(0.8),
                      np.abs((frac(v / fv) - F(0.5)) * fv) - fv * F(0.5) + F(0.8))
    paint(img, cov(-edge) * F(0.6), jitter_colors(rng, (0.35, 0.32, 0.25), 0.04, m))
    return img


def _tanks(rng, m):
    img = tint(palette_pick(rng, _SOIL + _GRASS[:2], m), F(0.9) + F(0.2) * fractal(rng, m, 4, 3))
    u, v = local(U(rng, 28, 36, m), U(rng, 28, 36, m), None, U(rng, 0, 6.2832, m))
    per = col(U(rng, 15, 21, m))
    r = per * col(U(rng, 0.28, 0.4, m))
    lu, lv = (frac(u / per) - F(0.5)) * per, (frac(v / per) - F(0.5)) * per
    keep = rng.random((m, 8, 8)) < 0.75
    rows = np.arange(m)[:, None, None]
    k = keep[rows, np.floor(v / per).astype(np.intp) & 7, np.floor(u / per).astype(np.intp) & 7]
    d = np.sqrt(lu * lu + lv * lv) - r
    ds = np.sqrt((lu - F(2)) ** 2 + (lv - F(2)) ** 2) - r
    shade(img, F(1) - cov(ds) * k * F(0.5))
    paint(img, cov(d) * k, jitter_colors(rng, (0.92, 0.92, 0.9), 0.04, m))
    paint(img, cov(np.abs(d + r * F(0.45)) - F(0.6)) * k * F(0.5), (0.6, 0.6, 0.6))
    return img


def _bridge(rng, m):
    img = ground(rng, m)
    u, v = local(U(rng, 28, 36, m), U(rng, 28, 36, m), None, U(rng, 0, 6.2832, m))
    w = col(U(rng, 9, 14, m))
    paint(img, cov(np.abs(v) - w - F(1.5)), jitter_colors(rng, (0.62, 0.58, 0.45), 0.05, m))
    paint(img, cov(np.abs(v) - w), water(rng, m))
    bu = col(U(rng, -12, 12, m))
    bw = col(U(rng, 2.5, 3.5, m))
    shade(img, F(1) - cov(np.abs(u - bu - F(3)) - bw) * cov(np.abs(v) - w) * F(0.5))
    paint(img, cov(np.abs(u - bu) - bw), jitter_colors(rng, (0.6, 0.6, 0.6), 0.05, m))
    paint(img, cov(np.abs(u - bu) - F(0.4)) * (frac(v / F(5)) < 0.5) * F(0.7), (0.9, 0.9, 0.8))
    return img


_CLASS_FNS = (_runway, _harbor, _baseball, _roundabout, _parking, _residential, _river,
              _farmland, _tanks, _bridge)


def render(rng, labels, **_):
    m = len(labels)
    img = np.empty((m, 3, 64, 64), F)
    for c in range(len(CLASSNAMES)):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            img[idx] = _CLASS_FNS[c](rng, len(idx))
    img *= U(rng, 0.88, 1.12, 3 * m).reshape(m, 3, 1, 1)       # white balance
    return finish(img, rng, 0.03, gain=U(rng, 1.0, 1.3, m))
