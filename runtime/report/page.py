"""Building blocks of the static HTML reports: escaped tables, images as data URIs, a little Markdown.

Every image is inlined (base64), so a report is one file that opens anywhere, from any folder, offline.
"""
from __future__ import annotations

import base64
import html
import math
import os
import re
import tempfile
from pathlib import Path

STYLE = """
body { font: 14px/1.45 system-ui, sans-serif; margin: 24px auto; max-width: 1280px; padding: 0 16px; color: #222; }
h1 { font-size: 24px; } h2 { font-size: 20px; margin-top: 36px; border-bottom: 1px solid #ddd; }
h3 { font-size: 16px; margin-top: 22px; }
table { border-collapse: collapse; margin: 8px 0 16px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f4f4f4; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.figures { display: flex; flex-wrap: wrap; gap: 12px; }
figure { margin: 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 12px; color: #555; }
pre { background: #f7f7f7; padding: 8px; overflow: auto; max-height: 480px; font-size: 12px; }
.bar { background: #1f77b4; height: 10px; display: inline-block; vertical-align: middle; }
.note { color: #666; } .warn { color: #a33; }
"""


class Raw(str):
    """Markup that is already HTML: a table cell or section that must not be escaped again."""


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "-" if value is None else str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}"
    return str(value)


def cell(value) -> str:
    if isinstance(value, Raw):
        return f"<td>{value}</td>"
    css = ' class="num"' if isinstance(value, (int, float)) and not isinstance(value, bool) else ""
    return f"<td{css}>{html.escape(fmt(value))}</td>"


def table(headers: list[str], rows: list[list]) -> Raw:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
    return Raw(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")


def link(href: str, text: str) -> Raw:
    return Raw(f'<a href="{html.escape(href)}">{html.escape(text)}</a>')


def relative(target: Path, start: Path) -> str:
    """A link from a page in `start` to `target` that survives moving the whole output folder."""
    return Path(os.path.relpath(Path(target).resolve(), Path(start).resolve())).as_posix()


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def figure(uri: str, caption: str) -> Raw:
    text = html.escape(caption)
    return Raw(f'<figure><img src="{uri}" alt="{text}"><figcaption>{text}</figcaption></figure>')


def figures(items: list[str]) -> Raw:
    return Raw(f'<div class="figures">{"".join(items)}</div>') if items else Raw("")


def plot_uri(series: dict, **options) -> str | None:
    """A line plot (plots.line_plot) as a data URI; None when no curve has a point to draw."""
    from .plots import line_plot

    if not any(len(xs) for xs, _ in series.values()):
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "plot.png"
        line_plot(series, path, **options)
        return data_uri(path)


def pre(text: str) -> Raw:
    return Raw(f"<pre>{html.escape(text)}</pre>")


def details(summary: str, body: str) -> Raw:
    return Raw(f"<details><summary>{html.escape(summary)}</summary>{body}</details>")


def page(title: str, body: list[str]) -> str:
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    out = html.escape(text)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", out)


def markdown(text: str) -> Raw:
    """The Markdown the stages write (headings, pipe tables, bullet lists, paragraphs); image lines are
    dropped, since the report shows those images itself."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if line.startswith("|"):
            rows = []
            while i < len(lines) and lines[i].strip().startswith("|"):
                cells = [c.strip() for c in lines[i].strip().strip("|").split("|")]
                if not all(set(c) <= set("-: ") for c in cells):  # the header's underline
                    rows.append(cells)
                i += 1
            head = "".join(f"<th>{_inline(c)}</th>" for c in rows[0]) if rows else ""
            body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
            out.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            continue
        if line.startswith("#"):
            level = min(6, len(line) - len(line.lstrip("#")) + 2)  # under the report's own h2 of the stage
            out.append(f"<h{level}>{_inline(line.lstrip('#').strip())}</h{level}>")
        elif line.startswith(("- ", "* ")):
            out.append(f"<ul><li>{_inline(line[2:])}</li></ul>")
        elif line and not line.startswith("!["):
            out.append(f"<p>{_inline(line)}</p>")
        i += 1
    return Raw("\n".join(out))
