"""Learn: the teaching text (``learn.md``) with figures measured live on the session's pool.

The heavy numbers (task-vector cosines, the λ sweep, memory, the pick-by-confidence baseline)
are computed on first visit of the tab, once per pool and task set, and cached; the page's
start never waits for them. Figures that need the session's WEMoE say so until it exists.
"""
from __future__ import annotations

import functools
import logging
import re
import threading
from pathlib import Path
from typing import Iterator

import gradio as gr
import pandas as pd

from . import figures, figures_learn
from .callbacks import titles, usable_pool
from .explore import ask, examples, open_image
from .sessions import STORE, Session

log = logging.getLogger(__name__)
TEXT = Path(__file__).with_name("learn.md")
MARK = re.compile(r"<!--\s*figure:\s*(\w+)\s*-->")
LIMIT = 250                              # test images per task for the Learn measurements
_locks: dict[tuple, threading.Lock] = {}
_cache: dict[tuple, dict[str, pd.DataFrame]] = {}


@functools.lru_cache(maxsize=1)
def sections() -> list[tuple[str, str | None]]:
    """learn.md as [(markdown, figure name or None)]: text, then the figure that follows it."""
    out, pos, text = [], 0, TEXT.read_text(encoding="utf-8")
    for m in MARK.finditer(text):
        out.append((text[pos:m.start()].strip(), m.group(1)))
        pos = m.end()
    out.append((text[pos:].strip(), None))
    return out


def figure_names() -> list[str]:
    return [f for _, f in sections() if f]


def _an():
    from wemoe_core.running import analysis      # torch: imported when the tab first measures

    return analysis


_STEPS = (("cosine", "comparing task vectors", lambda p, t: _an().task_vector_cosine(p, t)),
          ("memory", "counting parameters", lambda p, t: _an().memory_table(p, t)),
          ("lambda", "sweeping λ for task arithmetic", lambda p, t: _an().lambda_sweep(p, t, limit=LIMIT)),
          ("selection", "running every fine-tuned model on every test image",
           lambda p, t: _an().selection_baseline(p, t, limit=LIMIT)))


def figures_for(sid: str | None) -> Iterator[tuple]:
    """Generator: (status, *figures in ``figure_names()`` order), yielded as numbers arrive."""
    s = STORE.resume(sid)
    names = figure_names()
    try:
        pool = usable_pool(s.pool)
        tasks = pool.check_tasks(s.tasks or pool.tasks, minimum=2)
    except ValueError as e:
        yield (f"⚠️ {e}", *[gr.skip()] * len(names))
        return
    key = (pool.name, tuple(tasks))
    lock = _locks.setdefault(key, threading.Lock())
    if key not in _cache and len(_cache) >= 16:          # a few task sets per pool are plenty
        _cache.pop(next(iter(_cache)))
    data = _cache.setdefault(key, {})
    for name, what, fn in _STEPS:
        if name not in data:
            yield (f"Measuring on {pool.info.title}: {what}…", *draw(s, pool, tasks, data, names))
            with lock:                      # never held across a yield: a closed page cannot block it
                if name not in data:
                    data[name] = fn(pool, tasks)
    yield (f"Measured live on {pool.info.title}, {len(tasks)} tasks (accuracies on the first {LIMIT} test "
           "images of each task).", *draw(s, pool, tasks, data, names))


def draw(s: Session, pool, tasks: list[str], data: dict, names: list[str]) -> list:
    t = titles(pool)
    wait = figures.message("Measuring…")
    ind = pool.info.tasks
    individual = [x.individual_accuracy for x in ind if x.name in tasks]
    drawn = {
        "cosine": figures_learn.cosine(data["cosine"], t) if "cosine" in data else wait,
        "lambda": figures_learn.lambda_curve(data["lambda"], t, sum(individual) / len(individual)
                                             if individual and None not in individual else None) if "lambda" in data else wait,
        "memory": figures_learn.memory(data["memory"]) if "memory" in data else wait,
        "selection": selection(s, data, t) if "selection" in data else wait,
        "own": figures_learn.own_pick(data["selection"], t) if "selection" in data else wait,
        "routing": routing(s, pool, t),
    }
    return [drawn.get(n, figures.message(f"no figure named {n}")) for n in names]


def selection(s: Session, data: dict, t: dict):
    others: dict[str, pd.Series] = {}
    w = s.wemoe_models()
    if w:
        others[f"{w[-1].label} (your session)"] = w[-1].run.table["accuracy"]
    if "lambda" in data and 0.3 in data["lambda"].index:
        others["task arithmetic (λ = 0.3)"] = data["lambda"].loc[0.3]
    return figures_learn.selection(data["selection"], others, t)


def routing(s: Session, pool, t: dict):
    """The session's latest WEMoE on two example images of different tasks."""
    w = [m for m in s.wemoe_models() if m.pool == pool.name]
    if not w:
        return figures.message("Run WEMoE in “Merge & adapt” (about a minute on Tiny-8), then open this tab again.")
    m = w[-1]
    picks, seen = [], set()
    for path, task, label in examples(pool.name):
        if task in m.tasks and task not in seen and len(picks) < 2:
            seen.add(task)
            picks.append((path, task, label))
    panels = []
    for path, task, label in picks:
        probe = Session(id=s.id, image=open_image(path))      # a scratch session: leaves the user's image alone
        ex = ask(probe, m)
        panels.append((f"{t.get(task, task)}: {label}", ex.routing))
    return figures_learn.routing_pair(panels, ex.routed_names, [t.get(e, e) for e in ex.experts])
