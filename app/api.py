"""Named API endpoints for ``gradio_client``: ``/merge``, ``/predict``, ``/export``.

Each API client connection is its own session (``api-<session_hash>``): a ``/merge`` followed by
``/predict`` on the same ``Client`` asks the model just made. Every parameter after the first
has a default, so ``client.predict(handle_file(path), api_name="/predict")`` works on a fresh
start (it asks task arithmetic over all tasks of the default pool).
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
from typing import Any, Callable, Iterator

import gradio as gr

from wemoe_core.merging.registry import get_method
from wemoe_core.running.recipes import recipe_for

from . import callbacks
from .config import default_pool, limits
from .explore import ask, default_entry, open_image
from .jobs import DONE, JOBS, STOPPED, JobRefused
from .messages import for_visitor, reference
from .runs import make_work
from .sessions import STORE, ModelEntry

log = logging.getLogger(__name__)


def _session(request: gr.Request | None):
    return STORE.for_api(getattr(request, "session_hash", None) or "anonymous")


def unexpected(what: str, e: BaseException) -> gr.Error:
    """A failure we did not foresee: logged with its traceback under a reference, answered with
    a short message that gives the reference (never a class name, a traceback or a path)."""
    ref = reference()
    log.error("%s failed unexpectedly [ref %s]", what, ref, exc_info=e)
    return gr.Error(f"{what} failed unexpectedly; the server logged it (reference {ref}). "
                    "Check the inputs and try again.")


def guarded(what: str) -> Callable:
    """Expected problems (ValueError and our refusals) become their own message; anything else
    becomes :func:`unexpected`'s. Works for plain functions and generators."""
    @contextlib.contextmanager
    def translated():
        try:
            yield
        except gr.Error:
            raise
        except (ValueError, JobRefused) as e:
            raise gr.Error(for_visitor(str(e))) from None
        except Exception as e:  # noqa: BLE001 - see unexpected()
            raise unexpected(what, e) from None

    def wrap(fn: Callable) -> Callable:
        import inspect

        if inspect.isgeneratorfunction(fn):
            @functools.wraps(fn)
            def gen(*args, **kwargs):
                with translated():
                    yield from fn(*args, **kwargs)
            return gen

        @functools.wraps(fn)
        def plain(*args, **kwargs):
            with translated():
                return fn(*args, **kwargs)
        return plain
    return wrap


def as_mapping(value: Any, name: str, example: str) -> dict:
    """A dict from what an API client sent (a dict, a JSON object string, or nothing)."""
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ValueError(f"{name} must be a JSON object such as {example}") from None
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise ValueError(f"{name} must be a dict of name: value such as {example}, not {_kind(value)}")
    return value


def _kind(value: Any) -> str:
    """What a JSON value is, in JSON's words: ``a list``, ``a number``..."""
    if isinstance(value, bool):
        return "true/false"
    for types, name in ((dict, "an object"), ((list, tuple), "a list"), ((int, float), "a number"), (str, "a string")):
        if isinstance(value, types):
            return name
    return "that"


def as_tasks(value: Any, pool) -> list[str]:
    """Task names from a list or a comma-separated string; None: all of the pool's tasks. An
    empty selection is refused (it would otherwise mean 'all')."""
    if value is None:
        return list(pool.tasks)
    if isinstance(value, str):
        value = [t.strip() for t in value.split(",") if t.strip()]
    if not isinstance(value, (list, tuple)) or not all(isinstance(t, str) for t in value):
        raise ValueError(f"tasks must be a list of task names such as {pool.tasks[:2]}")
    if len(value) < 2:
        raise ValueError(f"select at least 2 tasks (got {len(value)}): merging needs two or more fine-tuned models; "
                         f"this pool has {', '.join(pool.tasks)}")
    return pool.check_tasks(list(value), minimum=2)


