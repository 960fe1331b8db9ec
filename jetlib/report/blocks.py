"""The report as a format-neutral list of sections and blocks, rendered to HTML and to Markdown.

Both renderings walk the same blocks, so the Markdown twin says exactly what the page
says, less the figures (the Kubeflow UI renders Markdown without images or raw HTML).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass(frozen=True)
class NotDrawn:
    """A figure that had something to show and could not be drawn (too many panels, data it cannot plot)."""

    reason: str


@dataclass
class Figure:
    uri: str | NotDrawn | None  # data: URI; None: nothing to draw
    alt: str
    caption: str = ""


@dataclass
class Para:
    text: str
    strong: bool = False


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Pre:
    text: str
    summary: str = ""  # when set, shown folded (HTML <details>) under this summary
    markdown: bool = True  # False: HTML only (long configs would crowd the Markdown twin)


@dataclass
class Section:
    id: str
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> Section:
        # a figure with nothing to draw (uri None) is left out rather than shown broken; one that could not be
        # drawn says why in its place
        for b in blocks:
            if isinstance(b, Figure) and isinstance(b.uri, NotDrawn):
                b = Para(f"Figure not drawn ({b.alt}): {b.uri.reason}.")
            if b is not None and not (isinstance(b, Figure) and b.uri is None):
                self.blocks.append(b)
        return self
