"""Widget traits and what travels to the browser: plain data, tensors as binary buffers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ipywidgets.widgets.widget import _remove_buffers

from nnsight_lab.widgets import AttentionView, ModuleTree, PatchingHeatmap, SourceView


def wire(widget) -> tuple[dict, list]:
    """The widget's state as ipywidgets sends it: JSON plus binary buffers."""
    state, _, buffers = _remove_buffers(widget.get_state())
    return state, buffers


def decode(buffer, shape) -> np.ndarray:
    return np.frombuffer(bytes(buffer), dtype="<f4").reshape(shape)


def test_module_tree_mirrors_the_torch_hierarchy(llm):
    tree = ModuleTree(llm)
    assert tree.tree["path"] == "llm"  # the caller's variable name... is `llm` here
    assert tree.tree["params"] == sum(p.numel() for p in llm._model.parameters())
    transformer = tree.tree["children"][0]
    assert [c["name"] for c in transformer["children"]] == [
        n for n, _ in llm._model.transformer.named_children()
    ]
    block = transformer["children"][3]["children"][1]
    assert block["path"] == "llm.transformer.h[1]" and block["cls"] == "GPT2Block"
    assert block["params"] == sum(p.numel() for p in llm._model.transformer.h[1].parameters())


def test_module_tree_stats_from_a_cache(llm):
    with llm.trace("Hello world") as tracer:
        cache = tracer.cache()
    tree = ModuleTree(llm, cache=cache, name="model")
    out = cache["model.transformer.h.0.mlp"].output
    stats = tree.stats["model.transformer.h[0].mlp"]
    assert stats["shape"] == list(out.shape) and stats["dtype"] == "float32"
    assert stats["mean"] == pytest.approx(out.mean().item(), rel=1e-5)
    assert stats["std"] == pytest.approx(out.std(correction=0).item(), rel=1e-5)
    assert stats["min"] == pytest.approx(out.min().item())
    assert sum(stats["hist"]) == out.numel() and len(stats["hist"]) == 24


def test_module_tree_rejects_what_it_cannot_show(llm, toy_net):
    with pytest.raises(TypeError, match="wrap it first"):
        ModuleTree(toy_net)
    with pytest.raises(TypeError, match="cache must be"):
        ModuleTree(llm, cache=[1, 2])


def test_source_view_rows_match_the_listing(llm):
    attn = llm.transformer.h[0].attn
    view = SourceView(attn)
    assert view.module_path == "llm.transformer.h[0].attn"
    ops = [op for row in view.lines for op in row["ops"]]
    assert sorted(ops) == sorted(dir(attn.source)) and "attention_interface_0" in ops
    printed = str(attn.source)
    for row in view.lines:
        assert row["text"].rstrip() in printed
    assert any(row["number"] == "0" and "def forward" in row["text"] for row in view.lines)
    with pytest.raises(TypeError, match="SourceView shows the forward of a module"):
        SourceView(torch.zeros(2))


def test_attention_view_sends_one_head_as_float32_and_thumbnails():
    torch.manual_seed(0)
    attention = torch.rand(12, 12, 128, 128).softmax(-1)
    tokens = [f"t{i}" for i in range(128)]
    view = AttentionView(attention, tokens, head=2)
    state, buffers = wire(view)
    assert sorted(len(bytes(b)) for b in buffers) == [12 * 64 * 64, 128 * 128 * 4]
    np.testing.assert_array_equal(decode(view.values, (128, 128)), attention[0, 2].numpy())
    data = {k: v for k, v in state.items() if k != "_esm"}  # the JS bundle is ~20 KB
    assert len(json.dumps(data)) < 5_000  # tokens and numbers, nothing large as JSON
    view.layer = 7  # what the browser's layer picker does
    np.testing.assert_array_equal(decode(view.values, (128, 128)), attention[7, 2].numpy())
    view.head = 5  # a click on a head's thumbnail
    np.testing.assert_array_equal(decode(view.values, (128, 128)), attention[7, 5].numpy())
    from nnsight_lab.jupyter.attention_view import thumbnails

    assert view.thumbnails == thumbnails(attention[7]).numpy().tobytes()
    assert view.shape == [12, 128, 128] and view.thumb_shape == [12, 64, 64]


