"""The sections that need no zoo: kernels, inference, one adaptation step, cost growth.

Times come from the main process (interleaved rounds, ``harness.compare``); peak memory from a
fresh probe process per model (``harness.run_probe``)."""
from __future__ import annotations

import dataclasses
import logging

import torch
import torch.nn.functional as F

from . import harness, limits, synthetic
from .plans import Plan
from .scenarios import Bench, Setup

log = logging.getLogger(__name__)
MB = 2**20


def setup_of(plan: Plan, **over) -> Setup:
    base = dict(arch=plan.arch, layers=plan.layers, experts=plan.experts, device=plan.device, dtype=plan.dtypes[0])
    return Setup(**{**base, **over})


def _probe(setup: Setup, calls: list[tuple[str, str, int]], bench: Bench | None = None) -> dict:
    if setup.device != "cpu":
        return _cuda_peaks(bench or Bench(setup), calls)
    res = harness.run_probe({"setup": setup.__dict__, "calls": [list(c) for c in calls],
                             "threads": torch.get_num_threads()})
    return {"peaks": dict(zip(calls, res["peaks"])), "expert_bytes": res["expert_bytes"]}


def _cuda_peaks(bench: Bench, calls) -> dict:
    """On CUDA the allocator's own peak counter; the process can keep its models."""
    peaks = {}
    for c in calls:
        bench.call(c[0], c[1], 1)()
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        bench.call(*c)()
        peaks[c] = torch.cuda.max_memory_allocated() - base
    return {"peaks": peaks, "expert_bytes": bench.expert_bytes()}


def lowrank_name(hp: dict) -> str:
    return (f"lowrank r={hp['rank']}" + (" bf16" if hp.get("factors") == "bfloat16" else "")
            + (", bf16 math" if hp.get("factor_math") == "bfloat16" else ""))


def arithmetic(plan: Plan) -> dict:
    """The arithmetic limits of the plan's setting (``limits.py``; routers of depth 2, as the
    synthetic WEMoE has): dense experts, and each low-rank variant of the plan."""
    cfg = synthetic.vit_config(plan.arch, plan.layers)
    return {"dense": limits.limits(cfg, plan.experts, 2),
            "lowrank": {lowrank_name(hp): limits.limits(cfg, plan.experts, 2, rank=hp["rank"]) for hp in plan.lowrank_variants()}}


def inference(plan: Plan, bench: Bench) -> dict:
    """WEMoE forward vs the plain tower and the per-sample loop, per batch size, and WEMoE with
    each low-rank variant of the plan (random factors of its rank and storage) in the same
    rounds; each ratio beside its limit."""
    out, lim = {}, arithmetic(plan)
    comps = {lowrank_name(hp): Bench(dataclasses.replace(bench.setup, compress="lowrank", rank=hp["rank"],
                                                         factors=hp.get("factors", "float32"),
                                                         factor_math=hp.get("factor_math", "float32")))
             for hp in plan.lowrank_variants()}
    for batch in plan.infer_batches:
        variants = ["plain", "wemoe"] + (["loop"] if batch in plan.loop_infer_batches else [])
        calls = {v: bench.infer(v, batch) for v in variants}
        calls.update({name: c.infer("wemoe", batch) for name, c in comps.items()})
        times = harness.compare(calls, plan.rounds)
        row = {f"{v}_s": harness.median(times[v]) for v in variants}
        row["time_ratio_vs_plain"] = harness.ratio(times, "wemoe", "plain")
        row["limit_ratio"] = lim["dense"]["inference"]
        row["share_of_limit"] = limits.share(row["time_ratio_vs_plain"], row["limit_ratio"])
        if "loop" in variants:
            row["speedup_vs_loop"] = harness.ratio(times, "loop", "wemoe")
        row["lowrank"] = {}
        for name in comps:
            r = harness.ratio(times, name, "plain")
            row["lowrank"][name] = {"s": harness.median(times[name]), "time_ratio_vs_plain": r,
                                    "limit_ratio": lim["lowrank"][name]["inference"],
                                    "share_of_limit": limits.share(r, lim["lowrank"][name]["inference"])}
        out[str(batch)] = row
        log.info("inference batch %d: %s", batch, row)
    return out


