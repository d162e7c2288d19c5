"""`scenes` (mirrors SUN397): sky / horizon / ground compositions of ten outdoor scene types."""
from __future__ import annotations

import numpy as np

from ._render import (F, X, Y, U, blur, canvas, cimg, col, cov, d_circle, finish, fractal, frac,
                      jitter_colors, lerp_img, noise, paint, paint_img, palette_pick, sin,
                      smoothstep, speckle, tri, vgrad, warp, shift_mirror)

CLASSNAMES = ("beach", "desert", "forest", "snowfield", "lake", "mountain range",
              "city skyline", "night city", "sunset", "farm field")


def _sky(rng, m, top, bottom, h, j=0.06):
    return vgrad(jitter_colors(rng, top, j, m), jitter_colors(rng, bottom, j, m), 0, h)


# day skies shared by all daytime classes (clear, hazy, overcast, dusk) so that the sky colour
# says little about the class
_SKY_TOP = ((0.2, 0.45, 0.85), (0.5, 0.62, 0.8), (0.58, 0.6, 0.64), (0.35, 0.35, 0.62))
_SKY_BOT = ((0.65, 0.8, 0.95), (0.85, 0.87, 0.9), (0.78, 0.78, 0.8), (0.95, 0.72, 0.55))


def _day_sky(rng, m, h):
    k = rng.integers(0, 4, m)
    top = jitter_colors(rng, np.asarray(_SKY_TOP, F)[k], 0.06, m)
    bot = jitter_colors(rng, np.asarray(_SKY_BOT, F)[k], 0.05, m)
    return vgrad(top, bot, 0, h)


def _clouds(rng, img, h, amount, color=(0.97, 0.97, 0.98)):
    m = img.shape[0]
    n = fractal(rng, m, 4, 3)
    thr = col(F(0.78) - F(0.28) * amount)
    a = smoothstep(thr, thr + F(0.12), n) * (Y < col(h) - 1) * F(0.9)
    return paint(img, a, jitter_colors(rng, color, 0.03, m))


def _ground(img, h, color_img):
    h = col(h) if np.ndim(h) == 1 else h
    return paint_img(img, cov(h - Y), color_img)


def _beach(rng, m):
    h = U(rng, 14, 38, m)
    img = _day_sky(rng, m, h)
    _clouds(rng, img, h, U(rng, 0, 0.6, m))
    shore = col(h + U(rng, 8, 18, m)) + col(U(rng, -0.3, 0.3, m)) * (X - 32) \
        + F(1.5) * sin(X * col(U(rng, 0.15, 0.35, m)) + col(U(rng, 0, 6.3, m)))
    t = np.clip((Y - col(h)) / (shore - col(h) + F(1)), 0, 1)
    deep = palette_pick(rng, ((0.05, 0.3, 0.58), (0.08, 0.35, 0.4), (0.2, 0.3, 0.38),
                              (0.05, 0.18, 0.32)), m)
    sea = lerp_img(deep, np.clip(deep * F(1.3) + F(0.15), 0, 1), t)
    _ground(img, h, sea)
    sc = palette_pick(rng, ((0.93, 0.85, 0.66), (0.85, 0.8, 0.72), (0.62, 0.57, 0.52),
                            (0.95, 0.92, 0.85)), m)
    sand = lerp_img(sc * F(0.85), sc,
                    np.clip((Y - shore) / 10, 0, 1) + F(0.25) * noise(rng, m, 8))
    paint_img(img, cov(shore - Y), sand)
    paint(img, cov(np.abs(Y - shore + F(0.5)) - F(1.2)) * F(0.85), (0.97, 0.98, 1.0))
    return img


def _desert(rng, m):
    h = U(rng, 12, 40, m)
    img = _day_sky(rng, m, h)
    sun = cov(d_circle(X, Y, col(U(rng, 8, 56, m)), col(U(rng, 5, 14, m)), F(4)))
    paint(img, sun * F(0.9), (1.0, 0.98, 0.85))
    far = col(h) - F(3) * tri(X / col(U(rng, 20, 40, m)) + col(U(rng, 0, 1, m)))
    base = palette_pick(rng, ((0.86, 0.6, 0.32), (0.9, 0.78, 0.5), (0.75, 0.45, 0.3),
                              (0.7, 0.6, 0.45)), m)
    sp = col(U(rng, 7, 12, m))
    ph = (Y - col(h)) / sp + col(U(rng, 0.5, 1.5, m)) * sin(X * col(U(rng, 0.08, 0.18, m))
                                                          + col(U(rng, 0, 6.3, m)))
    sh = F(0.72) + F(0.4) * smoothstep(0.25, 0.65, frac(ph))
    g = lerp_img(base * F(0.7), np.clip(base * F(1.15), 0, 1), np.clip(sh - F(0.6), 0, 0.6) / F(0.6))
    _ground(img, far, g)
    return img


