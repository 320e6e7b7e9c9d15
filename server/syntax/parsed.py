"""A parsed document: the tree plus the char<->byte map, and node lookups in char offsets."""

from __future__ import annotations

import threading

import tree_sitter

from canvas_ls.model.cache_budget import shared_budget, text_bytes

from .languages import parse
from .offsets import Offsets
from .span import Span, line_start


class Parsed:
    __slots__ = ("text", "lang", "tree", "offsets")

    def __init__(self, text: str, lang: str, old_tree: tree_sitter.Tree | None = None) -> None:
        self.text = text
        self.lang = lang
        self.tree = parse(text, lang, old_tree)
        self.offsets = Offsets(text)

    @classmethod
    def of(cls, text: str, lang: str, tree: tree_sitter.Tree) -> "Parsed":
        """A Parsed around a tree already made for `text`."""
        p = cls.__new__(cls)
        p.text, p.lang, p.tree, p.offsets = text, lang, tree, Offsets(text)
        return p

    @property
    def root(self) -> tree_sitter.Node:
        return self.tree.root_node

    def span(self, node: tree_sitter.Node) -> Span:
        return Span(self.offsets.to_char(node.start_byte), self.offsets.to_char(node.end_byte))

    def start(self, node: tree_sitter.Node) -> int:
        return self.offsets.to_char(node.start_byte)

    def end(self, node: tree_sitter.Node) -> int:
        return self.offsets.to_char(node.end_byte)

    def path_at(self, offset: int) -> list[tree_sitter.Node]:
        """Nodes from the root down to the smallest one at ``offset``.

        A cursor sits between characters, so at a boundary we prefer the node that ends
        there (the token just typed) over the one that starts there.
        """
        b = self.offsets.to_byte(offset)
        path = [self.root]
        while True:
            inside = ending = starting = None
            for child in path[-1].children:
                if child.start_byte < b < child.end_byte:
                    inside = child
                    break
                if child.end_byte == b and child.start_byte < b:
                    ending = child
                elif child.start_byte == b and starting is None:
                    starting = child
                elif child.start_byte > b:
                    break
            nxt = inside or ending or starting
            if nxt is None:
                return path
            path.append(nxt)


# Texts that are no open document's (windows the judge cuts, fills being tried) are parsed on demand
# and only the last few are kept. A tree takes ~50x its text for dense code (measured: 360 MB for a
# 7.5 MB Python file), so a document over TREE_BYTES keeps none: callers parse a window around the
# cursor instead (pipeline.local_window). Nearly every source file is under it.
# Both kinds of tree are kept in the process's cache budget (model/cache_budget.py): an open document's
# tree may be dropped for room (its next question parses it afresh), and a closed document's go at once.
TREE_BYTES = 256_000
TREE_BYTES_PER_BYTE = 48  # what a tree takes per byte of its text (tracemalloc: 30-48x for Python)
_RECENT = 4
RECENT_SPACE = "parse trees of windows"
DOCUMENT_SPACE = "parse trees of open documents"
_lock = threading.Lock()


def tree_bytes(text: str) -> int:
    """What keeping `text` with its tree and offsets costs, as the cache budget counts it."""
    return text_bytes(text) + TREE_BYTES_PER_BYTE * (len(text) if text.isascii() else len(text.encode("utf-8")))


class DocumentTree:
    """One open document's tree, edited in place on every change (Tree.edit) and re-parsed
    incrementally when a feature next asks for it. Its tree counts against the cache budget: dropped
    for room (`drop_tree`), the next question parses the text afresh."""

    __slots__ = ("uri", "lang", "text", "tree", "stale", "parsed", "__weakref__")

    def __init__(self, text: str, lang: str, uri: str = "") -> None:
        self.uri, self.lang, self.text, self.tree, self.stale, self.parsed = uri, lang, text, None, True, None

    def drop_tree(self) -> None:
        """The cache budget's need for room: keep the text, let the tree go."""
        self.tree, self.parsed, self.stale = None, None, True

    def change(self, start: int, end: int, new: str) -> None:
        """text[start:end] (char offsets) became `new`."""
        old = self.text
        self.text = old[:start] + new + old[end:]
        if self.tree is not None:
            offsets = self.parsed.offsets if self.parsed is not None and not self.stale else Offsets(old)
            first = offsets.to_byte(start)
            self.tree.edit(
                start_byte=first,
                old_end_byte=offsets.to_byte(end),
                new_end_byte=first + len(new.encode("utf-8")),
                start_point=_point(old, start),
                old_end_point=_point(old, end),
                new_end_point=_point(self.text, start + len(new)),
            )
        self.stale, self.parsed = True, None

    def current(self) -> Parsed:
        if self.stale or self.parsed is None:
            tree = parse(self.text, self.lang, self.tree)  # incremental when there was a tree
            self.tree, self.parsed, self.stale = tree, Parsed.of(self.text, self.lang, tree), False
            parsed_now = self.parsed
            shared_budget().put(
                DOCUMENT_SPACE, self.uri, self, tree_bytes(self.text), owner=self.uri, on_drop=DocumentTree.drop_tree
            )
            return parsed_now  # what was parsed, even if the budget had no room to keep it
        return self.parsed


