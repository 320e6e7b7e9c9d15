import pytest

from canvas_ls.server.syntax import (
    FillContext,
    drop_suffix_repeat,
    end_before_closer,
    fix_indentation,
    normalize_newlines,
    run_pipeline,
    single_line,
    trim_trailing_whitespace,
    whole_lines,
)

CURSOR = "<C>"


def ctx(doc: str, lang: str | None = "python", mode: str = "multi") -> FillContext:
    prefix, suffix = doc.split(CURSOR)
    return FillContext(prefix=prefix, suffix=suffix, lang=lang, mode=mode)


# --- normalize_newlines ---------------------------------------------------------------


def test_newlines_follow_a_crlf_document():
    c = ctx("a = 1\r\nb = <C>\r\n")
    assert normalize_newlines("f(\n  1)\r\nx", c) == "f(\r\n  1)\r\nx"


def test_newlines_follow_an_lf_document():
    assert normalize_newlines("f(\r\n  1)\rx", ctx("a\nb = <C>")) == "f(\n  1)\nx"


def test_newlines_default_to_lf_without_evidence():
    assert normalize_newlines("a\r\nb", ctx("x = <C>")) == "a\nb"


# --- single_line ------------------------------------------------------------------------


def test_single_line_cuts_at_first_newline():
    assert single_line("foo(1)\nbar()\n", ctx("x = <C>", mode="single")) == "foo(1)"
    assert single_line("\nbar()", ctx("x = <C>", mode="single")) == ""


def test_single_line_leaves_multi_mode_alone():
    assert single_line("foo(1)\nbar()", ctx("x = <C>")) == "foo(1)\nbar()"


# --- whole_lines (line mode: the cursor at a line's start, code after it) ------------------


@pytest.mark.parametrize(
    ("fill", "expected"),
    [
        ("    a = 1", "    a = 1\n"),  # the model ended the span inside the line: the line break is added
        ("    a = 1\n", "    a = 1\n"),
        ("    a = 1\n    b = 2\n    ", "    a = 1\n    b = 2\n"),  # the next line's indentation goes
        ("    a = 1\n\n", "    a = 1\n"),
        (" \n\t\n", ""),
    ],
)
def test_whole_lines_end_with_a_line_break(fill, expected):
    assert whole_lines(fill, ctx("def f():\n<C>    return a\n", mode="line")) == expected


def test_whole_lines_leaves_other_modes_alone():
    assert whole_lines("a = 1", ctx("def f():\n<C>    return a\n")) == "a = 1"


def test_line_mode_pipeline_keeps_the_cursor_line_intact():
    c = ctx("def f(a):\n<C>    return b\n", mode="line")
    assert run_pipeline("    b = a + 1", c) == "    b = a + 1\n"
    assert run_pipeline("    b = a + 1\r\n    return", ctx("def f(a):\r\n<C>    return b\r\n", mode="line")).endswith(
        "\r\n"
    )


# --- drop_suffix_repeat -----------------------------------------------------------------


def test_doubled_closing_bracket_is_dropped():
    assert drop_suffix_repeat("x)", ctx("print(<C>)\n")) == "x"
    assert drop_suffix_repeat("a, b))", ctx("f(g(<C>))\n")) == "a, b"


def test_closing_bracket_the_fill_needs_is_kept():
    assert drop_suffix_repeat("len(x)", ctx("print(<C>)\n")) == "len(x)"


def test_doubled_quote_and_semicolon():
    assert drop_suffix_repeat('hello"', ctx('s = "<C>"\n')) == "hello"
    assert drop_suffix_repeat('"hi"', ctx('s = <C>"\n')) == '"hi"'  # its own quotes
    assert drop_suffix_repeat("foo();", ctx("  <C>;\n", "javascript")) == "foo()"


def test_whole_fill_repeating_the_suffix_is_empty():
    assert drop_suffix_repeat(")", ctx("print(x<C>)\n")) == ""
    assert drop_suffix_repeat("\n    return x", ctx("def f(x):<C>\n    return x\n")) == ""


def test_word_prefix_of_the_suffix_is_not_a_repeat():
    assert drop_suffix_repeat("x", ctx("a = <C>xs\n")) == "x"


def test_trailing_lines_repeating_the_suffix_are_dropped():
    doc = "def f(x):\n    y = 1<C>\n    return y\n"
    assert drop_suffix_repeat("\n    z = 2\n    return y", ctx(doc)) == "\n    z = 2"


def test_repeated_closer_on_the_cursor_line_keeps_the_line_break():
    fill = drop_suffix_repeat("\n  return 1;\n}", ctx("function f() {<C>}\n", "javascript"))
    assert fill == "\n  return 1;\n"


def test_inner_closing_brace_is_not_taken_for_the_suffix_one():
    doc = "function f() {<C>\n}\n"
    fill = "\n  if (a) {\n    b();\n  }"
    assert drop_suffix_repeat(fill, ctx(doc, "javascript")) == fill


