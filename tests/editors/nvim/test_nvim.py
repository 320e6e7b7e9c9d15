"""The Neovim plugin (editors/nvim) in a real headless Neovim, 0.11 and 0.12, against `canvas-ls serve`.

Each test writes a JSON config for tests/editors/nvim/driver.lua, runs
`nvim --headless --clean -u driver.lua`, and checks what the driver recorded. The server runs a tiny
random-weight model (fills are noise, but real fills through the whole machinery).
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from canvas_ls.server.syntax import parse

from ..conftest import REPO, canvas_ls_exe, find_nvim, missing

DRIVER = Path(__file__).with_name("driver.lua")
PLUGIN = REPO / "editors" / "nvim"

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
HOLE_LINE = 6  # "    return " (1-based); the driver appends at its end
BODY_LINE = 10  # "    out = []", inside scale()

# Small and fast; seed 1 gives non-empty fills for both the hole and the body with the tiny model.
# stepCandidates 0: with random weights the fewest-errors step candidate is mostly the empty fill.
SETTINGS = {
    "maxSteps": 8,
    "seed": 1,
    "singleLineSlots": [16],
    "multiLineSlots": [32],
    "bodySlots": 32,
    "device": "cpu",
    "stepCandidates": 0,
}

SERIES = ["0.11", "0.12"]


def run_driver(nvim: str, tmp_path: Path, tiny_dir, scenario: str, mode: str = "auto", auto_trigger: bool = True, timeout_s: int = 200) -> dict:
    src = tmp_path / "example.py"
    src.write_text(DOC)
    out = tmp_path / f"result-{scenario}.json"
    settings = {**SETTINGS, "modelPath": str(tiny_dir), "logFile": str(tmp_path / "server.log")}
    cfg = {
        "plugin_dir": str(PLUGIN),
        "cmd": [canvas_ls_exe(), "serve"],
        "settings": settings,
        "file": str(src),
        "mode": mode,
        "auto_trigger": auto_trigger,
        "scenario": scenario,
        "hole_line": HOLE_LINE,
        "body_line": BODY_LINE,
        "out": str(out),
        "timeout_s": timeout_s - 20,
        "wait_ms": 90000,
    }
    cfg_path = tmp_path / "config.json"
    cfg_path.write_text(json.dumps(cfg))
    env = {**os.environ, "CANVAS_TEST_CONFIG": str(cfg_path), "XDG_STATE_HOME": str(tmp_path / "state"),
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config"), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("NVIM", None)
    env.pop("NVIM_LISTEN_ADDRESS", None)
    t0 = time.perf_counter()
    proc = subprocess.run([nvim, "--headless", "--clean", "-u", str(DRIVER)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    log = (tmp_path / "server.log").read_text() if (tmp_path / "server.log").exists() else ""
    assert out.exists(), f"the driver wrote nothing (exit {proc.returncode})\nstdout: {proc.stdout[-3000:]}\nstderr: {proc.stderr[-3000:]}\nserver log: {log[-3000:]}"
    result = json.loads(out.read_text())
    result["_seconds"] = seconds
    assert not result.get("error"), f"driver error: {result['error']}\nevents: {result.get('events')}\nstderr: {proc.stderr[-3000:]}\nserver log: {log[-3000:]}"
    assert result.get("ok"), result
    print(f"nvim {scenario} ({mode}): {seconds:.1f}s; events: {result.get('events')}")
    return result


def offset_of(text: str, row: int, col: int) -> int:
    lines = text.split("\n")
    return sum(len(l.encode()) + 1 for l in lines[:row]) + col  # ASCII document: bytes == chars


@pytest.fixture(params=SERIES, ids=[f"nvim-{s}" for s in SERIES])
def nvim(request):
    exe = find_nvim(request.param)
    if exe is None:
        missing(f"Neovim {request.param} is not installed")
    return request.param, exe


def test_inline_completion_fill_body_and_health(nvim, tmp_path, tiny_dir):
    series, exe = nvim
    r = run_driver(exe, tmp_path, tiny_dir, "main")
    expected_mode = "builtin" if series == "0.12" else "plugin"
    assert r["inline_mode"] == expected_mode
    assert r["nvim_version"].startswith(series)

    # inline completion: a suggestion was drawn as ghost text at the cursor ...
    s = r["suggestion"]
    assert s["text"].strip(), s
    row, col = r["cursor"][0] - 1, r["cursor"][1]
    assert r["before"].split("\n")[row] == "    return "
    ghost = r["ghost"]
    assert ghost, "no ghost text extmark"
    ns = "nvim.lsp.inline_completion" if expected_mode == "builtin" else "canvas.ghost"
    assert {g["ns"] for g in ghost} == {ns}
    assert ghost[0]["row"] == row
    assert s["text"].startswith(ghost[0]["text"]) or ghost[0]["text"] in s["text"]
    # ... and accepting it put exactly that text at the cursor
    off = offset_of(r["before"], row, col)
    assert r["after_accept"] == r["before"][:off] + s["text"] + r["before"][off:]
    lines = s["text"].split("\n")
    assert r["cursor_after_accept"] == [row + 1 + len(lines) - 1, (col if len(lines) == 1 else 0) + len(lines[-1])]

    # :CanvasFillBody: the body of scale() changed, its signature held, and the file parses
    assert not r.get("body_error"), r.get("body_error")
    assert r["body_result"]["applied"] is True, r["body_result"]
    before, after = r["before_body"], r["after_body"]
    assert after != before
    assert "def scale(xs, k):" in after and after.startswith(before.split("def scale")[0])
    tree = parse(after, "python")
    assert not tree.root_node.has_error, after
    # the live canvas was drawn while it ran and cleared at the end
    assert r["steps_drawn"] > 0 and r["live_marks_seen"] > 0
    assert r["live_marks_after"] == 0

    # :CanvasFill on the selected "0" of "    total = 0": only that character was replaced
    assert not r.get("selection_error"), r.get("selection_error")
    assert r["selection_result"]["applied"] is True, r["selection_result"]
    before, after = r["before_selection"], r["after_selection"]
    a, b = offset_of(before, 2, 12), offset_of(before, 2, 13)
    assert before[a:b] == "0"
    assert after != before and after.startswith(before[:a]) and after.endswith(before[b:]), (before, after)
    assert r["mode_after_selection"] == "n"

    # :CanvasRepair on a linewise visual selection of lines 3-5: the buffer changes only inside it, or
    # not at all (nothing to repair, or every change refused by the syntax checks)
    assert not r.get("repair_error"), r.get("repair_error")
    before, after, res = r["before_repair"], r["after_repair"], r["repair_result"]
    a, b = offset_of(before, 2, 0), offset_of(before, 5, 0)
    assert after.startswith(before[:a]) and after.endswith(before[b:]), (before, after)
    if res["applied"]:
        assert after != before and res["changedTokens"] > 0, res
    else:
        assert after == before and res["reason"].startswith("nothing"), res

    # :checkhealth canvas
    health = "\n".join(r["health"])
    assert "canvas-ls: server" in health and "canvas-ls check" in health, health
    assert "ERROR" not in health, health
    assert "OK server: canvas-ls" in health, health
    assert "OK canvas-ls check: status: ok" in health, health
    path = "built-in vim.lsp.inline_completion" if expected_mode == "builtin" else "the plugin's own ghost text"
    assert path in health, health


# 0.12 twice: its built-in inline completion ("auto") and the plugin's own path forced ("plugin").
@pytest.mark.parametrize("series,mode", [("0.11", "auto"), ("0.12", "auto"), ("0.12", "plugin")],
                         ids=["nvim-0.11", "nvim-0.12-builtin", "nvim-0.12-plugin"])
def test_trigger_dismiss_and_tab_fallback(series, mode, tmp_path, tiny_dir):
    exe = find_nvim(series)
    if exe is None:
        missing(f"Neovim {series} is not installed")
    r = run_driver(exe, tmp_path, tiny_dir, "keys", mode=mode, auto_trigger=False)
    row = HOLE_LINE - 1
    before_lines = r["before"].split("\n")
    # <Tab> with no suggestion shown is a real tab
    assert r["visible_before_trigger"] is False
    assert r["after_tab"].split("\n")[row] == before_lines[row] + "\t"
    assert r["after_bs"] == r["before"]
    # the trigger key shows a suggestion, the dismiss key removes it and changes nothing
    assert r["suggestion"]["text"].strip()
    assert r["ghost"]
    assert r["visible_after_dismiss"] is False
    assert r["ghost_after_dismiss"] == []
    assert r["after_dismiss"] == r["before"]
    assert r["after_typing"].split("\n")[row] == before_lines[row] + "x"
    if r["inline_mode"] == "plugin":
        # typing right after the trigger cancelled the request in flight; nothing stale is shown
        assert r["inline_stats"]["cancelled"] >= 1
        assert r["stale_suggestion"] is False


FAKE_DRIVER = Path(__file__).with_name("fake_driver.lua")


def test_drawing_and_edits_against_a_fake_server(nvim, tmp_path):
    """Exact checks without a model: an in-process fake server (tests/editors/nvim/fake_driver.lua)."""
    series, exe = nvim
    src = tmp_path / "f.py"
    src.write_text("def f(x):\n    \n    pass\nprint(f(1))\n")
    out = tmp_path / "fake.json"
    cfg = tmp_path / "fake.config.json"
    cfg.write_text(json.dumps({"plugin_dir": str(PLUGIN), "file": str(src), "out": str(out)}))
    env = {**os.environ, "CANVAS_TEST_CONFIG": str(cfg), "XDG_STATE_HOME": str(tmp_path / "state")}
    proc = subprocess.run([exe, "--headless", "--clean", "-u", str(FAKE_DRIVER)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=90, stdin=subprocess.DEVNULL)
    assert out.exists(), f"exit {proc.returncode}: {proc.stderr[-3000:]}"
    r = json.loads(out.read_text())
    assert not r.get("error"), r["error"]
    assert r["ok"]

    # a multi-line suggestion: first line inline at the cursor, the rest as virtual lines
    (ghost,) = r["ghost"]
    assert (ghost["row"], ghost["col"], ghost["pos"]) == (1, 4, "inline")
    assert ghost["text"] == "if x:" and ghost["virt_lines"] == ["        return 1", "    return 2"]
    # accepted: inserted at the cursor, the cursor at its end
    assert r["after_accept"] == ["def f(x):", "    if x:", "        return 1", "    return 2", "    pass", "print(f(1))"]
    assert r["cursor_after_accept"] == [4, 12]

    # live canvas: insertion inline (+ virtual line), replaced range highlighted with the canvas below
    live = sorted(r["live"], key=lambda m: (m["row"], m["col"]))
    inline = [m for m in live if m.get("pos") == "inline"]
    assert len(inline) == 1 and (inline[0]["row"], inline[0]["col"], inline[0]["text"]) == (0, 9, " #·a")
    assert inline[0]["virt_lines"][0].startswith("# b·") and "canvas 2/8" in inline[0]["virt_lines"][0]
    replaced = [m for m in live if m.get("hl_group")]
    assert len(replaced) == 1 and (replaced[0]["row"], replaced[0]["col"], replaced[0]["end_row"], replaced[0]["end_col"]) == (1, 4, 1, 9)
    assert any(m.get("virt_lines") == ["wh·le"] and m["row"] == 1 for m in live)
    assert r["live_stale"] == []  # a step for an older version is not drawn
    assert r["live_done"] == []  # done clears it

    # selection ranges (0-based LSP positions, end exclusive)
    def rng(a, b, c, d):
        return {"start": {"line": a, "character": b}, "end": {"line": c, "character": d}}
    assert r["ranges_v"] == [rng(0, 4, 0, 7)]
    assert r["ranges_V"] == [rng(1, 0, 3, 0)]
    assert r["ranges_V_last"] == [rng(5, 0, 5, 11)]
    assert r["ranges_block"] == [rng(1, 4, 1, 6), rng(2, 4, 2, 6)]
    fills = [q for q in r["requests"] if q["method"] == "workspace/executeCommand" and q["params"]["command"] == "canvas.fillSelection"]
    assert len(fills) == 1 and fills[0]["params"]["arguments"][1] == [rng(1, 0, 3, 0)]
    assert fills[0]["params"]["arguments"][0].endswith("/f.py")
    assert r["fill_done"]["result"] == {"applied": False, "reason": "fake server"}
    repairs = [q for q in r["requests"] if q["method"] == "workspace/executeCommand" and q["params"]["command"] == "canvas.repairSelection"]
    assert len(repairs) == 1 and repairs[0]["params"]["arguments"][1] == rng(0, 4, 0, 8)  # [uri, range]: one range, not a list
    assert r["repair_done"]["command"] == "canvas.repairSelection"
    assert r["repair_done"]["result"] == {"applied": False, "reason": "nothing to repair"}
    assert r["repair_messages"] == ["canvas-ls: repairing…", "canvas-ls: nothing to repair"]

    # a command whose answer is RequestCancelled: Neovim drops it, the plugin still ends the fill
    assert r["body_done"]["error"]["code"] == -32800
    bodies = [q for q in r["requests"] if q["method"] == "workspace/executeCommand" and q["params"]["command"] == "canvas.fillBody"]
    assert bodies[0]["params"]["arguments"][1] == {"line": 1, "character": 4} or bodies[0]["params"]["arguments"][1]["line"] == 1
    inline_reqs = [q for q in r["requests"] if q["method"] == "textDocument/inlineCompletion"]
    assert inline_reqs and inline_reqs[0]["params"]["position"] == {"line": 1, "character": 4}
    assert inline_reqs[0]["params"]["context"]["triggerKind"] == 2

    # highlight groups: GUI and cterm colours (a 256-colour terminal without 'termguicolors' draws only
    # ctermfg/cterm; Neovim's default Comment and NonText have none), also after :colorscheme
    for when in ("hl", "hl_after_colorscheme"):
        hl = r[when]
        for name in ("CanvasGhost", "CanvasLive", "CanvasLiveInfo", "CanvasLiveReplaced"):
            assert hl[name].get("ctermfg") is not None and hl[name].get("fg") is not None, (when, name, hl[name])
        for name in ("CanvasGhost", "CanvasLive"):
            assert hl[name]["italic"] and hl[name]["cterm_italic"], (when, name, hl[name])
        if series == "0.12":  # the built-in inline completion's ghost text
            assert hl["ComplHint"].get("ctermfg") is not None, (when, hl["ComplHint"])
