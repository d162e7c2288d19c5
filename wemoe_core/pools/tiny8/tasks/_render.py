"""Tiny numpy rasteriser shared by the Tiny-8 generators.

Everything works on batches: images are float32 arrays (m, 64, 64, 3) in [0, 1], per-image
parameters are (m,) arrays that `col` turns into (m, 1, 1) so they broadcast against the pixel
grid `X`, `Y` (pixel centres, shape (1, 64, 64)).

Determinism across machines: per-pixel work uses only IEEE-exact float32 operations
(+ - * / sqrt, floor, min/max, comparisons) and integer gathers. Trigonometry goes through a
small lookup table (`sin`, `cos`) whose entries are rounded to 7 decimals when the table is
built, so last-ulp differences between libm/SIMD implementations cannot reach the pixels. No
BLAS (matmul / einsum) and no reductions feed the pixels. Random numbers come only from
`Generator.random` / `Generator.integers` / `Generator.permutation`.
"""
from __future__ import annotations

import numpy as np

S = 64
F = np.float32
# Pixel-centre coordinates shaped to broadcast: X (1, 1, 64), Y (1, 64, 1). Expressions in
# only one of them stay small; combining them yields (m, 64, 64).
X = (np.arange(S, dtype=F) + F(0.5)).reshape(1, 1, S)
Y = (np.arange(S, dtype=F) + F(0.5)).reshape(1, S, 1)
PI = F(np.pi)

# ----------------------------------------------------------------------------- trig / math
_NT = 4096
_SIN = np.round(np.sin(np.arange(_NT + 1, dtype=np.float64) * (2.0 * np.pi / _NT)), 7).astype(F)
_DSIN = (_SIN[1:] - _SIN[:-1]).astype(F)
_TSCALE = F(_NT / (2.0 * np.pi))


def sin(x):
    """Table sine (error < 3e-7), bit-reproducible on any machine."""
    t = np.asarray(x, dtype=F) * _TSCALE
    f = np.floor(t)
    w = t - f
    i = f.astype(np.intp)
    i &= _NT - 1
    return np.take(_SIN, i) + w * np.take(_DSIN, i)


def cos(x):
    return sin(np.asarray(x, dtype=F) + F(np.pi / 2))


def col(a):
    """(m,) -> (m, 1, 1) float32."""
    return np.asarray(a, dtype=F)[:, None, None]


def frac(x):
    return x - np.floor(x)


def tri(x):
    """Triangle wave with period 1, range [0, 1] (0 at integers, 1 at half-integers)."""
    return F(1) - np.abs(F(2) * frac(x) - F(1))


def smoothstep(e0, e1, x):
    t = np.clip((x - e0) / (e1 - e0), 0, 1)
    return t * t * (F(3) - F(2) * t)


def cov(d, soft=1.0):
    """Anti-aliased coverage of a signed distance (in pixels, negative inside)."""
    return np.clip(F(0.5) - d / F(soft), 0, 1)


def hsv(h, s, v):
    """Vectorised HSV -> RGB for (m,) arrays (h in [0, 1)); returns (m, 3) float32."""
    h = np.asarray(h, F)
    s = np.asarray(s, F)
    v = np.asarray(v, F)
    k = np.stack([frac(h + F(1.0)), frac(h + F(2 / 3)), frac(h + F(1 / 3))], -1)
    p = np.abs(k * F(6) - F(3)) - F(1)
    p = np.clip(p, 0, 1)
    return v[..., None] * (F(1) - s[..., None] + s[..., None] * p)


# ----------------------------------------------------------------------------- randomness
def U(rng, lo, hi, m):
    return (F(lo) + (F(hi) - F(lo)) * rng.random(m, dtype=F)).astype(F)


def pick(rng, options, m):
    options = np.asarray(options)
    return options[rng.integers(0, len(options), m)]


