"""One method run as a job's work: build the model, adapt it (reporting every step), measure its
accuracy and, for WEMoE, its routing; then add it to the session. Plain workbench calls."""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Callable

from wemoe_core.merging.registry import get_method
from wemoe_core.running.params import AdaptParams
from wemoe_core.running.recipes import paper_recipe, recipe_for

from .config import device, limits
from .jobs import RUNNING, Job
from .messages import for_visitor
from .sessions import ModelEntry, Session

log = logging.getLogger(__name__)
IGNORED = ("steps", "seed")     # a recipe run for fewer steps or another seed is still that recipe


def _same(a: dict | None, b: dict | None) -> bool:
    strip = lambda d: {k: v for k, v in (d or {}).items() if k not in IGNORED}  # noqa: E731
    return strip(a) == strip(b)


def variant_of(pool, method: str, hparams: dict, adapt: dict | None) -> str:
    """Which published settings a run used: ``paper`` (the method's defaults), ``<pool> recipe``
    (the pool's recommended settings), or ``custom`` (anything the user changed)."""
    paper_h, paper_a = paper_recipe(pool, method)
    paper_a = dataclasses.asdict(paper_a) if paper_a is not None else None
    _, rec_h, rec_a = recipe_for(pool, method)
    rec_a = dataclasses.asdict(rec_a) if rec_a is not None else None
    if _same(hparams, paper_h) and _same(adapt, paper_a):
        return "paper"
    if _same(hparams, rec_h) and _same(adapt, rec_a):
        return f"{pool.name} recipe"
    return "custom"


def make_work(session: Session, pool, tasks: list[str], method: str, hparams: dict,
              adapt: AdaptParams | None) -> Callable[[Job], ModelEntry]:
    """The job's work: returns the new session model (with ``stopped`` when cut short)."""
    m = get_method(method)
    variant = variant_of(pool, method, hparams, dataclasses.asdict(adapt) if adapt else None)

    def work(job: Job) -> ModelEntry:
        from wemoe_core.running.adapt import AdaptationError, is_out_of_memory
        from wemoe_core.running.workbench import adapt_run, build_model, evaluate_run, routing_table

        dev, t0 = device(), time.perf_counter()
        job.set_state(RUNNING, f"building {m.pretty_name} from {len(tasks)} fine-tuned models")
        run = build_model(pool, tasks, method, hparams, adapt)
        run.model.to(dev)
        error = ""
        if run.adapt_params is not None:
            job.set_state(RUNNING, f"adapting on {dev}")
            try:
                adapt_run(run, pool, callback=job.record, should_stop=job.should_stop, device=dev)
            except AdaptationError as e:    # the model keeps the parameters of the last good step
                log.warning("job %s: %s", job.id, e)
                error = for_visitor(str(e))
                if is_out_of_memory(e.__cause__ or e):
                    free_memory()
        seconds = time.perf_counter() - t0
        stop_note = "failed; keeping the last good state and " if error else "stopped; " if run.stopped else ""
        job.set_state(RUNNING, f"{stop_note}measuring accuracy on the test images")
        limit = limits().eval_limit or None
        evaluate_run(run, pool, limit=limit, device=dev)
        share = routing_table(run, pool, limit=limit, device=dev)
        steps = run.history[-1].step if run.history else 0

        def entry(mid: str, n: int) -> ModelEntry:
            return ModelEntry(mid, f"{m.pretty_name} #{n}", method, m.pretty_name, pool.name, list(tasks), variant,
                              run, seconds, steps, run.stopped, share, error=error)

        return session.add_model(entry)

    return work


def free_memory() -> None:
    """After an out-of-memory failure: hand cached GPU blocks back so the next job can start."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
