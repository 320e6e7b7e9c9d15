"""Golden end-to-end cases: raw fill -> run_pipeline -> cut_at_syntax_boundary -> document.

Each ``tests/golden/<lang>/*.txt`` holds sections introduced by ``=== <name>`` lines. A
section's text is everything up to the next ``===`` line, minus the one newline that ends
it (so a text that should end with a newline is followed by an empty line).

``=== document`` (required)  the document, with ``<CURSOR>`` or ``<HOLE>old text</HOLE>``
``=== fill`` (required)      the raw model output
``=== expected`` (required)  the whole document after the fill
``=== mode`` (optional)      with <CURSOR>: the completion_mode the cursor must get (then
                             used); with <HOLE>: the mode to use (default multi)
``=== span`` (optional)      ``function_body``: the hole is the body of the function
                             around <CURSOR> (mode multi)

Mode ``none`` means no fill: the expected text is the document unchanged.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from canvas_ls.server.syntax import (
    FillContext,
    Span,
    completion_mode,
    cut_at_syntax_boundary,
    function_body,
    run_pipeline,
)

GOLDEN = Path(__file__).parent / "golden"
CASES = sorted(GOLDEN.glob("*/*.txt"))
_HEADER = re.compile(r"^=== (\w+)[ \t]*$", re.M)


def read_sections(path: Path) -> dict[str, str]:
    raw = path.read_text(encoding="utf-8")
    heads = list(_HEADER.finditer(raw))
    sections = {}
    for head, nxt in zip(heads, [*heads[1:], None]):
        body = raw[head.end() + 1 : nxt.start() if nxt else len(raw)]
        sections[head.group(1)] = body[:-1] if body.endswith("\n") else body
    return sections


def run_case(lang: str, sections: dict[str, str]) -> str:
    doc = sections["document"]
    if "<HOLE>" in doc:
        start = doc.index("<HOLE>")
        text = doc.replace("<HOLE>", "", 1)
        end = text.index("</HOLE>")
        text = text.replace("</HOLE>", "", 1)
        span, mode = Span(start, end), sections.get("mode", "multi")
    else:
        offset = doc.index("<CURSOR>")
        text = doc.replace("<CURSOR>", "", 1)
        if sections.get("span") == "function_body":
            span, mode = function_body(text, lang, offset), "multi"
            assert span is not None, "no function body at <CURSOR>"
        else:
            span, mode = Span(offset, offset), completion_mode(text, lang, offset)
            assert mode == sections.get("mode", mode)
    if mode == "none":
        return text
    ctx = FillContext(text[: span.start], text[span.end :], lang, mode)
    fill = cut_at_syntax_boundary(text, span, run_pipeline(sections["fill"], ctx), lang)
    return text[: span.start] + fill + text[span.end :]


def test_every_language_has_golden_cases():
    langs = {p.parent.name for p in CASES}
    assert {"python", "javascript", "typescript", "go", "rust", "lua"} <= langs


@pytest.mark.parametrize("path", CASES, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_golden(path: Path):
    sections = read_sections(path)
    assert run_case(path.parent.name, sections) == sections["expected"]