def jitter_colors(rng, base, amount, m):
    """base: (3,) or (m, 3) colour; add uniform per-channel jitter of +-amount."""
    base = np.broadcast_to(np.asarray(base, F), (m, 3))
    return np.clip(base + (rng.random((m, 3), dtype=F) * F(2) - F(1)) * F(amount), 0, 1).astype(F)


def palette_pick(rng, pal, m, amount=0.06):
    pal = np.asarray(pal, F)
    return jitter_colors(rng, pal[rng.integers(0, len(pal), m)], amount, m)


# ----------------------------------------------------------------------------- canvas ops
# Images are channel-first (m, 3, 64, 64) while rendering (much faster broadcasting); `finish`
# returns channel-last uint8.
def canvas(m, color=None):
    img = np.zeros((m, 3, S, S), F)
    if color is not None:
        img[:] = np.asarray(color, F).reshape(-1, 3, 1, 1)
    return img


def cimg(c):
    """Colour (3,) or (m, 3) -> broadcastable image (1|m, 3, 1, 1)."""
    c = np.asarray(c, F)
    return c.reshape(-1, 3, 1, 1)


def tint(c, f):
    """Colour (m, 3) times a per-pixel field (m, 64, 64) -> image (m, 3, 64, 64)."""
    return cimg(c) * f[:, None]


def paint(img, a, c):
    """img <- img * (1 - a) + a * c; a (m, 64, 64) coverage, c (3,) or (m, 3) colour."""
    t = np.subtract(cimg(c), img)
    t *= a[:, None]
    img += t
    return img


def paint_img(img, a, other):
    """img <- img * (1 - a) + a * other (other: (m, 3, 64, 64))."""
    t = np.subtract(other, img)
    t *= a[:, None]
    img += t
    return img


def vgrad(top, bottom, y0=0.0, y1=S):
    """Vertical gradient image between two (m, 3) colours from row y0 to y1 (scalars or (m,))."""
    top = cimg(top)
    bottom = cimg(bottom)
    m = top.shape[0]
    y0 = np.broadcast_to(np.asarray(y0, F), (m,))
    y1 = np.broadcast_to(np.asarray(y1, F), (m,))
    t = np.clip((Y - col(y0)) / (col(y1) - col(y0)), 0, 1)
    out = np.empty((m, 3, S, S), F)
    out[:] = top + t[:, None] * (bottom - top)
    return out


def lerp_img(a, b, t):
    """a, b colours (m, 3); t (m, 64, 64) -> image."""
    a = cimg(a)
    return (a + t[:, None] * (cimg(b) - a)).astype(F)


def shade(img, f):
    """Multiply by a per-pixel (m, 64, 64) or per-image (m,) factor."""
    f = np.asarray(f, F)
    if f.ndim == 1:
        f = col(f)
    img *= f[:, None]
    return img


# ----------------------------------------------------------------------------- noise / blur
_INTERP = {}


def _interp(k):
    """Per-pixel smoothstep weights inside each of k cells (k divides 64)."""
    if k not in _INTERP:
        if S % k:
            raise ValueError(f"noise cell count {k} must divide {S}")
        t = (np.arange(S, dtype=np.float64) + 0.5) * (k / S)
        w = t - np.floor(t)
        w = w * w * (3 - 2 * w)
        _INTERP[k] = np.round(w, 7).astype(F)
    return _INTERP[k]


def upsample(g):
    """(m, k+1, k+1) lattice values -> (m, 64, 64) smooth (smoothstep-bilinear) field."""
    k = g.shape[1] - 1
    rep = S // k
    w = _interp(k)
    a = np.repeat(g[:, :-1, :], rep, axis=1)
    r = a + w[None, :, None] * (np.repeat(g[:, 1:, :], rep, axis=1) - a)
    c = np.repeat(r[:, :, :-1], rep, axis=2)
    c += w * (np.repeat(r[:, :, 1:], rep, axis=2) - c)
    return c


def noise(rng, m, k):
    """Smooth value noise in [0, 1] with k cells across the image (k in 1, 2, 4, ... 64)."""
    return upsample(rng.random((m, k + 1, k + 1), dtype=F))