def as_text(value: Any, name: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, not {_kind(value)}")
    return value.strip()


@guarded("/merge")
def merge(method: str = "task_arithmetic", hyperparameters: dict | None = None, tasks: list[str] | None = None,
          adapt: dict | None = None, pool: str = "", request: gr.Request = None) -> Iterator[dict]:
    """Merge (and, for AdaMerging and WEMoE, adapt) the pool's fine-tuned models. Unset values
    come from the pool's recipe. Yields progress dicts while the job runs, then the result:
    accuracy per task (records), routing share (WEMoE), recipe, time. A client that goes away
    while its job runs stops the job (it keeps what it learned)."""
    s = _session(request)
    method = as_text(method, "method") or "task_arithmetic"
    p = callbacks.usable_pool(as_text(pool, "pool") or default_pool())
    chosen = as_tasks(tasks, p)
    hp_in = as_mapping(hyperparameters, "hyperparameters", '{"density": 0.2}')
    ad_in = as_mapping(adapt, "adapt", '{"steps": 100}')
    name, hp, ap = recipe_for(p, method, hp_in, ad_in)
    if ap is None and ad_in:
        raise ValueError(f"{get_method(name).pretty_name} does not adapt: leave adapt empty, or choose "
                         "adamerging_task, adamerging_layer or wemoe")
    if ap is not None and ap.steps > limits().max_steps:
        raise ValueError(f"steps={ap.steps} is over this server's limit; use at most {limits().max_steps}")
    label = f"{get_method(name).pretty_name} #{s.counter + 1}"
    job = JOBS.submit(s.id, label, chosen, ap.steps if ap else 0, make_work(s, p, chosen, name, hp, ap))
    s.job_id = job.id
    try:
        while not job.done.wait(0.5):
            snap = job.snapshot()
            yield {"status": snap.state, "step": snap.step, "steps": snap.steps, "message": snap.message,
                   "entropy": {t: v[-1] for t, v in snap.entropy.items()}}
    finally:
        if not job.done.is_set():       # the client went away (or cancelled): stop, keep what it learned
            log.info("job %s: its API client went away; stopping it", job.id)
            job.stop()
    snap = job.snapshot()
    if snap.state not in (DONE, STOPPED) or job.result is None:
        raise gr.Error(for_visitor(snap.message or "the job failed"))
    yield result_of(job.result, snap.state, snap.message)


def result_of(m: ModelEntry, state: str, message: str) -> dict:
    table = m.run.table.reset_index()
    share = m.routing_share
    return {"status": state, "message": message, "model": m.label, "id": m.id, "method": m.method,
            "variant": m.variant, "pool": m.pool, "tasks": m.tasks, "seconds": round(m.seconds, 2),
            "steps_done": m.steps_done, "stopped": m.stopped,
            "accuracy": table.round(3).to_dict(orient="records"),
            "routing_share": None if share is None else share.round(2).reset_index(names="task").to_dict(orient="records"),
            "recipe": dataclasses.asdict(m.run.recipe)}


@guarded("/predict")
def predict(image: str | None, model: str = "", topk: float = 5, request: gr.Request = None) -> dict[str, Any]:
    """Top-k predictions of every task head for one image, and the routing weights (per routed
    module, and per token: token 0 is CLS) when the model is a WEMoE."""
    if not image or not isinstance(image, str):
        raise gr.Error("Send an image file (gradio_client: handle_file(path)).")
    try:
        k = float(topk if topk is not None else 5)
    except (TypeError, ValueError):
        k = math.nan
    if not math.isfinite(k) or k < 1:
        raise gr.Error(f"topk={topk!r}: use a whole number from 1 to 20")
    model = as_text(model, "model")
    s = _session(request)
    m = s.model(model) if model and model != "default" else (s.model(None) or default_entry(s.pool))
    if m is None:
        known = ", ".join(x.label for x in s.models.values()) or "none yet; call /merge first"
        raise gr.Error(f"no model {model!r} in this session; models: {known}; or leave model empty")
    img = open_image(image)
    with s.lock:
        s.image, s.image_note, s.truth = img, f"your image ({img.width} x {img.height})", None
    ex = ask(s, m, topk=int(min(k, 20)))
    out: dict[str, Any] = {"model": m.label, "pool": m.pool,
                           "predictions": {t: [{"class": c, "probability": round(p, 6)} for c, p in v]
                                           for t, v in ex.predictions.items()},
                           "routing": None, "token_routing": None}
    if ex.routing is not None:
        out["routing"] = {"modules": ex.routed_names, "experts": ex.experts, "weights": ex.routing.round(6).tolist()}
        out["token_routing"] = {"modules": ex.routed_names, "experts": ex.experts, "cls_token": 0,
                                "weights": ex.token_routing.round(6).tolist()}   # (modules, tokens, experts)
    return out


@guarded("/export")
def export(model: str = "", request: gr.Request = None) -> list[str]:
    """The model's files: safetensors (recipe in the metadata), routers (WEMoE), recipe JSON,
    and the session's results table as CSV."""
    s = _session(request)
    model = as_text(model, "model")
    m = s.model(model or None)
    if m is None:
        raise gr.Error("no model in this session yet: call /merge first")
    paths, msg = callbacks.export(s.id, m.id)
    if not paths:
        raise gr.Error(msg)
    return paths
