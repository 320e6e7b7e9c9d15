"""server/text_store.py: incremental changes by slicing, with line starts kept in step, agree with
pygls's own TextDocument on every edit an editor sends, in each position encoding."""

from __future__ import annotations

import random

import pytest
from lsprotocol import types as t
from pygls.workspace import Workspace

from canvas_ls.server.positions import line_starts
from canvas_ls.server.text_store import CanvasWorkspace, Document

PIECES = ["a", "bc", "def ", "\n", "\r\n", "    ", "é", "😀", "中", "x = 1\n", ""]


def _units(s: str, enc: str) -> int:
    if enc == "utf-8":
        return len(s.encode())
    if enc == "utf-32":
        return len(s)
    return len(s.encode("utf-16-le")) // 2


def _random_position(text: str, rng: random.Random, enc: str) -> t.Position:
    """A position between two characters of a line (never inside its "\r\n")."""
    lines = text.split("\n")
    line = rng.randrange(len(lines))
    content = lines[line].removesuffix("\r")
    k = rng.randint(0, len(content))
    return t.Position(line=line, character=_units(content[:k], enc))


@pytest.mark.parametrize("enc", ["utf-16", "utf-8", "utf-32"])
def test_random_edits_match_pygls_and_keep_line_starts(enc):
    rng = random.Random(7)
    text = "".join(rng.choice(PIECES) for _ in range(300))
    ours = CanvasWorkspace(None, position_encoding=enc)
    theirs = Workspace(None, position_encoding=enc)
    for ws in (ours, theirs):
        ws.put_text_document(t.TextDocumentItem(uri="file:///a.py", language_id="python", version=1, text=text))
    doc = ours.get_text_document("file:///a.py")
    assert isinstance(doc, Document)
    for version in range(2, 400):
        a, b = _random_position(doc.source, rng, enc), _random_position(doc.source, rng, enc)
        if (a.line, a.character) > (b.line, b.character):
            a, b = b, a
        new = "".join(rng.choice(PIECES) for _ in range(rng.randint(0, 4)))
        change = t.TextDocumentContentChangePartial(range=t.Range(start=a, end=b), text=new)
        ident = t.VersionedTextDocumentIdentifier(uri="file:///a.py", version=version)
        held, before = doc.starts, doc.source
        for ws in (ours, theirs):
            ws.update_text_document(ident, change)
        [(start, end, text_in)] = doc.take_edits()  # what the syntax tree replays
        assert before[:start] + text_in + before[end:] == doc.source
        assert doc.source == theirs.get_text_document("file:///a.py").source, (version, a, b, new)
        assert list(doc.starts) == line_starts(doc.source)
        assert doc.version == version
        assert doc.starts is not held  # a reader keeps the starts of the version it read


def test_positions_past_a_line_or_the_document_are_clamped_as_the_spec_says():
    """LSP: a character past the line's length means the line's end (before its "\r\n"); past the
    last line, the document's end. (pygls's own TextDocument put it before the last line's last
    character.)"""
    ws = CanvasWorkspace(None)
    ws.put_text_document(t.TextDocumentItem(uri="file:///d.py", language_id="python", version=1, text="ab\r\ncd\nef"))
    doc = ws.get_text_document("file:///d.py")
    assert doc.offset_of(0, 99) == 2 and doc.offset_of(1, 99) == 6 and doc.offset_of(2, 99) == 9
    assert doc.offset_of(7, 0) == len(doc.source)
    at = t.Position(line=0, character=99)
    change = t.TextDocumentContentChangePartial(range=t.Range(start=at, end=at), text="!")
    ws.update_text_document(t.VersionedTextDocumentIdentifier(uri="file:///d.py", version=2), change)
    assert doc.source == "ab!\r\ncd\nef" and list(doc.starts) == [0, 5, 8]
    at = t.Position(line=2, character=99)
    change = t.TextDocumentContentChangePartial(range=t.Range(start=at, end=at), text="!")
    ws.update_text_document(t.VersionedTextDocumentIdentifier(uri="file:///d.py", version=3), change)
    assert doc.source == "ab!\r\ncd\nef!"


def test_full_change_recounts_lines():
    ws = CanvasWorkspace(None)
    ws.put_text_document(t.TextDocumentItem(uri="file:///b.py", language_id="python", version=1, text="a\nb\n"))
    doc = ws.get_text_document("file:///b.py")
    assert list(doc.starts) == [0, 2, 4]
    ident = t.VersionedTextDocumentIdentifier(uri="file:///b.py", version=2)
    ws.update_text_document(ident, t.TextDocumentContentChangeWholeDocument(text="one line"))
    assert doc.source == "one line" and list(doc.starts) == [0]
    assert doc.take_edits() is None and doc.take_edits() == []  # the tree starts afresh, once


def test_a_keystroke_deep_in_a_big_document_lands_at_its_position():
    text = "def f(x):\n    return x\n\n" * 20_000
    ws = CanvasWorkspace(None)
    ws.put_text_document(t.TextDocumentItem(uri="file:///c.py", language_id="python", version=1, text=text))
    doc = ws.get_text_document("file:///c.py")
    at = t.Position(line=59_989, character=4)
    change = t.TextDocumentContentChangePartial(range=t.Range(start=at, end=at), text="x")
    ws.update_text_document(t.VersionedTextDocumentIdentifier(uri="file:///c.py", version=2), change)
    assert doc.source[doc.starts[59_989] : doc.starts[59_990]] == "    xreturn x\n"
    assert len(doc.source) == len(text) + 1 and doc.starts[-1] == len(text) + 1
