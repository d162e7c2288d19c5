"""Turning results into the JSON headline, a Markdown table and the targets' verdicts."""
from __future__ import annotations

TARGETS = {   # name -> (comparison, bound, what it means); the CPU suite's (issue 13)
    "inference_time_ratio_vs_plain": ("<=", 1.30, "inference at most 1.30x a plain ViT forward (largest batch)"),
    "inference_time_ratio_vs_plain_smallest_batch": ("<=", 1.40, "inference at most 1.40x a plain ViT forward (smallest batch)"),
    "tta_step_time_ratio_vs_plain": ("<=", 1.80, "adaptation step at most 1.80x a plain step"),
    "tta_step_peak_memory_ratio_vs_loop": ("<=", 0.25, "adaptation step at most 1/4 of the loop's peak memory"),
    "compressed_expert_memory_ratio": (">=", 4.0, "compressed experts at least 4x smaller"),
    "compressed_accuracy_drop_points": ("<=", 1.0, "compressed WEMoE at most 1 point less accurate on Tiny-8"),
    "compressed_inference_time_ratio_vs_plain": ("<=", 1.25, "low-rank WEMoE inference at most 1.25x plain (largest batch)"),
    "tiny8_prediction_p50_ms": ("<=", 10.0, "Tiny-8 prediction p50 under 10 ms"),
}
GPU_TARGETS = {  # on a GPU the per-sample loop pays a kernel launch per sample: the paper's batch
    "tta_step_speedup_vs_loop_paper_batch": (">=", 10.0, "adaptation step at least 10x faster than the loop (paper's batch)"),
    "tta_step_peak_memory_ratio_vs_loop_paper_batch": ("<=", 0.25, "at most 1/4 of the loop's peak memory (paper's batch)"),
    "inference_time_ratio_vs_plain": ("<=", 1.30, "inference at most 1.30x a plain ViT forward (largest batch)"),
    "tta_step_time_ratio_vs_plain": ("<=", 1.80, "adaptation step at most 1.80x a plain step"),
}


def headline(res: dict) -> dict:
    """The top-level numbers outside scripts read (None where a section did not run)."""
    inf, tta, mem = res.get("inference") or {}, res.get("tta") or {}, res.get("tta_memory") or {}
    comp = res.get("compression") or {}
    chosen = comp.get("variants", {}).get(comp.get("chosen") or "", {})
    largest = str(max(map(int, inf))) if inf else None
    smallest = str(min(map(int, inf))) if inf else None
    lim = (res.get("limits") or {}).get("dense") or {}
    lat = (res.get("tiny8") or {}).get("latency") or {}
    paper = res.get("paper_batch") or {}
    return {
        "tta_step_speedup_vs_loop": tta.get("speedup_vs_loop"),
        "tta_step_peak_memory_ratio_vs_loop": mem.get("peak_memory_ratio_vs_loop"),
        "inference_time_ratio_vs_plain": inf[largest]["time_ratio_vs_plain"] if largest else None,
        "compressed_expert_memory_ratio": chosen.get("memory_ratio"),
        "compressed_accuracy_drop_points": chosen.get("accuracy_drop_points"),
        "tta_step_time_ratio_vs_plain": tta.get("time_ratio_vs_plain"),
        "compressed_inference_time_ratio_vs_plain": _lowrank_ratio(inf[largest], comp.get("chosen")) if largest else None,
        "inference_limit_ratio": lim.get("inference"),
        "tta_step_limit_ratio": lim.get("tta_step"),
        "inference_time_ratio_vs_plain_smallest_batch": inf[smallest]["time_ratio_vs_plain"] if smallest else None,
        "tiny8_prediction_p50_ms": lat.get("p50_ms"),
        "tta_step_speedup_vs_loop_paper_batch": paper.get("speedup_vs_loop"),
        "tta_step_peak_memory_ratio_vs_loop_paper_batch": paper.get("peak_memory_ratio_vs_loop",
                                                                    mem.get("peak_memory_ratio_vs_loop_paper_batch")),
    }


