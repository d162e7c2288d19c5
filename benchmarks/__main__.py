"""``python -m benchmarks [--quick | --gpu] [--only SECTION,...] [--json PATH]``

Runs every section the machine allows and writes JSON (headline numbers at the top level), a
Markdown table and a chart (HTML + PNG) next to it."""
from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from pathlib import Path

import torch

from . import build, chart, core, harness, precision, report, tiny8
from .plans import PLANS, Plan, as_dict
from .scenarios import Bench

SECTIONS = ("kernels", "inference", "tta", "precision", "memory", "growth", "build", "tiny8", "compression")
RESULTS = Path(__file__).resolve().parent / "results"
LOOP_NOTE = ("Times use glibc's default allocator; peak memory is probed in separate processes with the "
             "mmap threshold pinned. The per-sample loop (benchmarks/reference.py) sums each sample's experts "
             "one at a time into one buffer: the public code's arithmetic without its fresh transients, "
             "which fragment glibc's heap (its step at ViT-B/32 depth grew past 20 GB here).")


def run(plan: Plan, sections: tuple[str, ...]) -> dict:
    res = {"machine": harness.machine(), "plan": as_dict(plan), "reductions": plan.reductions(), "notes": [LOOP_NOTE],
           "seconds": {}}
    setup = core.setup_of(plan)
    res["setup_label"] = setup.label()
    res["limits"] = core.arithmetic(plan)
    bench = None
    for name in sections:
        t0 = time.perf_counter()
        _say(f"[{name}] ...")
        if name in ("inference", "tta", "precision") and bench is None:
            bench = Bench(setup)
        if name in ("memory", "growth", "build", "tiny8", "compression") and bench is not None:
            bench = None          # free the B/32 experts before building other models
        _section(name, plan, setup, bench, res)
        res["seconds"][name] = round(time.perf_counter() - t0, 1)
        _say(f"[{name}] done in {res['seconds'][name]} s")
    comp, inf = res.get("compression") or {}, res.get("inference") or {}
    if comp.get("variants") and inf:           # equally compressed variants: the faster one is chosen
        low = inf[str(max(map(int, inf)))].get("lowrank") or {}
        comp["chosen"] = tiny8._best(comp["variants"], {k: v["time_ratio_vs_plain"] for k, v in low.items()})
    res.update(report.headline(res))
    res["targets"] = report.verdicts(report.headline(res))
    return res


def _section(name: str, plan: Plan, setup, bench, res: dict) -> None:
    if name == "kernels":
        res["kernels"] = core.kernels(plan)
    elif name == "inference":
        res["inference"] = core.inference(plan, bench)
    elif name == "tta":
        res["tta"] = core.tta(plan, bench)
    elif name == "memory":
        res["inference_memory"], res["tta_memory"] = core.memory(plan, setup)
    elif name == "precision":
        res["precision"] = precision.run(bench)
    elif name == "growth":
        res["growth"] = core.growth(plan)
    elif name == "build":
        res["build"] = build.measure(plan.arch, plan.build_layers or plan.layers, plan.experts)
    elif name == "tiny8":
        res["tiny8"] = tiny8.run(plan)
    elif name == "compression":
        res["compression"] = tiny8.run_compression(plan)


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def write(res: dict, json_path: Path) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(res, indent=1, default=str))
    md = report.markdown(res)
    json_path.with_suffix(".md").write_text(md)
    if any(chart.bars(res).values()):      # a run without timings or peaks (e.g. compression only) has no chart
        chart.html(res, json_path.with_suffix(".html"))
        chart.png(res, json_path.with_suffix(".png"))
    print(md)


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="smaller batches and models: under 3 minutes on 2 CPU cores")
    mode.add_argument("--gpu", action="store_true", help="the CUDA suite: ViT-B/32 and L/14 shapes, fp32 and bf16")
    p.add_argument("--only", default="", help=f"comma-separated sections of: {', '.join(SECTIONS)}")
    p.add_argument("--skip", default="", help="comma-separated sections to leave out")
    p.add_argument("--json", type=Path, default=None, help="where to write the results (.md/.html/.png beside it)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (default 2)")
    p.add_argument("--seeds", default="", help="compression: comma-separated seeds of the adaptation data's order "
                   "(accuracies averaged; default: the mode's, 0)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    torch.set_num_threads(args.threads)
    mode = "quick" if args.quick else "gpu" if args.gpu else "full"
    default = tuple(s for s in SECTIONS if s not in PLANS[mode].skip)
    sections = tuple(s for s in (args.only.split(",") if args.only else default) if s and s not in args.skip.split(","))
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        print(f"error: unknown section {unknown[0]!r}; choose from {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    if args.gpu:
        from .gpu import run_gpu
        res = run_gpu(sections)
    else:
        plan = PLANS[mode]
        if args.seeds:
            plan = dataclasses.replace(plan, tiny8_seeds=tuple(int(x) for x in args.seeds.split(",")))
        res = run(plan, sections)
    write(res, args.json or RESULTS / f"{'cpu' if mode != 'gpu' else 'gpu'}-{mode}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
