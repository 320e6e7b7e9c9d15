"""The open documents' text, changed in time proportional to the edit, not to the document.

pygls 2.1's TextDocument applies an incremental change by splitting the whole text into lines and
joining them again: 110-145 ms and a transient copy of every line for one keystroke on a 7.5 MB file.
Here a change is two slices of the text, and the document keeps its line starts (an array of offsets,
4 bytes a line) up to date, so an LSP position becomes an offset without a scan.

CanvasProtocol (server/protocol_fixes.py) makes pygls's workspace create these documents.
"""

from __future__ import annotations

from array import array
from bisect import bisect_right

from lsprotocol import types as t
from pygls.workspace import TextDocument, Workspace

from .positions import line_starts, units_before


class Document(TextDocument):
    """pygls's TextDocument (uri, version, language_id, source) with O(edit) incremental changes and
    `starts`, the offset of each line (lines end at "\\n", as LSP counts them for "\\r\\n")."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._starts: array | None = None
        # (start, end, new text) char edits applied since `take_edits`, in order; None after a whole-text
        # change. The syntax tree follows the document with them (server/documents.py).
        self._edits: list[tuple[int, int, str]] | None = []

    @property
    def starts(self) -> array:
        """array('I') of line-start offsets, computed once and then kept in step with each change (each
        change makes a new array, so one read stays true of the version it was read from)."""
        if self._starts is None:
            self._starts = array("I", line_starts(self.source))
        return self._starts

    def offset_of(self, line: int, character: int) -> int:
        """The offset of an LSP position, clamped into the document as the LSP spec says: past a line's
        end is that end (before its "\r\n"), past the last line is the document's end; a position
        inside a surrogate pair means the character's start."""
        text, starts = self.source, self.starts
        if line >= len(starts):
            return len(text)
        begin = starts[line]
        end = starts[line + 1] - 1 if line + 1 < len(starts) else len(text)
        if end > begin and text[end - 1] == "\r" and end < len(text):
            end -= 1  # a line's content ends before its "\r\n"
        return begin + units_before(text[begin:end], max(character, 0), self._encoding())

    def _encoding(self) -> str:
        enc = self._position_codec.encoding
        return str(getattr(enc, "value", enc))

    def _apply_incremental_change(self, change: t.TextDocumentContentChangePartial) -> None:
        text, starts = self.source, self.starts
        start = self.offset_of(change.range.start.line, change.range.start.character)
        end = max(start, self.offset_of(change.range.end.line, change.range.end.character))
        new = change.text
        self._source = text[:start] + new + text[end:]
        if self._edits is not None:
            self._edits.append((start, end, new))
        # Line starts: those up to the edit stay, the edit's own are added, those after it shift.
        first = bisect_right(starts, start) - 1
        last = bisect_right(starts, end) - 1
        delta = len(new) - (end - start)
        added = array("I")
        i = new.find("\n")
        while i != -1:
            added.append(start + i + 1)
            i = new.find("\n", i + 1)
        tail = array("I", map(delta.__add__, starts[last + 1 :])) if delta else starts[last + 1 :]
        # A new array, never changed in place: a fill holds the starts of the version it began from.
        self._starts = starts[: first + 1] + added + tail

    def _apply_full_change(self, change: t.TextDocumentContentChangeEvent) -> None:
        super()._apply_full_change(change)
        self._starts = None
        self._edits = None

    def take_edits(self) -> list[tuple[int, int, str]] | None:
        """The edits applied since the last call (None: the whole text was replaced), and forget them."""
        edits, self._edits = self._edits, []
        return edits


class CanvasWorkspace(Workspace):
    """pygls's Workspace holding `Document`s."""

    @classmethod
    def like(cls, other: Workspace) -> CanvasWorkspace:
        return cls(
            other.root_uri,
            other._sync_kind,
            list(other.folders.values()),
            other.position_encoding,
        )

    def _create_text_document(self, doc_uri, source=None, version=None, language_id=None) -> Document:
        return Document(
            doc_uri,
            source=source,
            version=version,
            language_id=language_id,
            sync_kind=self._sync_kind,
            position_codec=self._position_codec,
        )