def fractal(rng, m, k0=2, octaves=4, gain=0.5):
    """Fractal (fBm) value noise in roughly [0, 1] (k0 a power of two)."""
    out = noise(rng, m, k0)
    amp, tot, k = F(1), F(1), k0
    for _ in range(octaves - 1):
        amp *= F(gain)
        k = min(k * 2, S)
        out += amp * noise(rng, m, k)
        tot += amp
    out *= F(1) / tot
    return out


def rand_bytes(rng, shape):
    n = int(np.prod(shape))
    return np.frombuffer(rng.bytes(n), np.uint8).reshape(shape)


def grain(rng, shape, amount):
    """Uniform pixel noise in [-amount, amount] (one random byte per value)."""
    return rand_bytes(rng, shape) * F(2 * amount / 255.0) - F(amount)


def speckle(rng, m, p):
    """(m, 64, 64) boolean mask with probability ~p (p in multiples of 1/256)."""
    return rand_bytes(rng, (m, S, S)) < int(round(p * 256))


def _b1(a, ax):
    out = np.empty_like(a)
    if ax == a.ndim - 1:
        out[..., 1:-1] = a[..., 1:-1] * F(2)
        out[..., 1:-1] += a[..., :-2]
        out[..., 1:-1] += a[..., 2:]
        out[..., 0] = a[..., 0] * F(3) + a[..., 1]
        out[..., -1] = a[..., -1] * F(3) + a[..., -2]
    else:
        out[..., 1:-1, :] = a[..., 1:-1, :] * F(2)
        out[..., 1:-1, :] += a[..., :-2, :]
        out[..., 1:-1, :] += a[..., 2:, :]
        out[..., 0, :] = a[..., 0, :] * F(3) + a[..., 1, :]
        out[..., -1, :] = a[..., -1, :] * F(3) + a[..., -2, :]
    out *= F(0.25)
    return out


def blur(a, passes=1):
    """Binomial [1, 2, 1] / 4 blur along the two last (pixel) axes, edges replicated."""
    for _ in range(passes):
        a = _b1(_b1(a, a.ndim - 2), a.ndim - 1)
    return a


def blur_mixed(img, passes):
    """Blur each image by its own number of passes (passes: (m,) ints)."""
    out = img.copy()
    p = 0
    while True:
        p += 1
        sel = np.flatnonzero(passes >= p)
        if not len(sel):
            return out
        out[sel] = blur(out[sel], 1)


def finish(img, rng, noise_amt=0.03, gain=None, bias=None):
    """Optional per-image gain/bias, grain, clip, quantise; returns (m, 64, 64, 3) uint8."""
    m = img.shape[0]
    if gain is not None:
        img = img * col(gain)[:, None]
    if bias is not None:
        img = img + np.asarray(bias, F).reshape(m, -1, 1, 1)
    img = img * F(255)
    if noise_amt:
        amt = noise_amt * 255.0
        img += rand_bytes(rng, img.shape) * F(2 * amt / 255.0)
        img += F(0.5 - amt)
    else:
        img += F(0.5)
    img = np.clip(img, 0, 255).astype(np.uint8)
    out = np.empty((m, S, S, 3), np.uint8)
    for k in range(3):
        out[..., k] = img[:, k]
    return out


