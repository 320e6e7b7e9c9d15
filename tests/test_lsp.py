"""The protocol, end to end: the real `canvas-ls serve` over stdio, driven by pygls' client."""

from __future__ import annotations

import asyncio

import pytest
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException

from canvas_ls.server.client import inline_params, open_doc, start, stop

DOC = '''def mean(values):
    """Arithmetic mean."""
    total = 0
    for v in values:
        total += v
    return total / len(values)


def scale(xs, k):
    out = []
    for x in xs:
        out.append(x * k)
    return out
'''

SLOW = {
    "maxSteps": 400,
    "singleLineSteps": 400,
    "singleLineDecoder": "diffusion",
    "sampler": "commit",
    "compile": "off",
    "multiLineSlots": [256],
    "bodySlots": 256,
    "singleLineSlots": [256],
    "entropyBound": 1e-9,
    "repairRounds": 0,
}


def _opts(tiny_dir, **extra):
    return {"modelPath": str(tiny_dir), **extra}


def _apply(text: str, edits: list[t.TextEdit]) -> str:
    lines = text.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def off(p):
        return starts[p.line] + p.character

    for e in sorted(edits, key=lambda e: off(e.range.start), reverse=True):
        text = text[: off(e.range.start)] + e.new_text + text[off(e.range.end) :]
    return text


async def test_capabilities_inline_completion_and_edits(tiny_dir):
    client = await start(_opts(tiny_dir))
    try:
        caps = client.server_capabilities
        assert caps.inline_completion_provider
        assert {"canvas.fillSelection", "canvas.fillBody", "canvas.status"} <= set(
            caps.execute_command_provider.commands
        )
        assert caps.code_action_provider
        uri = open_doc(client, DOC.replace("return total / len(values)", "return "))
        items = await client.text_document_inline_completion_async(inline_params(uri, 5, 11))
        assert isinstance(items, list)
        for item in items:
            assert item.range.start == t.Position(line=5, character=11)
            assert item.insert_text.strip()
        client.text_document_did_change(
            t.DidChangeTextDocumentParams(
                text_document=t.VersionedTextDocumentIdentifier(uri=uri, version=2),
                content_changes=[
                    t.TextDocumentContentChangePartial(
                        range=t.Range(start=t.Position(line=5, character=11), end=t.Position(line=5, character=11)),
                        text="t",
                    )
                ],
            )
        )
        assert isinstance(await client.text_document_inline_completion_async(inline_params(uri, 5, 12)), list)
        status = await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))
        assert status["device"] == "cpu" and status["randomWeights"] is True
    finally:
        await stop(client)


async def test_fill_body_applies_a_versioned_edit_that_parses_and_reports_progress(tiny_dir):
    client = await start(_opts(tiny_dir))
    try:
        uri = open_doc(client, DOC)
        actions = await client.text_document_code_action_async(
            t.CodeActionParams(
                text_document=t.TextDocumentIdentifier(uri=uri),
                range=t.Range(start=t.Position(line=10, character=4), end=t.Position(line=10, character=4)),
                context=t.CodeActionContext(diagnostics=[]),
            )
        )
        # pygls' client structures the (Command | CodeAction) union as Command, so match on what survives.
        assert any("function body" in a.title and "canvas.fillBody" in str(a.command) for a in actions)
        result = await client.workspace_execute_command_async(
            t.ExecuteCommandParams(command="canvas.fillBody", arguments=[uri, {"line": 10, "character": 4}])
        )
        if result["applied"]:
            [params] = client.applied
            [change] = params.edit.document_changes
            assert change.text_document.version == 1 and change.text_document.uri == uri
            after = _apply(DOC, change.edits)
            # The signature is held: everything up to the ':' of scale is untouched.
            assert after.startswith(DOC[: DOC.index("def scale(xs, k):") + len("def scale(xs, k):")])
            # The regenerated body adds no syntax errors to the document.
            from canvas_ls.server.syntax import error_count

            assert error_count(after, "python") == 0
        else:
            assert result["reason"]  # nothing survived the syntax checks: said, not applied
        kinds = [p.value["kind"] if isinstance(p.value, dict) else p.value.kind for p in client.progress]
        assert kinds[0] == "begin" and kinds[-1] == "end" and "report" in kinds
    finally:
        await stop(client)


def _kind(progress) -> str:
    return progress.value["kind"] if isinstance(progress.value, dict) else progress.value.kind


