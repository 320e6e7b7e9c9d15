"""LocalTokenizer: the checkpoint's own tokenizer files, read with the `tokenizers` library (no torch).

Used when the setting tokenizerPath names the served checkpoint (its directory or its tokenizer.json):
encoding and decoding then run in-process instead of through vLLM's /tokenize and /detokenize, and the
special tokens come from the checkpoint's config files. First contact (probe.py) checks that these files
tokenize like the served model.
"""

from __future__ import annotations

import json
from pathlib import Path

from tokenizers import Tokenizer

from canvas_ls.model.interface import ModelLoadError

SPECIAL_NAMES = {"pad": "<pad>", "eos": "<eos>", "bos": "<bos>", "mask": "<mask>"}


class LocalTokenizer:
    """The checkpoint's own tokenizer files through the `tokenizers` library (setting tokenizerPath)."""

    def __init__(self, path: str):
        p = Path(path).expanduser()
        file = p / "tokenizer.json" if p.is_dir() else p
        if not file.is_file():
            raise ModelLoadError(
                f"tokenizerPath {path!r}: no tokenizer.json there (give the checkpoint's directory or its tokenizer.json)"
            )
        try:
            self.tok = Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises plain Exceptions with its parse error
            raise ModelLoadError(f"tokenizerPath {path!r}: cannot read {file.name}: {exc}") from exc
        self.dir = file.parent
        self.vocab = self.tok.get_vocab_size(with_added_tokens=True)

    def _json(self, name: str) -> dict:
        try:
            return json.loads((self.dir / name).read_text())
        except (OSError, ValueError):
            return {}

    def specials(self) -> dict[str, list[int]]:
        """Special token ids from the checkpoint's generation_config.json, config.json and
        tokenizer_config.json, in that order of preference."""
        found: dict[str, list[int]] = {}
        gen, cfg, tcfg = (
            self._json("generation_config.json"),
            self._json("config.json"),
            self._json("tokenizer_config.json"),
        )
        text_cfg = cfg.get("text_config") if isinstance(cfg.get("text_config"), dict) else {}
        for kind in ("pad", "eos", "bos"):
            for source in (gen, text_cfg, cfg):
                value = source.get(f"{kind}_token_id")
                if value is not None:
                    found[kind] = [int(v) for v in (value if isinstance(value, list) else [value])]
                    break
        for kind, default in SPECIAL_NAMES.items():
            if kind in found:
                continue
            name = tcfg.get(f"{kind}_token", default)
            name = name.get("content") if isinstance(name, dict) else name
            tid = self.tok.token_to_id(name) if isinstance(name, str) else None
            if tid is not None:
                found[kind] = [tid]
        return found

    def card(self) -> dict:
        """The checkpoint's canvas_ls.json (what canvas-ls measured and trained it for), or {}."""
        return self._json("canvas_ls.json")

    def random_weights(self) -> bool:
        card = self._json("canvas_ls.json")
        return bool(card.get("random_weights") or str(card.get("note", "")).startswith("random weights"))

    def encode(self, texts: list[str]) -> list[list[int]]:
        out = self.tok.encode_batch([t for t in texts if t], add_special_tokens=False)
        it = iter(out)
        return [list(next(it).ids) if t else [] for t in texts]

    def decode(self, seqs: list[list[int]]) -> list[str]:
        return [self.tok.decode(s, skip_special_tokens=False) if s else "" for s in seqs]
