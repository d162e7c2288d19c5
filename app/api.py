"""Named API endpoints for ``gradio_client``: ``/merge``, ``/predict``, ``/export``.

Each API client connection is its own session (``api-<session_hash>``): a ``/merge`` followed by
``/predict`` on the same ``Client`` asks the model just made. Every parameter after the first
has a default, so ``client.predict(handle_file(path), api_name="/predict")`` works on a fresh
start (it asks task arithmetic over all tasks of the default pool).
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Iterator

import gradio as gr

from wemoe_core.registry import get_method
from wemoe_core.workbench import recipe_for

from . import callbacks
from .config import default_pool, limits
from .explore import ask, default_entry, open_image
from .jobs import FINISHED, JOBS, JobRefused
from .runs import make_work
from .sessions import STORE, ModelEntry

log = logging.getLogger(__name__)


def _session(request: gr.Request | None):
    return STORE.for_api(getattr(request, "session_hash", None) or "anonymous")


def merge(method: str = "task_arithmetic", hyperparameters: dict | None = None, tasks: list[str] | None = None,
          adapt: dict | None = None, pool: str = "", request: gr.Request = None) -> Iterator[dict]:
    """Merge (and, for AdaMerging and WEMoE, adapt) the pool's fine-tuned models. Unset values
    come from the pool's recipe. Yields progress dicts while the job runs, then the result:
    accuracy per task (records), routing share (WEMoE), recipe, time."""
    s = _session(request)
    try:
        p = callbacks.usable_pool(pool or default_pool())
        chosen = p.check_tasks(tasks or p.tasks, minimum=2)
        name, hp, ap = recipe_for(p, method, hyperparameters or {}, adapt or {})
        if ap is not None and ap.steps > limits().max_steps:
            raise ValueError(f"steps={ap.steps} is over this server's limit; use at most {limits().max_steps}")
        label = f"{get_method(name).pretty_name} #{s.counter + 1}"
        job = JOBS.submit(s.id, label, chosen, ap.steps if ap else 0, make_work(s, p, chosen, name, hp, ap))
    except (ValueError, JobRefused) as e:
        raise gr.Error(str(e)) from None
    s.job_id = job.id
    while not job.done.wait(0.5):
        snap = job.snapshot()
        yield {"status": snap.state, "step": snap.step, "steps": snap.steps, "message": snap.message,
               "entropy": {t: v[-1] for t, v in snap.entropy.items()}}
    snap = job.snapshot()
    if snap.state not in FINISHED or job.result is None:
        raise gr.Error(snap.message or "the job failed")
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


def predict(image: str | None, model: str = "", topk: float = 5, request: gr.Request = None) -> dict[str, Any]:
    """Top-k predictions of every task head for one image, and the routing weights (per routed
    module, and per token: token 0 is CLS) when the model is a WEMoE."""
    if not image:
        raise gr.Error("Send an image file (gradio_client: handle_file(path)).")
    s = _session(request)
    m = s.model(model) if model and model != "default" else (s.model(None) or default_entry(s.pool))
    if m is None:
        known = ", ".join(x.label for x in s.models.values()) or "none yet; call /merge first"
        raise gr.Error(f"no model {model!r} in this session; models: {known}; or leave model empty")
    try:
        s.image = open_image(image)
        ex = ask(s, m, topk=max(1, min(int(topk), 20)))
    except ValueError as e:
        raise gr.Error(str(e)) from None
    out: dict[str, Any] = {"model": m.label, "pool": m.pool,
                           "predictions": {t: [{"class": c, "probability": round(p, 6)} for c, p in v]
                                           for t, v in ex.predictions.items()},
                           "routing": None, "token_routing": None}
    if ex.routing is not None:
        out["routing"] = {"modules": ex.routed_names, "experts": ex.experts, "weights": ex.routing.round(6).tolist()}
        out["token_routing"] = {"modules": ex.routed_names, "experts": ex.experts, "cls_token": 0,
                                "weights": ex.token_routing.round(6).tolist()}   # (modules, tokens, experts)
    return out


def export(model: str = "", request: gr.Request = None) -> list[str]:
    """The model's files: safetensors (recipe in the metadata), routers (WEMoE), recipe JSON,
    and the session's results table as CSV."""
    s = _session(request)
    m = s.model(model or None)
    if m is None:
        raise gr.Error("no model in this session yet: call /merge first")
    paths, msg = callbacks.export(s.id, m.id)
    if not paths:
        raise gr.Error(msg)
    return paths
