"""A Hugging Face model directory made locally from a `model/` config: nothing is downloaded.

It holds `config.json` (a `LlamaConfig` with the config's shapes) and a WordLevel tokenizer
of `real.vocab` words. There are no weights: vLLM serves it with `--load-format dummy`
(random weights), which is all a latency measurement of a model's shapes needs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from real.vocab import SPECIALS, words


def write_tiny_model(model: Mapping[str, Any], directory: Path) -> Path:
    """Write the model described by the `model/` config `model` into `directory` (created);
    return it. Deterministic: the same config gives the same files."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, PreTrainedTokenizerFast

    directory.mkdir(parents=True, exist_ok=True)
    vocab_size = int(model["vocab_size"])
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=int(model["hidden_size"]),
        intermediate_size=int(model["intermediate_size"]), num_hidden_layers=int(model["num_layers"]),
        num_attention_heads=int(model["num_attention_heads"]), num_key_value_heads=int(model["num_kv_heads"]),
        head_dim=int(model["head_dim"]), max_position_embeddings=int(model["max_model_len"]),
        tie_word_embeddings=bool(model.get("tie_word_embeddings", False)),
        attention_bias=bool(model.get("attention_bias", False)),
        bos_token_id=SPECIALS.index("<s>"), eos_token_id=SPECIALS.index("</s>"), torch_dtype="bfloat16")
    config.save_pretrained(directory)

    vocab = {token: i for i, token in enumerate([*SPECIALS, *words(vocab_size)])}
    tokenizer = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", model_max_length=int(model["max_model_len"]))
    fast.save_pretrained(directory)
    (directory / "pdsim_model.json").write_text(json.dumps(dict(model), indent=2, default=str))
    return directory
