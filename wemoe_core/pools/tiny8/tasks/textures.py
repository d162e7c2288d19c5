"""`textures` (mirrors DTD): full-frame texture patterns in random colours, scales, orientations
and phases."""
from __future__ import annotations

import numpy as np

from ._render import (F, U, col, cov, finish, fractal, frac, hsv, lerp_img, local, noise,
                      shade, sin, smoothstep, tri)

CLASSNAMES = ("striped", "checkered", "dotted", "zigzagged", "wavy", "grid", "bubbly", "marbled",
              "cracked", "woven")


def _band(t, width, sharp):
    """Anti-aliased band: 1 where t < width (t, width in [0, 1]); sharp ~ period in px."""
    return np.clip((width - t) * sharp + F(0.5), 0, 1)


def _coords(rng, m, p0, p1, rot=True):
    period = U(rng, p0, p1, m)
    ang = U(rng, 0, 3.1416, m) if rot else U(rng, -0.15, 0.15, m)
    u, v = local(U(rng, 0, 64, m), U(rng, 0, 64, m), period, ang)
    return u, v, col(period)


def _striped(rng, m):
    u, v, p = _coords(rng, m, 7, 14)
    return _band(tri(u), col(U(rng, 0.35, 0.6, m)), p)


def _checkered(rng, m):
    u, v, p = _coords(rng, m, 12, 22)
    a = _band(tri(u), F(0.5), p)
    b = _band(tri(v), F(0.5), p)
    return a + b - F(2) * a * b


def _dotted(rng, m):
    u, v, p = _coords(rng, m, 8, 14)
    fu, fv = frac(u) - F(0.5), frac(v) - F(0.5)
    return cov((np.sqrt(fu * fu + fv * fv) - col(U(rng, 0.18, 0.3, m))) * p)


def _zigzag(rng, m):
    # sharp chevrons: short teeth (1.2-2 periods long), steep flanks
    u, v, p = _coords(rng, m, 7, 11)
    a = col(U(rng, 0.7, 1.0, m))
    return _band(tri(v + a * F(2) * tri(u * col(U(rng, 0.5, 0.8, m)))), F(0.45), p * F(0.6))


def _wavy(rng, m):
    # gentle smooth waves: long wavelength (4-6 periods), moderate amplitude
    u, v, p = _coords(rng, m, 8, 13)
    a = col(U(rng, 0.35, 0.6, m))
    return _band(tri(v + a * sin(u * col(U(rng, 1.05, 1.6, m)))), F(0.45), p * F(0.8))


def _grid(rng, m):
    u, v, p = _coords(rng, m, 10, 18)
    d = np.minimum(F(1) - tri(u), F(1) - tri(v)) * F(0.5)
    return cov((d - col(U(rng, 0.05, 0.09, m))) * p)


def _bubbly(rng, m):
    u, v, p = _coords(rng, m, 12, 18)
    ci = np.floor(u).astype(np.intp) & 7
    ri = np.floor(v).astype(np.intp) & 7
    rows = np.arange(m)[:, None, None]
    ox = (rng.random((m, 8, 8), dtype=F) - F(0.5)) * F(0.3)
    oy = (rng.random((m, 8, 8), dtype=F) - F(0.5)) * F(0.3)
    rr = U(rng, 0.2, 0.42, m * 64).reshape(m, 8, 8)
    fu = frac(u) - F(0.5) - ox[rows, ri, ci]
    fv = frac(v) - F(0.5) - oy[rows, ri, ci]
    d = np.sqrt(fu * fu + fv * fv)
    r = rr[rows, ri, ci]
    # filled, shaded bubbles with a rim and a highlight (blobs, not thin rings)
    ring = cov((np.abs(d - r) - F(0.04)) * p)
    glint = cov((np.sqrt((fu + r * F(0.4)) ** 2 + (fv + r * F(0.4)) ** 2) - r * F(0.25)) * p)
    inside = cov((d - r) * p) * (F(0.35) + F(0.45) * np.clip(d / r, 0, 1))
    return np.clip(ring * F(0.9) + glint + inside, 0, 1)


def _marbled(rng, m):
    u, v, p = _coords(rng, m, 12, 22)
    turb = fractal(rng, m, 2, 4)
    x = u + col(U(rng, 1.5, 3.0, m)) * turb
    vein = F(1) - smoothstep(0.0, 0.12, tri(x))
    vein2 = F(1) - smoothstep(0.0, 0.06, tri(x * F(0.5) + v * F(0.7) + turb))
    return np.clip(F(1.3) * (turb - F(0.35)) + F(0.9) * vein + F(0.5) * vein2, 0, 1)


def _cracked(rng, m):
    w = col(U(rng, 0.03, 0.05, m))
    a = np.abs(fractal(rng, m, 8, 2) - F(0.5))
    b = np.abs(fractal(rng, m, 4, 2) - F(0.5))
    crack = F(1) - smoothstep(w * F(0.3), w, np.minimum(a, b))
    return np.clip(F(0.85) - crack + F(0.15) * noise(rng, m, 32), 0, 1)


def _woven(rng, m):
    u, v, p = _coords(rng, m, 12, 20, rot=False)
    cell = (np.floor(u).astype(np.intp) + np.floor(v).astype(np.intp)) & 1
    fu, fv = frac(u * F(3)), frac(v * F(3))
    along = np.where(cell == 1, tri(fu), tri(fv))       # across-strand profile
    length = np.where(cell == 1, frac(v), frac(u))       # along-strand position
    s = smoothstep(0.05, 0.5, along) * (F(0.75) + F(0.25) * tri(length))
    return np.where(cell == 1, s, F(1) - s * F(0.85))


_CLASS_FNS = (_striped, _checkered, _dotted, _zigzag, _wavy, _grid, _bubbly, _marbled, _cracked,
              _woven)


def render(rng, labels, **_):
    m = len(labels)
    t = np.empty((m, 64, 64), F)
    for c in range(len(CLASSNAMES)):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            t[idx] = _CLASS_FNS[c](rng, len(idx))
    h = rng.random(m, dtype=F)
    c1 = hsv(h, U(rng, 0.4, 0.95, m), U(rng, 0.1, 0.45, m))
    c2 = hsv(frac(h + U(rng, -0.25, 0.25, m) + F(1)), U(rng, 0.3, 0.9, m), U(rng, 0.65, 1.0, m))
    swap = rng.random(m) < 0.5
    c1[swap], c2[swap] = c2[swap].copy(), c1[swap].copy()
    img = lerp_img(c1, c2, t)
    shade(img, F(0.85) + F(0.3) * noise(rng, m, 2))
    return finish(img, rng, 0.04)
