"""Hyperparameter controls derived from the registry's declarations (``wemoe_core.model.params``).

One group of controls per hyperparameter dataclass (AdaMerging's two granularities share one),
plus one group for the adaptation settings. What a visitor sees follows the declarations, never
a per-method rule written here:

- a method shows its own groups only (the adaptation group only if it adapts);
- a setting declared with ``when=(field, value)`` shows only while that field has that value
  (``rank`` only with ``compress="lowrank"``); a hidden setting is sent as its default;
- the registry's ``main`` settings of a method (three at most) are up front, the rest sit in a
  closed "Advanced settings" accordion whose title says what differs from the pool's recipe.

``LAYOUT`` fixes the order (main settings first, then advanced): the UI creates the components
in that order and the callbacks read the values back by position.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import gradio as gr

from wemoe_core.merging.registry import METHODS, get_method
from wemoe_core.model.params import Spec, specs
from wemoe_core.running.params import AdaptParams
from wemoe_core.running.recipes import paper_recipe, recipe_for

ADAPT = "adapt"
Slot = tuple[str, Spec]          # (group, declaration)


def group_of(method: str) -> str | None:
    """The control group of a method's hyperparameters (None: it has none)."""
    cls = get_method(method).params
    return cls.__name__ if dataclasses.fields(cls) else None


def groups_of(method: str) -> tuple[str, ...]:
    """Every control group a method uses: its hyperparameters', then the adaptation's."""
    g = group_of(method)
    return tuple(x for x in (g, ADAPT if get_method(method).adaptive else None) if x)


def _layout() -> tuple[list[Slot], set[tuple[str, str]]]:
    seen, slots = set(), []
    for m in METHODS.values():
        g = group_of(m.name)
        if g and g not in seen:
            seen.add(g)
            slots += [(g, s) for s in specs(m.params)]
    slots += [(ADAPT, s) for s in specs(AdaptParams)]
    main = {(g, s.name) for g, s in slots for m in METHODS.values() if g in groups_of(m.name) and s.name in m.main}
    return [x for x in slots if (x[0], x[1].name) in main] + [x for x in slots if (x[0], x[1].name) not in main], main


LAYOUT, MAIN = _layout()
N_MAIN = len(MAIN)               # LAYOUT[:N_MAIN] are up front, the rest are advanced
GROUPS: list[str] = list(dict.fromkeys(g for g, _ in LAYOUT))
# The advanced settings come in groups, each under a heading (two methods never share one).
ADVANCED_GROUPS: list[str] = list(dict.fromkeys(g for g, _ in LAYOUT[N_MAIN:]))
HEADINGS = {g: "**Adapting** (at test time, on unlabeled images)" if g == ADAPT else "**Building the model**"
            for g in ADVANCED_GROUPS}


def info(spec: Spec) -> str:
    """One line: what it does, its unit and its valid range."""
    parts = [spec.help]
    if spec.min is not None and spec.max is not None and spec.choices is None and spec.type is not bool:
        lo = "(" if spec.min_open else "["
        num = (lambda v: f"{int(v):,}") if spec.type is int else (lambda v: f"{v:g}")  # noqa: E731
        parts.append(f"range {lo}{num(spec.min)}, {num(spec.max)}]" + (f" {spec.unit}" if spec.unit else ""))
    return "; ".join(parts)


def elem_id(group: str, name: str) -> str:
    """The page's id of a control: ``wm-wemoe-rank``, ``wm-adapt-lr``."""
    return f"wm-{group.lower().removesuffix('params')}-{name}"


def component(spec: Spec, value: Any, max_steps: int, visible: bool = True,
              group: str = "") -> gr.components.Component:
    """The control for one hyperparameter: a dropdown for choices, a checkbox for booleans, a
    slider for bounded numbers with a sensible step, a number box otherwise."""
    label = spec.name.replace("_", " ")
    common = dict(label=label, visible=visible, elem_id=elem_id(group, spec.name) if group else None)
    if spec.choices is not None:
        return gr.Dropdown(choices=list(spec.choices), value=value, info=info(spec), **common)
    if spec.type is bool:
        return gr.Checkbox(value=bool(value), info=spec.help, **common)
    hi = min(spec.max, max_steps) if spec.name == "steps" and spec.max is not None else spec.max
    lo, step = spec.min, (1 if spec.type is int else spec.step)   # ints: every value reachable
    if step and lo is not None and hi is not None and (hi - lo) / step <= 2000:
        return gr.Slider(minimum=lo, maximum=hi, step=step, value=value, info=info(spec), **common)
    return gr.Number(value=value, info=info(spec), precision=0 if spec.type is int else None, **common)


