"""Assembly of the self-contained HTML page: inline CSS, base64 PNG images, no script, no
external resource. Every piece of text passes through :func:`html.escape`.
"""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

__all__ = ["Section", "render_page", "table_html", "image_html", "esc"]

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;
background:#fff;line-height:1.45}
header{background:#1f3b73;color:#fff;padding:1em 2em}
header h1{margin:0 0 .2em 0;font-size:1.5em}
nav{padding:.6em 2em;background:#eef1f7;border-bottom:1px solid #ccd}
nav a{margin-right:1.1em;color:#1f3b73;text-decoration:none;font-size:.95em}
main{padding:0 2em 2em 2em;max-width:1200px}
section{border-bottom:1px solid #ddd;padding-bottom:1em}
h2{color:#1f3b73;margin-top:1.3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccd;padding:.25em .6em;text-align:right}
th{background:#eef1f7}
td.txt,th.txt{text-align:left}
td.pass{background:#d8f0d8;color:#14521c;font-weight:600;text-align:center}
td.warn{background:#fbe3c8;color:#8a3c00;font-weight:600;text-align:center}
td.na{background:#eee;color:#555;text-align:center}
figure{margin:.8em 0}
figure img{max-width:100%;height:auto;border:1px solid #eee}
figcaption{font-size:.85em;color:#444}
p.missing{background:#fff4e5;border-left:4px solid #e07b39;padding:.4em .8em}
p.note{font-size:.9em;color:#333}
"""


def esc(value: object) -> str:
    """HTML-escaped text of *value* (quotes included)."""
    return html.escape(str(value), quote=True)


@dataclass
class Section:
    """One report section: an id (anchor), a title and its HTML body parts."""

    id: str
    title: str
    parts: list[str] = field(default_factory=list)

    def text(self, text: str, cls: str = "note") -> None:
        """Add an escaped paragraph."""
        self.parts.append(f'<p class="{cls}">{esc(text)}</p>')

    def missing(self, text: str) -> None:
        """Add a highlighted paragraph saying what is missing."""
        self.text(text, cls="missing")

    def table(self, df: pd.DataFrame | None, caption: str = "") -> None:
        """Add a table (escaped)."""
        if df is not None:
            self.parts.append(table_html(df, caption))

    def image(self, png: bytes, caption: str, alt: str) -> None:
        """Add an embedded PNG figure."""
        self.parts.append(image_html(png, caption, alt))


def _fmt(value: object) -> str:
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        v = float(value)
        if math.isnan(v):
            return ""
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.3g}"
        return f"{v:.4g}"
    return str(value)


def table_html(df: pd.DataFrame, caption: str = "") -> str:
    """An HTML table of *df*; a column named ``status`` gets pass/warn colouring."""
    head = "".join(
        f'<th class="{"txt" if not pd.api.types.is_numeric_dtype(df[c]) else ""}">{esc(c)}</th>'
        for c in df.columns
    )
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for col, val in zip(df.columns, rec, strict=True):
            if col == "status":
                cls = {"pass": "pass", "warn": "warn"}.get(str(val), "na")
            else:
                cls = "" if isinstance(val, int | float | np.number) and not isinstance(
                    val, bool | np.bool_) else "txt"
            cells.append(f'<td class="{cls}">{esc(_fmt(val))}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def image_html(png: bytes, caption: str, alt: str) -> str:
    """A ``<figure>`` with *png* embedded as a base64 data URI."""
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{esc(caption)}</figcaption></figure>")


def render_page(title: str, subtitle: str, sections: list[Section]) -> str:
    """The complete HTML document."""
    nav = "".join(f'<a href="#{esc(s.id)}">{esc(s.title)}</a>' for s in sections)
    body = "".join(
        f'<section id="{esc(s.id)}"><h2>{esc(s.title)}</h2>{"".join(s.parts)}</section>'
        for s in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; "
        "img-src data:; style-src 'unsafe-inline'\">"
        f"<title>{esc(title)}</title><style>{CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1><div>{esc(subtitle)}</div></header>"
        f"<nav>{nav}</nav><main>{body}</main></body></html>\n"
    )