def _lowrank_ratio(row: dict, chosen: str | None) -> float | None:
    """The inference ratio of the chosen compressed variant; before (or without) the compression
    section, of the first low-rank variant timed."""
    low = row.get("lowrank") or {}
    pick = low.get(chosen) or next(iter(low.values()), None)
    return pick["time_ratio_vs_plain"] if pick else None


def verdicts(head: dict, gpu: bool = False) -> dict:
    out = {}
    for name, (op, bound, text) in (GPU_TARGETS if gpu else TARGETS).items():
        v = head.get(name)
        met = None if v is None else (v >= bound if op == ">=" else v <= bound)
        out[name] = {"value": v, "target": f"{op} {bound}", "met": met, "means": text}
    return out


def _f(x, unit="", nd=2) -> str:
    if x is None:
        return "n/a"
    return f"{x:.{nd}f}{unit}"


def _mark(met) -> str:
    return {True: "met", False: "**missed**", None: "pending"}[met]


def markdown(res: dict) -> str:
    m, plan = res["machine"], res["plan"]
    lines = [f"Measured {m['date']} on {m['cpu']} ({m['threads']} threads, {m['memory_gb']} GB; "
             f"1-min load average at the start {m.get('load_avg_1min', 'n/a')}), torch {m['torch']}, "
             f"mode `{plan['mode']}`, {res.get('setup_label', '')}. Times are medians of interleaved "
             "rounds; ratios are medians of per-round ratios.", ""]
    lines += _targets_table(res)
    lines += _paper_batch(res.get("paper_batch"))
    lines += _main_table(res)
    lines += _limits_note(res)
    lines += _growth_table(res.get("growth"))
    lines += _kernel_table(res.get("kernels"))
    lines += _other(res)
    lines += ["", "Reductions from the paper's setting in this run:"] + [f"- {r}" for r in res["reductions"]]
    lines += [f"- {n}" for n in res.get("notes", [])]
    return "\n".join(lines) + "\n"


def _targets_table(res: dict) -> list[str]:
    rows = ["| target | measured | verdict |", "|---|---|---|"]
    for name, v in res["targets"].items():
        rows.append(f"| {v['means']} (`{name}` {v['target']}) | {_f(v['value'])} | {_mark(v['met'])} |")
    return rows + [""]


def _main_table(res: dict) -> list[str]:
    rows = ["| measurement | setting | WEMoE (ours) | plain ViT | per-sample loop | ours vs plain | limit | share of limit | loop / ours |",
            "|---|---|---|---|---|---|---|---|---|"]
    for b, r in (res.get("inference") or {}).items():
        rows.append(f"| inference time | batch {b} | {_f(r['wemoe_s'], ' s')} | {_f(r['plain_s'], ' s')} | "
                    f"{_f(r.get('loop_s'), ' s')} | {_f(r['time_ratio_vs_plain'], 'x')} | {_f(r.get('limit_ratio'), 'x')} | "
                    f"{_pct(r.get('share_of_limit'))} | {_f(r.get('speedup_vs_loop'), 'x')} |")
    for b, r in (res.get("inference") or {}).items():
        for name, lr in (r.get("lowrank") or {}).items():
            rows.append(f"| inference time, {name} experts | batch {b} | {_f(lr['s'], ' s')} | "
                        f"{_f(r['plain_s'], ' s')} | n/a | {_f(lr['time_ratio_vs_plain'], 'x')} | "
                        f"{_f(lr['limit_ratio'], 'x')} | {_pct(lr['share_of_limit'])} | n/a |")
    im = res.get("inference_memory") or {}
    for b in sorted({int(k.split("@")[1]) for k in im}):
        g = lambda v, b=b: im.get(f"{v}_peak_mb@{b}")  # noqa: E731
        rows.append(f"| inference peak memory | batch {b} | {_f(g('wemoe'), ' MB', 0)} | {_f(g('plain'), ' MB', 0)} | "
                    f"{_f(g('loop'), ' MB', 0)} | {_ratio(g('wemoe'), g('plain'))} | {_ratio(g('loop'), g('wemoe'))} |")
    t = res.get("tta")
    if t:
        rows.append(f"| adaptation step time | {t['per_task']}/task ({t['images']} images) | {_f(t['wemoe_s'], ' s')} | "
                    f"{_f(t['plain_s'], ' s')} | {_f(t['loop_s'], ' s')} | {_f(t['time_ratio_vs_plain'], 'x')} | "
                    f"{_f(t.get('limit_ratio'), 'x')} | {_pct(t.get('share_of_limit'))} | {_f(t['speedup_vs_loop'], 'x')} |")
    rows += _tta_memory_rows(res.get("tta_memory"), res["plan"])
    return rows + [""]