def warp(img, ang, zoom, tx, ty, flip=None):
    """Camera jitter for rendered images (m, 3, 64, 64): rotate by ang (radians) and zoom
    (>1 enlarges) about the centre, shift by (tx, ty) px, optionally mirror (flip < 0).
    Bilinear resampling; samples outside the image are clamped to the border."""
    m = img.shape[0]
    u, v = local(F(32) + np.asarray(tx, F), F(32) + np.asarray(ty, F), zoom, ang, flip)
    sx = np.clip(u + F(31.5), 0, S - 1.001)
    sy = np.clip(v + F(31.5), 0, S - 1.001)
    ix = np.floor(sx)
    iy = np.floor(sy)
    wx = sx - ix
    wy = sy - iy
    w11 = wx * wy
    w10 = wy - w11
    w01 = wx - w11
    w00 = F(1) - wx - w10
    i00 = iy.astype(np.intp) * S
    i00 += ix.astype(np.intp)
    i00 += (np.arange(m, dtype=np.intp) * (3 * S * S))[:, None, None]
    i01 = i00 + 1
    i10 = i00 + S
    i11 = i10 + 1
    flat = img.reshape(-1)
    out = np.empty_like(img)
    for c in range(3):
        src = flat[c * S * S:]                    # channel offset folded into the view
        o = out[:, c]
        np.multiply(np.take(src, i00), w00, out=o)
        o += np.take(src, i01) * w01
        o += np.take(src, i10) * w10
        o += np.take(src, i11) * w11
    return out


def shift_mirror(img, dx, dy, flip):
    """Cheap camera jitter: integer shift by (dx, dy) px with edge replication, and mirror
    where flip. img (m, 3, 64, 64); dx, dy (m,) ints; flip (m,) bool."""
    idx = np.arange(S)
    out = np.empty_like(img)
    for i in range(img.shape[0]):
        cols = np.clip(idx - dx[i], 0, S - 1)
        if flip[i]:
            cols = cols[::-1]
        rows = np.clip(idx - dy[i], 0, S - 1)
        out[i] = img[i][:, rows][:, :, cols]
    return out


# ----------------------------------------------------------------------------- geometry
def local(cx, cy, scale=None, ang=None, flip=None):
    """Per-image local coordinates: translate to (cx, cy), rotate by ang, divide by scale,
    mirror x where flip < 0. Returns (u, v), each (m, 64, 64)."""
    dx = X - col(cx)
    dy = Y - col(cy)
    if ang is not None:
        c, s = col(cos(ang)), col(sin(ang))
        dx, dy = c * dx + s * dy, c * dy - s * dx
    if scale is not None:
        inv = F(1) / col(scale)
        dx, dy = dx * inv, dy * inv
    if flip is not None:
        dx = dx * col(flip)
    return dx, dy


def d_circle(u, v, cx, cy, r):
    du, dv = u - cx, v - cy
    return np.sqrt(du * du + dv * dv) - r


def d_ellipse(u, v, cx, cy, rx, ry):
    """Approximate SDF of an axis-aligned ellipse (exact on the axes)."""
    du, dv = (u - cx) / rx, (v - cy) / ry
    return (np.sqrt(du * du + dv * dv) - F(1)) * np.minimum(rx, ry)


def d_box(u, v, cx, cy, hw, hh, r=0.0):
    """SDF of an axis-aligned (rounded) box with half sizes hw, hh."""
    qx = np.abs(u - cx) - hw + r
    qy = np.abs(v - cy) - hh + r
    ox, oy = np.maximum(qx, 0), np.maximum(qy, 0)
    return np.sqrt(ox * ox + oy * oy) + np.minimum(np.maximum(qx, qy), 0) - r


def d_seg(u, v, ax, ay, bx, by):
    """Distance to the segment a-b (a capsule of radius 0)."""
    pax, pay = u - ax, v - ay
    bax, bay = F(bx - ax), F(by - ay)
    den = bax * bax + bay * bay
    if np.ndim(den) == 0 and den == 0:
        return np.sqrt(pax * pax + pay * pay)
    h = np.clip((pax * bax + pay * bay) / (den + F(1e-12)), 0, 1)
    dx, dy = pax - bax * h, pay - bay * h
    return np.sqrt(dx * dx + dy * dy)


def d_halfplanes(u, v, normals, offsets):
    """Convex polygon as an intersection of half-planes n.p <= o (approximate SDF)."""
    d = None
    for (nx, ny), o in zip(normals, offsets):
        e = u * F(nx) + v * F(ny) - F(o)
        d = e if d is None else np.maximum(d, e)
    return d


