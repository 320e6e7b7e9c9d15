import pytest

from canvas_ls.server.syntax import completion_mode

CURSOR = "<C>"


def mode(doc: str, lang: str) -> str:
    offset = doc.index(CURSOR)
    return completion_mode(doc.replace(CURSOR, "", 1), lang, offset)


@pytest.mark.parametrize(
    ("doc", "lang", "expected"),
    [
        # rule 0: the start of a line with code after the cursor -> whole lines above it
        ("def f():\n    a = 1\n<C>    return a\n", "python", "line"),  # HumanEval-Infilling's holes
        ("x = 1\n<C>def f():\n    pass\n", "python", "line"),
        ("<C>}\n", "javascript", "line"),
        ('s = """\n<C>text\n"""\n', "python", "none"),  # inside a string: rules 1-2 as before
        ('s = """\n<C> text\n"""\n', "python", "single"),
        # rule 1: a word character right after the cursor -> none
        ("foo = ba<C>r\n", "python", "none"),
        ("x = (<C>bar)\n", "python", "none"),
        ("# a comm<C>ent\n", "python", "none"),
        ("let n = 1<C>2;\n", "rust", "none"),
        # ...except Lua's `end` right after an empty block opener
        ("function f(a)<C>end\n", "lua", "multi"),
        # rule 2: comments and strings -> single
        ("x = 1  # explain <C>\n", "python", "single"),
        ("x = 1  # explain<C>\n", "python", "single"),  # end of a line comment
        ('def f():\n    """Doc.\n\n    <C>\n    """\n', "python", "single"),
        ('s = "hello <C>"\n', "python", "single"),
        ("const s = `a ${<C>} b`;\n", "javascript", "single"),  # text before the cursor
        ("/* block <C> */\n", "javascript", "single"),
        ("-- note <C>\n", "lua", "single"),
        ("package m\n// doc <C>\n", "go", "single"),
        # rule 3a: blank line after a block opener -> multi
        ("if x:\n    <C>\n", "python", "multi"),
        ("if x:  # why\n    <C>\n", "python", "multi"),  # trailing comment ignored
        ("if (x) {\n  <C>\n}\n", "javascript", "multi"),
        ("for i = 1, 3 do\n  <C>\nend\n", "lua", "multi"),
        # rule 3b: text before the cursor opens a block, nothing (or the closer) after
        ("def f():<C>\n", "python", "multi"),
        ("function f() {<C>}\n", "javascript", "multi"),
        ("fn main() {<C>\n}\n", "rust", "multi"),
        ("if a then<C>\n", "lua", "multi"),
        ("f = lambda x:<C>\n", "python", "single"),  # a lambda's colon opens no block
        ("f(lambda x:<C>)\n", "python", "single"),  # brackets not balanced: not a block
        # rule 4: blank line inside a function body -> multi
        ("def f():\n    a = 1\n    <C>\n    return a\n", "python", "multi"),
        ("def f():\n    a = 1\n    <C>\n", "python", "multi"),  # below the last statement
        ("package m\n\nfunc f() {\n\ta := 1\n\t<C>\n\t_ = a\n}\n", "go", "multi"),
        ("fn f() {\n    let a = 1;\n    <C>\n}\n", "rust", "multi"),
        ("local function f()\n  local a = 1\n  <C>\nend\n", "lua", "multi"),
        ("class A {\n  m() {\n    foo();\n    <C>\n  }\n}\n", "typescript", "multi"),
        # rule 5: everything else -> single
        ("x = 1\n<C>\ny = 2\n", "python", "single"),  # blank line at module level
        ("def f():\n    a = 1\n<C>\nx = 2\n", "python", "single"),  # column 0 after the def
        ("x = foo(<C>)\n", "python", "single"),  # text after the cursor
        ("const a = <C>\n", "javascript", "single"),
        ("\treturn a +<C>\n", "go", "single"),
        ("<C>", "python", "single"),
    ],
)
def test_completion_mode(doc, lang, expected):
    assert mode(doc, lang) == expected


def test_non_ascii_before_cursor_uses_char_offsets():
    # the string holds 3 two-byte chars; a byte-offset bug would misplace the cursor
    doc = 'x = "\u00e9\u00e9\u00e9"\ndef f():\n    a = 1\n    <C>\n    return a\n'
    assert mode(doc, "python") == "multi"
    assert mode('s = "\u00e9\u00e9 <C>x"\n', "python") == "none"
    assert mode('s = "\u00e9\u00e9 <C>."\n', "python") == "single"
