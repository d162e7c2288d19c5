"""The GPU suite (``python -m benchmarks --gpu``, or ``benchmarks/gpu.sh``): ViT-B/32 and L/14
shapes, fp32 and bf16, on one CUDA device, in about 5 minutes on an H200.

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


def run_gpu(sections: tuple[str, ...], plan: Plan = GPU, archs: tuple[str, ...] = ARCHS) -> dict:
    res = {"machine": harness.machine(), "plan": as_dict(plan), "reductions": plan.reductions(), "notes": [],
           "seconds": {}, "runs": {}}
    if plan.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit("error: --gpu needs a CUDA device; run `python -m benchmarks` for the CPU suite")
    for arch in archs:
        for dtype in plan.dtypes:
            key = f"{arch} {dtype}"
            p = dataclasses.replace(plan, arch=arch, dtypes=(dtype,))
            res["runs"][key] = _guarded(key, lambda p=p: _one(p, sections, first=dtype == plan.dtypes[0]), res)
    if "growth" in sections:
        res["growth"] = _guarded("growth", lambda: core.growth(dataclasses.replace(plan, arch=archs[0])), res)
    main = res["runs"].get(f"{archs[0]} {plan.dtypes[0]}") or {}
    for k in ("inference", "tta", "tta_memory", "inference_memory", "kernels", "precision"):
        if k in main:
            res[k] = main[k]
    res["setup_label"] = f"{archs[0]} {plan.dtypes[0]} headline; all runs under `runs`"
    res.update(report.headline(res))
    res["targets"] = report.verdicts(report.headline(res), gpu=True)
    return res


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
