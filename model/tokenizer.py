"""Train and save a byte-level BPE tokenizer that `AutoTokenizer.from_pretrained` loads.

Byte-level BPE with no normaliser and no prefix space: encode then decode returns the exact
text, whitespace included, which code completion needs (indentation is content).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from . import special_tokens as st


def train_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """Train byte-level BPE on `texts`; the special tokens get ids 0..3 (see special_tokens.py)."""
    tok = Tokenizer(models.BPE())
    # use_regex=True splits on GPT-2 style word boundaries, so merges never cross e.g. "x" + " =".
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(st.ORDER),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def save_for_transformers(tok: Tokenizer, out_dir: Path, model_max_length: int = 1 << 20) -> None:
    """Write tokenizer.json plus the small config files AutoTokenizer needs."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": st.PAD,
        "eos_token": st.EOS,
        "bos_token": st.BOS,
        "mask_token": st.MASK,
        "clean_up_tokenization_spaces": False,
        "model_max_length": model_max_length,
    }
    (out_dir / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
