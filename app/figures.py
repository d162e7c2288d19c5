"""Plotly figures from plain arrays and DataFrames. No model in sight: callbacks pass numbers."""
from __future__ import annotations

from typing import Mapping, Sequence

import base64
import functools
import io

import numpy as np
import pandas as pd

PALETTE = ("#4C78A8", "#F58518", "#54A24B", "#E45756", "#72B7B2", "#B279A2", "#EECA3B", "#9D755D",
           "#FF9DA6", "#BAB0AC")
FONT = dict(family="Inter, system-ui, sans-serif", size=13)
GRID = dict(gridcolor="#EBF0F8", zerolinecolor="#EBF0F8", linecolor="#EBF0F8", automargin=True)


@functools.lru_cache(maxsize=1)
def _plotly():
    """plotly.graph_objects, imported with the first figure (not with the page), and our template.
    A small template: plotly's "plotly_white" is deep-copied and validated on every use (about
    30 ms of CPU per figure), most of a prediction's time."""
    import plotly.graph_objects as go
    import plotly.io as pio

    pio.templates["wemoe"] = go.layout.Template(layout=dict(
        plot_bgcolor="white", paper_bgcolor="white", xaxis=GRID, yaxis=GRID, hoverlabel=dict(font_size=12)))
    return go


class _LazyPlotly:
    """``go.Figure`` and friends, resolved on first use."""

    def __getattr__(self, name: str):
        return getattr(_plotly(), name)


go = _LazyPlotly()


def colour(i: int) -> str:
    return PALETTE[i % len(PALETTE)]


def _layout(fig: go.Figure, title: str = "", height: int = 360, **kw) -> go.Figure:
    fig.update_layout(title=dict(text=title, x=0.01, font=dict(size=15)), height=height, font=FONT,
                      margin=dict(l=60, r=20, t=50 if title else 20, b=50), template="wemoe",
                      legend=dict(orientation="h", y=-0.2), **kw)
    return fig


def message(text: str, height: int = 260) -> go.Figure:
    """A placeholder that says what to do to fill it."""
    fig = go.Figure()
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font=dict(size=15, color="#666"))
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _layout(fig, height=height)


# --- live adaptation --------------------------------------------------------------------------
def entropy_curve(steps: Sequence[int], entropy: Mapping[str, Sequence[float]], titles: Mapping[str, str]) -> go.Figure:
    """Mean prediction entropy per task along adaptation (what the method minimises)."""
    fig = go.Figure()
    for i, (t, ys) in enumerate(entropy.items()):
        fig.add_trace(go.Scatter(x=list(steps)[: len(ys)], y=ys, mode="lines", name=titles.get(t, t),
                                 line=dict(color=colour(i), width=2),
                                 hovertemplate=f"{titles.get(t, t)}<br>step %{{x}}<br>entropy %{{y:.3f}} nats<extra></extra>"))
    fig.update_xaxes(title="step")
    fig.update_yaxes(title="entropy (nats)", rangemode="tozero")
    return _layout(fig, "Entropy of each task's predictions (lower = more confident)")


def routing_live(now: np.ndarray, own: Mapping[str, Sequence[float]], steps: Sequence[int], tasks: Sequence[str],
                 titles: Mapping[str, str], kind: str) -> go.Figure:
    """Left: the current routing (rows: images of each task; columns: experts; mean over layers)
    or AdaMerging's coefficients. Right: each task's own expert weight / coefficient over steps."""
    names = [titles.get(t, t) for t in tasks]
    coeffs = kind == "coefficients"
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, column_widths=[0.45, 0.55], horizontal_spacing=0.14,
                        subplot_titles=("coefficients now (rows: layers)" if coeffs else "routing now (mean over layers)",
                                        "coefficient of each task" if coeffs else "weight of each task's own expert"))
    rows = [f"group {i}" for i in range(now.shape[0])] if coeffs else names
    fig.add_trace(go.Heatmap(z=np.asarray(now, dtype=float), x=names, y=rows, colorscale="Viridis", showscale=False,
                             hovertemplate="%{y}<br>expert %{x}<br>%{z:.3f}<extra></extra>"), 1, 1)
    for i, t in enumerate(tasks):
        ys = own.get(t, [])
        fig.add_trace(go.Scatter(x=list(steps)[: len(ys)], y=ys, mode="lines", name=titles.get(t, t), showlegend=False,
                                 line=dict(color=colour(i), width=2),
                                 hovertemplate=f"{titles.get(t, t)}<br>step %{{x}}<br>%{{y:.3f}}<extra></extra>"), 1, 2)
    fig.update_yaxes(autorange="reversed", row=1, col=1)
    fig.update_xaxes(title="step", row=1, col=2)
    return _layout(fig, height=380)


