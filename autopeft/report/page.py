"""One self-contained HTML page: plotly.js inlined once, no external URL, so it opens offline.

The building blocks (sections, tables, figures, links) escape their text, so a knob value or a
study name can never break the page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

DEFAULT_FIGURE_HEIGHT = 520  # px, for figures that do not set their own height

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto;
       max-width: 1200px; padding: 1.5rem; color: #222; line-height: 1.45; }
h1 { font-size: 1.6rem; margin-bottom: .3rem; }
h2 { font-size: 1.25rem; margin-top: 2.2rem; border-bottom: 1px solid #ddd; }
h3 { font-size: 1.05rem; margin: 1.2rem 0 .2rem; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; margin: .6rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .3rem .6rem; text-align: left; vertical-align: top; }
th { background: #f4f6f8; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.note { color: #666; font-size: .9rem; }
.figure { margin: .5rem 0 1rem; }
"""


def render_page(title: str, sections: Sequence[tuple[str, str, str]]) -> str:
    """A whole page: title, a table of contents, then each (anchor, heading, body html)."""
    nav = " ".join(link(f"#{anchor}", heading) for anchor, heading, _ in sections)
    body = "\n".join(
        f'<section id="{html.escape(anchor)}">\n<h2>{html.escape(heading)}</h2>\n{content}\n'
        "</section>"
        for anchor, heading, content in sections
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        f"<title>{html.escape(title)}</title>\n<style>{_STYLE}</style>\n"
        f'<script type="text/javascript">{get_plotlyjs()}</script>\n</head>\n<body>\n'
        f"<h1>{html.escape(title)}</h1>\n<nav>{nav}</nav>\n{body}\n</body>\n</html>\n"
    )


def figure(fig: go.Figure, div_id: str) -> str:
    """A figure's div and drawing script; it relies on the page's one copy of plotly.js."""
    height = fig.layout.height or DEFAULT_FIGURE_HEIGHT
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id,
                      default_height=f"{height}px", config={"displaylogo": False})
    return f'<div class="figure">{div}</div>'


def table(header: Sequence[str], rows: Sequence[Sequence[str]],
          numeric: Sequence[int] = ()) -> str:
    """An HTML table of already formatted cells; `numeric` columns are right-aligned."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "\n".join(
        "<tr>" + "".join(_cell(value, i in numeric) for i, value in enumerate(row)) + "</tr>"
        for row in rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def paragraph(text: str, note: bool = False) -> str:
    """Escaped text in a <p>; `note` greys it out as an aside."""
    css = ' class="note"' if note else ""
    return f"<p{css}>{html.escape(text)}</p>"


def heading(text: str) -> str:
    """A sub-heading inside a section."""
    return f"<h3>{html.escape(text)}</h3>"


def link(href: str, text: str) -> str:
    """A relative link (another file of the report, an anchor on this page)."""
    return f'<a href="{html.escape(href, quote=True)}">{html.escape(text)}</a>'


def links(items: Sequence[tuple[str, str]]) -> str:
    """A bulleted list of (href, description) links."""
    entries = "".join(f"<li>{link(href, text)}</li>" for href, text in items)
    return f"<ul>{entries}</ul>"


def _cell(value: str, numeric: bool) -> str:
    css = ' class="num"' if numeric else ""
    return f"<td{css}>{html.escape(value)}</td>"