def d_poly(u, v, pts):
    """Convex polygon given by its vertices in clockwise-on-screen or any consistent order."""
    pts = np.asarray(pts, np.float64)
    cx, cy = pts.mean(0)
    normals, offsets = [], []
    for i in range(len(pts)):
        a, b = pts[i], pts[(i + 1) % len(pts)]
        ex, ey = b - a
        nx, ny = ey, -ex
        ln = np.hypot(nx, ny)
        nx, ny = nx / ln, ny / ln
        if nx * (cx - a[0]) + ny * (cy - a[1]) > 0:
            nx, ny = -nx, -ny
        normals.append((round(nx, 7), round(ny, 7)))
        offsets.append(round(nx * a[0] + ny * a[1], 7))
    return d_halfplanes(u, v, normals, offsets)


def ngon_planes(n, r, rot_deg=0.0):
    """Half-planes of a regular n-gon with circumradius r (first vertex at angle rot)."""
    normals, offsets = [], []
    for i in range(n):
        a = np.deg2rad(rot_deg + (i + 0.5) * 360.0 / n)
        normals.append((round(np.cos(a), 7), round(np.sin(a), 7)))
        offsets.append(round(r * np.cos(np.pi / n), 7))
    return normals, offsets


# ----------------------------------------------------------------------------- stroke glyphs
def arc(cx, cy, rx, ry, a0, a1, n=10):
    """Polyline points of an elliptic arc, angles in degrees, y pointing down."""
    a = np.deg2rad(np.linspace(a0, a1, n))
    return [(round(cx + rx * np.cos(t), 6), round(cy + ry * np.sin(t), 6)) for t in a]


def bezier(p0, p1, p2, n=8):
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2 = (np.asarray(p, np.float64) for p in (p0, p1, p2))
    pts = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t * t * p2
    return [(round(x, 6), round(y, 6)) for x, y in pts]


class FieldAtlas:
    """K shapes x L layers of distance fields on a regular grid (`res` cells per unit over
    `box` = (x0, y0, x1, y1)), sampled per image by bilinear interpolation. Outside the grid the
    distance grows with the distance to the grid border."""

    def __init__(self, fields, box, res):
        fields = np.asarray(fields, F)  # (K, L, H, W)
        self.K, self.L, self.H, self.W = fields.shape
        self.x0, self.y0, self.x1, self.y1 = box
        self.res = res
        self.tables = [np.ascontiguousarray(fields[:, i]).reshape(-1) for i in range(self.L)]

    @classmethod
    def from_functions(cls, fns, box, res):
        """fns: callables (u, v) -> tuple of L distance arrays, evaluated once in float64."""
        x0, y0, x1, y1 = box
        W = int(round((x1 - x0) * res)) + 1
        H = int(round((y1 - y0) * res)) + 1
        gy, gx = np.mgrid[0:H, 0:W].astype(np.float64)
        gx = x0 + gx / res
        gy = y0 + gy / res
        out = []
        for fn in fns:
            layers = [np.broadcast_to(np.asarray(d, np.float64), gx.shape) for d in fn(gx, gy)]
            out.append(np.round(np.stack(layers), 5))
        return cls(np.stack(out), box, res)

    def sample(self, k, gu, gv, layers=None, nearest=False, outside=True):
        """List of (m, 64, 64) field values (units), one per layer, for shape index k (m,) or
        per pixel (m, 64, 64) at coords gu, gv. Bilinear by default; nearest grid point with
        nearest=True (4x cheaper; fine when the grid is finer than the image pixels).
        outside=False: clamp to the border value instead of adding the distance to the grid
        (for intensity images, or fields that are positive all along the border)."""
        fx = (gu - F(self.x0)) * F(self.res)
        fy = (gv - F(self.y0)) * F(self.res)
        k = np.asarray(k, np.intp)
        base = k * (self.H * self.W) if k.ndim == 3 else (k * (self.H * self.W))[:, None, None]
        if nearest:
            cx = np.clip(fx, 0, self.W - 1)
            cy = np.clip(fy, 0, self.H - 1)
            i00 = base + (cy + F(0.5)).astype(np.intp) * self.W + (cx + F(0.5)).astype(np.intp)
            out = (np.abs(fx - cx) + np.abs(fy - cy)) * F(1.0 / self.res) if outside else 0
            return [np.take(self.tables[li], i00) + out
                    for li in (range(self.L) if layers is None else layers)]
        cx = np.clip(fx, 0, self.W - 1.001)
        cy = np.clip(fy, 0, self.H - 1.001)
        ix = np.floor(cx)
        iy = np.floor(cy)
        wx = cx - ix
        wy = cy - iy
        w11 = wx * wy
        w10 = wy - w11
        w01 = wx - w11
        w00 = F(1) - wx - w10
        i00 = base + iy.astype(np.intp) * self.W + ix.astype(np.intp)
        i01 = i00 + 1
        i10 = i00 + self.W
        i11 = i10 + 1
        res = []
        for li in (range(self.L) if layers is None else layers):
            t = self.tables[li]
            val = np.take(t, i00) * w00
            val += np.take(t, i01) * w01
            val += np.take(t, i10) * w10
            val += np.take(t, i11) * w11
            if outside:
                val += (np.abs(fx - cx) + np.abs(fy - cy)) * F(1.0 / self.res)
            res.append(val)
        return res


