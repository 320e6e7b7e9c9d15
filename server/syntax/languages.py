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
import tree_sitter_go
import tree_sitter_javascript
import tree_sitter_lua
import tree_sitter_python
import tree_sitter_rust
import tree_sitter_typescript

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


_GRAMMARS: dict[str, Callable[[], object]] = {
    "python": tree_sitter_python.language,
    "javascript": tree_sitter_javascript.language,
    "typescript": tree_sitter_typescript.language_typescript,
    "tsx": tree_sitter_typescript.language_tsx,
    "go": tree_sitter_go.language,
    "rust": tree_sitter_rust.language,
    "lua": tree_sitter_lua.language,
}


def _grammar(lang: str) -> Callable[[], object]:
    # The grammar wheels are small native modules; each Language is built on first use (language()).
    if lang not in _GRAMMARS:
        raise ValueError(f"unsupported language {lang!r}; expected one of {SUPPORTED}")
    return _GRAMMARS[lang]


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