def preset_values(pool, method: str, preset: str, max_steps: int) -> dict[tuple[str, str], Any]:
    """Values for the method's controls: ``paper`` (the declared defaults, as the pool scales them)
    or ``recipe`` (the pool's recommended settings, falling back to the defaults)."""
    if preset == "paper":
        hp, a = paper_recipe(pool, method)
    else:
        _, hp, a = recipe_for(pool, method)
    ap = dataclasses.asdict(a) if a is not None else None
    out = {(group_of(method), k): v for k, v in hp.items()}
    if ap is not None:
        ap["steps"] = min(ap["steps"], max_steps)
        out.update({(ADAPT, k): v for k, v in ap.items()})
    return out


def _context(method: str, group: str, current: dict[tuple[str, str], Any]) -> dict[str, Any]:
    """The settings a condition of ``group`` may name: the method's other groups, then its own."""
    own = [g for g in groups_of(method) if g != group] + [group]
    return {name: v for g in own for (grp, name), v in current.items() if grp == g}


def applicable(method: str, values: list | dict) -> list[bool]:
    """Per ``LAYOUT`` slot: does it belong to the method, and does its condition hold?"""
    current = values if isinstance(values, dict) else {(g, s.name): v for (g, s), v in zip(LAYOUT, values)}
    own = groups_of(method)
    return [g in own and s.applies(_context(method, g, current)) for g, s in LAYOUT]


def split_values(method: str, values: list) -> tuple[dict, dict | None]:
    """Control values (in ``LAYOUT`` order) -> (the method's hyperparameters, adaptation
    settings or None). A setting that does not apply (hidden) is sent as its default. Gradio
    hands numbers back as floats: whole ones become ints here."""
    if len(values) != len(LAYOUT):
        raise ValueError(f"expected {len(LAYOUT)} control values, got {len(values)}")
    g = group_of(method)
    ok = applicable(method, [_clean(v) for v in values])
    pick = lambda want: {s.name: (_clean(v) if use else s.default)  # noqa: E731
                         for (grp, s), v, use in zip(LAYOUT, values, ok) if grp == want}
    return pick(g), (pick(ADAPT) if get_method(method).adaptive else None)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and math.isfinite(v) and v.is_integer():
        return int(v)
    return v


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def _shown(v: Any) -> str:
    if isinstance(v, bool):
        return "on" if v else "off"
    return f"{v:g}" if isinstance(v, float) else str(v)


def advanced_title(pool, method: str, values: list | dict) -> str:
    """The Advanced accordion's one line: which of its settings differ from the pool's recipe
    (the paper's defaults when the pool has none for this method)."""
    current = values if isinstance(values, dict) else {(g, s.name): v for (g, s), v in zip(LAYOUT, values)}
    recipe = preset_values(pool, method, "recipe", 10**9)
    ref = f"the {pool.name} recipe" if has_recipe(pool, method) else "the paper's defaults"
    ok = applicable(method, current)
    changed = [f"{s.name.replace('_', ' ')} {_shown(_clean(current[(g, s.name)]))}"
               for i, ((g, s), use) in enumerate(zip(LAYOUT, ok))
               if i >= N_MAIN and use and (g, s.name) in current
               and not _same(_clean(current[(g, s.name)]), recipe.get((g, s.name), s.default))]
    if not changed:
        return f"Advanced settings · as in {ref}"
    more = f", +{len(changed) - 3} more" if len(changed) > 3 else ""
    return f"Advanced settings · {len(changed)} changed from {ref}: {', '.join(changed[:3])}{more}"


def has_recipe(pool, method: str) -> bool:
    """Whether the pool recommends settings of its own for this method (not just the paper's)."""
    return preset_values(pool, method, "recipe", 10**9) != preset_values(pool, method, "paper", 10**9)


def has_advanced(method: str, values: list | dict) -> bool:
    return any(use for i, use in enumerate(applicable(method, values)) if i >= N_MAIN)


def headings_shown(method: str, values: list | dict) -> list[bool]:
    """Per ``ADVANCED_GROUPS``: is any of the group's advanced settings shown?"""
    ok = applicable(method, values)
    return [any(use for i, ((g, _), use) in enumerate(zip(LAYOUT, ok)) if i >= N_MAIN and g == grp)
            for grp in ADVANCED_GROUPS]


def recipe_note(pool, method: str) -> str:
    """Markdown, one sentence: what the pool's recipe changes from the paper's defaults."""
    if not groups_of(method):
        return ""
    paper = preset_values(pool, method, "paper", 10**9)
    recipe = preset_values(pool, method, "recipe", 10**9)
    diff = [f"{k.replace('_', ' ')} {_shown(v)}" for (g, k), v in recipe.items() if not _same(v, paper.get((g, k)))]
    if not diff:
        return "Starting values: the paper's defaults (this pool has no recipe of its own for this method)."
    more = f", +{len(diff) - 4} more" if len(diff) > 4 else ""
    return (f"The **{pool.name} recipe** (what works on this pool) changes {len(diff)} of the paper's settings: "
            f"{', '.join(diff[:4])}{more}.")