class GlyphAtlas(FieldAtlas):
    """Distance fields of stroke glyphs (one layer).

    Each glyph is a list of strokes; a stroke is a polyline [(x, y), ...] in glyph units, or
    ('dot', x, y, r) for a disc. field = distance to the nearest stroke centre line (minus the
    dot radius). `sample` returns (m, 64, 64).
    """

    def __init__(self, glyphs, box, res=40):
        x0, y0, x1, y1 = box
        W = int(round((x1 - x0) * res)) + 1
        H = int(round((y1 - y0) * res)) + 1
        gy, gx = np.mgrid[0:H, 0:W].astype(np.float64)
        gx = x0 + gx / res
        gy = y0 + gy / res
        fields = []
        for strokes in glyphs:
            d = np.full(gx.shape, 1e3)
            for st in strokes:
                if isinstance(st, tuple) and st and st[0] == "dot":
                    _, x, y, r = st
                    d = np.minimum(d, np.sqrt((gx - x) ** 2 + (gy - y) ** 2) - r)
                    continue
                pts = np.asarray(st, np.float64)
                for p, q in zip(pts[:-1], pts[1:]):
                    d = np.minimum(d, _seg64(gx, gy, p, q))
            fields.append(np.round(d, 5)[None])
        super().__init__(np.stack(fields), box, res)

    def sample(self, k, gu, gv, nearest=True, outside=False):
        """(m, 64, 64) distance (glyph units); nearest-grid-point lookup by default. Glyph
        boxes keep a margin around the strokes, so clamping at the border is exact enough
        (outside=False) for coverage."""
        return super().sample(k, gu, gv, nearest=nearest, outside=outside)[0]


def _seg64(gx, gy, a, b):
    pax, pay = gx - a[0], gy - a[1]
    bax, bay = b[0] - a[0], b[1] - a[1]
    den = bax * bax + bay * bay
    if den == 0:
        return np.sqrt(pax * pax + pay * pay)
    h = np.clip((pax * bax + pay * bay) / den, 0, 1)
    return np.sqrt((pax - bax * h) ** 2 + (pay - bay * h) ** 2)


def glyph_coords(cx, cy, height, ang=None, slant=None, aspect=None, anchor=(0.0, 0.0)):
    """Map pixels to glyph units: the glyph point `anchor` sits at pixel (cx, cy), one glyph
    unit = `height` pixels vertically (x scaled by aspect), optional rotation and slant."""
    u, v = local(cx, cy, height, ang)
    if aspect is not None:
        u = u / col(aspect)
    if slant is not None:
        u = u + col(slant) * v
    return u + F(anchor[0]), v + F(anchor[1])