def test_closer_the_fill_opened_itself_is_kept():
    doc = "function f() {<C>\n}\n"
    fill = "\nif (a) {\nb();\n}"  # flat output: the `}` matches, but the fill opened a `{`
    assert drop_suffix_repeat(fill, ctx(doc, "javascript")) == fill


# --- fix_indentation --------------------------------------------------------------------


def test_flat_body_after_python_colon_is_indented():
    doc = "class A:\n    def f(self):<C>\n\n    def g(self):\n        pass\n"
    assert fix_indentation("\nx = 1\nreturn x", ctx(doc)) == "\n        x = 1\n        return x"


def test_relative_indentation_inside_the_fill_is_kept():
    doc = "def f(xs):\n    <C>\n    return n\n"
    fill = "n = 0\nfor x in xs:\n    n += x"
    assert fix_indentation(fill, ctx(doc)) == "n = 0\n    for x in xs:\n        n += x"


def test_correctly_indented_fill_is_unchanged():
    doc = "def f(xs):\n    <C>\n    return n\n"
    fill = "n = 0\n    for x in xs:\n        n += x"
    assert fix_indentation(fill, ctx(doc)) == fill


def test_deliberate_dedent_towards_the_suffix_is_kept():
    doc = "def f():\n    if x:\n        a = 1<C>\n    return 2\n"
    fill = "\n        b = 2\n    c = 3"
    assert fix_indentation(fill, ctx(doc)) == fill


def test_tabs_document_gets_tabs():
    doc = "package m\n\nfunc f() {\n\tif x {<C>\n\t}\n}\n"
    fill = "\n    y()\n    if z {\n        w()\n    }"
    assert fix_indentation(fill, ctx(doc, "go")) == "\n\t\ty()\n\t\tif z {\n\t\t\tw()\n\t\t}"


def test_spaces_document_gets_spaces():
    doc = "fn main() {\n    let a = 1;<C>\n}\n"
    fill = "\n\tlet b = a;\n\tif b > 0 {\n\t\tprint(b);\n\t}"
    expected = "\n    let b = a;\n    if b > 0 {\n        print(b);\n    }"
    assert fix_indentation(fill, ctx(doc, "rust")) == expected


def test_closing_lines_do_not_set_the_shift():
    # body at 2, `end` at 0 in the fill; the block wants 4: the body decides the shift
    # (+2) and `end` keeps its place relative to it. Were `end` counted, both would move +4.
    doc = "if a then\n  local function f(b)<C>\n  end\nend\n"
    assert fix_indentation("\n  return b\nend", ctx(doc, "lua")) == "\n    return b\n  end"


def test_single_line_fill_is_untouched_by_indentation():
    assert fix_indentation("  x", ctx("    <C>\n")) == "  x"


# --- trim_trailing_whitespace -----------------------------------------------------------


def test_trailing_whitespace_and_blank_lines_are_trimmed_before_a_newline():
    assert trim_trailing_whitespace("a = 1  \nb = 2 \n\n  \n", ctx("<C>\nc = 3\n")) == "a = 1\nb = 2"


def test_last_line_keeps_its_whitespace_when_text_follows():
    assert trim_trailing_whitespace("x = 1\n    ", ctx("<C>return x\n")) == "x = 1\n    "
    assert trim_trailing_whitespace("a  \nb ", ctx("<C>+ c\n")) == "a\nb "


def test_trailing_newline_kept_when_suffix_continues_on_the_line():
    assert trim_trailing_whitespace("x = 1\n", ctx("<C>y = 2\n")) == "x = 1\n"


# --- run_pipeline -----------------------------------------------------------------------


def test_pipeline_single_mode_cuts_then_drops_doubled_bracket():
    c = ctx("print(foo(<C>))\n", mode="single")
    assert run_pipeline("x))\nbar()", c) == "x"


def test_pipeline_multi_crlf_document():
    c = ctx("def f(x):\r\n    <C>\r\n    return y\r\n")
    out = run_pipeline("y = x * 2  \r\nassert y\r\nreturn y", c)
    assert out == "y = x * 2\r\n    assert y"


@pytest.mark.parametrize("mode", ["single", "multi"])
def test_pipeline_empty_fill_stays_empty(mode):
    assert run_pipeline("", ctx("x = <C>\n", mode=mode)) == ""


def test_blank_line_fill_may_dedent_to_the_suffix_and_its_repeat_is_dropped():
    doc = "def mean(xs):\n    total = 0\n    for x in xs:\n        <C>\n    return total / len(xs)\n"
    fill = "total += x\n    return total / len(xs)"
    assert fix_indentation(fill, ctx(doc)) == fill
    assert run_pipeline(fill, ctx(doc)) == "total += x"


# --- end_before_closer ------------------------------------------------------------------


