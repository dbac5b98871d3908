"""HTML pieces shared by the sweep report and the comparison page: escaping, number formats,
tables, notes, links, and the page shell (CSS and the sort script are package data under
harness/report/static/).

Every string taken from a record or a config goes through `e` (or a helper that calls it)
before it reaches the page; `Raw` marks HTML built here, already escaped.
"""

from __future__ import annotations

import html
import math
from functools import cache
from importlib import resources
from pathlib import Path

from harness.stats import Interval, Spread


class Raw(str):
    """HTML built here (already escaped); every other string is escaped when rendered."""


def e(value: object) -> str:
    return html.escape(str(value), quote=True)


# -- numbers -----------------------------------------------------------------------------------
def fmt(value: object) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def fmt_seconds(value: float | None) -> str:
    if value is None or value <= 0:
        return "—"
    if value < 60:
        return f"{value:.1f} s"
    minutes, seconds = divmod(int(round(value)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {seconds:02d}s"


def fmt_mb(value: float | None) -> str:
    if value is None or value <= 0:
        return "—"
    return f"{value / 1024:.2f} GB" if value >= 1024 else f"{value:.0f} MB"


def fmt_count(value: int) -> str:
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.3g}{unit}"
    return str(value)


def fmt_hours(hours: float | None, unit: str | None) -> str:
    """'0.025 GPU-h', or '—' without a compute figure."""
    return f"{hours:.3g} {unit}" if hours is not None else "—"


def fmt_pct(value: float | None) -> str:
    return f"{value:.3g}%" if value is not None else "—"


def fmt_interval(iv: Interval | None, signed: bool = False) -> str:
    if iv is None:
        return "—"
    f = (lambda v: f"{v:+.4g}") if signed else (lambda v: f"{v:.4g}")
    return f"{f(iv.estimate)} [{f(iv.low)}, {f(iv.high)}]"


def fmt_spread(s: Spread) -> str:
    return f"{s.mean:.4g} ± {s.sd:.2g} ({s.low:.4g} – {s.high:.4g})"


def params_text(params: dict) -> str:
    return ", ".join(f"{k}={fmt(v)}" for k, v in params.items()) or "—"


def better(delta: float, direction: str) -> bool:
    return delta < 0 if direction == "minimize" else delta > 0


def delta_html(delta: float | None, pct: float | None, direction: str | None,
               word: bool = False) -> str:
    """'+1.2 (+3.4%)' coloured better/worse when the direction is known (and said, if word)."""
    if delta is None:
        return "—"
    text = f"{delta:+.4g}" + (f" ({pct:+.1f}%)" if pct is not None else "")
    if direction is None or delta == 0:
        return e(text)
    cls = "better" if better(delta, direction) else "worse"
    return f'<span class="{cls}">{e(text)}{", " + cls if word else ""}</span>'


# -- elements ----------------------------------------------------------------------------------
def table(header: list[str], rows: list[list], cls: str = "") -> str:
    """An HTML table; cells are escaped unless they are Raw."""
    head = "".join(f"<th>{e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>"
                   for row in rows)
    cls_attr = f' class="{cls}"' if cls else ""
    return f"<table{cls_attr}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def cell(value: object) -> str:
    return value if isinstance(value, Raw) else e(fmt(value))


def text(value: object) -> Raw:
    """Model or log text: escaped, whitespace kept."""
    return Raw(f'<div class="text">{e(value if value is not None else "")}</div>')


def note(message: str) -> str:
    return f'<p class="note">{e(message)}</p>'


def link(path: Path | str) -> Raw:
    path = Path(path)
    href = path.resolve().as_uri() if path.is_absolute() or path.exists() else str(path)
    return Raw(f'<a href="{e(href)}"><code>{e(path)}</code></a>')


def section(sid: str, title: str, body: str) -> str:
    """A page section; an empty title draws no heading (its body carries its own)."""
    head = f"<h2>{e(title)}</h2>" if title else ""
    return f'<section id="{sid}">{head}{body}</section>'


# -- the page shell ----------------------------------------------------------------------------
@cache
def static(name: str) -> str:
    """A file under harness/report/static/ (package data)."""
    return resources.files("harness.report").joinpath("static", name).read_text(encoding="utf-8")


def document(title: str, body: str) -> str:
    """A whole page: <head> with the title and the report CSS, `body`, then the sort script."""
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{e(title)}</title><style>\n{static('report.css')}</style></head><body>"
            f"{body}<script>\n{static('sort.js')}</script></body></html>\n")