def tta(plan: Plan, bench: Bench) -> dict:
    """One adaptation step: time of the three variants at ``tta_per_task`` images per task."""
    n = plan.tta_per_task
    times = harness.compare({v: bench.tta(v, n) for v in ("plain", "wemoe", "loop")}, plan.rounds)
    out = {f"{v}_s": harness.median(times[v]) for v in times}
    ratio = harness.ratio(times, "wemoe", "plain")
    limit = arithmetic(plan)["dense"]["tta_step"]
    out.update(per_task=n, images=n * plan.experts, time_ratio_vs_plain=ratio,
               speedup_vs_loop=harness.ratio(times, "loop", "wemoe"),
               limit_ratio=limit, share_of_limit=limits.share(ratio, limit))
    log.info("tta step: %s", out)
    return out


def memory(plan: Plan, setup: Setup, bench: Bench | None = None) -> tuple[dict, dict]:
    """Peak memory of inference and of one step, all in one probe process. The loop's step is
    measured at small sizes and fitted linearly in the batch (its per-sample weights make it
    linear); ours is measured at the paper's batch as well when the plan says so."""
    inf = [("infer", v, b) for b in plan.infer_batches for v in ("plain", "wemoe")]
    inf += [("infer", "loop", b) for b in plan.loop_infer_batches]
    n = plan.tta_per_task
    tta = [("tta", "plain", n), ("tta", "wemoe", n)]
    tta += [("tta", "loop", k) for k in sorted({n, *plan.loop_memory_per_task})]
    if plan.paper_per_task:
        tta.append(("tta", "wemoe", plan.paper_per_task))
    res = _probe(setup, inf + tta, bench)
    peaks = res["peaks"]
    infer_mb = {f"{v}_peak_mb@{b}": peaks[("infer", v, b)] / MB for (_, v, b) in inf}
    return infer_mb, _tta_memory(plan, peaks, res["expert_bytes"])


def _tta_memory(plan: Plan, peaks: dict, expert_bytes: int) -> dict:
    n = plan.tta_per_task
    loop = [(k, peaks[("tta", "loop", k)]) for k in sorted({n, *plan.loop_memory_per_task})]
    slope, icpt = _fit(loop)
    out = {"peaks_mb": {f"{v}_peak_mb@{k}": p / MB for (kind, v, k), p in peaks.items() if kind == "tta"},
           "expert_mb": expert_bytes / MB, "loop_mb_per_image_per_task": slope / MB,
           "peak_memory_ratio_vs_loop": peaks[("tta", "wemoe", n)] / peaks[("tta", "loop", n)]}
    if plan.paper_per_task:
        p = plan.paper_per_task
        loop_p = icpt + slope * p
        out.update(loop_peak_mb_extrapolated=loop_p / MB,
                   peak_memory_ratio_vs_loop_paper_batch=peaks[("tta", "wemoe", p)] / loop_p)
    return out


