"""Document sync beyond pygls' own: each open document's syntax tree follows didOpen/didChange/didClose
(server/syntax/parsed.py's DocumentTrees), and a closed document's prompt cache is dropped.

Handlers take the CanvasServer (`ls`) first, as pygls handlers do; server/lsp.py registers them.
"""

from __future__ import annotations

from lsprotocol import types as t

from .memory import BIG_TEXT, release_freed_memory
from .pipeline import BadRequest
from .positions import to_offset
from .syntax.parsed import documents as trees


def did_open(ls, params: t.DidOpenTextDocumentParams) -> None:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    trees.open(doc.uri, doc.source, ls.language(doc))  # parsed when a feature first asks
    if len(doc.source) >= BIG_TEXT:  # the message that carried it is freed by now
        release_freed_memory()


def did_change(ls, params: t.DidChangeTextDocumentParams) -> None:
    """Keep the document's tree in step: each change edits it (tree-sitter's Tree.edit), so the next
    syntax question costs an incremental re-parse, not a full one."""
    doc = ls.workspace.get_text_document(params.text_document.uri)
    text, edits = trees.text_of(doc.uri), []
    for change in params.content_changes:
        if text is None or not isinstance(change, t.TextDocumentContentChangePartial):
            text = None  # a whole-document change: start the tree afresh
            break
        try:
            start = to_offset(text, change.range.start.line, change.range.start.character, ls.encoding)
            end = to_offset(text, change.range.end.line, change.range.end.character, ls.encoding)
        except BadRequest:
            text = None
            break
        edits.append((start, end, change.text))
        text = text[:start] + change.text + text[end:]
    if text is None:
        trees.open(doc.uri, doc.source, ls.language(doc))
    else:
        trees.change(doc.uri, edits, doc.source, ls.language(doc))
    if len(doc.source) >= BIG_TEXT:  # the old copy of a big text was just freed (server/memory.py)
        release_freed_memory()


def did_close(ls, params: t.DidCloseTextDocumentParams) -> None:
    trees.close(params.text_document.uri)
    if ls.host.current is not None:
        ls.host.current.forget(params.text_document.uri)
    release_freed_memory()  # pygls dropped the text before this handler ran
