"""The command line speaks in the user's terms: 1-based positions, honest setting errors, the file's
own bytes (CRLF stays CRLF), stdin, and a summary of what it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from canvas_ls.model.interface import FillerInfo, FillResult
from canvas_ls.server import cli
from canvas_ls.server.cli import main
from canvas_ls.server.fill_report import fill_json
from canvas_ls.server.pipeline import FillOutcome

DOC = 'def mean(values):\n    """Arithmetic mean."""\n    total = sum(values)\n    return \n\n\nprint(mean([1, 2]))\n'


def _run(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "canvas_ls.server.cli", *args], input=stdin, capture_output=True, timeout=300
    )


@pytest.fixture
def doc(tmp_path):
    path = tmp_path / "mean.py"
    path.write_text(DOC)
    return path


@pytest.mark.parametrize(
    "where, message",
    [
        (["--at", "99999:1"], "--at 99999:1: line 99999 is past the end of the file (8 lines)"),
        (["--at", "0:0"], "--at 0:0: lines and columns start at 1"),
        (["--at", "1:80"], "column 80 is past the end of line 1 (17 characters, so columns 1..18)"),
        (["--range", "4:1-2:1"], "--range 4:1-2:1 is reversed: its end comes before its start"),
        (["--body", "x"], "argument --body: expected a line number (1-based), got 'x'"),
        (["--at", "3"], "argument --at: expected LINE:COL (1-based), got '3'"),
        (["--repair", "4:1-2:1"], "--repair 4:1-2:1 is reversed: its end comes before its start"),
        (["--repair", "3:5-3:5"], "--repair 3:5-3:5 is empty: select the code to repair"),
        (["--repair", "3:5-3:9", "--repair", "3:7-4:1"], "--repair: the ranges to repair overlap"),
        (["--repair", "3:5-12:1"], "--repair 3:5-12:1 12:1: line 12 is past the end of the file (8 lines)"),
        (["--repair", "3:5"], "argument --repair: expected L1:C1-L2:C2 (1-based), got '3:5'"),
    ],
)
def test_position_errors_are_one_based_and_come_before_the_model_loads(doc, tmp_path, capsys, where, message):
    missing_model = tmp_path / "no-such-model"  # would fail to load: the position error must come first
    with pytest.raises(SystemExit) as exit_:
        main(["fill", str(doc), *where, "--model", str(missing_model)])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err and "no-such-model" not in err


def test_invalid_settings_stop_without_claiming_a_fallback(doc, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["fill", str(doc), "--at", "4:12", "--device", "tpu", "--set", "maxSteps=0"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "device='tpu'" in err and "maxSteps=0: must be >= 1" in err
    assert "using" not in err and "default" not in err


def test_set_reaches_every_setting(doc, capsys):
    with pytest.raises(SystemExit):
        main(["fill", str(doc), "--at", "4:12", "--set", "singleLineSlots=[8, 16]", "--set", "threads=-1"])
    err = capsys.readouterr().err
    assert "threads=-1: must be >= 0" in err and "singleLineSlots" not in err  # the list parsed as JSON


def test_crlf_file_round_trips_byte_identical_outside_the_fill(tmp_path, tiny_dir):
    path = tmp_path / "crlf.py"
    original = DOC.replace("\n", "\r\n").encode()
    path.write_bytes(original)
    out = _run("fill", str(path), "--at", "4:12", "--model", str(tiny_dir), "--set", "multiLineSlots=[16]")
    assert out.returncode == 0, out.stderr.decode()
    cut = original.index(b"return ") + len(b"return ")
    assert out.stdout.startswith(original[:cut])
    assert out.stdout.endswith(original[cut:])
    inserted = out.stdout[cut : len(out.stdout) - len(original[cut:])]
    assert b"\n" not in inserted.replace(b"\r\n", b"")  # any newline it wrote is the file's CRLF
    summary = out.stderr.decode().strip().splitlines()[-1]
    assert summary.startswith("canvas-ls: ") and "passes" in summary and "random weights" in summary


def test_stdin_plain_text_and_json_language(tiny_dir):
    out = _run("fill", "-", "--at", "1:7", "--json", "--model", str(tiny_dir), stdin=b"hello \nworld\n")
    assert out.returncode == 0, out.stderr.decode()
    assert "<stdin>: plain text, no syntax checks" in out.stderr.decode()
    report = json.loads(out.stdout)
    assert report["language"] == "plaintext" and report["file"] == "<stdin>"

    out = _run("fill", "-", "--lang", "python", "--at", "4:12", "--json", "--model", str(tiny_dir), stdin=DOC.encode())
    assert out.returncode == 0, out.stderr.decode()
    assert json.loads(out.stdout)["language"] == "python"
    assert "plain text" not in out.stderr.decode()


def test_show_steps_labels_rounds_and_escapes_control_characters(doc, tiny_dir):
    out = _run("fill", str(doc), "--at", "4:12", "--show-steps", "--steps", "4", "--model", str(tiny_dir))
    assert out.returncode == 0, out.stderr.decode()
    err = out.stderr.decode()
    labels = [line for line in err.splitlines() if line.startswith("--- canvas ")]
    assert labels and all(
        int(l.split()[2].split("/")[0]) <= int(l.split()[2].split("/")[1].rstrip(":")) for l in labels
    )
    assert labels[0].startswith("--- canvas 1/4")
    assert not any(0 <= ord(c) < 32 and c not in "\n\t" for c in err)


def test_demo_shows_the_canvas_step_by_step(tmp_path):
    """`make demo` (the README's first command): the bundled model fills the example's `return ` on the
    canvas, step by step, even where an editor's completion would take the left-to-right draft."""
    r = subprocess.run(
        [sys.executable, "-m", "canvas_ls.server.cli", "demo", "--set", "compile=off"],
        capture_output=True,
        timeout=300,
        env={**os.environ, "TMPDIR": str(tmp_path)},  # the example file goes there
    )
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert "--- canvas 1/" in err and "single fill: 1 span(s)" in err


# ---- --repair, and the JSON form every fill shares ---------------------------------------------------

TYPO_DOC = DOC.replace("total = sum(values)", "totl = sum(values)")
BODY = (TYPO_DOC.index("    totl"), TYPO_DOC.index("    return"))  # line 3, as offsets
BODY_ARG = "3:1-4:1"


class _FakeFiller:
    """A backend that repairs `totl` to `total` (or says it cannot repair); records what it was asked."""

    def __init__(self, can_repair: bool = True) -> None:
        self.can_repair, self.requests, self.closed = can_repair, [], 0

    def info(self) -> FillerInfo:
        return FillerInfo("fake", "/fake", "cpu", "none", 32, backend="fake", repair=self.can_repair)

    def fill(self, request, on_step=None, cancelled=None) -> FillResult:
        self.requests.append(request)
        fills = tuple(request.text[a:b].replace("totl", "total") for a, b in request.holes)
        return FillResult(
            fills=fills,
            score=0.0,
            forward_passes=5,
            tokens=2,
            seconds=0.25,
            canvas_length=32,
            slots=(8,),
            candidates=1,
            repairs=0,
            syntax_errors=0,
            prompt_tokens=3,
            reused_prompt_tokens=0,
            steps=4,
            changed_tokens=1,
        )

    def forget(self, document: str) -> None:
        pass

    def close(self) -> None:
        self.closed += 1


@pytest.fixture
def fake(monkeypatch):
    filler = _FakeFiller()

    class Host:
        def get(self, settings):
            return filler

    monkeypatch.setattr(cli, "ModelHost", Host)
    return filler


@pytest.fixture
def typo_doc(tmp_path):
    path = tmp_path / "typo.py"
    path.write_text(TYPO_DOC)
    return path


def test_repair_prints_the_file_with_only_the_selection_repaired(typo_doc, fake, capsysbinary):
    assert main(["fill", str(typo_doc), "--repair", BODY_ARG, "--set", "repairThreshold=0.2"]) == 0
    out = capsysbinary.readouterr()
    assert out.out.decode() == DOC  # `totl` -> `total`, every other byte as it was
    [request] = fake.requests
    assert request.holes == (BODY,) and request.repair_threshold == 0.2 and request.language == "python"
    summary = out.err.decode().strip().splitlines()[-1]
    assert summary.startswith("canvas-ls: repair: 1 edit(s), 1 token(s) changed;") and "5 forward passes" in summary
    assert fake.closed == 1


def test_repair_json_is_the_fill_json_with_the_files_keys(typo_doc, fake, capsys):
    assert main(["fill", str(typo_doc), "--repair", BODY_ARG, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the minimal edit: `totl` -> `total` on line 3 (columns 1-based), nothing else
    assert report["spans"] == [{"start": {"line": 3, "col": 5}, "end": {"line": 3, "col": 9}, "text": "total"}]
    assert report["mode"] == "repair" and report["changedTokens"] == 1 and report["note"] == ""
    assert (report["forwardPasses"], report["denoisingSteps"], report["tokensPerPass"]) == (5, 4, 0.4)
    assert "steps" not in report
    shared = fill_json(FillOutcome((), "repair", fake.fill(fake.requests[0])))
    assert set(report) == set(shared) | {"file", "language", "spans", "model"}
    assert {k: report[k] for k in shared if k != "note"} == {k: v for k, v in shared.items() if k != "note"}


def test_repair_of_several_ranges_changes_only_inside_them(typo_doc, fake, capsysbinary):
    doubled = TYPO_DOC + "totl = 1\ntotl = 2\n"  # lines 8 and 9
    typo_doc.write_text(doubled)
    assert main(["fill", str(typo_doc), "--repair", "9:1-9:5", "--repair", BODY_ARG]) == 0
    assert capsysbinary.readouterr().out.decode() == DOC + "totl = 1\ntotal = 2\n"  # line 8 was not selected
    assert fake.requests[0].holes == (BODY, (len(doubled) - 9, len(doubled) - 5))  # sorted


def test_repair_refused_by_a_backend_that_cannot_repair(typo_doc, fake, capsys):
    fake.can_repair = False
    assert main(["fill", str(typo_doc), "--repair", BODY_ARG]) == 1
    out = capsys.readouterr()
    assert out.out == "" and "the fake backend cannot" in out.err and "backend inprocess" in out.err
    assert fake.requests == [] and fake.closed == 1  # asked nothing, and let go


def test_fill_json_names_forward_passes_and_denoising_steps(doc, fake, capsys):
    assert main(["fill", str(doc), "--range", "3:13-3:24", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["forwardPasses"], report["denoisingSteps"]) == (5, 4) and "steps" not in report
    assert report["mode"] == "selection" and "changedTokens" not in report  # a repair's key only


def test_repair_with_the_tiny_model_keeps_every_byte_outside_the_selection(tmp_path, tiny_dir):
    # repairThreshold 1 re-noises every selected token, and plain text keeps every change (no syntax
    # checks to refuse one): the random-weight model rewrites line 3, and only line 3
    path = tmp_path / "typo.txt"
    path.write_text(TYPO_DOC)
    args = ("fill", str(path), "--repair", BODY_ARG, "--model", str(tiny_dir), "--set", "repairThreshold=1")
    out = _run(*args, "--steps", "4")
    assert out.returncode == 0, out.stderr.decode()
    original = TYPO_DOC.encode()
    a, b = BODY
    assert out.stdout != original
    assert out.stdout.startswith(original[:a]) and out.stdout.endswith(original[b:])
    report = _run(*args, "--steps", "4", "--json")
    assert report.returncode == 0, report.stderr.decode()
    report = json.loads(report.stdout)
    assert report["mode"] == "repair" and report["language"] == "plaintext" and report["spans"]
    for s in report["spans"]:
        assert (3, 1) <= (s["start"]["line"], s["start"]["col"]) <= (s["end"]["line"], s["end"]["col"]) <= (4, 1)