def _forest(rng, m):
    img = _day_sky(rng, m, U(rng, 20, 40, m))
    near = palette_pick(rng, ((0.06, 0.25, 0.1), (0.12, 0.3, 0.14), (0.42, 0.26, 0.06),
                              (0.14, 0.18, 0.1), (0.3, 0.32, 0.08)), m)
    far = np.clip(near * F(1.6) + F(0.08), 0, 1)
    for layer, (y0, hgt, c) in enumerate(((22, 14, far), (36, 22, near))):
        per = col(U(rng, 6, 10, m) * (1 + layer * 0.5))
        base = col(U(rng, y0 - 5, y0 + 5, m))
        jit = F(4) * noise(rng, m, 8)
        top = base - col(U(rng, 0.7, 1.0, m)) * F(hgt) * tri(X / per + col(U(rng, 0, 1, m))) + jit
        tint = F(0.85) + F(0.3) * noise(rng, m, 16)
        c = c[:, :, None, None] * tint[:, None]
        paint_img(img, cov(top - Y), c)
    paint(img, cov(col(U(rng, 54, 62, m)) - Y), jitter_colors(rng, (0.25, 0.18, 0.1), 0.04, m))
    return img


def _snowfield(rng, m):
    h = U(rng, 16, 44, m)
    img = _day_sky(rng, m, h)
    trees = rng.random(m) < 0.6
    top = col(h) - col(U(rng, 2, 5, m) * trees) * tri(X / col(U(rng, 3, 5, m)))
    paint(img, cov(top - Y) * (Y < col(h) + 1), jitter_colors(rng, (0.15, 0.22, 0.2), 0.04, m))
    drift = frac((Y - col(h)) / col(U(rng, 6, 12, m)) + F(0.8) * sin(X * col(U(rng, 0.05, 0.12, m))
                                                                   + col(U(rng, 0, 6.3, m))))
    sh = F(0.84) + F(0.12) * smoothstep(0.2, 0.7, drift) + F(0.06) * noise(rng, m, 8)
    snow = jitter_colors(rng, (0.93, 0.95, 1.0), 0.03, m)[:, :, None, None] * sh[:, None]
    snow[:, 2] += F(0.05) * (F(1) - sh)
    _ground(img, h + 1, snow)
    return img


def _lake(rng, m):
    h = U(rng, 24, 46, m)
    img = _day_sky(rng, m, h)
    _clouds(rng, img, h, U(rng, 0, 0.5, m))
    hill = col(h) - col(U(rng, 4, 10, m)) * (F(1.2) + sin(X * col(U(rng, 0.06, 0.14, m))
                                                        + col(U(rng, 0, 6.3, m))))
    hc = palette_pick(rng, ((0.16, 0.36, 0.2), (0.3, 0.35, 0.25), (0.35, 0.4, 0.5),
                            (0.45, 0.35, 0.2)), m)
    paint(img, cov(hill - Y), hc)
    yr = F(2) * col(h) - Y
    refl = cov(hill - yr) * (Y > col(h))
    wc = palette_pick(rng, ((0.12, 0.28, 0.5), (0.1, 0.3, 0.3), (0.22, 0.26, 0.32)), m)
    water = lerp_img(np.clip(wc * F(1.5) + F(0.15), 0, 1), wc,
                     np.clip((Y - col(h)) / 20, 0, 1))
    water = water * (F(0.93) + F(0.07) * tri(Y / F(2.5)))[:, None]
    _ground(img, h, water)
    paint(img, refl * F(0.7), hc * F(0.75))
    shore = col(U(rng, 58, 70, m)) + F(2) * sin(X * F(0.2) + col(U(rng, 0, 6.3, m)))
    paint(img, cov(shore - Y), jitter_colors(rng, (0.35, 0.45, 0.22), 0.06, m))
    return img


def _mountain(rng, m):
    h = U(rng, 38, 56, m)
    img = _day_sky(rng, m, h)
    _clouds(rng, img, h - 20, U(rng, 0, 0.4, m))
    p1, a1 = col(U(rng, 26, 44, m)), col(U(rng, 20, 32, m))
    ph1 = col(U(rng, 0, 1, m))
    t1 = tri(X / p1 + ph1)
    prof = col(h) - a1 * t1 - col(U(rng, 3, 8, m)) * tri(X / col(U(rng, 8, 14, m)) + ph1 * 3)
    lit = frac(X / p1 + ph1) < 0.5
    rock = palette_pick(rng, ((0.42, 0.4, 0.48), (0.45, 0.38, 0.3), (0.32, 0.36, 0.45),
                              (0.55, 0.5, 0.45)), m)[:, :, None, None] \
        * np.where(lit, F(1.15), F(0.8))[:, None]
    paint_img(img, cov(prof - Y), rock)
    snow_line = col(h) - a1 * F(0.55) + F(3) * noise(rng, m, 8)
    paint(img, cov(prof - Y) * cov(Y - snow_line) * np.where(lit, F(1), F(0.85)),
          (0.96, 0.97, 1.0))
    paint(img, cov(col(h) - Y), palette_pick(rng, ((0.25, 0.42, 0.2), (0.45, 0.4, 0.25),
                                                     (0.3, 0.32, 0.3)), m))
    return img


