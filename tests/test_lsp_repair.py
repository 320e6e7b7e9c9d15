"""canvas.repairSelection over stdio with the scripted model (tests/scripted_server.py): a repair request
changes the low-probability text it names and nothing else, so every assertion about the edit, the
"nothing to repair" answer, the version rules, the code action and the live canvas is exact."""

from __future__ import annotations

import asyncio
import json
import os
import sys

import pytest
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException

from canvas_ls.model.interface import FillResult
from canvas_ls.server.client import open_doc, start, stop
from canvas_ls.server.fill_report import fill_json
from canvas_ls.server.pipeline import FillOutcome

from .scripted import SCRIPTED_SERVER

DOC = '''def mean(values):
    """Arithmetic mean."""
    total = 0
    for v in values:
        totl += v
    return total / len(values)
'''
SELECTION = {"start": {"line": 2, "character": 0}, "end": {"line": 5, "character": 0}}  # the three body lines
TYPO = {"old": "totl", "new": "total", "p": 0.01}  # the model finds `totl` unlikely
LIKELY = {"old": "values", "new": "items", "p": 0.5}  # above the default threshold (0.05): kept


async def _start(repairs, init_options=None, steps=3, step_seconds=0.0, can_repair=True):
    script = {"fills": ["FILL"], "steps": steps, "step_seconds": step_seconds, "repairs": repairs}
    script["can_repair"] = can_repair
    env = {**os.environ, "CANVAS_SCRIPT": json.dumps(script)}
    return await start(init_options or {}, env=env, command=[sys.executable, str(SCRIPTED_SERVER)])


async def _repair(client, uri, where=SELECTION):
    return await client.workspace_execute_command_async(
        t.ExecuteCommandParams(command="canvas.repairSelection", arguments=[uri, where])
    )


def _edits(client):
    [params] = client.applied
    [change] = params.edit.document_changes
    return change.text_document.version, [
        (e.range.start.line, e.range.start.character, e.range.end.line, e.range.end.character, e.new_text)
        for e in change.edits
    ]


async def test_only_the_low_probability_tokens_change():
    client = await _start([TYPO, LIKELY])
    try:
        assert "canvas.repairSelection" in client.server_capabilities.execute_command_provider.commands
        uri = open_doc(client, DOC, version=4)
        result = await _repair(client, uri)
        assert result["applied"] is True and result["edits"] == 1 and result["changedTokens"] == 1
        assert _edits(client) == (4, [(4, 8, 4, 12, "total")])  # `totl` only; `values` stays
        # the fill's JSON form (server/fill_report.py), as `canvas-ls fill --json` prints it
        assert result["mode"] == "repair" and (result["forwardPasses"], result["denoisingSteps"]) == (4, 4)
        assert "steps" not in result
        shared = fill_json(FillOutcome((), "repair", FillResult((), 0.0, 0, 0, 0.0, 0, (), 0, 0, 0, 0, 0)))
        assert set(result) == set(shared) | {"applied", "reason", "edits"}
    finally:
        await stop(client)


async def test_the_threshold_setting_decides_what_is_unlikely():
    client = await _start([TYPO, LIKELY], {"repairThreshold": 0.6})
    try:
        uri = open_doc(client, DOC)
        result = await _repair(client, uri)
        assert result["applied"] is True and result["changedTokens"] == 2
        # `values` first occurs in the selection on line 3 (`for v in values:`)
        assert _edits(client)[1] == [(3, 13, 3, 19, "items"), (4, 8, 4, 12, "total")]
    finally:
        await stop(client)


async def test_nothing_below_the_threshold_is_nothing_to_repair():
    client = await _start([LIKELY])
    try:
        uri = open_doc(client, DOC)
        result = await _repair(client, uri)
        assert result == {"applied": False, "reason": "nothing to repair"}
        assert client.applied == []
    finally:
        await stop(client)