def test_attention_view_validates_its_input():
    three_d = np.random.rand(2, 5, 5)
    view = AttentionView(three_d, list("abcde"))
    assert view.num_layers == 1 and view.query_tokens == list("abcde")
    with pytest.raises(ValueError, match="tokens has 4 strings but the attention has 5 key"):
        AttentionView(three_d, list("abcd"))
    with pytest.raises(ValueError, match="must be 3-D or 4-D"):
        AttentionView(np.random.rand(5, 5), list("abcde"))
    with pytest.raises(TypeError, match="must be a tensor"):
        AttentionView("not numbers", list("abcde"))
    with pytest.raises(Exception, match="head 2 is out of range"):
        AttentionView(three_d, list("abcde")).head = 2


def test_patching_heatmap_buffer_labels_and_plotly():
    values = torch.randn(4, 8)
    tokens = [" The", " E", "iff", "el", " Tower", " is", " in", " Paris"]
    heatmap = PatchingHeatmap(values, tokens=tokens, layers=range(4), title="logit diff")
    state, buffers = wire(heatmap)
    assert heatmap.shape == [1, 4, 8] and heatmap.layers == ["0", "1", "2", "3"]
    np.testing.assert_array_equal(decode(buffers[0], (1, 4, 8)), values[None].numpy())
    figure = heatmap.to_plotly()
    np.testing.assert_allclose(np.array(figure.data[0].z), values.numpy(), rtol=1e-6)
    assert figure.data[0].zmid == 0 and figure.layout.title.text == "logit diff"
    with pytest.raises(ValueError, match="tokens has 2 labels but the values have 8 positions"):
        PatchingHeatmap(values, tokens=["a", "b"])


def test_patching_heatmap_components():
    values = torch.randn(3, 2, 5)
    heatmap = PatchingHeatmap(values, components=["resid", "attn", "mlp"])
    assert heatmap.shape == [3, 2, 5] and heatmap.tokens == []
    assert len(heatmap.to_plotly().data) == 3


@pytest.mark.parametrize(
    ("q", "k", "cells"), [(128, 128, (64, 64)), (100, 37, (50, 37)), (5, 5, (5, 5))]
)
def test_attention_thumbnails_are_max_pooled_per_head(q, k, cells):
    from nnsight_lab.jupyter.attention_view import thumbnails

    layer = torch.rand(3, q, k)
    thumbs = thumbnails(layer)
    assert thumbs.shape == (3, *cells) and thumbs.dtype == torch.uint8
    block_q, block_k = -(-q // cells[0]), -(-k // cells[1])
    expected = layer[1, :block_q, :block_k].max() / layer[1].max() * 255
    assert abs(int(thumbs[1, 0, 0]) - float(expected)) <= 1
    assert int(thumbs.flatten(1).max(1).values.min()) == 255


def test_token_labels_read_as_text(gpt2_tokenizer):
    from nnsight_lab.jupyter.serialization import token_label

    text = "The café is in\nParis"
    tokens = gpt2_tokenizer.tokenize(text)
    assert any("Ġ" in t for t in tokens)  # what a tokenizer gives: byte-level markers
    labels = [token_label(t) for t in tokens]
    assert "".join(labels) == text.replace("\n", "↵")  # the text itself, newline shown
    assert token_label("▁Paris") == " Paris" and token_label(" Paris") == " Paris"
    heatmap = PatchingHeatmap(torch.zeros(1, len(tokens)), tokens=tokens)
    assert heatmap.tokens == labels
    attention = torch.rand(1, 1, len(tokens), len(tokens))
    assert AttentionView(attention, tokens).tokens == labels
