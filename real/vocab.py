"""The synthetic vocabulary of the locally made model: one word is one token.

The tokenizer of `real.tiny_model` maps each word `w<i>` to token id i + len(SPECIALS) with a
whitespace pre-tokenizer and no added special tokens, so a prompt of N words is exactly N
prompt tokens. The replayer builds its prompts here; nothing else needs the tokenizer.
"""

from __future__ import annotations

import numpy as np

SPECIALS = ("<unk>", "<s>", "</s>")


def words(vocab_size: int) -> list[str]:
    """Every non-special word of a `vocab_size`-token vocabulary, in token-id order."""
    return [f"w{i}" for i in range(vocab_size - len(SPECIALS))]


def prompt_text(request_id: int, num_tokens: int, vocab_size: int) -> str:
    """`num_tokens` words drawn from a generator seeded by `request_id`: prompts differ from the
    first token on, so vLLM's prefix cache does not share blocks between requests (the traces
    carry no prefix information), and the same request always gets the same prompt."""
    rng = np.random.default_rng(request_id)
    ids = rng.integers(0, vocab_size - len(SPECIALS), size=num_tokens)
    return " ".join(f"w{i}" for i in ids.tolist())
