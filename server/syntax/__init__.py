"""Syntax-aware helpers for the fill pipeline: pure functions over document text.

All offsets are Python str offsets (tree-sitter's UTF-8 byte offsets are converted
internally). No LSP and no torch imports here.
"""

from .completion_mode import CompletionMode, completion_mode
from .functions import function_body
from .judge import (
    added_errors,
    apply_fills,
    cut_at_syntax_boundary,
    error_count,
    error_spans,
    fill_offsets_after,
)
from .languages import SUPPORTED, language_for, parse
from .postprocess import (
    PIPELINE,
    FillContext,
    drop_suffix_repeat,
    end_before_closer,
    fix_indentation,
    normalize_newlines,
    run_pipeline,
    single_line,
    trim_trailing_whitespace,
    whole_lines,
)
from .span import Span, line_span, line_start

__all__ = [
    "PIPELINE",
    "SUPPORTED",
    "CompletionMode",
    "FillContext",
    "Span",
    "added_errors",
    "apply_fills",
    "completion_mode",
    "cut_at_syntax_boundary",
    "drop_suffix_repeat",
    "end_before_closer",
    "error_count",
    "error_spans",
    "fill_offsets_after",
    "fix_indentation",
    "function_body",
    "language_for",
    "line_span",
    "normalize_newlines",
    "parse",
    "run_pipeline",
    "single_line",
    "line_start",
    "trim_trailing_whitespace",
    "whole_lines",
]
