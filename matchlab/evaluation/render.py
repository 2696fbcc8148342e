"""One table as Markdown or as aligned text (every table of `matchlab eval` and the docs)."""
from __future__ import annotations

from typing import Sequence


def render(head: Sequence[str], rows: Sequence[Sequence[str]], markdown: bool = True) -> str:
    """One table: Markdown, or plain text in aligned columns."""
    if markdown:
        return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
                          *("| " + " | ".join(r) + " |" for r in rows)])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    return "\n".join(["  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip(),
                      *("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)])
