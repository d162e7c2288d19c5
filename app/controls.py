"""Hyperparameter controls derived from the registry's declarations (``wemoe_core.model.params``).

One group of controls per hyperparameter dataclass (AdaMerging's two granularities share one),
plus one group for the adaptation settings. ``LAYOUT`` fixes their order: the UI creates the
components in that order and the callbacks read the values back by position.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import gradio as gr

from wemoe_core.merging.registry import METHODS, get_method
from wemoe_core.model.params import Spec, specs
from wemoe_core.running.adapt import AdaptParams
from wemoe_core.running.workbench import recipe_for

ADAPT = "adapt"


def group_of(method: str) -> str | None:
    """The control group of a method's hyperparameters (None: it has none)."""
    cls = get_method(method).params
    return cls.__name__ if dataclasses.fields(cls) else None


def _layout() -> list[tuple[str, Spec]]:
    seen, out = set(), []
    for m in METHODS.values():
        g = group_of(m.name)
        if g and g not in seen:
            seen.add(g)
            out += [(g, s) for s in specs(m.params)]
    return out + [(ADAPT, s) for s in specs(AdaptParams)]


LAYOUT: list[tuple[str, Spec]] = _layout()
GROUPS: list[str] = list(dict.fromkeys(g for g, _ in LAYOUT))


def info(spec: Spec) -> str:
    """One line: what it does, its unit and its valid range."""
    parts = [spec.help]
    if spec.min is not None and spec.max is not None and spec.choices is None and spec.type is not bool:
        lo = "(" if spec.min_open else "["
        parts.append(f"range {lo}{spec.min:g}, {spec.max:g}]" + (f" {spec.unit}" if spec.unit else ""))
    return "; ".join(parts)


def component(spec: Spec, value: Any, max_steps: int) -> gr.components.Component:
    """The control for one hyperparameter: a dropdown for choices, a checkbox for booleans, a
    slider for bounded numbers with a sensible step, a number box otherwise."""
    label = spec.name.replace("_", " ")
    if spec.choices is not None:
        return gr.Dropdown(choices=list(spec.choices), value=value, label=label, info=info(spec))
    if spec.type is bool:
        return gr.Checkbox(value=bool(value), label=label, info=spec.help)
    hi = min(spec.max, max_steps) if spec.name == "steps" and spec.max is not None else spec.max
    lo, step = spec.min, (1 if spec.type is int else spec.step)   # ints: every value reachable
    if step and lo is not None and hi is not None and (hi - lo) / step <= 2000:
        return gr.Slider(minimum=lo, maximum=hi, step=step, value=value, label=label, info=info(spec))
    return gr.Number(value=value, label=label, info=info(spec), precision=0 if spec.type is int else None)


def preset_values(pool, method: str, preset: str, max_steps: int) -> dict[tuple[str, str], Any]:
    """Values for the method's controls: ``paper`` (the declared defaults) or ``recipe`` (the
    pool's recommended settings, falling back to the defaults)."""
    m = get_method(method)
    if preset == "paper":
        hp = dataclasses.asdict(m.hparams())
        ap = dataclasses.asdict(AdaptParams()) if m.adaptive else None
    else:
        _, hp, a = recipe_for(pool, method)
        ap = dataclasses.asdict(a) if a is not None else None
    out = {(group_of(method), k): v for k, v in hp.items()}
    if ap is not None:
        ap["steps"] = min(ap["steps"], max_steps)
        out.update({(ADAPT, k): v for k, v in ap.items()})
    return out


def split_values(method: str, values: list) -> tuple[dict, dict | None]:
    """Control values (in ``LAYOUT`` order) -> (the method's hyperparameters, adaptation
    settings or None). Gradio hands numbers back as floats: whole ones become ints here."""
    if len(values) != len(LAYOUT):
        raise ValueError(f"expected {len(LAYOUT)} control values, got {len(values)}")
    g = group_of(method)
    hp = {s.name: _clean(v) for (grp, s), v in zip(LAYOUT, values) if grp == g}
    ap = {s.name: _clean(v) for (grp, s), v in zip(LAYOUT, values) if grp == ADAPT}
    return hp, (ap if get_method(method).adaptive else None)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def recipe_note(pool, method: str) -> str:
    """Markdown: what the pool's recipe changes from the paper's defaults, if anything."""
    m = get_method(method)
    paper = preset_values(pool, method, "paper", 10**9)
    recipe = preset_values(pool, method, "recipe", 10**9)
    diff = [f"`{k}` = {recipe[(g, k)]!r} (paper: {paper.get((g, k))!r})" for (g, k) in recipe
            if recipe[(g, k)] != paper.get((g, k))]
    if not diff:
        return f"Defaults are the paper's ({m.pretty_name}); the pool has no recipe of its own for it."
    return f"**{pool.info.title} recipe** (what works on this pool) changes: " + ", ".join(diff) + "."
