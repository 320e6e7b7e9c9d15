"""Unit tests of the server's pure parts: UTF-16 positions, cursor planning, the judge's error
attribution, and the job runner that owns the model thread."""

from __future__ import annotations

import asyncio
import threading

import pytest

from canvas_ls.model.interface import FillCancelled
from canvas_ls.server.fill_job import FillJobs, Progress
from canvas_ls.server.pipeline import BadRequest, check_span, make_judge, plan_at_cursor
from canvas_ls.server.positions import line_starts, to_offset, to_position, to_range
from canvas_ls.server.settings import ServerSettings

# ---- positions --------------------------------------------------------------------------------

EMOJI = "a😀b\nxé\n"  # 😀 is two UTF-16 code units and four UTF-8 bytes


@pytest.mark.parametrize(
    "encoding, character, offset",
    [("utf-16", 3, 2), ("utf-16", 4, 3), ("utf-8", 5, 2), ("utf-32", 2, 2), ("utf-16", 0, 0)],
)
def test_positions_count_code_units_of_the_negotiated_encoding(encoding, character, offset):
    assert to_offset(EMOJI, 0, character, encoding) == offset
    assert to_position(EMOJI, offset, encoding) == (0, character)


def test_positions_name_what_is_wrong():
    with pytest.raises(BadRequest, match="splits a character"):
        to_offset(EMOJI, 0, 2, "utf-16")  # between the two halves of the surrogate pair
    with pytest.raises(BadRequest, match="past the end of line 1"):
        to_offset(EMOJI, 1, 3, "utf-16")
    with pytest.raises(BadRequest, match="outside the document"):
        to_offset(EMOJI, 5, 0, "utf-16")
    with pytest.raises(BadRequest, match="outside the document"):
        to_offset(EMOJI, -1, 0, "utf-16")


def test_to_range_and_line_starts():
    assert line_starts(EMOJI) == [0, 4, 7]
    r = to_range(EMOJI, 2, 6, "utf-16")
    assert (r.start.line, r.start.character, r.end.line, r.end.character) == (0, 3, 1, 2)
    with pytest.raises(BadRequest, match="outside the document"):
        check_span(EMOJI, 3, 99)


# ---- cursor planning ----------------------------------------------------------------------------

PY = "def f(x):\n    total = x\n    \n    return \n"


@pytest.mark.parametrize(
    "where, lang, mode",
    [
        (PY.index("return ") + 7, "python", "single"),  # after `return `: finish the line
        (PY.index("total") + 2, "python", "none"),  # inside a word: never complete
        (PY.index("    \n") + 4, "python", "multi"),  # a blank line in a block: statements may follow
        (PY.index("return ") + 7, None, "single"),  # no grammar: a line with text
        (PY.index("    \n") + 4, None, "multi"),  # no grammar: an empty line
        (PY.index("    return"), "python", "line"),  # a line's start with code after it: lines above
        (PY.index("    return"), None, "line"),
    ],
)
def test_cursor_planning_decides_before_the_model_runs(where, lang, mode):
    settings = ServerSettings(singleLineSlots=(8,), multiLineSlots=(32, 64), lineSlots=(16,))
    got_mode, slots = plan_at_cursor(PY, where, lang, settings)
    assert got_mode == mode
    assert slots == {"single": (8,), "multi": (32, 64), "line": (16,), "none": ()}[mode]


def test_a_line_completion_takes_its_own_step_budget():
    settings = ServerSettings(maxSteps=12, lineSteps=40)
    assert settings.sampler_settings("line").max_steps == 40
    assert settings.sampler_settings("multi").max_steps == settings.sampler_settings().max_steps == 12


# ---- the judge's error attribution ----------------------------------------------------------------

JS = "function f(a) {\n  const b = ;\n  return b;\n}\n"


