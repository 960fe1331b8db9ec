"""Render the report's sections to one self-contained HTML page and to its Markdown twin.

The page is plain HTML with inline CSS and ``data:`` images: nothing is fetched, no
script runs, so it displays the same in a sandboxed Kubeflow iframe, a browser opened on
the file, or an e-mail attachment. The Markdown has tables and text only (no raw HTML),
as the Kubeflow UI's Markdown viewer requires. Both escape every string the same way,
since any of them may come from a record: :func:`html.escape` for the page, :func:`md_text`
and :func:`md_fence` for the Markdown, so that no string becomes a tag, a link or an image.
"""

from __future__ import annotations

import re
from html import escape

from jetlib.report.blocks import Bullets, Figure, Para, Pre, Section, Table

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1b1b1b;background:#fff;
 line-height:1.45;font-size:15px}
main{max-width:1180px;margin:0 auto;padding:0 24px 48px}
header{background:#12304f;color:#fff;padding:18px 24px}header h1{margin:0 0 4px;font-size:22px}
header p{margin:0;opacity:.85;font-size:13px;word-break:break-all}
nav{position:sticky;top:0;background:#f3f5f8;border-bottom:1px solid #dde3ea;padding:6px 24px;font-size:13px;z-index:1}
nav a{margin-right:14px;color:#12304f;text-decoration:none}
h2{border-bottom:2px solid #12304f;padding-bottom:3px;margin-top:34px;font-size:19px}
table{border-collapse:collapse;margin:10px 0;font-size:13px}
th,td{border:1px solid #d5dbe2;padding:3px 8px;text-align:right;vertical-align:top}
th{background:#eef2f6}td:first-child,th:first-child{text-align:left}
caption{caption-side:top;text-align:left;font-weight:600;padding:4px 0}
figure{margin:12px 0}figure img{max-width:100%;height:auto;border:1px solid #e4e8ec}
figcaption{font-size:13px;color:#444}
p.strong{font-size:16px;background:#f6f9fc;border-left:4px solid #12304f;padding:8px 12px}
pre{background:#f6f8fa;padding:8px;overflow:auto;font-size:12px;max-height:420px}
details{margin:4px 0}summary{cursor:pointer;font-size:13px}
.gain{color:#0a6b2d;font-weight:600}.loss{color:#a3111b;font-weight:600}
"""


def _cell(text: str) -> str:
    """Table cell HTML; verdict words get a colour."""
    html = escape(text)
    for word, cls in (("hint of a gain", "gain"), ("hint of a loss", "loss"), ("gain", "gain"), ("loss", "loss")):
        if text.endswith(word):
            return html[: len(html) - len(word)] + f'<span class="{cls}">{word}</span>'
    return html


def html_block(b) -> str:
    if isinstance(b, Para):
        return f'<p class="strong">{escape(b.text)}</p>' if b.strong else f"<p>{escape(b.text)}</p>"
    if isinstance(b, Table):
        cap = f"<caption>{escape(b.caption)}</caption>" if b.caption else ""
        head = "".join(f"<th>{escape(h)}</th>" for h in b.header)
        rows = "".join("<tr>" + "".join(f"<td>{_cell(c)}</td>" for c in r) + "</tr>" for r in b.rows)
        return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>"
    if isinstance(b, Figure):
        cap = f"<figcaption>{escape(b.caption)}</figcaption>" if b.caption else ""
        return f'<figure><img src="{b.uri}" alt="{escape(b.alt)}">{cap}</figure>'
    if isinstance(b, Bullets):
        return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in b.items) + "</ul>"
    if isinstance(b, Pre):
        pre = f"<pre>{escape(b.text)}</pre>"
        return f"<details><summary>{escape(b.summary)}</summary>{pre}</details>" if b.summary else pre
    raise TypeError(f"unknown block {type(b).__name__}")


def to_html(title: str, subtitle: str, sections: list[Section]) -> str:
    nav = "".join(f'<a href="#{s.id}">{escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.id}"><h2>{escape(s.title)}</h2>' + "".join(html_block(b) for b in s.blocks)
                   + "</section>" for s in sections)
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{escape(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{escape(title)}</h1><p>{escape(subtitle)}</p></header><nav>{nav}</nav>"
            f"<main>{body}</main></body></html>")


# Markdown: every character that can open or close a CommonMark/GFM construct inside a line is
# backslash-escaped (CommonMark 2.4: any ASCII punctuation may be), and the three that make HTML become
# entities, which no Markdown flavour reads as markup. Without "[", "]" and "!" there is no link or image;
# without "<" no raw HTML or <autolink>; "@" gets a word joiner (U+2060, invisible) and ":/" and "www."
# an escape because GFM turns bare e-mail addresses, URLs and www. names into links.
_MD_TABLE = {ord(c): "\\" + c for c in "\\`*_{}[]!#|~$^"} | {ord("&"): "&amp;", ord("<"): "&lt;",
                                                              ord(">"): "&gt;", ord("@"): "@\u2060"}
_MD_TABLE |= {c: None for c in (*range(0x20), 0x7F)}  # controls left after whitespace is folded
_MD_AUTOLINK = re.compile(r":(?=/)|(?<=www)\.", re.IGNORECASE)
# where a line starts: a list item ("- ", "+ ", "1. ", "1) ") or a thematic break ("---", "- - -")
_MD_LINE_START = re.compile(r"^(?:[-+](?=\s|$)|-(?=[-\s]*$)|\d{1,9}(?=[.)](?:\s|$)))")


def md_text(text: str) -> str:
    """``text`` as one line of literal Markdown text: no link, image, HTML, emphasis, list or heading from it."""
    one_line = " ".join(str(text).split())  # a newline would let the rest start a block (a fence, a list, HTML)
    escaped = _MD_AUTOLINK.sub(lambda m: "\\" + m.group(), one_line.translate(_MD_TABLE))
    return _MD_LINE_START.sub(lambda m: m.group() + "\\" if m.group()[0].isdigit() else "\\" + m.group(), escaped)


def md_fence(text: str) -> str:
    """``text`` as a fenced code block whose fence no line of ``text`` can close (CommonMark 4.5: a closing fence
    is at least as long as the opening one): one tilde more than the longest run of tildes in it."""
    longest = max((len(run) for run in re.findall(r"~+", text)), default=0)
    fence = "~" * max(4, longest + 1)
    return f"{fence}\n{text}\n{fence}"


def md_block(b) -> str:
    if isinstance(b, Para):
        text = md_text(b.text)
        return f"**{text}**" if b.strong and text else text  # "****" alone would be a thematic break
    if isinstance(b, Table):
        def row(cells):
            return "| " + " | ".join(md_text(c) for c in cells) + " |"
        cap = f"*{md_text(b.caption)}*\n\n" if b.caption else ""
        return cap + "\n".join([row(b.header), "|" + "---|" * len(b.header), *map(row, b.rows)])
    if isinstance(b, Figure):
        return f"*Figure in report.html: {md_text(b.alt)}.*"
    if isinstance(b, Bullets):
        return "\n".join(f"- {md_text(i)}" for i in b.items)
    if isinstance(b, Pre):
        if not b.markdown:
            return f"*{md_text(b.summary)}: in report.html.*"
        return (f"{md_text(b.summary)}\n\n" if b.summary else "") + md_fence(b.text)
    raise TypeError(f"unknown block {type(b).__name__}")


def to_markdown(title: str, subtitle: str, sections: list[Section]) -> str:
    parts = [f"# {md_text(title)}", md_text(subtitle)]
    for s in sections:
        parts.append(f"## {md_text(s.title)}")
        parts.extend(md_block(b) for b in s.blocks)
    return "\n\n".join(parts) + "\n"
