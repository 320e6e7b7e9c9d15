"""Per-document syntax trees: edited in place on every change, re-parsed incrementally, equal to a
fresh parse, freed on close, never kept for documents too big to hold a tree of."""

from __future__ import annotations

import random

from canvas_ls.server.syntax.parsed import TREE_BYTES, DocumentTrees, Parsed, documents, parsed

SRC = "def f(x):\n    total = 0\n    for v in x:\n        total += v  # é\n    return total\n\n" * 20


def test_edits_keep_the_tree_equal_to_a_fresh_parse():
    trees = DocumentTrees()
    trees.open("file:///a.py", SRC, "python")
    rng = random.Random(0)
    text = SRC
    for step in range(200):
        start = rng.randrange(len(text))
        end = min(len(text), start + rng.choice([0, 0, 1, 3]))
        new = rng.choice(["", "x", "é", "(", ":\n    ", "return 1\n"])
        text = text[:start] + new + text[end:]
        trees.change("file:///a.py", [(start, end, new)], text, "python")
        if step % 20 == 0:  # a feature asks: the incrementally parsed tree is the fresh one
            doc = trees.find(text, "python")
            assert doc is not None
            assert str(doc.current().root) == str(Parsed(text, "python").root)
    assert trees.text_of("file:///a.py") == text


def test_parsed_uses_an_open_documents_tree_and_close_frees_it():
    documents.open("file:///b.py", SRC, "python")
    try:
        first = parsed(SRC, "python")
        assert parsed(SRC, "python") is first  # one tree, not a parse per question
        assert documents.parsed_count() >= 1
    finally:
        documents.close("file:///b.py")
    assert documents.text_of("file:///b.py") is None


def test_a_mismatch_starts_afresh_and_big_documents_keep_no_tree():
    trees = DocumentTrees()
    trees.open("file:///c.py", SRC, "python")
    trees.change("file:///c.py", [(0, 3, "async def")], "something else entirely", "python")
    assert trees.text_of("file:///c.py") == "something else entirely"
    big = "x = 1\n" * (TREE_BYTES // 6 + 10)
    trees.open("file:///big.py", big, "python")
    assert trees.text_of("file:///big.py") is None
    trees.open("file:///notes.txt", "plain", None)
    assert trees.text_of("file:///notes.txt") is None
