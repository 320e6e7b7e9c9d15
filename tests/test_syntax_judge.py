import pytest

from canvas_ls.server.syntax import (
    Span,
    added_errors,
    apply_fills,
    cut_at_syntax_boundary,
    error_count,
    error_spans,
    fill_offsets_after,
)

# Non-ASCII text ahead of every hole: byte/char mix-ups would shift the reported ranges.
PY_BEFORE = 'GREETING = "gr\u00fc\u00df dich \u4e16\u754c"\n\ndef f(x):\n    y = \n    return y\n'
HOLE = PY_BEFORE.index("y = ") + 4


def at(offset: int) -> Span:
    return Span(offset, offset)


def test_error_spans_and_count():
    assert error_spans("x = 1\n", "python") == []
    assert error_count(PY_BEFORE, "python") >= 1
    assert all(s.start >= PY_BEFORE.index("def") for s in error_spans(PY_BEFORE, "python"))
    # tree-sitter-python accepts a bodiless `if x:`; we count it as an error
    assert error_count("if x:\n", "python") == 1


def test_apply_fills_and_offsets_after():
    before = "a \u00e9 b \u00e9 c"
    fills = [(Span(8, 9), "CCC"), (Span(0, 1), ""), (Span(4, 4), "\u4e16")]
    after = apply_fills(before, fills)
    assert after == " \u00e9 \u4e16b \u00e9 CCC"
    landed = fill_offsets_after(before, fills)
    assert [after[s.start : s.end] for s in landed] == ["CCC", "", "\u4e16"]
    assert landed == [Span(8, 11), Span(0, 0), Span(3, 4)]


def test_overlapping_fills_are_rejected():
    with pytest.raises(ValueError):
        apply_fills("abcdef", [(Span(0, 3), "x"), (Span(2, 4), "y")])


def test_fill_that_completes_the_broken_line_adds_nothing():
    assert added_errors(PY_BEFORE, [(at(HOLE), "x + 1")], "python") == []


def test_pre_existing_error_elsewhere_is_ignored():
    broken_tail = PY_BEFORE + "\ndef g(:\n    pass\n"
    assert error_count(broken_tail, "python") >= 2
    assert added_errors(broken_tail, [(at(HOLE), "x + 1")], "python") == []


def test_new_error_is_found_with_char_range_in_after_text():
    before = 'S = "\u00fc\u00df\u4e16"\n\ndef f(x):\n    y = 1\n    return y\n'
    hole = before.index("    return")
    fill = "    z = ) 2\n"
    errors = added_errors(before, [(at(hole), fill)], "python")
    assert errors, "the stray ')' must be reported"
    after = apply_fills(before, [(at(hole), fill)])
    landed = fill_offsets_after(before, [(at(hole), fill)])[0]
    # every reported range lies on the filled line, and it covers the ')'
    assert all(landed.start <= e.start and e.end <= landed.end for e in errors)
    assert any(")" in after[e.start : e.end] for e in errors)


def test_second_error_in_an_already_broken_region_is_new():
    errors = added_errors(PY_BEFORE, [(at(HOLE), "x +\n    w = (]")], "python")
    assert errors


def test_unclosed_bracket_reported_away_from_the_fill():
    before = "function f() {\n  const a = 1;\n}\n\nfunction g() {\n  return 2;\n}\n"
    hole = before.index("const a = 1;") + len("const a = 1;")
    errors = added_errors(before, [(at(hole), "\n  if (a) {")], "javascript")
    assert errors  # the missing `}` surfaces somewhere, not necessarily inside the fill


def test_several_fills_are_judged_together():
    before = "package m\n\nfunc f() int {\n\treturn \n}\n\nfunc g() int {\n\treturn \n}\n"
    h1 = before.index("return ") + 7
    h2 = before.index("return ", h1) + 7
    good = [(at(h1), "1"), (at(h2), "2")]
    assert added_errors(before, good, "go") == []
    bad = [(at(h1), "1"), (at(h2), "2 +* (")]
    errors = added_errors(before, bad, "go")
    second = fill_offsets_after(before, bad)[1]
    assert errors and all(e.start >= second.start - 1 for e in errors)


