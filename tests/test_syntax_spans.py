import pytest

from canvas_ls.server.syntax import Span, function_body, line_span, statement_span

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
    ("doc", "lang", "expected"),
    [
        # Python: span starts at the end of the `:` line, includes the body's indentation.
        ("def f(x):\n    y = x<C>\n    return y\n", "python", "\n    y = x\n    return y"),
        # a comment on the def line is held with the signature
        ("def f(x):  # note\n    return <C>x\n", "python", "\n    return x"),
        ("def f(x): return <C>x\n", "python", " return x"),
        ("async def f():\n    await <C>g()\n", "python", "\n    await g()"),
        # a function holding only its docstring: empty span at the end of the docstring line
        ('def f():\n    """Doc."""\n    <C>\n', "python", ""),
        # cursor on a blank line below the last statement still belongs to the function
        ("def f():\n    a = 1\n    <C>\n\nx = 2\n", "python", "\n    a = 1"),
        # JS / TS: strictly inside the braces
        ("function f(a) {\n  return <C>a;\n}\n", "javascript", "\n  return a;\n"),
        ("class A {\n  m() { return <C>1; }\n}\n", "javascript", " return 1; "),
        ("const f = function () {<C>};\n", "javascript", ""),
        ("function* g() { yield <C>1; }\n", "javascript", " yield 1; "),
        ("const f = (a: number): number => {\n  return <C>a;\n};\n", "typescript", "\n  return a;\n"),
        ("const C = () => {\n  return <div><C>hi</div>;\n};\n", "tsx", "\n  return <div>hi</div>;\n"),
        # expression-bodied arrow: not a block, so the enclosing method's body is used
        ("class A {\n  m() { const g = () => <C>1; }\n}\n", "typescript", " const g = () => 1; "),
        # Go
        ("package m\n\nfunc f() int {\n\treturn <C>1\n}\n", "go", "\n\treturn 1\n"),
        ("package m\n\nfunc (t *T) M() {\n\tt.x = <C>1\n}\n", "go", "\n\tt.x = 1\n"),
        ("package m\n\nfunc f() {\n\tg := func() { <C>run() }\n\tg()\n}\n", "go", " run() "),
        # Rust
        ("fn main() {\n    let x = <C>1;\n}\n", "rust", "\n    let x = 1;\n"),
        ("impl T {\n    fn m(&self) -> u8 { <C>1 }\n}\n", "rust", " 1 "),
        ("fn f() {\n    let c = |x| { x + <C>1 };\n}\n", "rust", " x + 1 "),
        ("fn f() {\n    let c = |x| x + <C>1;\n}\n", "rust", "\n    let c = |x| x + 1;\n"),
        # Lua: after the parameter list's `)` up to `end`
        ("local function f(a)\n  return <C>a\nend\n", "lua", "\n  return a\n"),
        ("function M.f(a)<C>end\n", "lua", ""),
        ("local t = { g = function(b) return <C>b end }\n", "lua", " return b "),
    ],
)
def test_function_body(doc, lang, expected):
    assert body_text(doc, lang) == expected


def test_python_nested_functions_and_methods_with_docstring():
    inner = PY_CLASS.replace("<F>", "").replace("<G>", CURSOR)
    assert body_text(inner, "python") == "\n            return 1"
    outer = PY_CLASS.replace("<G>", "").replace("<F>", CURSOR)
    # the docstring (with non-ASCII text) stays held: the body starts after it
    assert body_text(outer, "python") == (
        "\n        def g():\n            return 1\n        x = g()\n        return x"
    )


def test_python_blank_line_indentation_picks_inner_or_outer():
    doc = "def outer():\n    def inner():\n        return 1\n{}\n    return inner\n"
    assert body_text(doc.format("        " + CURSOR), "python") == "\n        return 1"
    assert body_text(doc.format("    " + CURSOR), "python").startswith("\n    def inner():")


def test_no_function_around_cursor():
    assert body_text("x = <C>1\n", "python") is None
    assert body_text("function f() {}\n<C>\n", "javascript") is None
    # right after the closing brace is outside the function
    assert body_text("function f() {}<C>\n", "javascript") is None


def test_body_span_offsets_are_characters_not_bytes():
    text, offset = cut("s = '\u00e9\u00e9\u00e9'\nfunction f() {<C> }\n")
    assert function_body(text, "javascript", offset) == Span(offset, offset + 1)


def test_line_span():
    text = "ab\r\ncd\n\nef"
    assert line_span(text, 1) == Span(0, 2)  # without the \r\n
    assert line_span(text, 5) == Span(4, 6)
    assert line_span(text, 7) == Span(7, 7)
    assert line_span(text, len(text)) == Span(8, 10)


@pytest.mark.parametrize(
    ("doc", "lang", "expected"),
    [
        ("def f():\n    x = g(<C>1)\n    return x\n", "python", "x = g(1)"),
        ("def f():\n    x = 1<C>\n", "python", "x = 1"),  # right after the statement
        ("if (a) {\n  foo(<C>);\n}\n", "javascript", "foo();"),
        ("package m\nfunc f() {\n\ty := <C>2\n}\n", "go", "y := 2"),
        ("fn f() {\n    let a = <C>3;\n}\n", "rust", "let a = 3;"),
        ("local a = <C>1\n", "lua", "local a = 1"),
        ("x = 1\n<C>\ny = 2\n", "python", None),
    ],
)
def test_statement_span(doc, lang, expected):
    text, offset = cut(doc)
    span = statement_span(text, lang, offset)
    assert (None if span is None else text[span.start : span.end]) == expected


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
