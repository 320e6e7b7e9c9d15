"""Which tree-sitter grammar a document uses, and parsing with one cached parser per language.

Grammars come from the per-language wheels (tree-sitter-python, ...), never from a bundle
package, so only what pyproject.toml pins is loaded.
"""

from __future__ import annotations

import os
import threading
from functools import cache
from typing import Callable

import tree_sitter

SUPPORTED = ("python", "javascript", "typescript", "tsx", "go", "rust", "lua")

_LANGUAGE_IDS = {
    "python": "python",
    "javascript": "javascript",
    "javascriptreact": "javascript",  # the JS grammar parses JSX
    "typescript": "typescript",
    "typescriptreact": "tsx",
    "tsx": "tsx",
    "go": "go",
    "rust": "rust",
    "lua": "lua",
}

_EXTENSIONS = {
    ".py": "python",
    ".pyi": "python",
    ".js": "javascript",
    ".mjs": "javascript",
    ".cjs": "javascript",
    ".jsx": "javascript",
    ".ts": "typescript",
    ".mts": "typescript",
    ".cts": "typescript",
    ".tsx": "tsx",
    ".go": "go",
    ".rs": "rust",
    ".lua": "lua",
}


def language_for(language_id: str | None, path: str | None) -> str | None:
    """Grammar name for an LSP languageId, falling back to the file extension; None if unsupported."""
    if language_id and language_id.lower() in _LANGUAGE_IDS:
        return _LANGUAGE_IDS[language_id.lower()]
    if path:
        return _EXTENSIONS.get(os.path.splitext(path)[1].lower())
    return None


def _grammar(lang: str) -> Callable[[], object]:
    # Imported lazily: a session editing only Python never loads the Rust grammar.
    if lang == "python":
        import tree_sitter_python as m

        return m.language
    if lang == "javascript":
        import tree_sitter_javascript as m

        return m.language
    if lang in ("typescript", "tsx"):
        import tree_sitter_typescript as m

        return m.language_typescript if lang == "typescript" else m.language_tsx
    if lang == "go":
        import tree_sitter_go as m

        return m.language
    if lang == "rust":
        import tree_sitter_rust as m

        return m.language
    if lang == "lua":
        import tree_sitter_lua as m

        return m.language
    raise ValueError(f"unsupported language {lang!r}; expected one of {SUPPORTED}")


@cache
def language(lang: str) -> tree_sitter.Language:
    return tree_sitter.Language(_grammar(lang)())


@cache
def _parser(lang: str) -> tuple[tree_sitter.Parser, threading.Lock]:
    # A Parser keeps mutable state, so callers on different threads take turns.
    return tree_sitter.Parser(language(lang)), threading.Lock()


def parse(text: str, lang: str, old_tree: tree_sitter.Tree | None = None) -> tree_sitter.Tree:
    """Parse ``text`` (as UTF-8) with the cached parser for ``lang``; ``old_tree``, already
    edited to match ``text``, lets tree-sitter reuse its unchanged parts."""
    parser, lock = _parser(lang)
    data = text.encode("utf-8")
    with lock:
        return parser.parse(data) if old_tree is None else parser.parse(data, old_tree)
