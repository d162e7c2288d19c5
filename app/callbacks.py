"""Callbacks of the Models, Merge & adapt, Compare and Export tabs: validate, call the workbench
(through ``runs``/``jobs``), return plain data and ``gr.update`` dicts. Errors become messages.
Explore lives in ``explore.py``, Learn in ``learn.py``."""
from __future__ import annotations

import dataclasses
import functools
import logging
import shutil
import tempfile
import time
from pathlib import Path

import gradio as gr
import pandas as pd

from wemoe_core.merging.registry import get_method
from wemoe_core.model.params import validate
from wemoe_core.pools import Availability, list_pools, load_pool
from wemoe_core.running.params import AdaptParams

from . import confine, controls, figures, views
from .config import device, device_label, limits
from .jobs import FINISHED, JOBS, JobRefused
from .messages import for_visitor
from .runs import make_work
from .sessions import STORE, Session, export_root

log = logging.getLogger(__name__)
SKIP = gr.skip


def warn(message: str) -> str:
    """A toast now, and the same text for the tab's status line (in a visitor's words)."""
    message = for_visitor(message)
    gr.Warning(message)
    return f"⚠️ {message}"


def titles(pool) -> dict[str, str]:
    return {t.name: t.title for t in pool.info.tasks}


def usable_pool(name: str | None):
    """The pool, or a ValueError that says why it cannot be used here and what to do. A pool
    naming files outside the server's folders is refused (see ``confine``)."""
    pool = load_pool(name or "tiny8")
    confine.check_pool(pool)
    avail = pool.availability()
    if not avail.ok:
        raise ValueError(f"pool {pool.info.title!r} is unavailable: {avail.reason}")
    return pool


# --- Models tab -------------------------------------------------------------------------------
@functools.lru_cache(maxsize=1)
def _pools_cached(minute: int) -> list:
    return list_pools()