# --- explore ----------------------------------------------------------------------------------
def routing_heatmap(weights: np.ndarray, modules: Sequence[str], experts: Sequence[str], title: str = "") -> go.Figure:
    """Routing weights of one image: routed modules (input side at the top) x experts."""
    fig = go.Figure(go.Heatmap(
        z=np.asarray(weights, dtype=float), x=list(experts), y=list(modules), colorscale="Viridis",
        colorbar=dict(title="weight", thickness=12), texttemplate="%{z:.2f}", textfont=dict(size=11),
        hovertemplate="module %{y}<br>expert %{x}<br>weight %{z:.4f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed", title="routed module")
    fig.update_xaxes(title="expert (task vector)")
    return _layout(fig, title or "Routing weights for this image", height=120 + 34 * len(modules))


def overlay(pixels: np.ndarray, grid: np.ndarray, experts: Sequence[str], *, expert: int | None,
            weights: np.ndarray | None = None, title: str = "", size: int = 320) -> go.Figure:
    """The image as the model sees it, with a semi-transparent grid of per-patch router weights:
    of one ``expert`` (``grid`` holds its weight per patch), or, with ``expert=None``, the
    strongest expert per patch (``grid`` holds indices, ``weights`` their values), colour-coded.
    ``pixels`` is square (H, H, 3); the browser scales it to ``size`` px."""
    from PIL import Image

    g, side = grid.shape[0], pixels.shape[0]         # coordinates: the model's input pixels
    k = max(1, -(-256 // side))                       # a small image is enlarged (smoothly) k times
    buf = io.BytesIO()
    Image.fromarray(pixels).resize((side * k, side * k), Image.BICUBIC).save(buf, format="JPEG", quality=90)
    cell = side / g
    fig = go.Figure(go.Image(source="data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode(),
                             dx=1 / k, dy=1 / k, x0=0.5 / k, y0=0.5 / k, hoverinfo="skip"))
    rows, cols = np.indices(grid.shape)
    where = dict(x0=cell / 2, dx=cell, y0=cell / 2, dy=cell, xgap=1, ygap=1)
    if expert is None:
        T = len(experts)
        scale = sorted([[i / T, colour(i)] for i in range(T)] + [[(i + 1) / T, colour(i)] for i in range(T)],
                       key=lambda s: s[0])
        names = np.array(experts, dtype=object)[grid.astype(int)]
        w = np.zeros(grid.shape) if weights is None else np.asarray(weights, dtype=float)
        custom = np.dstack([rows, cols, names, w]).astype(object)
        fig.add_trace(go.Heatmap(z=np.asarray(grid, dtype=float), zmin=-0.5, zmax=T - 0.5, colorscale=scale, opacity=0.5,
                                 showscale=False, customdata=custom, text=names, texttemplate="%{text}",
                                 textfont=dict(size=11, color="white"),
                                 hovertemplate="patch row %{customdata[0]}, col %{customdata[1]}<br>strongest: "
                                               "%{customdata[2]}<br>weight %{customdata[3]:.4f}<extra></extra>", **where))
    else:
        fig.add_trace(go.Heatmap(z=np.asarray(grid, dtype=float), colorscale="Magma", opacity=0.55,
                                 customdata=np.dstack([rows, cols]), colorbar=dict(title="weight", thickness=12),
                                 texttemplate="%{z:.2f}", textfont=dict(size=11, color="white"),
                                 hovertemplate=f"patch row %{{customdata[0]}}, col %{{customdata[1]}}<br>{experts[expert]}: "
                                               "%{z:.4f}<extra></extra>", **where))
    fig.update_xaxes(visible=False, range=[0, side])
    fig.update_yaxes(visible=False, range=[side, 0], scaleanchor="x")
    return _layout(fig, title, height=size + 90, width=size + 150)


# --- compare ----------------------------------------------------------------------------------
def accuracy_bars(acc: pd.DataFrame, titles: Mapping[str, str]) -> go.Figure:
    """Grouped bars: rows of ``acc`` are models, columns tasks (and ``avg``)."""
    fig = go.Figure()
    cols = [c for c in acc.columns]
    for i, (label, row) in enumerate(acc.iterrows()):
        fig.add_trace(go.Bar(x=[titles.get(c, c) for c in cols], y=row.values, name=str(label), marker_color=colour(i),
                             hovertemplate=f"{label}<br>%{{x}}: %{{y:.1f}} %<extra></extra>"))
    fig.update_yaxes(title="test accuracy (%)", range=[0, 100])
    return _layout(fig, "Accuracy per task", height=400, barmode="group")


def share_matrix(share: pd.DataFrame, titles: Mapping[str, str], title: str = "") -> go.Figure:
    """Routing analysis: % of task t's test images whose strongest expert in each module is t."""
    rows = [titles.get(t, t) for t in share.index]
    fig = go.Figure(go.Heatmap(z=share.values.astype(float), x=list(share.columns), y=rows, zmin=0, zmax=100,
                               colorscale="Blues", texttemplate="%{z:.0f}",
                               colorbar=dict(title="%", thickness=12),
                               hovertemplate="images of %{y}<br>module %{x}<br>own expert strongest: %{z:.1f} %<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, title or "How often each module's strongest expert is the task's own", height=120 + 34 * len(rows))
