"""One chart for the README: cost relative to a plain ViT (1 = the floor), time and peak memory,
for our WEMoE and the per-sample loop. Plotly HTML, plus a PNG drawn with Pillow (plotly's PNG
export needs kaleido and a browser, which this project does not install)."""
from __future__ import annotations

from pathlib import Path


def bars(res: dict) -> dict[str, list[tuple[str, float]]]:
    """{"time": [(label, x plain)], "memory": [(label, x plain)]} from the results."""
    time, mem = [], []
    for b, r in (res.get("inference") or {}).items():
        time.append((f"inference b{b}: WEMoE", r["time_ratio_vs_plain"]))
        if r.get("loop_s"):
            time.append((f"inference b{b}: loop", r["loop_s"] / r["plain_s"]))
    t = res.get("tta")
    if t:
        time += [("adapt step: WEMoE", t["time_ratio_vs_plain"]), ("adapt step: loop", t["loop_s"] / t["plain_s"])]
    m = res.get("tta_memory")
    if m:
        p, n = m["peaks_mb"], res["tta"]["per_task"] if t else min(int(k.split("@")[1]) for k in m["peaks_mb"])
        plain = p.get(f"plain_peak_mb@{n}")
        if plain:
            mem += [("adapt step: WEMoE", p[f"wemoe_peak_mb@{n}"] / plain), ("adapt step: loop", p[f"loop_peak_mb@{n}"] / plain)]
    return {"time": time, "memory": mem}


def html(res: dict, path: Path) -> None:
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    data = bars(res)
    fig = make_subplots(rows=1, cols=2, subplot_titles=("time, x plain ViT", "peak memory, x plain ViT"))
    for col, key in ((1, "time"), (2, "memory")):
        labels, values = zip(*data[key]) if data[key] else ((), ())
        colors = ["#c0392b" if "loop" in lab else "#2e86c1" for lab in labels]
        fig.add_trace(go.Bar(x=list(values), y=list(labels), orientation="h", marker_color=colors,
                             text=[f"{v:.2f}x" for v in values], textposition="outside", showlegend=False), 1, col)
        fig.add_vline(x=1.0, line_dash="dot", col=col, row=1)
    fig.update_layout(title=f"WEMoE cost ({res['plan']['mode']} run, {res['machine']['date']})", height=420, width=1000)
    fig.write_html(str(path), include_plotlyjs="cdn")


def png(res: dict, path: Path) -> None:
    from PIL import Image, ImageDraw

    data = bars(res)
    W, H, pad, row = 1000, 60 + 34 * max(len(data["time"]), len(data["memory"]), 1), 10, 34
    img = Image.new("RGB", (W, H), "white")
    d = ImageDraw.Draw(img)
    d.text((pad, pad), f"WEMoE cost relative to a plain ViT (1 = the floor); {res['machine']['date']}", fill="black")
    for k, key in enumerate(("time", "memory")):
        x0, width = k * W // 2 + 170, W // 2 - 230
        d.text((x0, 30), f"{key}, x plain ViT", fill="black")
        top = max([v for _, v in data[key]] + [1.0])
        d.line([(x0 + width / top, 45), (x0 + width / top, H - 5)], fill="gray")
        for i, (label, v) in enumerate(data[key]):
            y = 50 + i * row
            color = (192, 57, 43) if "loop" in label else (46, 134, 193)
            d.rectangle([x0, y, x0 + max(1, int(width * v / top)), y + row - 10], fill=color)
            d.text((x0 - 160, y + 6), label, fill="black")
            d.text((x0 + int(width * v / top) + 4, y + 6), f"{v:.2f}x", fill="black")
    img.save(path)
