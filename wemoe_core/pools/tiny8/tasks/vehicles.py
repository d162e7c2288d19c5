"""`vehicles` (mirrors Stanford Cars): side-view vehicle silhouettes on a street background.

Vehicle units: the vehicle spans u in [-0.5, 0.5], the ground is v = 0 and up is negative v.
Each class returns signed distances (vehicle units) of four paint layers: body (random body
colour), glass, tyres and details (hubs, lights).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

from ._render import (F, X, Y, U, FieldAtlas, col, cov, d_box, d_circle, d_ellipse, d_poly,
                      d_seg, finish, frac, hsv, jitter_colors, noise, paint, paint_img, pick,
                      shade, tint)

CLASSNAMES = ("sedan", "sports car", "pickup truck", "van", "bus", "box truck", "tractor",
              "motorbike", "bicycle", "airplane")

_BIG = F(1e3)


def _wheels(u, v, xs, r, hub=0.5):
    tyre = None
    hubd = None
    for x in xs:
        d = d_circle(u, v, F(x), F(-r), F(r))
        h = d_circle(u, v, F(x), F(-r), F(r * hub))
        tyre = d if tyre is None else np.minimum(tyre, d)
        hubd = h if hubd is None else np.minimum(hubd, h)
    return tyre, hubd


def _sedan(u, v):
    # three-box: boot, tall cabin in the middle, bonnet
    body = np.minimum(d_box(u, v, 0.0, -0.21, 0.5, 0.11, 0.06),
                      d_poly(u, v, [(-0.3, -0.26), (-0.2, -0.5), (0.12, -0.5), (0.26, -0.26)]))
    glass = np.minimum(d_poly(u, v, [(-0.25, -0.29), (-0.17, -0.46), (-0.04, -0.46), (-0.04, -0.29)]),
                       d_poly(u, v, [(0.0, -0.29), (0.0, -0.46), (0.1, -0.46), (0.2, -0.29)]))
    tyre, hub = _wheels(u, v, (-0.31, 0.31), 0.1)
    det = np.minimum(hub, d_box(u, v, 0.48, -0.22, 0.03, 0.02))
    return body, glass, tyre, det


def _sports(u, v):
    # very low wedge, small cabin set back, rear wing
    body = np.minimum(d_poly(u, v, [(-0.5, -0.2), (-0.5, -0.06), (0.5, -0.06), (0.5, -0.09),
                                    (0.2, -0.18), (-0.2, -0.22)]),
                      d_poly(u, v, [(-0.32, -0.2), (-0.18, -0.3), (-0.04, -0.3), (0.16, -0.17)]))
    body = np.minimum(body, d_seg(u, v, -0.5, -0.27, -0.38, -0.22) - F(0.025))
    glass = d_poly(u, v, [(-0.26, -0.21), (-0.16, -0.27), (-0.06, -0.27), (0.1, -0.18)])
    tyre, hub = _wheels(u, v, (-0.33, 0.32), 0.1, 0.6)
    return body, glass, tyre, hub


def _pickup(u, v):
    body = np.minimum(d_box(u, v, 0.0, -0.24, 0.5, 0.1, 0.03),
                      d_box(u, v, 0.16, -0.4, 0.14, 0.16, 0.03))
    body = np.minimum(body, d_box(u, v, -0.27, -0.36, 0.23, 0.03))
    glass = d_poly(u, v, [(0.06, -0.36), (0.06, -0.52), (0.2, -0.52), (0.27, -0.36)])
    tyre, hub = _wheels(u, v, (-0.3, 0.32), 0.12)
    det = np.minimum(hub, d_box(u, v, 0.49, -0.26, 0.02, 0.03))
    return body, glass, tyre, det


def _van(u, v):
    # tall one-box with a short sloped nose
    body = np.minimum(d_box(u, v, -0.06, -0.4, 0.44, 0.31, 0.06),
                      d_poly(u, v, [(0.3, -0.7), (0.5, -0.3), (0.5, -0.09), (0.3, -0.09)]))
    glass = np.minimum(d_poly(u, v, [(0.3, -0.42), (0.3, -0.62), (0.36, -0.62), (0.45, -0.42)]),
                       d_box(u, v, -0.05, -0.52, 0.28, 0.08, 0.02))
    tyre, hub = _wheels(u, v, (-0.32, 0.3), 0.1)
    det = np.minimum(hub, d_seg(u, v, 0.16, -0.42, 0.16, -0.12) - F(0.008))
    return body, glass, tyre, det


def _bus(u, v):
    # long and flat: height ~0.34 of the length, a row of many windows
    body = d_box(u, v, 0.0, -0.24, 0.5, 0.17, 0.04)
    win = d_box(u, v, -0.05, -0.31, 0.4, 0.05)
    cells = np.abs(frac((u + F(0.5)) / F(0.09)) - F(0.5)) * F(0.09) - F(0.032)
    glass = np.minimum(np.maximum(win, cells), d_box(u, v, 0.47, -0.3, 0.025, 0.07))
    tyre, hub = _wheels(u, v, (-0.33, 0.3), 0.07)
    det = np.minimum(hub, d_box(u, v, 0.4, -0.2, 0.035, 0.1))
    return body, glass, tyre, det


def _boxtruck(u, v):
    # coloured cab in front of a tall light cargo box (drawn in the detail layer)
    cargo = d_box(u, v, -0.15, -0.45, 0.35, 0.27, 0.01)
    cab = d_poly(u, v, [(0.25, -0.46), (0.42, -0.46), (0.5, -0.3), (0.5, -0.1), (0.25, -0.1)])
    glass = d_poly(u, v, [(0.33, -0.32), (0.33, -0.42), (0.41, -0.42), (0.46, -0.32)])
    tyre, hub = _wheels(u, v, (-0.36, -0.18, 0.37), 0.085)
    det = np.minimum(np.minimum(hub, cargo), d_seg(u, v, -0.5, -0.13, 0.25, -0.13) - F(0.012))
    body = cab
    return body, glass, tyre, det


def _tractor(u, v):
    hood = d_box(u, v, 0.2, -0.3, 0.24, 0.09, 0.02)
    cab_posts = np.minimum(d_seg(u, v, -0.32, -0.3, -0.3, -0.72), d_seg(u, v, 0.02, -0.3, 0.0, -0.72))
    roof = d_box(u, v, -0.15, -0.73, 0.22, 0.025)
    body = np.minimum(np.minimum(hood, cab_posts - F(0.025)), roof)
    body = np.minimum(body, d_box(u, v, -0.12, -0.33, 0.2, 0.07))
    glass = d_box(u, v, -0.15, -0.52, 0.12, 0.16)
    tyre, hub = _wheels(u, v, (-0.2,), 0.27, 0.45)
    t2, h2 = _wheels(u, v, (0.34,), 0.14, 0.45)
    tyre, hub = np.minimum(tyre, t2), np.minimum(hub, h2)
    det = np.minimum(hub, d_seg(u, v, 0.3, -0.38, 0.3, -0.55) - F(0.015))
    return body, glass, tyre, det


def _motorbike(u, v):
    r = 0.15
    body = np.minimum(d_ellipse(u, v, 0.0, -0.3, 0.17, 0.08),
                      d_seg(u, v, 0.3, -0.15, 0.2, -0.45) - F(0.025))
    body = np.minimum(body, d_poly(u, v, [(-0.12, -0.22), (-0.02, -0.2), (0.12, -0.14), (-0.1, -0.12)]))
    body = np.minimum(body, d_seg(u, v, -0.33, -0.15, -0.1, -0.2) - F(0.02))
    glass = d_box(u, v, -0.2, -0.36, 0.12, 0.025, 0.02)
    tyre, hub = _wheels(u, v, (-0.33, 0.33), r, 0.55)
    det = np.minimum(hub, d_seg(u, v, 0.16, -0.5, 0.26, -0.48) - F(0.015))
    return body, glass, tyre, det


def _bicycle(u, v):
    r = 0.22
    a, b = (-0.3, -r), (0.3, -r)
    bb, seat, head = (0.0, -0.2), (-0.08, -0.5), (0.22, -0.5)
    frame = None
    for p, q in ((a, bb), (bb, seat), (seat, a), (bb, head), (seat, head), (head, b)):
        d = d_seg(u, v, p[0], p[1], q[0], q[1])
        frame = d if frame is None else np.minimum(frame, d)
    body = frame - F(0.022)
    body = np.minimum(body, d_seg(u, v, -0.16, -0.55, 0.0, -0.55) - F(0.025))
    rings = np.minimum(np.abs(d_circle(u, v, F(a[0]), F(a[1]), F(r - 0.02))),
                       np.abs(d_circle(u, v, F(b[0]), F(b[1]), F(r - 0.02)))) - F(0.03)
    det = np.minimum(d_seg(u, v, 0.2, -0.58, 0.3, -0.6) - F(0.02), d_circle(u, v, 0.0, -0.2, 0.04))
    return body, _BIG + u * 0, rings, det


def _airplane(u, v):
    fus = np.minimum(d_seg(u, v, -0.36, -0.45, 0.4, -0.45) - F(0.075),
                     d_poly(u, v, [(-0.5, -0.62), (-0.38, -0.62), (-0.25, -0.5), (-0.43, -0.45)]))
    wing = d_poly(u, v, [(-0.12, -0.42), (0.1, -0.42), (-0.05, -0.2), (-0.14, -0.2)])
    body = np.minimum(fus, wing)
    cells = np.abs(frac((u + F(0.5)) / F(0.07)) - F(0.5)) * F(0.07) - F(0.018)
    glass = np.minimum(np.maximum(d_box(u, v, 0.02, -0.48, 0.3, 0.018), cells),
                       d_poly(u, v, [(0.36, -0.5), (0.42, -0.5), (0.46, -0.45), (0.38, -0.45)]))
    tyre = np.minimum(d_circle(u, v, 0.3, -0.32, 0.03), d_circle(u, v, -0.08, -0.32, 0.035))
    det = d_ellipse(u, v, -0.02, -0.32, 0.08, 0.035)
    return body, glass, tyre, det


_CLASS_FNS = (_sedan, _sports, _pickup, _van, _bus, _boxtruck, _tractor, _motorbike, _bicycle,
              _airplane)
_BODY_PAL = np.array([[0.9, 0.9, 0.9], [0.1, 0.1, 0.12], [0.6, 0.62, 0.66], [0.75, 0.1, 0.1],
                      [0.1, 0.25, 0.65], [0.1, 0.4, 0.2], [0.9, 0.75, 0.1], [0.95, 0.5, 0.1]], F)


@lru_cache(maxsize=None)
def _atlas():
    return FieldAtlas.from_functions(_CLASS_FNS, (-0.62, -0.86, 0.62, 0.12), 80)


def _background(rng, m):
    g = U(rng, 42, 52, m)
    wall = hsv(rng.random(m, dtype=F), U(rng, 0.0, 0.2, m), U(rng, 0.6, 0.95, m))
    # brightness field: vertical gradient x blurred blocks (buildings, far vehicles)
    nb = 8
    w = col(U(rng, 8, 16, m))
    ph = col(U(rng, 0, 8, m))
    bi = np.clip(np.floor((X + ph) / w).astype(np.intp), 0, nb - 1)
    rows = np.arange(m)[:, None, None]
    top = col(g) - U(rng, 6, 36, m * nb).reshape(m, nb)[rows, bi]
    tone = U(rng, 0.8, 1.15, m * nb).reshape(m, nb)[rows, bi]
    bright = (F(1.1) - F(0.25) * np.clip(Y / col(g), 0, 1)) * (F(1) + (tone - F(1)) * cov(top - Y, 1.5))
    img = tint(wall, bright)
    trees = (noise(rng, m, 4) > col(U(rng, 0.7, 0.95, m))) * cov(col(g) - F(4) - Y)
    paint(img, trees * F(0.8), jitter_colors(rng, (0.2, 0.35, 0.18), 0.08, m))
    road = np.repeat(U(rng, 0.18, 0.36, m)[:, None], 3, 1) + U(rng, -0.03, 0.03, m * 3).reshape(m, 3)
    lane = (np.abs(Y - col(g + U(rng, 5, 10, m))) < 1) & (frac(X / F(16) + col(U(rng, 0, 1, m))) < 0.5)
    rt = (F(0.9) + F(0.2) * noise(rng, m, 16)) + lane * F(1.2)
    paint_img(img, cov(col(g - U(rng, 3, 8, m)) - Y), tint(road, rt))
    return img, g


def render(rng, labels, **_):
    m = len(labels)
    img, g = _background(rng, m)
    length = U(rng, 40, 56, m)
    cx = U(rng, 25, 39, m)
    flip = np.where(rng.random(m) < 0.5, F(-1), F(1))
    aspect = U(rng, 0.92, 1.08, m)
    soft = col(pick(rng, (1.0, 1.0, 1.6, 2.2), m))
    body_c = np.where((rng.random(m) < 0.5)[:, None], _BODY_PAL[rng.integers(0, 8, m)],
                      hsv(rng.random(m, dtype=F), U(rng, 0.3, 0.9, m), U(rng, 0.25, 0.95, m)))
    body_c = jitter_colors(rng, body_c, 0.05, m)
    glass_c = jitter_colors(rng, (0.18, 0.24, 0.3), 0.06, m)
    tyre_c = jitter_colors(rng, (0.06, 0.06, 0.06), 0.03, m)
    det_c = jitter_colors(rng, (0.75, 0.75, 0.72), 0.08, m)
    gy = g.copy()
    air = labels == 9
    gy[air] = U(rng, 40, 50, int(air.sum()))
    shadow = d_ellipse(X, Y, col(cx), col(g), col(length * F(0.5)), col(length * F(0.05)))
    shade(img, F(1) - cov(shadow, 3) * F(0.5) * (~air)[:, None, None])
    u = (X - col(cx)) / col(length) * col(flip)
    v = (Y - col(gy)) / col(length * aspect)
    L = col(length) / soft
    layers = _atlas().sample(labels, u, v, nearest=True, outside=False)
    for d, colr in zip(layers, (body_c, glass_c, tyre_c, det_c)):
        paint(img, cov(d * L), colr)
    return finish(img, rng, 0.035, gain=U(rng, 0.75, 1.15, m))