def _skyline(rng, m, night):
    g = U(rng, 46, 62, m)
    if night:
        img = _sky(rng, m, (0.01, 0.02, 0.08), (0.1, 0.08, 0.22), g, 0.03)
        stars = speckle(rng, m, 0.012) * F(0.8)
        paint(img, stars, (1, 1, 0.9))
        moon = cov(d_circle(X, Y, col(U(rng, 6, 58, m)), col(U(rng, 4, 14, m)), F(3.5)))
        paint(img, moon * (rng.random(m) < 0.6)[:, None, None], (0.95, 0.95, 0.8))
    else:
        img = _day_sky(rng, m, g)
        _clouds(rng, img, g - 20, U(rng, 0, 0.5, m))
    nb = 14
    w = col(U(rng, 6, 11, m))
    ph = col(U(rng, 0, 6, m))
    bi = np.clip(np.floor((X + ph) / w).astype(np.int64), 0, nb - 1)
    heights = U(rng, 14, 42, m * nb).reshape(m, nb)
    tone = U(rng, 0.75, 1.2, m * nb).reshape(m, nb)
    rows = np.arange(m)[:, None, None]
    top = col(g) - heights[rows, bi]
    inb = cov(top - Y) * cov(np.abs(frac((X + ph) / w) - F(0.5)) * w - (w * F(0.5) - F(0.5)))
    wx = frac((X + ph) / F(4))
    wy = frac((Y - top) / F(4))
    win = (wx > 0.45) & (wy > 0.5) & (Y > top + 2)
    cell = (np.floor((X + ph) / 4).astype(np.int64) % 16, np.floor(Y / 4).astype(np.int64) % 16)
    if night:
        bc = jitter_colors(rng, (0.07, 0.07, 0.1), 0.02, m)[:, :, None, None] * tone[rows, bi][:, None]
        paint_img(img, inb, bc)
        lit = rng.random((m, 16, 16), dtype=F) < col(U(rng, 0.3, 0.6, m))
        on = win & lit[rows, cell[1], cell[0]]
        paint(img, inb * on, jitter_colors(rng, (1.0, 0.82, 0.35), 0.08, m))
        street = jitter_colors(rng, (0.12, 0.1, 0.1), 0.02, m)
    else:
        bc = palette_pick(rng, ((0.62, 0.6, 0.58), (0.7, 0.55, 0.45), (0.45, 0.5, 0.6),
                                (0.8, 0.78, 0.7)), m)[:, :, None, None] * tone[rows, bi][:, None]
        paint_img(img, inb, np.clip(bc, 0, 1))
        paint(img, inb * win * F(0.6), jitter_colors(rng, (0.25, 0.35, 0.45), 0.05, m))
        street = jitter_colors(rng, (0.3, 0.3, 0.3), 0.04, m)
    paint(img, cov(col(g) - Y), street)
    return img


def _sunset(rng, m):
    h = U(rng, 26, 50, m)
    top = jitter_colors(rng, (0.22, 0.12, 0.38), 0.06, m)
    mid = jitter_colors(rng, (0.85, 0.35, 0.4), 0.07, m)
    low = jitter_colors(rng, (1.0, 0.68, 0.25), 0.05, m)
    img = vgrad(top, mid, 0, h * F(0.6))
    paint(img, np.clip((Y - col(h * F(0.6))) / col(h * F(0.4)), 0, 1), low)
    sx, r = U(rng, 12, 52, m), U(rng, 4, 8, m)
    sy = h - U(rng, -2, 7, m)
    d = d_circle(X, Y, col(sx), col(sy), col(r))
    paint(img, smoothstep(F(14), F(0), d) * F(0.45), (1.0, 0.85, 0.5))
    paint(img, cov(d), (1.0, 0.95, 0.75))
    sea = rng.random(m) < 0.5
    gnd = np.where(sea[:, None], jitter_colors(rng, (0.3, 0.15, 0.25), 0.05, m),
                   jitter_colors(rng, (0.08, 0.05, 0.08), 0.03, m))
    land_prof = col(h) - (~sea)[:, None, None] * F(3) * (F(1) + sin(X * F(0.15) + col(U(rng, 0, 6.3, m))))
    paint(img, cov(land_prof - Y), gnd)
    glit = (np.abs(X - col(sx)) < col(r) * F(1.3) - (Y - col(h)) * F(0.05)) & (Y > col(h) + 1) \
        & (frac(Y / F(3)) < 0.5) & sea[:, None, None]
    paint(img, glit * F(0.7), (1.0, 0.75, 0.4))
    return img


