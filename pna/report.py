"""A small Markdown writer for run reports: headings, paragraphs, tables, bullet lists and images.

``Estimate`` formats one measured number with its confidence interval and sample size, or says why there is
none ("not run in this mode"), so every cell of a results table reads the same way.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

NOT_RUN = "not run in this mode"


@dataclass(frozen=True)
class Estimate:
    """A measured value with an optional confidence interval, sample size and detail, or a reason it is missing.

    value None means not measured; then ``missing`` says why (default NOT_RUN). scale multiplies value and CI
    for display (e.g. 100 for percentages); unit is appended to the value (e.g. "%").
    """

    value: float | None
    ci: tuple[float, float] | None = None
    n: int | None = None
    detail: str = ""
    missing: str = NOT_RUN
    scale: float = 1.0
    unit: str = ""
    digits: int = 3

    def format(self) -> str:
        """'-0.812 [-0.830, -0.790] (n=791; 1 seed)', 'undefined (n=0; ...)' for NaN, or the missing reason."""
        if self.value is None:
            return self.missing
        text = "undefined" if math.isnan(self.value) else f"{self.value * self.scale:.{self.digits}f}{self.unit}"
        if self.ci is not None and not math.isnan(self.value):
            lo, hi = (bound * self.scale for bound in self.ci)
            text += f" [{lo:.{self.digits}f}, {hi:.{self.digits}f}]"
        extras = [f"n={self.n}"] if self.n is not None else []
        if self.detail:
            extras.append(self.detail)
        return f"{text} ({'; '.join(extras)})" if extras else text


def _cell(text: object) -> str:
    """A table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


class MarkdownReport:
    """Collects Markdown blocks in order; ``render`` joins them, ``write`` saves them."""

    def __init__(self, title: str) -> None:
        self._blocks: list[str] = [f"# {title}"]

    def heading(self, text: str, level: int = 2) -> None:
        """A heading of the given level (2..6)."""
        if not 2 <= level <= 6:
            raise ValueError(f"level: must be 2..6 (1 is the title), got {level}")
        self._blocks.append(f"{'#' * level} {text}")

    def paragraph(self, text: str) -> None:
        """A paragraph of text."""
        self._blocks.append(text.strip())

    def bullets(self, items: Sequence[str]) -> None:
        """A bullet list (one item per entry)."""
        if items:
            self._blocks.append("\n".join(f"- {item}" for item in items))

    def table(self, headers: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
        """A table; every row must have len(headers) cells."""
        for i, row in enumerate(rows):
            if len(row) != len(headers):
                raise ValueError(f"rows: row {i} has {len(row)} cells, expected {len(headers)}")
        lines = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
        lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
        self._blocks.append("\n".join(lines))

    def image(self, path: str, alt: str) -> None:
        """An image by path relative to the report."""
        self._blocks.append(f"![{alt}]({path})")

    def render(self) -> str:
        """The whole document."""
        return "\n\n".join(self._blocks) + "\n"

    def write(self, path: str | Path) -> Path:
        """Write the document to path (creating its folder); returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path
