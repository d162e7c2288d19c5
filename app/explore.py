"""Explore: an image (uploaded or an example) through every chosen model of the session: each
task head's top-5, the WEMoE routing heatmap, and the per-patch router weights over the image."""
from __future__ import annotations

import functools
import logging
import os
import tempfile
import threading
import time
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from wemoe_core.merging.registry import get_method
from wemoe_core.pools import load_pool
from wemoe_core.sources.images import load_image

from . import figures, views
from .callbacks import titles, usable_pool, warn
from .config import device, limits
from .sessions import STORE, ModelEntry, Session

log = logging.getLogger(__name__)
ASSETS = Path(__file__).resolve().parents[1] / "assets" / "examples"
ARGMAX = "argmax"
MAX_MODELS = 4          # side by side at most


# --- images -----------------------------------------------------------------------------------
KEEP_SIDE = 1024        # a session keeps its image at most this large (the models see 64-224 px)


def open_image(path: str | os.PathLike) -> Image.Image:
    """A checked RGB image (``WEMOE_MAX_UPLOAD_MB``, ``WEMOE_MAX_IMAGE_PIXELS``), shrunk to at
    most ``KEEP_SIDE`` px a side so a session never holds more than 3 MB of it; or an
    ``ImageError`` (a ValueError) that says what to do."""
    lim = limits()
    img = load_image(path, max_bytes=lim.max_upload_mb * 2**20, max_pixels=lim.max_image_pixels)
    if max(img.size) > KEEP_SIDE:
        img.thumbnail((KEEP_SIDE, KEEP_SIDE), Image.LANCZOS)
    return img


@functools.lru_cache(maxsize=4)
def examples(pool_name: str, per_task: int = 2) -> list[tuple[str, str, str]]:
    """Example images as (PNG path, task, class): ``assets/examples/<task>/*.png`` when shipped,
    otherwise written once from the pool's test split into a temporary folder."""
    pool = load_pool(pool_name)
    out, folder = [], Path(tempfile.gettempdir()) / f"wemoe-examples-{pool_name}"
    for t in pool.tasks:
        shipped = sorted((ASSETS / t).glob("*.png"))[:per_task] if (ASSETS / t).is_dir() else []
        if shipped:
            out += [(str(p), t, p.stem.split("_", 1)[-1].replace("-", " ")) for p in shipped]
            continue
        (folder / t).mkdir(parents=True, exist_ok=True)
        from wemoe_core.running.analysis import example_images

        for i, (pixels, label) in enumerate(example_images(pool, t, per_task)):
            path = folder / t / f"{i}.png"
            if not path.exists():
                Image.fromarray(pixels).save(path)
            out.append((str(path), t, label))
    return out


def gallery(sid: str | None) -> list[tuple[str, str]]:
    s = STORE.resume(sid)
    t = titles(load_pool(s.pool))
    return [(p, f"{t.get(task, task)}: {label}") for p, task, label in examples(s.pool)]


def shown(img: Image.Image, side: int = 256) -> Image.Image:
    """A small image enlarged for display (the model still gets the original)."""
    if max(img.size) >= side:
        return img
    k = side / max(img.size)
    return img.resize((round(img.width * k), round(img.height * k)), Image.BICUBIC)


def use_upload(sid: str | None, path: str | None) -> tuple:
    s = STORE.resume(sid)
    if not path:
        return gr.update(), "Upload an image, or pick an example below."
    try:
        img = open_image(path)
    except (ValueError, OSError) as e:
        return gr.update(), warn(str(e))
    with s.lock:
        s.image, s.image_note, s.truth = img, f"your image ({img.width} x {img.height})", None
    return shown(img), s.image_note


def use_example(sid: str | None, evt: gr.SelectData) -> tuple:
    s = STORE.resume(sid)
    items = examples(s.pool)
    if not isinstance(evt.index, int) or not 0 <= evt.index < len(items):
        return gr.update(), warn("That example is gone: pick another one.")
    path, task, label = items[evt.index]
    with s.lock:
        s.image, s.truth = open_image(path), (task, label)
        s.image_note = f"example of {titles(load_pool(s.pool)).get(task, task)}: {label}"
    return shown(s.image), s.image_note


# --- models -----------------------------------------------------------------------------------
_default_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _default(pool_name: str) -> ModelEntry:
    pool = usable_pool(pool_name)
    from wemoe_core.running.workbench import build_model

    run = build_model(pool, pool.tasks, "task_arithmetic")
    run.model.to(device())
    pretty = get_method("task_arithmetic").pretty_name
    return ModelEntry("default", f"{pretty} (default, all tasks)", "task_arithmetic", pretty, pool.name,
                      list(pool.tasks), "paper", run, run.build_s)