def _paper_batch(p: dict | None) -> list[str]:
    if not p:
        return []
    if "error" in p or "skipped" in p:
        return [f"- Paper's batch: {p.get('error') or p.get('skipped')}", ""]
    return [f"Adaptation step at the paper's batch ({p['per_task']}/task, {p['images']} images, {p['label']}): "
            f"ours {p['wemoe_s']:.3f} s, per-sample loop {p['loop_s']:.3f} s ({p['speedup_vs_loop']:.1f}x faster); "
            f"peak memory ours {p['wemoe_peak_mb']:.0f} MB, loop {p['loop_peak_mb']:.0f} MB "
            f"({p['peak_memory_ratio_vs_loop']:.2f} of it).", ""]


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f} %"


def _limits_note(res: dict) -> list[str]:
    lim = res.get("limits") or {}
    d, low = lim.get("dense"), lim.get("lowrank")
    if not d:
        return []
    out = [f"Limits (benchmarks/limits.py) count the matrix products' multiply-adds from the shapes: WEMoE "
           f"inference {d['inference']:.3f}x and adaptation step {d['tta_step']:.3f}x a plain tower (one routed MLP "
           f"alone: {d['mlp_only_inference']:.2f}x and {d['mlp_only_tta_step']:.2f}x; the routers add "
           f"{100 * d['router_share_of_plain']:.1f} % of a plain forward)"]
    if low:
        out[0] += "; low-rank experts in output space, inference: " + ", ".join(
            f"{name} {v['inference']:.3f}x" for name, v in low.items())
    out[0] += ". Share of the limit = limit / measured (100 %: at the limit)."
    return out + [""]


def _ratio(a, b) -> str:
    return "n/a" if a is None or b is None or b == 0 else f"{a / b:.2f}x"


def _tta_memory_rows(mem: dict | None, plan: dict) -> list[str]:
    if not mem:
        return []
    p, rows = mem["peaks_mb"], []
    for n in sorted({int(k.split("@")[1]) for k in p}):
        g = lambda v, n=n: p.get(f"{v}_peak_mb@{n}")  # noqa: E731
        loop = g("loop")
        note = ""
        if loop is None and n == plan.get("paper_per_task"):
            loop, note = mem.get("loop_peak_mb_extrapolated"), " (loop extrapolated)"
        rows.append(f"| adaptation step peak memory | {n}/task ({n * plan['experts']} images){note} | "
                    f"{_f(g('wemoe'), ' MB', 0)} | {_f(g('plain'), ' MB', 0)} | {_f(loop, ' MB', 0)} | "
                    f"{_ratio(g('wemoe'), g('plain'))} | | | {_ratio(loop, g('wemoe'))} |")
    return rows


def _growth_table(g: dict | None) -> list[str]:
    if not g:
        return []
    rows = ["Cost growth of one adaptation step (same tasks and images at every point):", "",
            "| axis | value | WEMoE step | plain step | ours vs plain | peak memory | experts stored |",
            "|---|---|---|---|---|---|---|"]
    for axis in ("experts", "layers"):
        for k, r in g.get(axis, {}).items():
            rows.append(f"| {axis} | {k} | {_f(r['wemoe_s'], ' s')} | {_f(r['plain_s'], ' s')} | "
                        f"{_f(r['time_ratio_vs_plain'], 'x')} | {_f(r['peak_mb'], ' MB', 0)} | {_f(r['expert_mb'], ' MB', 0)} |")
    rows.append("")
    for axis, s in (g.get("summary") or {}).items():
        rows.append(f"- per extra {axis[:-1]}: {s['s_per_unit']:+.3f} s per step ({s['ratio_vs_plain_per_unit']:+.3f}x "
                    f"of plain), {s['peak_mb_per_unit']:+.0f} MB peak per step, {s['expert_mb_per_unit']:+.0f} MB stored")
    return rows + [""]


