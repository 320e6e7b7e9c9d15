"""The bundled default model (model/bundled/, issue 12): it ships, loads on the CPU with no model
configured, and fills easy holes correctly through the real server over stdio."""

from __future__ import annotations

import json

from lsprotocol import types as t

from canvas_ls.model import BUNDLED_DIR, default_model_path
from canvas_ls.model.checkpoint import TRAINED_CARD, TRAINED_GENERATION
from canvas_ls.server.client import inline_params, open_doc, start, stop

CURSOR = "<C>"

# Easy holes the bundled model fills correctly (seeded, so the same fill every time). What it must
# write is the only name that fits.
EASY = [
    ("import os\n\n\ndef exists(path):\n    return os.path.exists(<C>)\n", "path"),
    (
        "def collect(items):\n    result = []\n    for item in items:\n        result.append(item)\n    return <C>\n",
        "result",
    ),
]


def test_bundled_model_ships_as_the_default():
    assert default_model_path() == BUNDLED_DIR
    card = json.loads((BUNDLED_DIR / "canvas_ls.json").read_text())
    assert card["random_weights"] is False
    assert card["single_line_decoder"] == TRAINED_CARD["single_line_decoder"]  # as an export writes it
    weights = sum(p.stat().st_size for p in BUNDLED_DIR.glob("*.safetensors"))
    assert weights <= 100_000_000  # the size limit
    assert (BUNDLED_DIR / "MODEL_CARD.md").read_text().count("pass@1") >= 1
    gen = json.loads((BUNDLED_DIR / "generation_config.json").read_text())
    assert gen["max_denoising_steps"] > 0
    assert gen["confidence_threshold"] == TRAINED_GENERATION["confidence_threshold"]  # as an export writes it


async def test_bundled_model_completes_easy_holes():
    # No modelPath: the bundled default. The step runs eager (compile off) and on the canvas (not the
    # left-to-right draft, which "auto" picks from timings) so the fills depend on nothing measured:
    # compiled and eager steps agree on ~99% of argmaxes, not on all of them.
    client = await start({"device": "cpu", "compile": "off", "singleLineDecoder": "diffusion"})
    try:
        for doc, want in EASY:
            before = doc[: doc.index(CURSOR)]
            line, col = before.count("\n"), len(before) - before.rfind("\n") - 1
            uri = open_doc(client, doc.replace(CURSOR, ""))
            items = await client.text_document_inline_completion_async(inline_params(uri, line, col))
            assert items, f"no completion for {before!r}"
            assert items[0].insert_text == want
        status = await client.workspace_execute_command_async(t.ExecuteCommandParams(command="canvas.status"))
        assert status["model"] == "bundled" and status["randomWeights"] is False and status["device"] == "cpu"
    finally:
        await stop(client)
