"""Tokens <-> text for the in-process backend: the loaded tokenizer as every part of a fill uses it
(the plan, the samplers' syntax judge, the left-to-right draft, a repair).

Encoding adds no special tokens and decoding cleans nothing up, so text round-trips exactly
(indentation is content). `vocab` is the plan's view of the token roles (model/plan.py).
"""

from __future__ import annotations

import torch

from .loading import LoadedModel
from .plan import Vocab


class TokenText:
    def __init__(self, loaded: LoadedModel):
        self.tok = loaded.tokenizer
        self.vocab_size = loaded.vocab_size
        self.device = loaded.device
        ends = frozenset({loaded.eos_id, loaded.pad_id})
        self.vocab = Vocab(
            pad=loaded.pad_id,
            bos=loaded.bos_id,
            ends=ends,
            dropped=frozenset(i for i in (loaded.bos_id, loaded.mask_id) if i is not None),
        )
        self._texts: list[str] | None = None  # every token's own text (token_texts)
        self._line_ends: torch.Tensor | None = None  # (vocab,) bool: tokens holding a line break

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False) if text else []

    def encode_many(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(t) for t in texts]

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def decode_many(self, seqs: list[list[int]]) -> list[str]:
        return [self.decode(s) for s in seqs]

    def token_texts(self) -> list[str]:
        """Every token's own text, by id (the vocabulary decoded once; "" past the tokenizer's ids)."""
        if self._texts is None:
            known = min(self.vocab_size, len(self.tok))
            texts = self.tok.batch_decode(
                [[i] for i in range(known)], skip_special_tokens=False, clean_up_tokenization_spaces=False
            )
            self._texts = texts + [""] * (self.vocab_size - known)
        return self._texts

    def newline_tokens(self) -> torch.Tensor:
        """(vocab,) bool: the tokens whose text holds a line break."""
        if self._line_ends is None:
            ends = torch.zeros(self.vocab_size, dtype=torch.bool)
            ends[[i for i, t in enumerate(self.token_texts()) if "\n" in t or "\r" in t]] = True
            self._line_ends = ends.to(self.device)
        return self._line_ends