def pools_status() -> tuple[dict, str]:
    """Every pool with its availability (probing at most once a minute): dropdown + Markdown."""
    try:
        entries = _pools_cached(int(time.time() // 60))
    except Exception:  # noqa: BLE001 - a broken pool file must not break the page
        log.exception("listing pools failed")
        return gr.update(), "⚠️ Could not list the pools; the server logged why."
    lines, choices = [], []
    for e in entries:
        e = _confined(e)
        ok = e.availability.ok
        choices.append((e.title if ok else f"{e.title} (unavailable)", e.name))
        reason = for_visitor(e.availability.reason)
        lines.append(f"- **{e.title}** (`{e.name}`): " + ("available" + (f"; {reason}" if reason else "")
                                                         if ok else f"unavailable: {reason}"))
    return gr.update(choices=choices), "\n".join(lines)


def _confined(entry):
    """A pool entry as visitors see it: unavailable when it names files outside the server's folders."""
    try:
        pool = load_pool(entry.name)
    except (ValueError, OSError):
        return entry                     # an invalid pool file: listed with its own reason
    try:
        confine.check_pool(pool)
    except ValueError as e:
        return dataclasses.replace(entry, availability=Availability(False, str(e)))
    return entry


def task_table(pool) -> pd.DataFrame:
    mirrors = pool.info.extra.get("mirrors", {})
    rows = [{"task": t.title, "mirrors": mirrors.get(t.name, ""), "classes": len(t.classnames),
             "fine-tuned accuracy (%)": None if t.individual_accuracy is None else round(t.individual_accuracy, 1),
             "what it is": t.description} for t in pool.info.tasks]
    return pd.DataFrame(rows)


def select_pool(sid: str | None, name: str) -> tuple:
    """Pool dropdown changed: tasks checkbox, task table, message (unusable: stay on the old)."""
    s = STORE.resume(sid)
    try:
        pool = usable_pool(name)
    except (ValueError, OSError) as e:
        return gr.update(value=s.pool), gr.update(), gr.update(), warn(str(e))
    with s.lock:
        s.pool, s.tasks = pool.name, list(pool.tasks)
    choices = [(t.title, t.name) for t in pool.info.tasks]
    msg = f"{pool.info.title}: {len(pool.tasks)} tasks. {pool.info.description}"
    return gr.update(value=pool.name), gr.update(choices=choices, value=pool.tasks), task_table(pool), msg


def select_tasks(sid: str | None, tasks: list[str]) -> str:
    s = STORE.resume(sid)
    with s.lock:
        s.tasks = list(tasks or [])
    if len(s.tasks) < 2:
        return warn("Select at least 2 tasks: merging needs two or more fine-tuned models.")
    return f"{len(s.tasks)} tasks selected: the merged model will answer all of them."


# --- Merge & adapt tab ------------------------------------------------------------------------
def _pool_for_controls(pool_name: str | None):
    try:
        return load_pool(pool_name or "tiny8")
    except (ValueError, OSError):
        return load_pool("tiny8")


def show_method(name: str, pool_name: str, preset: str) -> tuple:
    """Method or preset changed: description, the Advanced accordion (title, shown or not), and
    every control's value and visibility (only the settings that apply to this method)."""
    m = get_method(name)
    pool = _pool_for_controls(pool_name)
    values = controls.preset_values(pool, name, "paper" if preset == "paper" else "recipe", limits().max_steps)
    full = {(g, s.name): values.get((g, s.name), s.default) for g, s in controls.LAYOUT}
    kind = "learns at test time (runs in the background)" if m.adaptive else "static merge (instant)"
    none = "" if controls.groups_of(name) else " It has no settings: it uses the fine-tuned models as they are."
    text = (f"**{m.pretty_name}**: {m.summary} [Paper]({m.reference_url}). *{kind}*{none}\n\n"
            + controls.recipe_note(pool, name))
    vis = controls.applicable(name, full)
    ctls = [gr.update(value=values[(g, s.name)], visible=v) if (g, s.name) in values else gr.update(visible=v)
            for (g, s), v in zip(controls.LAYOUT, vis)]
    preset_box = gr.update(visible=controls.has_recipe(pool, name))      # a choice only when the two differ
    return (text, preset_box, *_advanced(pool, name, full), *ctls)


def refresh_controls(name: str, pool_name: str, *values) -> tuple:
    """A control changed: which settings apply now (``rank`` appears with compress=lowrank) and
    what the Advanced accordion's title says differs from the recipe. Values stay as typed."""
    pool = _pool_for_controls(pool_name)
    vis = controls.applicable(name, list(values))
    return (*_advanced(pool, name, list(values)), *[gr.update(visible=v) for v in vis])


def _advanced(pool, name: str, values) -> list:
    """The accordion (title, shown or not), then its headings."""
    box = gr.update(label=controls.advanced_title(pool, name, values), visible=controls.has_advanced(name, values))
    return [box, *[gr.update(visible=v) for v in controls.headings_shown(name, values)]]


def start(sid: str | None, pool_name: str, tasks: list[str], method: str, *values) -> tuple:
    """Validate, then start the method as a background job. Returns (status, progress, timer,
    seen version, entropy figure, routing figure)."""
    s = STORE.resume(sid)
    try:
        job = submit(s, pool_name, tasks, method, list(values))
    except (ValueError, JobRefused) as e:
        return warn(str(e)), gr.update(), gr.update(), SKIP(), SKIP(), SKIP()
    waiting = figures.message("The curves appear here as the model adapts." if job.progress.steps else
                              "A static merge has no curves: it finishes in a moment.")
    return (f"Started {job.label} on {device()}.", views.progress(0, "starting"), gr.update(active=True), -1,
            waiting, waiting)


def submit(s: Session, pool_name: str, tasks: list[str], method: str, values: list):
    """Check everything a user typed, then hand the work to the job manager."""
    pool = usable_pool(pool_name)
    if not tasks or len(tasks) < 2:      # (an empty list would mean "all tasks" to the pool)
        raise ValueError(f"Select at least 2 tasks in “Models” (got {len(tasks or [])}): merging needs two or "
                         "more fine-tuned models.")
    tasks = pool.check_tasks(tasks, minimum=2)
    m = get_method(method)
    hp, ap = controls.split_values(method, values)
    hp = vars(m.hparams(**hp))
    adapt = None
    if ap is not None:
        adapt = validate(AdaptParams, ap)
        if adapt.steps > limits().max_steps:
            raise ValueError(f"steps={adapt.steps} is over this server's limit; use at most {limits().max_steps}")
    with s.lock:
        s.pool, s.tasks = pool.name, list(tasks)
    label = f"{m.pretty_name} #{s.counter + 1}"
    job = JOBS.submit(s.id, label, tasks, adapt.steps if adapt else 0, make_work(s, pool, tasks, method, hp, adapt))
    s.job_id = job.id
    return job


def stop(sid: str | None) -> str:
    s = STORE.resume(sid)
    job = JOBS.get(s.id, s.job_id)
    if job is None or job.finished:
        return "Nothing is running."
    job.stop()
    return f"Stopping {job.label}: it keeps what it learned so far, then measures its accuracy."


def poll(sid: str | None, seen: int | None) -> tuple:
    """Timer tick: progress, status, figures (only when new), timer, version, then the session
    views (only when the job has just finished)."""
    s = STORE.get(sid)
    job = JOBS.get(s.id, s.job_id) if s else None
    n_views = len(VIEW_OUTPUTS)
    if job is None:
        return (SKIP(), SKIP(), SKIP(), SKIP(), gr.update(active=False), seen, *[SKIP()] * n_views)
    p = job.snapshot()
    frac = p.step / p.steps if p.steps else (1.0 if job.finished else 0.0)
    text = progress_text(job.label, p, None if p.state in FINISHED else time.monotonic() - job.started)
    figs = (SKIP(), SKIP())
    if p.version != seen and p.curve_steps:
        pool = load_pool(s.pool)
        t = titles(pool)
        figs = (figures.entropy_curve(p.curve_steps, p.entropy, t),
                figures.routing_live(p.routing_now, p.own, p.curve_steps, job.tasks, t, p.routing_kind)
                if p.routing_now is not None else SKIP())
    finished = p.state in FINISHED
    status = p.message + (f" ({job.error})" if job.error and job.error not in p.message else "")
    views_out = session_views(s) if finished else [SKIP()] * n_views
    return (views.progress(frac, text), status, *figs, gr.update(active=not finished), p.version, *views_out)


def progress_text(label: str, p, running_for: float | None) -> str:
    """'WEMoE #2: running, step 40/200, 21 s, 1.9 steps/s, about 84 s left'. While it runs the
    clock ticks with every poll, so the page changes at least once a second even between steps."""
    if not p.steps:
        return f"{label}: {p.state}"
    clock = running_for if running_for is not None else p.elapsed
    text = f"{label}: {p.state}, step {p.step}/{p.steps}, {clock:.0f} s"
    if p.step and p.elapsed > 0:
        text += f", {p.step / p.elapsed:.2g} steps/s"
        if running_for is not None and p.step < p.steps:
            text += f", about {(p.steps - p.step) * p.elapsed / p.step:.0f} s left"
    return text


def resume(sid: str | None) -> tuple:
    """Page (re)load: the browser's id (new if unknown), the timer (on if a job runs), views."""
    s = STORE.resume(sid)
    job = JOBS.get(s.id, s.job_id)
    running = job is not None and not job.finished
    status = (f"{job.label} is running: following it again." if running else
              f"Jobs run in the background on **{device_label()}**; the rest of the page stays usable.")
    return (s.id, gr.update(active=running), status, *session_views(s))


# --- Compare / Export, and what every tab lists -----------------------------------------------
VIEW_OUTPUTS = ("explore_models", "route_model", "compare_df", "compare_plot", "share_model", "share_plot", "export_model")


def session_views(s: Session) -> list:
    """Updates of every control that lists the session's models, and the Compare tab."""
    with s.lock:
        models = list(s.models.values())
    choices = [(m.label, m.id) for m in models]
    wemoe = [(m.label, m.id) for m in models if m.is_wemoe]
    latest = [m.id for m in models[-3:]]
    table = compare_frame(s)
    share_id = wemoe[-1][1] if wemoe else None
    return [gr.update(choices=choices, value=latest), gr.update(choices=wemoe, value=share_id), table,
            compare_figure(s), gr.update(choices=wemoe, value=share_id), share_figure(sid=s.id, model_id=share_id),
            gr.update(choices=choices, value=models[-1].id if models else None)]


def compare_frame(s: Session) -> pd.DataFrame:
    """One row per model of the session: accuracy per task, average, normalised, time."""
    rows = []
    with s.lock:
        models = list(s.models.values())
    for m in models:
        table, t = m.run.table, titles(load_pool(m.pool))
        row = {"model": m.label, "variant": m.variant, "steps": m.steps_done or "",
               "stopped": "by an error" if m.error else "yes" if m.stopped else ""}
        row |= {t.get(k, k): round(float(table.at[k, "accuracy"]), 1) for k in m.tasks}
        row["avg"] = round(float(table.at["avg", "accuracy"]), 1)
        row["normalised"] = round(float(table.at["avg", "normalized"]), 1) if "normalized" in table else None
        row["seconds"] = round(m.seconds, 1)
        rows.append(row)
    return pd.DataFrame(rows) if rows else pd.DataFrame(columns=["model", "variant", "avg", "normalised", "seconds"])


def compare_figure(s: Session):
    df = compare_frame(s)
    if df.empty:
        return figures.message("Run a method in “Merge & adapt”: its accuracy appears here.")
    acc = df.set_index("model").drop(columns=["variant", "steps", "stopped", "normalised", "seconds"])
    return figures.accuracy_bars(acc, {})


def share_figure(sid: str | None, model_id: str | None):
    s = STORE.get(sid)
    m = s.model(model_id) if s and model_id else None
    if m is None or m.routing_share is None:
        return figures.message("Run WEMoE to see which expert each layer prefers for each task's images.")
    return figures.share_matrix(m.routing_share, titles(load_pool(m.pool)), f"Routing analysis of {m.label}")


def export(sid: str | None, model_id: str | None) -> tuple[list[str] | None, str]:
    """Write the model's files (safetensors with the recipe, routers, recipe JSON) and the
    session's results table (CSV); returns (paths, message)."""
    s = STORE.resume(sid)
    m = s.model(model_id) if model_id else None
    if m is None:
        return None, warn("Pick a model to export (run one in “Merge & adapt” first).")
    folder = Path(tempfile.mkdtemp(prefix="export-", dir=export_root()))
    with s.lock:
        old, s.export_dir = s.export_dir, folder
    if old:
        shutil.rmtree(old, ignore_errors=True)
    from wemoe_core.running.export import export_run
    from wemoe_core.sources.files import atomic_write_text

    with m.lock:
        files = export_run(m.run, load_pool(m.pool), folder, m.label)
    csv = folder / "results.csv"
    atomic_write_text(csv, compare_frame(s).to_csv(index=False))
    paths = [str(p) for p in (*files.values(), csv)]
    note = "" if "model" in files else f" {m.pretty_name} keeps one model per task, so there is no single merged model to save."
    return paths, f"{len(paths)} files for {m.label}.{note}"