async def test_cancel_request_stops_the_fill_and_the_server_goes_on(tiny_dir):
    client = await start(_opts(tiny_dir, **SLOW))
    try:
        uri = open_doc(client, DOC.replace("return total / len(values)", "return "))
        await client.text_document_inline_completion_async(inline_params(uri, 9, 0))  # warm up (model load)
        params = inline_params(uri, 5, 11)
        params.work_done_token = "slow-progress"
        task = asyncio.ensure_future(client.request(t.TEXT_DOCUMENT_INLINE_COMPLETION, params, msg_id="slow-1"))
        # Cancel once the fill reports its first step: a fixed sleep raced a fill that takes ~0.5 s on
        # an idle machine (it finished before the cancel, and nothing raised).
        for _ in range(400):
            if any(p.token == "slow-progress" and _kind(p) == "report" for p in client.progress):
                break
            await asyncio.sleep(0.05)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        client.protocol.notify(t.CANCEL_REQUEST, t.CancelParams(id="slow-1"))
        with pytest.raises(JsonRpcException):
            await asyncio.wait_for(task, 20)
        assert loop.time() - t0 < 5  # a 400-step fill was stopped, not run out
        status = await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))
        assert status["busy"] is False
    finally:
        await stop(client)


async def test_a_newer_request_for_the_document_cancels_the_older(tiny_dir):
    client = await start(_opts(tiny_dir, **SLOW))
    try:
        uri = open_doc(client, DOC.replace("return total / len(values)", "return "))
        first = asyncio.ensure_future(client.text_document_inline_completion_async(inline_params(uri, 5, 11)))
        await asyncio.sleep(0.3)
        client.workspace_did_change_configuration(
            t.DidChangeConfigurationParams(settings={"maxSteps": 4, "singleLineSlots": [8], "entropyBound": 0.1})
        )
        second = await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(uri, 5, 11)), 60)
        assert isinstance(second, list)
        with pytest.raises(JsonRpcException):
            await asyncio.wait_for(first, 60)
    finally:
        await stop(client)


async def test_bad_input_gets_clear_errors_and_the_server_keeps_answering(tiny_dir):
    client = await start(_opts(tiny_dir))
    try:
        good = open_doc(client, DOC)

        async def error_of(coro):
            with pytest.raises(JsonRpcException) as info:
                await asyncio.wait_for(coro, 60)
            return str(info.value)

        assert "unknown document" in await error_of(
            client.text_document_inline_completion_async(inline_params("file:///nope.py", 0, 0))
        )
        assert "outside the document" in await error_of(
            client.text_document_inline_completion_async(inline_params(good, 500, 0))
        )
        assert "past the end" in await error_of(
            client.text_document_inline_completion_async(inline_params(good, 0, 500))
        )
        junk = open_doc(client, "x = 1\n\x00\x01\x02\xff garbage\n")
        assert "binary" in await error_of(client.text_document_inline_completion_async(inline_params(junk, 0, 5)))
        hs = open_doc(client, "main :: IO ()\nmain = \n", uri="file:///tmp/x.hs", language="haskell")
        assert isinstance(
            await client.text_document_inline_completion_async(inline_params(hs, 1, 7)), list
        )  # no grammar: still fills
        assert "not supported" in await error_of(
            client.workspace_execute_command_async(
                t.ExecuteCommandParams(command="canvas.fillBody", arguments=[hs, {"line": 1, "character": 0}])
            )
        )
        assert "takes" in await error_of(
            client.workspace_execute_command_async(
                t.ExecuteCommandParams(command="canvas.fillBody", arguments=["oops"])
            )
        )
        big_text = ("def f(x):\n    return x + 1\n\n" * 180_000) + "y = "
        assert len(big_text) > 5_000_000
        big = open_doc(client, big_text)
        last = big_text.count("\n")
        assert isinstance(
            await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(big, last, 4)), 120), list
        )
        client.workspace_did_change_configuration(
            t.DidChangeConfigurationParams(settings={"maxSteps": "many", "acceptance": "vibes"})
        )
        await asyncio.sleep(0.5)
        assert any("maxSteps" in m.message and m.type == t.MessageType.Warning for m in client.messages)
        assert isinstance(await client.text_document_inline_completion_async(inline_params(good, 5, 4)), list)
    finally:
        await stop(client)


async def test_a_missing_model_directory_is_reported_and_fixable(tiny_dir, tmp_path):
    client = await start({"modelPath": str(tmp_path / "no-model")})
    try:
        uri = open_doc(client, DOC)
        with pytest.raises(JsonRpcException, match="does not exist"):
            await client.text_document_inline_completion_async(inline_params(uri, 5, 4))
        assert any("does not exist" in m.message and m.type == t.MessageType.Error for m in client.messages)
        client.workspace_did_change_configuration(
            t.DidChangeConfigurationParams(settings={"canvas": {"modelPath": str(tiny_dir)}})
        )
        assert isinstance(
            await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(uri, 5, 4)), 60), list
        )
    finally:
        await stop(client)