def _kernel_table(k: dict | None) -> list[str]:
    if not k:
        return []
    rows = ["One routed MLP, forward, per sequence length (which exact form is faster):", "",
            "| tokens | materialised weights | output space | output / weights | `auto` picks |", "|---|---|---|---|---|"]
    for n, r in k["tokens"].items():
        rows.append(f"| {n} | {_f(1000 * r['weights_s'], ' ms', 1)} | {_f(1000 * r['outputs_s'], ' ms', 1)} | "
                    f"{_f(r['outputs_over_weights'], 'x')} | {r['auto_picks']} |")
    c = k.get("crossover_tokens")
    rows.append(f"\nMeasured crossover: materialising wins from {c} tokens on." if c is not None
                else "\nThe output-space form was faster at every measured length.")
    return rows + [""]


def _other(res: dict) -> list[str]:
    rows = []
    b = res.get("build")
    if b:
        rows.append(f"- Upscaling from disk ({b['label']}, {b['checkpoint_mb_each']:.0f} MB each): "
                    f"{b['wall_s']:.1f} s, peak RSS {b['peak_rss_mb']:.0f} MB ({b['peak_above_start_mb']:.0f} MB "
                    f"above the start; the model itself holds {b['model_mb']:.0f} MB).")
    t8 = res.get("tiny8")
    if t8 and "skipped" in t8:
        rows.append(f"- Tiny-8 sections skipped: {t8['skipped']}.")
    elif t8:
        rows += _tiny8_rows(t8)
    comp = res.get("compression")
    if comp and "skipped" in comp:
        rows.append(f"- Compression section skipped: {comp['skipped']}.")
    elif comp:
        rows += _compression_rows(comp)
    for k, v in (res.get("precision") or {}).items():
        rows.append(f"- Precision {k}: {v}")
    return rows


def _tiny8_rows(t8: dict) -> list[str]:
    e, lat = t8["evaluation"], t8["latency"]
    return [f"- Tiny-8 `{e.get('command', 'evaluate')}`: {_f(e.get('wall_s'), ' s', 1)}."
            if "skipped" not in e else f"- Tiny-8 evaluation: {e['skipped']}",
            f"- Tiny-8 prediction latency (one image, every head, routing): p50 {lat['p50_ms']:.1f} ms, "
            f"p95 {lat['p95_ms']:.1f} ms over {lat['images']} images.", ""]


def _compression_rows(c: dict) -> list[str]:
    rows = [f"Compressed experts: WEMoE adapted {c.get('steps')} steps per run, seeds "
            f"{', '.join(map(str, c.get('seeds', [0])))} of the data order; accuracy is the mean over seeds.", "",
            "| Tiny-8 experts | average accuracy | per seed | drop (points) | drop per seed | expert memory | smaller by |",
            "|---|---|---|---|---|---|---|",
            f"| dense | {c['dense']['avg_accuracy']:.2f} | {_seeds(c['dense'].get('avg_accuracy_per_seed'))} | 0 | | "
            f"{c['dense']['expert_bytes'] / 2**20:.2f} MB | 1x |"]
    for name, r in c["variants"].items():
        star = " (chosen)" if name == c.get("chosen") else ""
        rows.append(f"| {name}{star} | {r['avg_accuracy']:.2f} | {_seeds(r.get('avg_accuracy_per_seed'))} | "
                    f"{r['accuracy_drop_points']:+.2f} | {_seeds(r.get('accuracy_drop_per_seed'), '+.2f')} | "
                    f"{r['expert_bytes'] / 2**20:.2f} MB | {r['memory_ratio']:.1f}x |")
    return rows + [""]


def _seeds(values, fmt: str = ".2f") -> str:
    return " / ".join(format(v, fmt) for v in values) if values else ""