async def test_a_change_that_adds_a_syntax_error_is_left_out():
    breaking = {"old": "total = 0", "new": "total = (", "p": 0.01}
    client = await _start([breaking, TYPO])
    try:
        uri = open_doc(client, DOC)
        result = await _repair(client, uri)
        assert result["applied"] is True and result["edits"] == 1
        assert _edits(client)[1] == [(4, 8, 4, 12, "total")]
    finally:
        await stop(client)


async def test_a_document_changed_while_repairing_gets_no_edit():
    client = await _start([TYPO], steps=10, step_seconds=0.2)
    try:
        uri = open_doc(client, DOC)
        cmd = asyncio.ensure_future(_repair(client, uri))
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


async def test_live_canvas_shows_the_renoised_tokens_converging():
    client = await _start([TYPO], {"liveCanvas": True}, steps=2)
    try:
        uri = open_doc(client, DOC)
        await _repair(client, uri)
        await asyncio.sleep(0.2)
        steps = [s for s in client.steps if not s.done]
        body = DOC.split("\n", 2)[2].rsplit("    return", 1)[0]
        assert [s.spans[0].text for s in steps] == [body.replace("totl", "·····"), body.replace("totl", "total")]
        assert all((s.spans[0].range.start.line, s.spans[0].range.end.line) == (2, 5) for s in steps)
        assert client.steps[-1].done is True
    finally:
        await stop(client)


async def test_code_action_only_for_a_selection():
    client = await _start([TYPO])
    try:
        uri = open_doc(client, DOC)

        async def titles(start, end):
            actions = await client.text_document_code_action_async(
                t.CodeActionParams(
                    text_document=t.TextDocumentIdentifier(uri=uri),
                    range=t.Range(start=start, end=end),
                    context=t.CodeActionContext(diagnostics=[]),
                )
            )
            return {a.title: a.command for a in actions}

        selected = await titles(t.Position(line=2, character=0), t.Position(line=5, character=0))
        # pygls' client structures the (Command | CodeAction) union as Command: the nested command survives as text
        command = str(selected["Repair selection with canvas-ls"])
        assert "'command': 'canvas.repairSelection'" in command and f"'arguments': ['{uri}', " in command
        assert "'start': {'line': 2, 'character': 0}, 'end': {'line': 5, 'character': 0}" in command
        assert "Repair selection with canvas-ls" not in await titles(
            t.Position(line=2, character=4), t.Position(line=2, character=4)
        )
    finally:
        await stop(client)


async def test_bad_arguments_keep_their_reason():
    client = await _start([TYPO])
    try:
        uri = open_doc(client, DOC)
        point = {"start": {"line": 2, "character": 4}, "end": {"line": 2, "character": 4}}
        for args, reason in (
            ([uri, point], "select the code to repair"),
            (["oops"], "takes [uri, range]"),
            ([uri, [1]], "expected an LSP range"),
        ):
            with pytest.raises(JsonRpcException) as info:
                await client.workspace_execute_command_async(
                    t.ExecuteCommandParams(command="canvas.repairSelection", arguments=args)
                )
            assert reason in str(info.value)
        assert client.applied == []
    finally:
        await stop(client)


async def test_a_backend_that_cannot_repair_is_named_and_nothing_is_applied():
    client = await _start([TYPO], can_repair=False)  # FillerInfo.repair False, whatever the backend setting
    try:
        uri = open_doc(client, DOC)
        with pytest.raises(JsonRpcException) as info:
            await _repair(client, uri)
        assert "the scripted backend cannot" in str(info.value)
        assert client.applied == []
        # the fill commands do not ask for repair: they still work on that backend
        typo = {"start": {"line": 4, "character": 8}, "end": {"line": 4, "character": 12}}  # `totl` -> `FILL`
        result = await client.workspace_execute_command_async(
            t.ExecuteCommandParams(command="canvas.fillSelection", arguments=[uri, typo])
        )
        assert result["applied"] is True and result["mode"] == "selection" and "changedTokens" not in result
    finally:
        await stop(client)
