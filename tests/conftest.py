"""Shared pytest fixtures: tiny offline Hugging Face models and tokenizer."""

from __future__ import annotations

import os

# Before transformers is imported anywhere: never touch the hub.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

try:  # tests/ has no __init__.py, so pytest puts tests/ itself on sys.path
    from tiny_models import gpt2_tokenizer_dir, save_tiny_gpt2, save_tiny_llama
except ModuleNotFoundError:  # if tests/ ever becomes a package
    from tests.tiny_models import gpt2_tokenizer_dir, save_tiny_gpt2, save_tiny_llama


@pytest.fixture(scope="session")
def tiny_gpt2_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding a tiny random GPT-2 (2 layers, 64 wide) and its tokenizer."""
    return save_tiny_gpt2(tmp_path_factory.mktemp("tiny_gpt2"))


@pytest.fixture(scope="session")
def tiny_llama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding a tiny random Llama (2 layers, 64 wide) and the GPT-2 tokenizer."""
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_llama"))


@pytest.fixture(scope="session")
def gpt2_tokenizer(tmp_path_factory: pytest.TempPathFactory):
    """GPT-2's real tokenizer, loaded with ``AutoTokenizer`` (pad token = eos)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(gpt2_tokenizer_dir(tmp_path_factory.mktemp("gpt2_tok")))


@pytest.fixture()
def toy_net():
    """The walkthrough's two-layer network (fresh per test, so edits cannot leak)."""
    from collections import OrderedDict

    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(
        OrderedDict([("layer1", torch.nn.Linear(5, 10)), ("layer2", torch.nn.Linear(10, 2))])
    )


@pytest.fixture(scope="session")
def hf_gpt2(tiny_gpt2_path: Path):
    """The tiny GPT-2 loaded with plain transformers: the reference to compare against."""
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(tiny_gpt2_path).eval()


@pytest.fixture(scope="session")
def llm(tiny_gpt2_path: Path):
    """The tiny GPT-2 as a LanguageModel, loaded from its folder."""
    from nnsight_lab import LanguageModel

    return LanguageModel(str(tiny_gpt2_path), dispatch=True)


@pytest.fixture(params=["stepped", "greenlet"])
def runner(request):
    """How simple trace bodies run: as generators (the default) or in greenlets, like
    every other body (`CONFIG.APP.STEPPED`). The test runs once with each."""
    from nnsight_lab import CONFIG

    before = CONFIG.APP.STEPPED
    CONFIG.APP.STEPPED = request.param == "stepped"
    try:
        yield request.param
    finally:
        CONFIG.APP.STEPPED = before