def _field(rng, m):
    h = U(rng, 14, 42, m)
    img = _day_sky(rng, m, h)
    _clouds(rng, img, h, U(rng, 0.2, 0.8, m))
    vx = col(U(rng, 0, 64, m))
    k = col(U(rng, 1.2, 2.2, m))
    rows = frac((X - vx) / (Y - col(h) + F(2)) * k)
    c1 = palette_pick(rng, ((0.85, 0.72, 0.3), (0.35, 0.6, 0.2), (0.55, 0.4, 0.25),
                            (0.7, 0.75, 0.3)), m)
    c2 = c1 * F(0.72)
    g = lerp_img(c1, c2, smoothstep(0.35, 0.65, tri(rows)))
    paint(img, cov(col(h) + 1 - Y) * cov(Y - col(h) - 2), jitter_colors(rng, (0.15, 0.3, 0.15), 0.04, m))
    _ground(img, h + 1, g)
    return img


_CLASS_FNS = (_beach, _desert, _forest, _snowfield, _lake, _mountain,
              lambda r, m: _skyline(r, m, False), lambda r, m: _skyline(r, m, True),
              _sunset, _field)


def _foreground(rng, img):
    """Shared clutter in any class: a dark tree or bush silhouette near the bottom, or a
    power line across the frame (drawn only on the images that get one)."""
    m = img.shape[0]
    kind = rng.integers(0, 4, m)                  # 0 none, 1 tree, 2 bushes, 3 power line
    x0, y0 = U(rng, 0, 64, m), U(rng, 52, 66, m)
    r = U(rng, 6, 13, m)
    dark = jitter_colors(rng, (0.08, 0.12, 0.07), 0.05, m)
    sl = U(rng, -0.3, 0.3, m)
    yw = U(rng, 4, 30, m)
    for k in (1, 2, 3):
        i = np.flatnonzero(kind == k)
        if not len(i):
            continue
        cx, cy, rr = col(x0[i]), col(y0[i]), col(r[i])
        if k == 1:
            d = np.minimum(d_circle(X, Y, cx, cy - rr * F(1.6), rr),
                           np.maximum(np.abs(X - cx) - rr * F(0.15), cy - rr * F(1.6) - Y))
            c, a = dark[i], F(1)
        elif k == 2:
            d = d_circle(X, Y, cx, cy, rr * F(1.3)) + F(2) * noise(rng, len(i), 8)
            c, a = dark[i] * F(1.5), F(1)
        else:
            d = np.abs(Y - col(yw[i]) - col(sl[i]) * X - F(0.004) * (X - cx) * (X - cx)) - F(0.45)
            c, a = np.full((len(i), 3), 0.1, F), F(0.8)
        sub = img[i]
        paint(sub, cov(d) * a, c)
        img[i] = sub
    return img


def render(rng, labels, **_):
    m = len(labels)
    img = canvas(m)
    for c in range(len(CLASSNAMES)):
        idx = np.flatnonzero(labels == c)
        if len(idx):
            img[idx] = _CLASS_FNS[c](rng, len(idx))
    _foreground(rng, img)
    sel = rng.random(m) < 0.3
    if sel.any():
        img[sel] = blur(img[sel], 1)
    img *= U(rng, 0.8, 1.2, 3 * m).reshape(m, 3, 1, 1)         # white balance
    fog = U(rng, 0, 0.3, m)                                        # haze / fog on some
    fog_c = jitter_colors(rng, (0.75, 0.76, 0.78), 0.08, m)
    i = np.flatnonzero(rng.random(m) < 0.4)
    if len(i):
        img[i] += col(fog[i])[:, None] * (cimg(fog_c[i]) - img[i])
    # camera: a quarter of the images get roll + zoom + shift + mirror (bilinear warp, the
    # costly part); the others an integer shift and mirror
    ang, zoom = U(rng, -0.15, 0.15, m), U(rng, 1.05, 1.35, m)
    tx, ty = U(rng, -5, 5, m), U(rng, -6, 6, m)
    flip = np.where(rng.random(m) < 0.5, F(-1), F(1))
    w = np.flatnonzero(rng.random(m) < 0.25)
    if len(w):
        img[w] = warp(img[w], ang[w], zoom[w], tx[w], ty[w], flip[w])
    k = np.setdiff1d(np.arange(m), w)
    if len(k):
        img[k] = shift_mirror(img[k], rng.integers(-6, 7, m)[k], rng.integers(-8, 9, m)[k], flip[k] < 0)
    return finish(img, rng, 0.035, gain=U(rng, 0.65, 1.3, m))
