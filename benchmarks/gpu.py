"""The GPU suite (``python -m benchmarks --gpu``, or ``benchmarks/gpu.sh``): ViT-B/32 and L/14
shapes, fp32 and bf16, on one CUDA device, in about 5 minutes on an H200 (not yet run: no GPU
was lent to this project's machines). First, the headline the issue asks of a GPU: one
adaptation step at the paper's batch (16 images per task, 8 tasks, B/32, fp32), ours against
the per-sample loop, time and peak memory (``paper_batch``). Runs start only while less than
``BUDGET_S`` has passed, so the suite ends within about 8 minutes; a run left out says so.

bf16 casts the whole model (weights, experts, routers); ``precision`` states how far its features
are from fp32, next to the same figure for a plain ViT. ``compile`` times ``torch.compile`` against
eager for inference; it is reported, and used nowhere unless it helps. Every run is guarded: a
failure is recorded in the results and the suite goes on."""
from __future__ import annotations

import dataclasses
import logging
import time
import traceback

import torch

from . import core, harness, precision, report
from .plans import GPU, Plan, as_dict
from .scenarios import Bench

log = logging.getLogger(__name__)
ARCHS = ("ViT-B-32", "ViT-L-14")
BUDGET_S = 300        # no new run starts after this many seconds (a run takes up to ~90 s; the scale-out check follows)


def run_gpu(sections: tuple[str, ...], plan: Plan = GPU, archs: tuple[str, ...] = ARCHS) -> dict:
    res = {"machine": harness.machine(), "plan": as_dict(plan), "reductions": plan.reductions(), "notes": [],
           "seconds": {}, "runs": {}}
    if plan.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --gpu needs a CUDA device; run `python -m benchmarks` for the CPU suite")
    t0 = time.perf_counter()
    first = dataclasses.replace(plan, arch=archs[0], dtypes=plan.dtypes[:1])
    res["limits"] = core.arithmetic(first)
    if "tta" in sections and plan.paper_per_task:
        res["paper_batch"] = _guarded("paper_batch", lambda: paper_batch(first), res)
    for arch in archs:
        for dtype in plan.dtypes:
            key = f"{arch} {dtype}"
            p = dataclasses.replace(plan, arch=arch, dtypes=(dtype,))
            if time.perf_counter() - t0 > BUDGET_S:
                res["runs"][key] = {"skipped": f"time budget ({BUDGET_S} s) spent before this run started"}
                continue
            res["runs"][key] = _guarded(key, lambda p=p: _one(p, sections, first=dtype == plan.dtypes[0]), res)
    if "growth" in sections:
        res["growth"] = (_guarded("growth", lambda: core.growth(dataclasses.replace(plan, arch=archs[0])), res)
                         if time.perf_counter() - t0 <= BUDGET_S else {"skipped": f"time budget ({BUDGET_S} s) spent"})
    res["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    main = res["runs"].get(f"{archs[0]} {plan.dtypes[0]}") or {}
    for k in ("inference", "tta", "tta_memory", "inference_memory", "kernels", "precision"):
        if k in main:
            res[k] = main[k]
    res["setup_label"] = f"{archs[0]} {plan.dtypes[0]} headline; all runs under `runs`"
    res.update(report.headline(res))
    res["targets"] = report.verdicts(report.headline(res), gpu=True)
    return res


def paper_batch(plan: Plan) -> dict:
    """One adaptation step at the paper's batch (``paper_per_task`` images per task, one task per
    expert): ours against the per-sample loop, interleaved, and each one's peak memory (on CUDA
    the allocator's peak; on a CPU a probe process)."""
    setup = core.setup_of(plan)
    bench = Bench(setup)
    n = plan.paper_per_task
    times = harness.compare({v: bench.tta(v, n) for v in ("wemoe", "loop")}, max(2, plan.rounds - 2))
    peaks = core._probe(setup, [("tta", "wemoe", n), ("tta", "loop", n)], bench)["peaks"]
    ours, loop = peaks[("tta", "wemoe", n)], peaks[("tta", "loop", n)]
    out = {"per_task": n, "images": n * plan.experts, "label": setup.label() + f", {setup.dtype}",
           "wemoe_s": harness.median(times["wemoe"]), "loop_s": harness.median(times["loop"]),
           "speedup_vs_loop": harness.ratio(times, "loop", "wemoe"),
           "wemoe_peak_mb": ours / core.MB, "loop_peak_mb": loop / core.MB, "peak_memory_ratio_vs_loop": ours / loop}
    log.info("paper batch: %s", out)
    return out


def _guarded(name: str, fn, res: dict):
    t0 = time.perf_counter()
    try:
        out = fn()
    except Exception as e:  # a failed run must not lose the others' figures
        log.error("%s failed: %s", name, e)
        out = {"error": f"{type(e).__name__}: {e}", "trace": traceback.format_exc()[-2000:]}
    res["seconds"][name] = round(time.perf_counter() - t0, 1)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def _one(plan: Plan, sections: tuple[str, ...], first: bool) -> dict:
    """All sections of one (arch, dtype) on one Bench."""
    setup = core.setup_of(plan)
    bench = Bench(setup)
    out = {"label": setup.label() + f", {setup.dtype}"}
    if "kernels" in sections and first:
        out["kernels"] = core.kernels(plan)
    if "inference" in sections:
        out["inference"] = core.inference(plan, bench)
        out["compile"] = _guarded_compile(plan, bench)
    if "tta" in sections:
        out["tta"] = core.tta(plan, bench)
    if "memory" in sections:
        out["inference_memory"], out["tta_memory"] = core.memory(plan, setup, bench)
    if "precision" in sections and first:
        out["precision"] = precision.run(bench)
    return out


def _guarded_compile(plan: Plan, bench: Bench) -> dict:
    """Eager vs ``torch.compile`` inference at the largest batch, for the plain tower and WEMoE."""
    batch = max(plan.infer_batches)
    x = bench.images(batch)
    out = {}
    for name, model in (("plain", bench.plain), ("wemoe", bench.moe)):
        try:
            compiled = torch.compile(model)
            with torch.no_grad():
                compiled(x)
            calls = {"eager": _timed(model, x), "compiled": _timed(compiled, x)}
            times = harness.compare(calls, plan.rounds)
            out[name] = {"compiled_over_eager": harness.ratio(times, "compiled", "eager")}
        except Exception as e:  # compile support varies by version and model
            out[name] = {"error": f"{type(e).__name__}: {e}"[:500]}
    return out


def _timed(model, x):
    def call():
        with torch.no_grad():
            y = model(x)
        if x.is_cuda:
            torch.cuda.synchronize()
        return y
    return call