class DocumentTrees:
    """The trees of the open documents (up to TREE_BYTES each), keyed by URI; freed on close. parsed()
    finds a document's tree by its text, so the syntax functions need no URI."""

    def __init__(self) -> None:
        self._docs: dict[str, DocumentTree] = {}

    def open(self, uri: str, text: str, lang: str | None) -> None:
        with _lock:
            self._docs.pop(uri, None)
            shared_budget().pop(DOCUMENT_SPACE, uri)
            if lang is not None and len(text) <= TREE_BYTES:
                self._docs[uri] = DocumentTree(text, lang, uri)

    def change(self, uri: str, edits: list[tuple[int, int, str]], text: str, lang: str | None) -> None:
        """Apply a didChange: (start, end, new text) char edits in order, then check against the
        document's own new text; anything unexpected starts the document's tree afresh."""
        with _lock:
            doc = self._docs.get(uri)
            if doc is None or lang != doc.lang:
                pass
            else:
                for start, end, new in edits:
                    doc.change(start, end, new)
                if doc.text == text:
                    return
        self.open(uri, text, lang)

    def text_of(self, uri: str) -> str | None:
        doc = self._docs.get(uri)
        return doc.text if doc is not None else None

    def close(self, uri: str) -> None:
        with _lock:
            self._docs.pop(uri, None)
            shared_budget().pop(DOCUMENT_SPACE, uri)

    def find(self, text: str, lang: str) -> DocumentTree | None:
        for doc in self._docs.values():
            if doc.lang == lang and len(doc.text) == len(text) and (doc.text is text or doc.text == text):
                return doc
        return None

    def __len__(self) -> int:
        return len(self._docs)

    def parsed_count(self) -> int:
        """Documents whose tree is held right now (for status and the soak benchmark)."""
        return sum(1 for d in self._docs.values() if d.tree is not None)


documents = DocumentTrees()


def parsed(text: str, lang: str) -> Parsed:
    """The parse of `text`: an open document's own tree when it is one (incrementally up to date), else
    parsed now (the last few kept: completion_mode and function_body often ask about the same text)."""
    budget = shared_budget()
    with _lock:
        doc = documents.find(text, lang)
        if doc is not None:
            return doc.current()
    hit = budget.get(RECENT_SPACE, (lang, text))
    if hit is not None:
        return hit
    p = Parsed(text, lang)
    if len(text) <= TREE_BYTES:
        budget.put(RECENT_SPACE, (lang, text), p, tree_bytes(text), max_entries=_RECENT)
    return p


def edited(base: Parsed, span: Span, replacement: str) -> Parsed:
    """``base`` with ``span`` replaced, parsed incrementally from base's tree: about ten
    times faster than a fresh parse for the small edits a fill makes."""
    text = base.text[: span.start] + replacement + base.text[span.end :]
    start = base.offsets.to_byte(span.start)
    tree = base.tree.copy()
    tree.edit(
        start_byte=start,
        old_end_byte=base.offsets.to_byte(span.end),
        new_end_byte=start + len(replacement.encode("utf-8")),
        start_point=_point(base.text, span.start),
        old_end_point=_point(base.text, span.end),
        new_end_point=_point(text, span.start + len(replacement)),
    )
    return Parsed(text, base.lang, old_tree=tree)


def _point(text: str, offset: int) -> tuple[int, int]:
    """tree-sitter's (row, byte column) for a char offset."""
    return text.count("\n", 0, offset), len(text[line_start(text, offset) : offset].encode("utf-8"))
