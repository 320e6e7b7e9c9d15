"""Lexical block openers/closers, shared by completion_mode and fix_indentation.

These look at text only (no tree) because the line being typed is usually not parseable
yet: ``def f():`` with no body is an ERROR to tree-sitter but clearly opens a block.
"""

from __future__ import annotations

import re

_LUA_OPENER = re.compile(r"(?:\b(?:then|do|else|repeat)|\bfunction\b[\w.:\s]*\([^()]*\)|\{)$")
_LAMBDA_HEAD = re.compile(r"\blambda\b[^:]*:$")
_PAIRS = {"(": ")", "[": "]", "{": "}"}
# Lines starting with these close a block (or continue it one level out), so they sit
# one indentation unit left of the block's body.
CLOSING_LINE = re.compile(r"^(?:[}\])]|(?:end|else|elif|elseif|except|finally|until|case|default|catch)\b)")


def opens_block(code: str, lang: str | None) -> bool:
    """Does ``code`` (text before the cursor, or a whole line) end by opening a block?

    Python: a trailing ``:`` with balanced brackets, not ending a ``lambda`` head.
    Lua: ``then``/``do``/``else``/``repeat``/a ``function(...)`` header or ``{``.
    Other languages: a trailing ``{``. Unknown language: ``{`` or ``:``.
    """
    code = code.rstrip()
    if lang == "python":
        return code.endswith(":") and net_open(code) == 0 and not _LAMBDA_HEAD.search(code)
    if lang == "lua":
        return bool(_LUA_OPENER.search(code))
    if lang is None:
        return code.endswith(("{", ":"))
    return code.endswith("{")


def net_open(code: str) -> int:
    """Opening minus closing brackets, counted lexically (strings are not skipped)."""
    return sum(code.count(o) - code.count(c) for o, c in _PAIRS.items())