def _fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares line through (x, y) points: (slope, intercept)."""
    xs, ys = zip(*points)
    if len(xs) == 1:
        return ys[0] / xs[0], 0.0
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x in xs)
    return slope, my - slope * mx


def growth(plan: Plan) -> dict:
    """Time (vs the plain tower of the same depth, interleaved) and peak memory of one step as the
    number of experts and of blocks grows."""
    out, seen = {"experts": {}, "layers": {}}, {}
    depth = plan.layers or synthetic.vit_config(plan.arch).layers
    for axis, values in (("experts", plan.growth_experts), ("layers", plan.growth_layers)):
        for v in values:
            setup = setup_of(plan, tasks=plan.growth_tasks, **{axis: v})
            key = (setup.experts, setup.layers or depth)         # the same model on both axes: once
            if key not in seen:
                seen[key] = _growth_point(plan, setup)
            out[axis][str(v)] = seen[key]
            log.info("growth %s=%d: %s", axis, v, out[axis][str(v)])
    out["summary"] = _growth_summary(out)
    return out


def _growth_point(plan: Plan, setup: Setup) -> dict:
    bench = Bench(setup)
    times = harness.compare({v: bench.tta(v, 1) for v in ("plain", "wemoe")}, plan.growth_rounds)
    del bench
    peaks = _probe(setup, [("tta", "wemoe", 1)])
    return {"wemoe_s": harness.median(times["wemoe"]), "plain_s": harness.median(times["plain"]),
            "time_ratio_vs_plain": harness.ratio(times, "wemoe", "plain"),
            "peak_mb": peaks["peaks"][("tta", "wemoe", 1)] / MB, "expert_mb": peaks["expert_bytes"] / MB}


def _growth_summary(out: dict) -> dict:
    s = {}
    for axis in ("experts", "layers"):
        pts = [(int(k), v) for k, v in out[axis].items()]
        if len(pts) < 2:
            continue
        t_slope, _ = _fit([(k, v["wemoe_s"]) for k, v in pts])
        m_slope, _ = _fit([(k, v["peak_mb"]) for k, v in pts])
        r_slope, _ = _fit([(k, v["time_ratio_vs_plain"]) for k, v in pts])
        e_slope, _ = _fit([(k, v["expert_mb"]) for k, v in pts])
        s[axis] = {"s_per_unit": t_slope, "ratio_vs_plain_per_unit": r_slope, "peak_mb_per_unit": m_slope,
                   "expert_mb_per_unit": e_slope}
    return s


def kernels(plan: Plan) -> dict:
    """One MLP (c_fc, GELU, c_proj) of the benchmark width, per-sample routed, forward: time of
    the two exact implementations per sequence length -> the crossover that ``choose_impl`` uses."""
    from wemoe_core.merging.experts import DenseExperts, EnsembleLinear

    setup = setup_of(plan)
    bench_cfg = synthetic.vit_config(plan.arch)
    d, h, T, B = bench_cfg.width, int(bench_cfg.width * bench_cfg.mlp_ratio), plan.experts, plan.kernel_batch
    dev, dt = torch.device(setup.device), getattr(torch, setup.dtype)
    g = torch.Generator().manual_seed(0)
    mk = lambda o, i: EnsembleLinear(torch.randn(o, i, generator=g).to(dev, dt) * 0.02, torch.zeros(o, device=dev, dtype=dt),
                                     DenseExperts(torch.randn(T, o, i, generator=g).to(dev, dt) * 1e-3, torch.zeros(T, o, device=dev, dtype=dt)))
    fc, pj = mk(h, d), mk(d, h)
    out = {}
    for n in plan.kernel_tokens:
        x = torch.randn(B, n, d, generator=g).to(dev, dt)
        w = torch.randn(B, T, generator=g).to(dev, dt)
        times = harness.compare({impl: _mlp_call(fc, pj, x, w, impl, setup.device) for impl in ("weights", "outputs")},
                                max(3, plan.rounds))
        out[str(n)] = {"weights_s": harness.median(times["weights"]), "outputs_s": harness.median(times["outputs"]),
                       "outputs_over_weights": harness.ratio(times, "outputs", "weights"),
                       "auto_picks": _auto_pick(fc, n, setup.device)}
    return {"tokens": out, "crossover_tokens": _crossover(out)}


def _auto_pick(linear, tokens: int, device: str) -> str:
    linear.impl = "auto"
    return linear.choose_impl(tokens, device)


def _mlp_call(fc, pj, x, w, impl, device):
    def call():
        fc.impl = pj.impl = impl
        with torch.no_grad():
            y = pj(F.gelu(fc(x, w)), w)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        return y
    return call


def _crossover(rows: dict) -> int | None:
    """The shortest measured sequence from which materialising weights is at least as fast."""
    for n in sorted(rows, key=int):
        if all(rows[m]["outputs_over_weights"] >= 1.0 for m in rows if int(m) >= int(n)):
            return int(n)
    return None