async def test_an_inline_request_never_cancels_a_running_command(tiny_dir):
    client = await start(
        _opts(tiny_dir, maxSteps=60, bodySlots=256, singleLineSlots=[8], entropyBound=1e-9, repairRounds=0)
    )
    try:
        uri = open_doc(client, DOC)
        cmd = asyncio.ensure_future(
            client.workspace_execute_command_async(
                t.ExecuteCommandParams(command="canvas.fillBody", arguments=[uri, {"line": 10, "character": 4}])
            )
        )
        await asyncio.sleep(1.0)
        inline = await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(uri, 9, 0)), 120)
        assert isinstance(inline, list)
        result = await asyncio.wait_for(cmd, 180)  # a result, not a "superseded" error
        assert "applied" in result
    finally:
        await stop(client)


async def test_live_canvas_streams_each_step_to_clients_that_opted_in(tiny_dir, tmp_path):
    log_file = tmp_path / "canvas.log"
    client = await start(_opts(tiny_dir, liveCanvas=True, logFile=str(log_file)))
    try:
        uri = open_doc(client, DOC.replace("return total / len(values)", "return "))
        await client.text_document_inline_completion_async(inline_params(uri, 5, 11))
        await asyncio.sleep(0.2)
        # pygls' client hands custom notifications over as attribute objects
        steps = [s for s in client.steps if not s.done]
        assert steps and steps[0].uri == uri
        assert steps[0].label.startswith("canvas 1/") and all(
            1 <= s.step <= s.maxSteps for s in steps
        )  # rounds shown as such
        assert all(
            len(s.spans) == 1 and s.spans[0].range.start.line == 5 and s.spans[0].range.start.character == 11
            for s in steps
        )
        assert client.steps[-1].done is True  # the client is told to clear its live canvas
        assert "fill" in log_file.read_text()  # the logFile setting is honoured
    finally:
        await stop(client)


async def test_two_language_servers_share_one_engine(tiny_dir, monkeypatch):
    import os
    import signal
    import tempfile

    run_dir = tempfile.mkdtemp(prefix="cls-", dir="/tmp")  # short: Unix socket paths are limited
    monkeypatch.setenv("CANVAS_LS_RUN_DIR", run_dir)
    opts = _opts(tiny_dir, backend="shared", maxSteps=4, engineIdleMinutes=1.0)
    a, b = await start(opts), await start(opts)
    try:
        ua = open_doc(a, DOC.replace("return total / len(values)", "return "))
        ub = open_doc(b, DOC.replace("return total / len(values)", "return "))
        ra, rb = await asyncio.gather(
            asyncio.wait_for(a.text_document_inline_completion_async(inline_params(ua, 5, 11)), 120),
            asyncio.wait_for(b.text_document_inline_completion_async(inline_params(ub, 5, 11)), 120),
        )
        assert isinstance(ra, list) and isinstance(rb, list)
        assert [i.insert_text for i in ra] == [i.insert_text for i in rb]  # same document, same seed
        sockets = [f for f in os.listdir(run_dir) if f.endswith(".sock")]
        assert len(sockets) == 1  # one engine process served both editors
    finally:
        await stop(a)
        await stop(b)
        for f in os.listdir(run_dir):  # end the engine rather than wait for its idle exit
            if f.endswith(".lock"):
                try:
                    os.kill(int(open(os.path.join(run_dir, f)).read().split()[0]), signal.SIGTERM)
                except (ValueError, OSError, IndexError):
                    pass


async def _status(client) -> dict:
    return await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))


async def test_the_warm_up_runs_in_the_background_or_first_as_the_warm_up_setting_says(tiny_dir):
    # background (the default): nobody asks for a fill, and it still runs to its end by itself
    client = await start(_opts(tiny_dir, compile="off"))
    try:
        uri = open_doc(client, DOC)
        await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(uri, 5, 4)), 120)
        for _ in range(600):
            status = await _status(client)
            if status["warmingUp"] is False:
                break
            await asyncio.sleep(0.2)
        assert status["warmingUp"] is False and status["tokenMs"] > 0 and status["passMs"] > 0
    finally:
        await stop(client)
    # first: the warm-up is done, its costs measured, before the first fill is answered
    client = await start(_opts(tiny_dir, compile="off", warmUp="first"))
    try:
        uri = open_doc(client, DOC)
        await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(uri, 5, 4)), 120)
        status = await _status(client)
        assert status["warmingUp"] is False and status["tokenMs"] > 0 and status["passMs"] > 0
    finally:
        await stop(client)
