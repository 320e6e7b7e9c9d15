import pytest

from canvas_ls.server.syntax import function_body

CURSOR = "<C>"


def cut(doc: str) -> tuple[str, int]:
    offset = doc.index(CURSOR)
    return doc.replace(CURSOR, "", 1), offset


def body_text(doc: str, lang: str) -> str | None:
    text, offset = cut(doc)
    span = function_body(text, lang, offset)
    return None if span is None else text[span.start : span.end]


PY_CLASS = '''\
class A:
    def f(self):
        """Doc \u00e9t\u00e9."""
        def g():
            return 1<G>
        x = g()<F>
        return x
'''


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        # a comment after the docstring stays held with it: the span starts at the line's end,
        # not right after the closing quotes (a fill there would be glued onto the docstring)
        ('def f(n):\n    """Doc."""  # c\n    return <C>n\n', "\n    return n"),
        ('def f(n):\n    """Doc."""  # c\n    <C>\n', ""),
        # code on the docstring's line after a `;` is body
        ('def f(n):\n    """Doc."""; x = <C>1\n    return x\n', "; x = 1\n    return x"),
    ],
)
def test_python_body_after_a_docstring_with_more_on_its_line(doc, expected):
    assert body_text(doc, "python") == expected