def test_closer_after_the_hole_gets_its_own_line():
    c = ctx("class A {\n  m() {<C>}\n}\n", "javascript")
    assert end_before_closer("\n    return 1;", c) == "\n    return 1;\n  "
    assert end_before_closer("\n    return 1;\n", c) == "\n    return 1;\n  "
    assert end_before_closer("\n    return 1;\n      ", c) == "\n    return 1;\n  "


def test_closer_rule_leaves_single_line_fills_and_other_suffixes():
    c = ctx("function f() {<C>}\n", "javascript")
    assert end_before_closer(" return 1; ", c) == " return 1; "
    c = ctx("x = [<C>\n]\n")
    assert end_before_closer("\n    1,\n    2,", c) == "\n    1,\n    2,"


def test_lua_end_after_the_hole():
    c = ctx("local function f(a)<C>end\n", "lua")
    assert run_pipeline("\n  return a", c) == "\n  return a\n"


def test_pipeline_drops_replacement_characters_from_partial_utf8_tokens():
    from canvas_ls.server.pipeline import _finish

    text = "x = \n"
    edits, _ = _finish(text, [(4, 4)], ("out\ufffd\x11 + 1",), "python", "single")
    assert edits and edits[0].text == "out + 1"


# --- newline_after_held_line --------------------------------------------------------------


def test_fill_after_a_docstring_starts_on_a_new_line():
    from canvas_ls.server.syntax.postprocess import newline_after_held_line

    c = ctx('def f(n):\n    """Doc."""<C>\n\n\nx = 1\n')
    assert newline_after_held_line("alue\nreturn n", c) == "\nalue\nreturn n"
    assert newline_after_held_line("\nreturn n", c) == "\nreturn n"  # already on its own line
    assert newline_after_held_line(".strip()", c) == "\n.strip()"
    # a multi-line docstring's closing line, and a comment held after the docstring
    c = ctx('def f(n):\n    """Doc.\n\n    More.\n    """<C>\n')
    assert newline_after_held_line("alue", c) == "\nalue"
    c = ctx('def f(n):\n    """Doc."""  # note<C>\n')
    assert newline_after_held_line("return n", c) == "\nreturn n"
    c = ctx("def f(n):  # note<C>\n")
    assert newline_after_held_line("return n", c) == "\nreturn n"


def test_fill_after_an_ordinary_string_or_comment_is_left_alone():
    from canvas_ls.server.syntax.postprocess import newline_after_held_line

    assert newline_after_held_line(' + "b"', ctx('x = "a"<C>\n')) == ' + "b"'
    assert newline_after_held_line("ute the sum", ctx("x = 1  # comp<C>\n")) == "ute the sum"
    assert newline_after_held_line("more", ctx('"""Doc."""<C>\n', mode="single")) == "more"
    assert newline_after_held_line("more", ctx('"""Doc."""<C>\n', lang="javascript")) == "more"


def test_a_comment_on_the_def_line_still_opens_the_block():
    c = ctx("def f(n):  # note<C>\n\n\nx = 1\n")
    assert run_pipeline("y = n\nreturn y", c) == "\n    y = n\n    return y"


def test_stray_control_characters_and_replacement_chars_are_dropped_unless_the_document_has_them():
    from canvas_ls.server.syntax.postprocess import drop_stray_characters

    ctx = FillContext(prefix="x = ", suffix="\n", lang="python", mode="single")
    assert drop_stray_characters("a\x00b\ufffdc\x1b", ctx) == "abc"
    assert drop_stray_characters("a\tb\n", ctx) == "a\tb\n"  # tab and newline are text
    tabbed = FillContext(prefix="s = '\x1b[0m' + ", suffix="\n", lang="python", mode="single")
    assert drop_stray_characters("'\x1b'", tabbed) == "'\x1b'"  # the document holds ESC already


def test_no_double_space_after_a_line_that_ends_with_one():
    from canvas_ls.server.syntax.postprocess import no_double_space

    ctx = FillContext(prefix="def f():\n    return ", suffix="\n", lang="python", mode="single")
    assert no_double_space(' " case"', ctx) == '" case"'
    assert no_double_space('" case"', ctx) == '" case"'
    bare = FillContext(prefix="def f():\n    return", suffix="\n", lang="python", mode="single")
    assert no_double_space(" 1", bare) == " 1"  # the space is needed there
    blank = FillContext(prefix="def f():\n    ", suffix="\n", lang="python", mode="multi")
    assert no_double_space("  x = 1", blank) == "  x = 1"  # only indentation before: not a double space


def test_every_filter_can_be_switched_off_by_name():
    raw = "x))"
    ctx = FillContext(prefix="print(f(", suffix="))\n", lang="python", mode="single")
    assert run_pipeline(raw, ctx) == "x"
    assert run_pipeline(raw, ctx, frozenset({"drop_suffix_repeat"})) == "x))"
