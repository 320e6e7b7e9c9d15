"""Exact protocol behaviour, with a scripted model backend (tests/scripted_server.py) behind the real
server over stdio: known fills, so every assertion about edits, versions, progress, the live canvas and
cancellation can fail. The end-to-end tests with the real tiny model are in test_lsp.py."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException

from canvas_ls.server.client import inline_params, open_doc, stop

from .scripted import start_scripted

DOC = '''def mean(values):
    """Arithmetic mean."""
    total = 0
    for v in values:
        total += v
    return 


def scale(xs, k):
    out = []
    for x in xs:
        out.append(x * k)
    return out
'''


def _pos(line: int, character: int) -> dict:
    return {"line": line, "character": character}


async def test_inline_completion_is_the_fill_at_the_cursor():
    client = await start_scripted(fills=["total / len(values)"])
    try:
        uri = open_doc(client, DOC)
        [item] = await client.text_document_inline_completion_async(inline_params(uri, 5, 11))
        assert item.insert_text == "total / len(values)"
        assert item.range == t.Range(start=t.Position(line=5, character=11), end=t.Position(line=5, character=11))
    finally:
        await stop(client)


async def test_fill_selection_applies_one_versioned_edit_per_range():
    client = await start_scripted(fills=["1", "[0]"])
    try:
        uri = open_doc(client, DOC, version=7)
        r1 = {"start": _pos(2, 12), "end": _pos(2, 13)}  # the 0 in total = 0
        r2 = {"start": _pos(9, 10), "end": _pos(9, 12)}  # the [] in out = []
        result = await client.workspace_execute_command_async(
            t.ExecuteCommandParams(command="canvas.fillSelection", arguments=[uri, [r1, r2]])
        )
        assert (
            result["applied"] is True
            and result["edits"] == 2
            and result["forwardPasses"] == 4
            and "steps" not in result
        )
        [params] = client.applied
        [change] = params.edit.document_changes
        assert change.text_document.version == 7
        assert [
            (e.range.start.line, e.range.start.character, e.range.end.character, e.new_text) for e in change.edits
        ] == [(2, 12, 13, "1"), (9, 10, 12, "[0]")]
    finally:
        await stop(client)


async def test_fill_body_reports_progress_by_round_and_applies_the_body():
    body = "\n    return [x * k for x in xs]"
    client = await start_scripted(fills=[body], steps=3)
    try:
        uri = open_doc(client, DOC)
        result = await client.workspace_execute_command_async(
            t.ExecuteCommandParams(command="canvas.fillBody", arguments=[uri, _pos(10, 4)])
        )
        assert result["applied"] is True
        [edit] = client.applied[0].edit.document_changes[0].edits
        assert edit.new_text == body
        assert (edit.range.start.line, edit.range.start.character) == (8, 17)  # right after `def scale(xs, k):`
        assert (edit.range.end.line, edit.range.end.character) == (12, 14)  # the end of `return out`
        await asyncio.sleep(0.2)
        values = [p.value if isinstance(p.value, dict) else vars(p.value) for p in client.progress]
        fill = [v for v in values if v.get("title") == "canvas-ls: filling" or v["kind"] != "begin"]
        reports = [v["message"] for v in fill if v["kind"] == "report"]
        assert reports[-3:] == ["canvas 1/3", "canvas 2/3", "canvas 3/3"]
        assert fill[-1]["kind"] == "end"
    finally:
        await stop(client)


async def test_a_document_edited_while_filling_gets_no_stale_edit():
    client = await start_scripted(fills=["1"], steps=10, step_seconds=0.2)
    try:
        uri = open_doc(client, DOC)
        cmd = asyncio.ensure_future(
            client.workspace_execute_command_async(
                t.ExecuteCommandParams(
                    command="canvas.fillSelection", arguments=[uri, {"start": _pos(2, 12), "end": _pos(2, 13)}]
                )
            )
        )
        await asyncio.sleep(0.5)
        client.text_document_did_change(
            t.DidChangeTextDocumentParams(
                text_document=t.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[t.TextDocumentContentChangeWholeDocument(text=DOC + "\n# edited\n")],
            )
        )
        result = await asyncio.wait_for(cmd, 60)
        assert result == {"applied": False, "reason": "the document changed while filling; nothing was applied"}
        assert client.applied == []
    finally:
        await stop(client)


async def test_live_canvas_streams_each_step_then_done():
    client = await start_scripted({"liveCanvas": True}, fills=["abcd"], steps=4)
    try:
        uri = open_doc(client, DOC)
        await client.text_document_inline_completion_async(inline_params(uri, 5, 11))
        await asyncio.sleep(0.2)
        steps = [s for s in client.steps if not s.done]
        assert [s.spans[0].text for s in steps] == ["a···", "ab··", "abc·", "abcd"]
        assert [s.label for s in steps] == ["canvas 1/4", "canvas 2/4", "canvas 3/4", "canvas 4/4"]
        assert all(s.uri == uri and s.version == 1 for s in steps)
        assert all((s.spans[0].range.start.line, s.spans[0].range.start.character) == (5, 11) for s in steps)
        assert client.steps[-1].done is True
    finally:
        await stop(client)


async def test_a_superseded_request_ends_with_server_cancelled():
    client = await start_scripted(fills=["x"], steps=20, step_seconds=0.1)
    try:
        uri = open_doc(client, DOC)
        first = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(uri, 5, 11)))
        await asyncio.sleep(0.3)
        second = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(uri, 5, 11)))
        with pytest.raises(JsonRpcException) as info:
            await asyncio.wait_for(first, 30)
        assert info.value.code == t.LSPErrorCodes.ServerCancelled
        assert [i.insert_text for i in await asyncio.wait_for(second, 30)] == ["x"]
    finally:
        await stop(client)


async def test_bad_positions_keep_their_reason():
    client = await start_scripted()
    try:
        uri = open_doc(client, DOC)

        async def error_of(command, args):
            with pytest.raises(JsonRpcException) as info:
                await client.workspace_execute_command_async(t.ExecuteCommandParams(command=command, arguments=args))
            return str(info.value)

        assert "outside the document" in await error_of("canvas.fillBody", [uri, _pos(500, 0)])
        assert "past the end of line 0" in await error_of(
            "canvas.fillSelection", [uri, {"start": _pos(0, 0), "end": _pos(0, 99)}]
        )
        assert "expected an LSP position" in await error_of("canvas.fillBody", [uri, {"line": "x"}])
        assert "expected an LSP range" in await error_of("canvas.fillSelection", [uri, [1, 2]])
        assert "takes [uri, position]" in await error_of("canvas.fillBody", ["oops"])
    finally:
        await stop(client)
