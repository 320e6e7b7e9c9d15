"""Document sync beyond pygls' own: each open document's syntax tree follows didOpen/didChange/didClose
(server/syntax/parsed.py's DocumentTrees), and a closed document's cached entries go: its prompt K/V,
and everything of its text in the cache budget (model/cache_budget.py).

Handlers take the CanvasServer (`ls`) first, as pygls handlers do; server/lsp.py registers them.
"""

from __future__ import annotations

from lsprotocol import types as t

from canvas_ls.model.cache_budget import shared_budget

from .memory import release_freed_memory, release_if_big
from .syntax.parsed import documents as trees


def did_open(ls, params: t.DidOpenTextDocumentParams) -> None:
    doc = ls.workspace.get_text_document(params.text_document.uri)
    trees.open(doc.uri, doc.source, ls.language(doc))  # parsed when a feature first asks
    release_if_big(doc.source)  # the message that carried it is freed by now


def did_change(ls, params: t.DidChangeTextDocumentParams) -> None:
    """Keep the document's tree in step: each change the document applied (server/text_store.py) edits
    it (tree-sitter's Tree.edit), so the next syntax question costs an incremental re-parse."""
    doc = ls.workspace.get_text_document(params.text_document.uri)
    edits = doc.take_edits()
    if edits is None:  # a whole-document change: start the tree afresh
        trees.open(doc.uri, doc.source, ls.language(doc))
    else:
        trees.change(doc.uri, edits, doc.source, ls.language(doc))
    release_if_big(doc.source)  # the old copy of the text was just freed (server/memory.py)


def did_close(ls, params: t.DidCloseTextDocumentParams) -> None:
    uri = params.text_document.uri
    trees.close(uri)
    if ls.host.current is not None:
        ls.host.current.forget(uri)  # the backend's own (the shared engine's prompt K/V)
    shared_budget().forget(uri)  # this process's: the document's entries and those of no document
    release_freed_memory()  # pygls dropped the text before this handler ran