def default_entry(pool_name: str) -> ModelEntry:
    """Task arithmetic on every task of the pool, shared by all sessions (built on first use)."""
    with _default_lock:
        return _default(pool_name)


def ask(s: Session, m: ModelEntry, topk: int = 5):
    """The model's explanation of the session's image (cached for overlay redraws)."""
    with m.lock:
        from wemoe_core.running.analysis import explain_image

        ex = explain_image(m.run, load_pool(m.pool), s.image, topk=topk, device=device())
    with s.lock:
        s.explanations[m.id] = ex
    return ex


def chosen(s: Session, ids: list[str] | None) -> list[ModelEntry]:
    found = [m for m in (s.model(i) for i in (ids or [])) if m is not None]
    return found[:MAX_MODELS] or [default_entry(s.pool)]


# --- predict and overlay ----------------------------------------------------------------------
def predict(sid: str | None, ids: list[str] | None, route_id: str | None, layer: str | None, expert: str | None) -> tuple:
    """(predictions HTML, routing heatmap, overlay, layer dropdown, expert dropdown, status)."""
    s = STORE.resume(sid)
    if s.image is None:
        msg = "Upload an image or pick an example first."
        return views.predictions({}, [], {}), figures.message(msg), figures.message(msg), gr.update(), gr.update(), msg
    t0 = time.perf_counter()
    try:
        models = chosen(s, ids)
        answers = {m.label: ask(s, m).predictions for m in models}
        route = s.model(route_id) if route_id else next((m for m in models if m.is_wemoe), None)
        route = route if route is not None and route.is_wemoe else (s.wemoe_models() or [None])[-1]
        rex = None if route is None else s.explanations[route.id] if any(route is m for m in models) else ask(s, route)
    except (ValueError, OSError) as e:
        err = warn(str(e))
        return gr.update(), gr.update(), gr.update(), gr.update(), gr.update(), err
    pool = load_pool(models[0].pool)
    t = titles(pool)
    tasks = list(dict.fromkeys(task for m in models for task in m.tasks))
    html = views.predictions(answers, tasks, t, s.truth)
    if rex is None:
        hint = "Run WEMoE in “Merge & adapt” to see its router at work on this image."
        out = (figures.message(hint), figures.message(hint), gr.update(choices=[], value=None), gr.update())
    else:
        layer = layer if layer in rex.routed_names else rex.routed_names[-1]
        experts = [t.get(e, e) for e in rex.experts]
        out = (figures.routing_heatmap(rex.routing, rex.routed_names, experts, f"{route.label}: routing for this image"),
               overlay_figure(s, route, rex, layer, expert),
               gr.update(choices=rex.routed_names, value=layer),
               gr.update(choices=[("strongest expert (colours)", ARGMAX), *[(n, str(i)) for i, n in enumerate(experts)]],
                         value=expert if expert else ARGMAX))
    ms = (time.perf_counter() - t0) * 1000
    return (html, *out, f"{s.image_note} · {len(models)} model(s) answered in {ms:.0f} ms on {device()}")


def overlay_figure(s: Session, route: ModelEntry, ex, layer: str, expert: str | None):
    """Per-patch router weights of ``layer`` over the image as the model sees it."""
    m = ex.routed_names.index(layer)
    tok = ex.token_routing[m, 1:]                      # (patches, experts); token 0 = CLS is left out
    g = int(round(np.sqrt(tok.shape[0])))
    if g * g != tok.shape[0]:
        return figures.message(f"{tok.shape[0]} patch tokens do not form a square grid.")
    pool = load_pool(route.pool)
    t = titles(pool)
    names = [t.get(e, e) for e in ex.experts]
    from wemoe_core.running.analysis import model_view

    pixels = model_view(pool, s.image)
    cls = ex.token_routing[m, 0]
    note = f"CLS token: strongest {names[int(cls.argmax())]} ({cls.max():.2f})"
    if not expert or expert == ARGMAX:
        return figures.overlay(pixels, tok.argmax(-1).reshape(g, g), names, expert=None,
                               weights=tok.max(-1).reshape(g, g), title=f"{layer}: strongest expert per patch<br><sup>{note}</sup>")
    e = int(expert)
    return figures.overlay(pixels, tok[:, e].reshape(g, g), names, expert=e,
                           title=f"{layer}: weight of {names[e]} per patch<br><sup>{note}</sup>")


def redraw_overlay(sid: str | None, route_id: str | None, layer: str | None, expert: str | None):
    """Layer or expert changed: redraw from the cached explanation (no model call)."""
    s = STORE.resume(sid)
    route = s.model(route_id) if route_id else (s.wemoe_models() or [None])[-1]
    ex = s.explanations.get(route.id) if route else None
    if ex is None or ex.token_routing is None or layer not in ex.routed_names:
        return gr.update()
    return overlay_figure(s, route, ex, layer, expert)
