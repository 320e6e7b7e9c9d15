import pytest

from canvas_ls.server.syntax import SUPPORTED, language_for, parse
from canvas_ls.server.syntax.languages import _parser
from canvas_ls.server.syntax.offsets import Offsets


@pytest.mark.parametrize(
    ("language_id", "path", "expected"),
    [
        ("python", None, "python"),
        ("javascriptreact", None, "javascript"),
        ("typescriptreact", "a.ts", "tsx"),  # languageId wins over the extension
        ("TypeScript", None, "typescript"),
        (None, "/x/y/mod.pyi", "python"),
        ("plaintext", "lib.MJS", "javascript"),
        (None, "a.cts", "typescript"),
        (None, "c.tsx", "tsx"),
        (None, "main.go", "go"),
        (None, "lib.rs", "rust"),
        (None, "init.lua", "lua"),
        ("markdown", "README.md", None),
        (None, None, None),
    ],
)
def test_language_for(language_id, path, expected):
    assert language_for(language_id, path) == expected


@pytest.mark.parametrize("lang", SUPPORTED)
def test_every_language_parses_and_the_parser_is_cached(lang):
    tree = parse("x", lang)
    assert tree.root_node is not None
    assert _parser(lang) is _parser(lang)


def test_unknown_language_raises():
    with pytest.raises(ValueError):
        parse("x", "cobol")


def test_offsets_round_trip_non_ascii():
    text = "a\u00e9b\u4e2dc\U0001f600d"
    off = Offsets(text)
    data = text.encode("utf-8")
    for i in range(len(text) + 1):
        b = off.to_byte(i)
        assert data[:b].decode("utf-8") == text[:i]
        assert off.to_char(b) == i
    assert off.n_bytes == len(data)
