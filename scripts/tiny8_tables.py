"""Markdown tables for the README from a saved `evaluate --json` run (accuracy with the paper's
normalised figures beside it, the ordering check, routing shares, the adaptation curves).

    .venv/bin/python scripts/tiny8_tables.py benchmarks/results/tiny8_all.json [--png curves.png]

``--png`` also draws the curves (accuracy against adaptation step, one line per adaptive method,
the individual models' and the oracle's average as dashed references) with Pillow.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

# WEMoE paper (ViT-B/32, 8 tasks), normalised to the individual models (90.5 %): WEMOE.md.
PAPER_NORM = {"average": 73, "task_arithmetic": 76, "ties": 80, "adamerging": 89, "wemoe": 99}
LABELS = {
    "pretrained": "pretrained (zero-shot-like heads)", "individual": "individual", "average": "simple averaging",
    "task_arithmetic": "task arithmetic (λ 0.3)", "ties": "TIES (k 20 %, λ 1 over the disjoint mean)",
    "adamerging_task": "AdaMerging, task-wise", "adamerging_layer": "AdaMerging, layer-wise",
    "wemoe_depth0": "WEMoE, router depth 0 (tuned)", "wemoe_depth1": "WEMoE, router depth 1 (tuned)",
    "wemoe_paper": "WEMoE, the paper's method (`wemoe_paper`)", "wemoe": "**WEMoE**, tuned recipe (`wemoe`)",
    "oracle": "oracle (routed one-hot to the own expert)",
}
ORDER = ["individual", "wemoe", "adamerging", "ties", "task_arithmetic", "average", "pretrained"]


def accuracy_table(res: dict) -> str:
    tasks, acc = res["tasks"], res["accuracy"]
    ind = acc["individual"]["avg"]
    out = ["| method | " + " | ".join(tasks) + " | avg | norm. | paper norm. |", "|---" * (len(tasks) + 4) + "|"]
    for name, a in acc.items():
        paper = PAPER_NORM.get("adamerging" if name.startswith("adamerging") else name, "")
        cells = [f"{a[t]:.1f}" for t in tasks] + [f"{a['avg']:.1f}", f"{100 * a['avg'] / ind:.1f}", str(paper)]
        out.append(f"| {LABELS.get(name, name)} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def ordering(res: dict) -> str:
    acc = {k: v["avg"] for k, v in res["accuracy"].items()}
    acc["adamerging"] = max(acc.get("adamerging_task", 0), acc.get("adamerging_layer", 0))
    rows = ["| step | gap (points) | holds (>= 1) |", "|---|---|---|"]
    for hi, lo in zip(ORDER, ORDER[1:]):
        gap = acc[hi] - acc[lo]
        rows.append(f"| {hi} > {lo} | {gap:+.1f} | {'yes' if gap >= 1 else '**no**'} |")
    return "\n".join(rows)


def routing_table(res: dict, variant: str) -> str:
    share = res.get("routing_shares", {}).get(variant) or (res["routing_share"] if variant == "wemoe" else None)
    if not share:
        return f"(no routing share of {variant} in this file)"
    modules = list(next(iter(share.values())))
    out = ["| task | " + " | ".join(modules) + " |", "|---" * (len(modules) + 1) + "|"]
    for task, row in share.items():
        cells = [f"{row[m]:.0f}" for m in modules]
        if row[modules[-1]] > 50:
            cells[-1] = f"**{cells[-1]}**"
        out.append(f"| {task} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def curve_table(res: dict) -> str:
    curves = res.get("curves", {})
    steps = sorted({p["step"] for c in curves.values() for p in c})
    out = ["| step | " + " | ".join(str(s) for s in steps) + " |", "|---" * (len(steps) + 1) + "|"]
    for name, c in curves.items():
        at = {p["step"]: p for p in c}
        for key, fmt in (("entropy", "{:.2f}"), ("accuracy", "{:.1f}")):
            cells = [fmt.format(at[s][key]) if s in at and at[s][key] is not None else "" for s in steps]
            out.append(f"| {name} {key} | " + " | ".join(cells) + " |")
    return "\n".join(out)


COLORS = [(46, 134, 193), (192, 57, 43), (39, 174, 96), (142, 68, 173), (243, 156, 18), (44, 62, 80),
          (211, 84, 0), (127, 140, 141)]


def curve_png(res: dict, path: Path, width: int = 900, height: int = 520) -> None:
    """Accuracy during adaptation, one line per method with a curve; the individual models' and
    the oracle's averages as dashed horizontal references."""
    from PIL import Image, ImageDraw

    curves = {k: [p for p in c if p.get("accuracy") is not None] for k, c in res.get("curves", {}).items()}
    curves = {k: c for k, c in curves.items() if c}
    if not curves:
        raise ValueError("no curves in these results: run `evaluate` with --curve-every N")
    refs = {k: res["accuracy"][k]["avg"] for k in ("individual", "oracle") if k in res["accuracy"]}
    values = [p["accuracy"] for c in curves.values() for p in c] + list(refs.values())
    lo, hi = 5 * int((min(values) - 1) // 5), 5 * int(max(values) // 5 + 1)   # a margin under the lowest
    last = max(p["step"] for c in curves.values() for p in c)
    left, right, top, bottom = 60, width - 230, 40, height - 50
    x = lambda s: left + (right - left) * s / max(1, last)  # noqa: E731
    y = lambda a: bottom - (bottom - top) * (a - lo) / (hi - lo)  # noqa: E731
    img = Image.new("RGB", (width, height), "white")
    d = ImageDraw.Draw(img)
    d.text((left, 12), f"Accuracy during adaptation on {res.get('pool', '?')} (average over tasks, %)", fill="black")
    for a in range(lo, hi + 1, 5):
        d.line([(left, y(a)), (right, y(a))], fill=(230, 230, 230))
        d.text((left - 30, y(a) - 6), str(a), fill="black")
    for s in sorted({p["step"] for c in curves.values() for p in c}):
        d.text((x(s) - 8, bottom + 8), str(s), fill="black")
    d.text(((left + right) // 2 - 40, bottom + 28), "adaptation step", fill="black")
    d.rectangle([left, top, right, bottom], outline="black")
    for name, a in refs.items():
        for x0 in range(left, right, 12):
            d.line([(x0, y(a)), (min(x0 + 6, right), y(a))], fill="gray", width=2)
        d.text((right + 8, y(a) - 6), f"{name} {a:.1f}", fill="gray")
    ends = []
    for i, (name, c) in enumerate(curves.items()):
        color = COLORS[i % len(COLORS)]
        pts = [(x(p["step"]), y(p["accuracy"])) for p in sorted(c, key=lambda p: p["step"])]
        d.line(pts, fill=color, width=3)
        for px, py in pts:
            d.ellipse([px - 3, py - 3, px + 3, py + 3], fill=color)
        ends.append((pts[-1][1], f"{name} {c[-1]['accuracy']:.1f}", color))
    prev = -1e9
    for py, label, color in sorted(ends):                # labels at the right end, never overlapping
        py = max(py, prev + 14)
        d.text((right + 8, py - 6), label, fill=color)
        prev = py
    img.save(path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", type=Path)
    ap.add_argument("--png", type=Path, default=None, help="also draw the adaptation curves into this PNG")
    args = ap.parse_args()
    res = json.loads(args.results.read_text())
    print(accuracy_table(res), "", ordering(res), "", sep="\n")
    for v in ("wemoe", "wemoe_paper"):
        if v in res["accuracy"]:
            print(f"routing share, {v}:", routing_table(res, v), "", sep="\n")
    print(curve_table(res))
    print(f"\nwall: {res.get('wall_s')} s; per method: {res.get('seconds')}")
    if args.png:
        curve_png(res, args.png)
        print(f"curves drawn: {args.png}")


if __name__ == "__main__":
    main()