def test_cut_keeps_a_good_fill_whole():
    assert cut_at_syntax_boundary(PY_BEFORE, at(HOLE), "x * 2", "python") == "x * 2"


def test_cut_drops_trailing_lines():
    fill = "x * 2\n    z = [1,"
    assert cut_at_syntax_boundary(PY_BEFORE, at(HOLE), fill, "python") == "x * 2"


def test_cut_trims_partial_text_of_the_first_line():
    assert cut_at_syntax_boundary(PY_BEFORE, at(HOLE), "x + (1 +", "python") == "x"


def test_cut_returns_empty_when_nothing_survives():
    assert cut_at_syntax_boundary(PY_BEFORE, at(HOLE), ")", "python") == ""


def test_cut_keeps_a_final_newline_of_whole_line_fills():
    before = "fn main() {\n    let a = 1;\n    a;\n}\n"
    hole = before.index("    a;")
    fill = "    let b = a;\n    let c = (b;\n"
    assert cut_at_syntax_boundary(before, at(hole), fill, "rust") == "    let b = a;\n"


def test_cut_replacing_a_span():
    before = "local function f(a)\n  return a\nend\n"
    span = Span(before.index("return a"), before.index("return a") + len("return a"))
    assert cut_at_syntax_boundary(before, span, "return a + 1\n  if a then", "lua") == "return a + 1"


TAIL_BEFORE = (
    "s = '\u00e9\u4e16'\ndef f():\n    return 1\n\n\nclass A:\n    x = [1, 2]\n    def g(self):\n        pass\n"
)


@pytest.mark.parametrize(
    ("before", "old", "new"),
    [
        (TAIL_BEFORE, "1", "g(\u00fc, 2"),
        (TAIL_BEFORE, "return 1", "if x:\n        y = '\u00df'\n    z ="),
        (TAIL_BEFORE, "return 1", "return '\u4e16\u754c'"),
        ("s = '\u00e9'\ndef f():\n    return (1\n\nx = [1, 2]\n", "(1", "(1)"),
    ],
)
def test_incremental_reparse_matches_a_fresh_parse(before, old, new):
    from canvas_ls.server.syntax.parsed import Parsed, edited

    start = before.index(old)
    span = Span(start, start + len(old))
    incremental = edited(Parsed(before, "python"), span, new)
    fresh = Parsed(apply_fills(before, [(span, new)]), "python")
    assert incremental.text == fresh.text
    assert str(incremental.root) == str(fresh.root)
    nodes = list(zip(_walk(fresh.root), _walk(incremental.root)))
    assert [(a.start_byte, a.end_byte, a.start_point) for a, _ in nodes] == [
        (b.start_byte, b.end_byte, b.start_point) for _, b in nodes
    ]


def _walk(node):
    yield node
    for child in node.children:
        yield from _walk(child)


# --- errors tree-sitter keeps out of every node's children (issue 14) --------------------


@pytest.mark.parametrize(
    ("lang", "before", "where", "fill"),
    [
        # `Item(sku, name)turn`: a MISSING _newline, hidden (it is no node's child)
        ("python", "def make(sku, name):\n    item = Item(sku, name)\n    return item\n", "\n    return", "turn"),
        # after a function's `}`: a MISSING separator (source_file_token1), hidden
        ("go", "package main\n\nfunc a() {\n}\n\nfunc main() {}\n", "\n\nfunc main", " x"),
        ("go", 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println() }\n', "\n\nfunc main", " fmt"),
    ],
)
def test_hidden_missing_tokens_are_errors(lang, before, where, fill):
    hole = before.index(where)
    after = apply_fills(before, [(at(hole), fill)])
    assert error_count(before, lang) == 0
    assert error_spans(after, lang) == [at(hole)]  # where the separator is missing
    assert added_errors(before, [(at(hole), fill)], lang)
    assert cut_at_syntax_boundary(before, at(hole), fill, lang) == ""


