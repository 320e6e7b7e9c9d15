"""What a newcomer reads to follow one inline completion: the canvas-ls functions it runs, by file.

`canvas-ls serve` (the default model: the bundled one, else the tiny random-weight model) runs with a
profile hook on every thread. After a first completion (loading, warm-up and first-call work are not
the path), SIGUSR1 starts recording, a second completion at the end of a line runs, and SIGUSR2 writes
down every canvas-ls function that ran. A function counts with all its lines (def to last line, nested
functions and lambdas included once); module-level code (imports, constants) does not.

    .venv/bin/python benchmarks/fill_path.py          # results/fill_path.json, a table on stdout
"""

from __future__ import annotations

import json
import os
import signal
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.raw_client import RawClient  # noqa: E402

# Runs in the server process: records the code objects of canvas-ls functions called while recording.
BOOTSTRAP = r"""
import os, signal, sys, threading, json
import canvas_ls.model, canvas_ls.server
ROOTS = tuple(os.path.dirname(m.__file__) + os.sep for m in (canvas_ls.model, canvas_ls.server))
seen, on = set(), [False]

def hook(frame, event, arg):
    if on[0] and event == "call":
        code = frame.f_code
        if code.co_filename.startswith(ROOTS) and code.co_name != "<module>":
            seen.add(code)

def start(*_):
    seen.clear()
    on[0] = True

def dump(*_):
    on[0] = False
    out = []
    for code in seen:
        lines = [line for _, _, line in code.co_lines() if line is not None]
        out.append([code.co_filename, code.co_name, code.co_firstlineno, max(lines + [code.co_firstlineno])])
    with open(os.environ["CANVAS_PATH_OUT"], "w") as f:
        json.dump(out, f)

signal.signal(signal.SIGUSR1, start)
signal.signal(signal.SIGUSR2, dump)
sys.setprofile(hook)
threading.setprofile(hook)
from canvas_ls.server.cli import main
sys.exit(main(["serve"]))
"""

# The chain a newcomer follows, in order: from the handler to the denoising loop and back (README "How a
# fill works"). Everything else that runs is consulted along the way: the syntax rules (server/syntax/),
# settings, LSP positions, the model host's lookup, the decoder-choice costs, and beneath the loop the
# model's own forward pass (model/step.py).
CHAIN = (
    "server/lsp.py",
    "server/fill_job.py",
    "server/pipeline.py",
    "model/interface.py",
    "model/infill.py",
    "model/plan.py",
    "model/kv.py",
    "model/reference.py",
)

DOC = "import os\n\n\ndef read(path):\n    with open(path) as f:\n        data = f.read()\n    return \n"


def complete(client: RawClient, line: int, character: int) -> dict:
    return client.call(
        "textDocument/inlineCompletion",
        {
            "textDocument": {"uri": "file:///path.py"},
            "position": {"line": line, "character": character},
            "context": {"triggerKind": 1},
        },
    )


def main() -> int:
    out = Path(tempfile.mkdtemp()) / "path.json"
    os.environ["CANVAS_PATH_OUT"] = str(out)
    client = RawClient(command=[sys.executable, "-c", BOOTSTRAP])
    client.initialize()
    # The canvas's path (the README's): the bundled model's own choice would draft this line's end left to right.
    client.notify("workspace/didChangeConfiguration", {"settings": {"singleLineDecoder": "diffusion"}})
    deadline = time.time() + 300
    while time.time() < deadline:  # the model loads (and warms up) after `initialized`
        status = client.call("workspace/executeCommand", {"command": "canvas.status", "arguments": []})["result"]
        if status.get("model"):
            break
        time.sleep(0.5)
    client.open("file:///path.py", DOC)
    complete(client, 6, 11)  # first completion: first-call work happens here
    client.proc.send_signal(signal.SIGUSR1)
    time.sleep(0.5)
    answer = complete(client, 6, 11)
    client.proc.send_signal(signal.SIGUSR2)
    while not out.exists():
        time.sleep(0.1)
    time.sleep(0.5)
    client.call("shutdown")
    client.notify("exit")
    client.proc.wait(30)

    ranges = defaultdict(list)
    for filename, name, first, last in json.loads(out.read_text()):
        ranges[Path(filename).resolve().relative_to(ROOT).as_posix()].append((first, last, name))
    files = []
    for path, spans in ranges.items():
        covered: set[int] = set()
        for first, last, _ in spans:
            covered.update(range(first, last + 1))
        names = sorted({name for _, _, name in spans if not name.startswith("<")})
        total = sum(1 for _ in open(ROOT / path))
        files.append({"file": path, "lines": len(covered), "file_lines": total, "functions": names})
    files.sort(key=lambda f: (f["file"] not in CHAIN, CHAIN.index(f["file"]) if f["file"] in CHAIN else 0, f["file"]))
    chain = [f for f in files if f["file"] in CHAIN]
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "completion": answer.get("result"),
        "chain": {
            "files": len(chain),
            "lines_run": sum(f["lines"] for f in chain),
            "file_lines": sum(f["file_lines"] for f in chain),
        },
        "everything_run": {"files": len(files), "lines_run": sum(f["lines"] for f in files)},
        "by_file": files,
    }
    (ROOT / "benchmarks" / "results" / "fill_path.json").write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'file':34} {'lines run':>9} {'of':>5}  functions")
    for k, f in enumerate(files):
        if k == len(chain):
            c = result["chain"]
            print(
                f"-- the chain: {c['files']} files, {c['lines_run']} lines run ({c['file_lines']} lines in those files)"
            )
            print("-- consulted along the way:")
        print(f"{f['file']:34} {f['lines']:9d} {f['file_lines']:5d}  {', '.join(f['functions'])[:100]}")
    e = result["everything_run"]
    print(f"-- everything that ran: {e['files']} files, {e['lines_run']} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
