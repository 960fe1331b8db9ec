"""Keep the page within what the Kubeflow UI shows, whatever the run holds: report.html ≤ 2 MB, report.md ≤ 400,000.

Everything on the page comes from records anyone with write access to the bucket can
write, so a single string, table or list may be of any size. :func:`fit` renders the
sections with caps on each piece (characters of a text, rows and columns of a table,
items of a list, blocks of a section), tightening them until the text fits, then keeps
figures in page order while the page stays within its limit. Whatever was cut says so
where it was cut ("… [12,345 more characters cut]", "… 40 more rows not shown") and a
"This page is shortened" section at the top counts the cuts. A run of ordinary size is
rendered whole: the caps at full scale are far above what a real study writes.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

from jetlib.report.blocks import Bullets, Figure, Para, Pre, Section, Table
from jetlib.report.render import to_html, to_markdown

HTML_LIMIT = 2_000_000  # bytes: the Kubeflow UI renders the page whole in an iframe
MARKDOWN_LIMIT = 400_000  # characters: the Kubeflow UI cuts Markdown there
# caps at full scale; each tighter scale divides them by 4
TEXT_CHARS = 4_000  # one paragraph, list item, caption, title or table cell
PRE_CHARS = 40_000  # one preformatted block (a config, the dataset card)
ROWS, COLUMNS, ITEMS, BLOCKS = 1_000, 60, 1_000, 300  # of one table, one table, one list, one section
SCALES = (1, 1 / 4, 1 / 16, 1 / 64, 1 / 256)
NOTICE_BYTES = 4_000  # room kept for the "shortened" notice when figures fill the rest


@dataclass
class Cuts:
    """How much of the page was left out to keep it within its limits."""

    texts: int = 0  # texts shortened
    rows: int = 0  # table rows left out
    columns: int = 0  # table columns left out
    items: int = 0  # list items left out
    blocks: int = 0  # paragraphs, tables, lists left out of a section
    figures: int = 0  # figures left out

    def __bool__(self) -> bool:
        return any(getattr(self, f.name) for f in fields(self))

    def sentence(self) -> str:
        """e.g. "3 texts shortened; left out: 40 table rows, 1 figures"."""
        out = [f"{self.texts:,} texts shortened"] if self.texts else []
        left = [f"{n:,} {word}" for key, word in (("rows", "table rows"), ("columns", "table columns"),
                                                  ("items", "list items"), ("blocks", "paragraphs or tables"),
                                                  ("figures", "figures")) if (n := getattr(self, key))]
        return "; ".join(out + (["left out: " + ", ".join(left)] if left else []))


class _Caps:
    def __init__(self, scale: float, cuts: Cuts):
        self.text, self.pre = max(40, int(TEXT_CHARS * scale)), max(200, int(PRE_CHARS * scale))
        self.rows, self.columns = max(3, int(ROWS * scale)), max(3, int(COLUMNS * scale))
        self.items, self.blocks = max(3, int(ITEMS * scale)), max(3, int(BLOCKS * scale))
        self.cuts = cuts

    def cut(self, text: str, limit: int | None = None) -> str:
        text, limit = str(text), limit or self.text
        if len(text) <= limit:
            return text
        self.cuts.texts += 1
        return text[:limit] + f"… [{len(text) - limit:,} more characters cut]"

    def table(self, t: Table) -> Table:
        ncols = len(t.header)
        keep = min(ncols, self.columns)
        rows = [[self.cut(c) for c in r[:keep]] for r in t.rows[: self.rows]]
        caption = self.cut(t.caption) if t.caption else ""
        if ncols > keep:
            self.cuts.columns += ncols - keep
            caption += f" (the first {keep} of {ncols} columns)"
        if len(t.rows) > self.rows:
            self.cuts.rows += len(t.rows) - self.rows
            rows.append([f"… {len(t.rows) - self.rows:,} more rows not shown (page size limit)"] + [""] * (keep - 1))
        return Table([self.cut(h) for h in t.header[:keep]], rows, caption)

    def block(self, b):
        if isinstance(b, Para):
            return replace(b, text=self.cut(b.text))
        if isinstance(b, Table):
            return self.table(b)
        if isinstance(b, Bullets):
            items = [self.cut(i) for i in b.items[: self.items]]
            if len(b.items) > self.items:
                self.cuts.items += len(b.items) - self.items
                items.append(f"… and {len(b.items) - self.items:,} more (page size limit)")
            return Bullets(items)
        if isinstance(b, Pre):
            return replace(b, text=self.cut(b.text, self.pre), summary=self.cut(b.summary))
        if isinstance(b, Figure):
            return replace(b, alt=self.cut(b.alt), caption=self.cut(b.caption))
        raise TypeError(f"unknown block {type(b).__name__}")

    def section(self, s: Section) -> Section:
        blocks = [self.block(b) for b in s.blocks[: self.blocks]]
        if len(s.blocks) > self.blocks:
            self.cuts.blocks += len(s.blocks) - self.blocks
            blocks.append(Para(f"… {len(s.blocks) - self.blocks:,} more paragraphs, tables or figures of this "
                               f"section not shown (page size limit)."))
        return Section(s.id, self.cut(s.title), blocks)


def _figures(sections: list[Section]) -> list[Figure]:
    return [b for s in sections for b in s.blocks if isinstance(b, Figure)]


def _drop_figures(sections: list[Section], room: int, cuts: Cuts) -> list[Section]:
    """The sections with figures kept in page order while their images total at most ``room`` bytes."""
    out = []
    for s in sections:
        blocks = []
        for b in s.blocks:
            if isinstance(b, Figure):
                if len(b.uri) <= room:
                    room -= len(b.uri)
                else:
                    cuts.figures += 1
                    b = Para(f"Figure not shown ({b.alt}): its {len(b.uri) / 1e3:,.0f} kB image would take "
                             f"report.html over its {HTML_LIMIT / 1e6:.0f} MB limit.")
            blocks.append(b)
        out.append(Section(s.id, s.title, blocks))
    return out


def _notice(cuts: Cuts) -> Section:
    return Section("shortened", "This page is shortened", [Para(
        f"Some records of this run are too large to show whole: report.html is kept under "
        f"{HTML_LIMIT / 1e6:.0f} MB and report.md under {MARKDOWN_LIMIT:,} characters (what the Kubeflow UI "
        f"shows). {cuts.sentence()[:1].upper()}{cuts.sentence()[1:]}. Each cut is marked where it was made; the run "
        f"folder holds every record whole.", strong=True)])


def fit(title: str, subtitle: str, sections: list[Section], html_limit: int = HTML_LIMIT,
        markdown_limit: int = MARKDOWN_LIMIT) -> tuple[str, str, Cuts]:
    """(page, Markdown, what was cut): the sections rendered within ``html_limit`` bytes and ``markdown_limit``
    characters."""
    for i, scale in enumerate(SCALES):
        cuts = Cuts()
        caps = _Caps(scale, cuts)
        capped = [caps.section(s) for s in sections]
        sub = caps.cut(subtitle)
        html = to_html(title, sub, capped)
        images = sum(len(f.uri) for f in _figures(capped))
        text = len(html.encode()) - images
        markdown = to_markdown(title, sub, capped)
        last = i == len(SCALES) - 1
        if len(markdown) > markdown_limit and not last:
            continue
        over = text + images + (NOTICE_BYTES if cuts else 0) > html_limit
        if not over and not cuts:
            return html, markdown, cuts
        if over and text > html_limit // 2 and not last:
            continue  # the text itself is the hog: tighten before giving up figures
        if over:
            capped = _drop_figures(capped, html_limit - text - NOTICE_BYTES, cuts)
        parts = [_notice(cuts), *capped] if cuts else capped
        html, markdown = to_html(title, sub, parts), to_markdown(title, sub, parts)
        if (len(html.encode()) <= html_limit and len(markdown) <= markdown_limit) or last:
            return html, markdown, cuts
    raise AssertionError("unreachable: the last scale always returns")