def test_the_judge_charges_errors_to_the_fill_that_added_them():
    hole = JS.index("= ;") + 2
    judge = make_judge(JS, ((hole, hole),), "javascript")
    assert judge(("a + 1",)) == [[]]  # repairs the document: nothing added
    [[(start, end)]] = judge(("a + + ",))
    assert 0 <= start <= end <= len("a + + ")  # inside the fill (a MISSING node is zero-width)


def test_an_error_after_a_fill_is_charged_to_its_last_character():
    hole = JS.index("return b") + len("return b")  # right before `;` and the closing brace
    judge = make_judge(JS, ((hole, hole),), "javascript")
    fill = " + (a"  # opens a parenthesis the code after it never closes
    [charged] = judge((fill,))
    assert charged and charged[-1][1] == len(fill)


def test_two_holes_each_get_their_own_errors():
    first, second = JS.index("= ;") + 2, JS.index("return b") + len("return ")
    judge = make_judge(JS, ((first, first), (second - 1, second)), "javascript")  # second replaces the space
    good, bad = judge(("a", " b")), judge(("a", " ]"))
    assert good == [[], []]
    assert bad[0] == [] and bad[1]


# ---- the job runner -------------------------------------------------------------------------------


async def test_a_newer_job_for_the_same_key_cancels_the_older_within_a_step():
    jobs = FillJobs()
    started = threading.Event()

    def slow(cancelled):
        started.set()
        for _ in range(500):  # "denoising steps"
            if cancelled():
                raise FillCancelled()
            threading.Event().wait(0.01)
        return "slow finished"

    first = asyncio.ensure_future(jobs.run("doc#inline", slow))
    await asyncio.get_running_loop().run_in_executor(None, started.wait, 5)
    second = await asyncio.wait_for(jobs.run("doc#inline", lambda cancelled: "second"), 5)
    assert second == "second"
    with pytest.raises(FillCancelled):
        await first
    other = await jobs.run("doc#command", lambda cancelled: cancelled())  # another kind: not cancelled
    assert other is False and jobs.running == 0


async def test_cancelling_the_awaiting_task_sets_the_fill_flag():
    jobs = FillJobs()
    seen = threading.Event()

    def work(cancelled):
        for _ in range(500):
            if cancelled():
                seen.set()
                raise FillCancelled()
            threading.Event().wait(0.01)

    task = asyncio.ensure_future(jobs.run("doc#inline", work))
    await asyncio.sleep(0.1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await asyncio.get_running_loop().run_in_executor(None, seen.wait, 5)


# ---- the server's imports ---------------------------------------------------------------------------


def test_the_language_server_never_imports_torch():
    import subprocess
    import sys

    code = "import canvas_ls.server.lsp, canvas_ls.server.cli, sys; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_function_level_imports_only_where_a_backend_is_loaded():
    """The language server imports torch and transformers (the in-process model), the engine client or
    httpx (the vLLM backend) only in ModelHost, for the backend the settings choose."""
    import ast
    from pathlib import Path

    import canvas_ls.server as server_pkg

    root = Path(server_pkg.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, (ast.Import, ast.ImportFrom)):
                        found.append(f"{path.relative_to(root)}:{fn.name}")
    assert sorted(set(found)) == ["model_host.py:get", "model_host.py:load_in_process"]


def test_progress_remembers_a_bounded_number_of_unconfirmed_tokens():
    """A client that never answers window/workDoneProgress/create must not grow the server for ever."""

    class SilentClient:  # pygls' work_done_progress, minus the client's answer
        tokens: dict = {}

        def create(self, token, callback):
            pass  # never confirmed

        def end(self, token, value):
            pass

    wdp = SilentClient()
    for i in range(Progress.KEEP + 50):
        Progress(wdp, Progress.create(wdp, f"t{i}")).end("done")
    assert len(Progress._unconfirmed) <= Progress.KEEP and len(Progress._ended_early) <= Progress.KEEP
    assert f"t{Progress.KEEP + 49}" in Progress._unconfirmed  # the newest are kept
