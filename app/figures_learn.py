"""Figures of the Learn tab, from the analysis DataFrames of ``wemoe_core.running.analysis``."""
from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd

from .figures import _layout, colour, go


def cosine(df: pd.DataFrame, titles: Mapping[str, str]) -> go.Figure:
    names = [titles.get(t, t) for t in df.index]
    fig = go.Figure(go.Heatmap(z=df.values.astype(float), x=names, y=names, zmin=-1, zmax=1, colorscale="RdBu_r",
                               texttemplate="%{z:.2f}", colorbar=dict(thickness=12),
                               hovertemplate="%{y} vs %{x}<br>cosine %{z:.3f}<extra></extra>"))
    fig.update_yaxes(autorange="reversed")
    return _layout(fig, "Cosine similarity of the task vectors", height=430)


def lambda_curve(df: pd.DataFrame, titles: Mapping[str, str], individual: float | None) -> go.Figure:
    """Task arithmetic accuracy against λ (per task, thin; average, thick)."""
    fig = go.Figure()
    for i, t in enumerate(c for c in df.columns if c != "avg"):
        fig.add_trace(go.Scatter(x=df.index, y=df[t], mode="lines", name=titles.get(t, t),
                                 line=dict(color=colour(i), width=1), opacity=0.6))
    fig.add_trace(go.Scatter(x=df.index, y=df["avg"], mode="lines+markers", name="average",
                             line=dict(color="black", width=3)))
    if individual is not None:
        fig.add_hline(y=individual, line=dict(dash="dash", color="#888"),
                      annotation_text=f"individual models {individual:.1f} %")
    fig.update_xaxes(title="λ (multiplies the sum of the task vectors)")
    fig.update_yaxes(title="test accuracy (%)", range=[0, 100])
    return _layout(fig, "Task arithmetic: one λ for everything", height=420)


def memory(df: pd.DataFrame) -> go.Figure:
    """Stacked bars: shared weights, experts, routers, in millions of parameters."""
    fig = go.Figure()
    for i, part in enumerate(("shared", "experts", "routers")):
        fig.add_trace(go.Bar(y=list(df.index), x=df[part] / 1e6, name=part, orientation="h", marker_color=colour(i),
                             hovertemplate=f"%{{y}}<br>{part}: %{{x:.3f}} M parameters<extra></extra>"))
    fig.update_layout(barmode="stack")
    fig.update_xaxes(title="parameters kept in memory (millions)")
    fig.update_yaxes(autorange="reversed")
    ratio = " · ".join(f"{name}: {x:g}×" for name, x in df["x one model"].items())
    return _layout(fig, f"Memory, in units of one model<br><sup>{ratio}</sup>", height=350)


def selection(sel: pd.DataFrame, others: Mapping[str, pd.Series], titles: Mapping[str, str]) -> go.Figure:
    """Per-task accuracy: pick-the-most-confident-model, WEMoE, task arithmetic, individual."""
    tasks = [t for t in sel.index if t != "avg"]
    x = [titles.get(t, t) for t in tasks] + ["average"]
    series = {"pick one fine-tuned model per image (lowest entropy)": sel["accuracy"], **others}
    if sel["individual"].notna().all():
        series["individual (told the task)"] = sel["individual"]
    fig = go.Figure()
    for i, (name, s) in enumerate(series.items()):
        ys = [s.get(t, np.nan) for t in tasks] + [s.get("avg", np.nan)]
        fig.add_trace(go.Bar(x=x, y=ys, name=name, marker_color=colour(i),
                             hovertemplate=f"{name}<br>%{{x}}: %{{y:.1f}} %<extra></extra>"))
    fig.update_yaxes(title="test accuracy (%)", range=[0, 100])
    return _layout(fig, "Keep the models and pick one per image, or merge?", height=430, barmode="group")


def own_pick(sel: pd.DataFrame, titles: Mapping[str, str]) -> go.Figure:
    """How often the lowest-entropy pick is the image's own task model."""
    tasks = [t for t in sel.index if t != "avg"]
    fig = go.Figure(go.Bar(x=[titles.get(t, t) for t in tasks], y=[sel.at[t, "own"] for t in tasks],
                           marker_color=[colour(i) for i in range(len(tasks))],
                           hovertemplate="%{x}: own model picked for %{y:.1f} % of images<extra></extra>"))
    fig.add_hline(y=100 / max(len(tasks), 1), line=dict(dash="dot", color="#888"), annotation_text="chance")
    fig.update_yaxes(title="% of images", range=[0, 100])
    return _layout(fig, "How often the most confident model is the right one", height=330)


def routing_pair(panels: list[tuple[str, np.ndarray]], modules: list[str], experts: list[str]) -> go.Figure:
    """Routing heatmaps (modules x experts) of a few images side by side, on one colour scale."""
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p[0] for p in panels], horizontal_spacing=0.12)
    lo = min(float(w.min()) for _, w in panels)
    hi = max(float(w.max()) for _, w in panels)
    for i, (_, w) in enumerate(panels):
        fig.add_trace(go.Heatmap(z=np.asarray(w, dtype=float), x=experts, y=modules, zmin=lo, zmax=hi, colorscale="Viridis",
                                 showscale=i == len(panels) - 1, colorbar=dict(thickness=12),
                                 hovertemplate="module %{y}<br>expert %{x}<br>weight %{z:.4f}<extra></extra>"), 1, i + 1)
        fig.update_yaxes(autorange="reversed", row=1, col=i + 1, showticklabels=i == 0)
    return _layout(fig, "One WEMoE, two images: a different merge per layer and per image", height=160 + 34 * len(modules))