def test_every_error_tree_has_an_error_span():
    # Random edits of real code: whenever tree-sitter calls the tree an error tree, the
    # judge finds at least one error in it.
    import random

    from canvas_ls.server.syntax.parsed import Parsed

    docs = {
        "python": TAIL_BEFORE,
        "go": 'package m\n\nimport "fmt"\n\nfunc f(a int) int {\n\tif a > 0 {\n\t\treturn a\n\t}\n\treturn -a\n}\n\nfunc g() { fmt.Println(f(1)) }\n',
        "javascript": "function f(a) {\n  if (a) {\n    return [a, `x${a}`];\n  }\n  return null;\n}\n",
        "typescript": "export function f(a: number): string {\n  const xs: number[] = [a];\n  return xs.join(',');\n}\n",
        "rust": "fn f(a: i32) -> i32 {\n    if a > 0 {\n        return a;\n    }\n    -a\n}\n",
        "lua": "local function f(a)\n  if a > 0 then\n    return a\n  end\n  return -a\nend\n",
    }
    pieces = ["x", " y", "(", ")", "{", "}", "\n", "turn", ";", ":", '"', "'", "end", "\tz", "1 2"]
    rng = random.Random(14)
    for lang, doc in docs.items():
        for _ in range(150):
            a = rng.randrange(len(doc) + 1)
            b = min(len(doc), a + rng.choice([0, 0, 1, 4]))
            after = doc[:a] + "".join(rng.choice(pieces) for _ in range(rng.randint(1, 3))) + doc[b:]
            if Parsed(after, lang).root.has_error:
                assert error_spans(after, lang), (lang, after)


def test_a_cut_is_judged_on_a_fresh_parse():
    # tree-sitter-go's incremental reparse accepts a stray `;` between two functions that a
    # fresh parse rejects; the kept cut must pass a fresh parse.
    before = "package main\n\nfunc a() {\n}\n\nfunc b() {\n}\n"
    hole = before.index("func b")
    assert error_count(apply_fills(before, [(at(hole), ";")]), "go") >= 1
    assert cut_at_syntax_boundary(before, at(hole), ";", "go") == ""


@pytest.mark.parametrize(
    ("lang", "before", "old", "fill", "kept"),
    [
        ("python", "def f(x):\n    return x\n", "return x", "y = x * 2\n    return (y", "y = x * 2"),
        (
            "javascript",
            "function f(a) {\n  return a;\n}\n",
            "return a;",
            "const b = a * 2;\n  return Math.max(b",
            "const b = a * 2;",
        ),
        (
            "typescript",
            "function f(a: number): number {\n  return a;\n}\n",
            "return a;",
            "const b: number = a;\n  const c: Array<number = [b];",
            "const b: number = a;",
        ),
        (
            "go",
            "package m\n\nfunc f(a int) int {\n\treturn a\n}\n",
            "return a",
            "b := a * 2\n\treturn (b",
            "b := a * 2",
        ),
        (
            "rust",
            "fn f(a: u32) -> u32 {\n    a\n}\n",
            "a\n",
            "let b = a * 2;\n    let c = b\n    c\n",
            "let b = a * 2;\n",
        ),
        (
            "lua",
            "local function f(a)\n  return a\nend\n",
            "return a",
            "local b = a * 2\n  if b > 1 then",
            "local b = a * 2",
        ),
    ],
)
def test_each_language_cuts_a_fill_that_breaks_the_grammar(lang, before, old, fill, kept):
    start = before.index(old)
    span = Span(start, start + len(old))
    assert added_errors(before, [(span, fill)], lang)
    assert cut_at_syntax_boundary(before, span, fill, lang) == kept
