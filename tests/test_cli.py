"""The command line speaks in the user's terms: 1-based positions, honest setting errors, the file's
own bytes (CRLF stays CRLF), stdin, and a summary of what it did."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from canvas_ls.server.cli import main

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
