"""Small HTML views (escaped): the progress bar and the side-by-side prediction tables."""
from __future__ import annotations

from html import escape
from typing import Mapping, Sequence

CSS = """
.wm-progress {height: 14px; background: #e8eaf0; border-radius: 7px; overflow: hidden; margin: 4px 0;}
.wm-progress > div {height: 100%; background: linear-gradient(90deg, #4C78A8, #72B7B2); transition: width .4s;}
.wm-preds {border-collapse: collapse; width: 100%; font-size: 13px;}
.wm-preds th, .wm-preds td {border-bottom: 1px solid #e5e7eb; padding: 4px 6px; vertical-align: top; text-align: left;}
.wm-preds th {background: #f6f7fb;} .wm-preds tbody th {width: 11em;}
.wm-row {display: flex; align-items: center; gap: 6px; line-height: 17px;}
.wm-bar {height: 9px; background: #4C78A8; border-radius: 3px; min-width: 1px;}
.wm-row.ok .wm-bar {background: #54A24B;} .wm-row.ok {font-weight: 600;}
.wm-row .wm-name {flex: 0 0 9.5em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap;}
.wm-row .wm-p {flex: 0 0 3.2em; text-align: right; color: #555;}
"""


def progress(fraction: float, text: str) -> str:
    pct = max(0.0, min(1.0, fraction)) * 100
    return (f'<div class="wm-progress" role="progressbar" aria-valuenow="{pct:.0f}" aria-valuemin="0" '
            f'aria-valuemax="100"><div style="width:{pct:.1f}%"></div></div><div>{escape(text)}</div>')


def _cell(preds: Sequence[tuple[str, float]], truth: str | None) -> str:
    rows = []
    for name, p in preds:
        ok = " ok" if truth is not None and name == truth else ""
        rows.append(f'<div class="wm-row{ok}"><span class="wm-name" title="{escape(name)}">{escape(name)}</span>'
                    f'<span class="wm-bar" style="width:{p * 90:.0f}px"></span><span class="wm-p">{p * 100:.1f}%</span></div>')
    return "".join(rows)


def predictions(models: Mapping[str, Mapping[str, Sequence[tuple[str, float]]]], tasks: Sequence[str],
                titles: Mapping[str, str], truth: tuple[str, str] | None = None) -> str:
    """Rows: task heads; columns: models; cells: top-k classes with probability bars. ``truth``
    = (task, class) of an example image: that class is marked green in its task's row."""
    if not models:
        return "<p>No model to ask yet.</p>"
    head = "".join(f"<th>{escape(label)}</th>" for label in models)
    body = []
    for t in tasks:
        right = truth[1] if truth and truth[0] == t else None
        mark = " ✓ (this image's task)" if truth and truth[0] == t else ""
        cells = "".join(f"<td>{_cell(p.get(t, []), right)}</td>" for p in models.values())
        body.append(f"<tr><th>{escape(titles.get(t, t))}{escape(mark)}</th>{cells}</tr>")
    return f'<table class="wm-preds"><thead><tr><th>task head</th>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
