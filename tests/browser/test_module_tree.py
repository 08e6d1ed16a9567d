"""ModuleTree in a real browser: it renders, a click on a node reaches Python, search filters.

Also: a wrapped model left as a cell's last expression (after
``%load_ext nnsight_lab``) renders as the same tree.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ROOT = ".nnsight-module-tree"
NODE = ".nnsight-node"


def node(root, path: str):
    return root.locator(f'{NODE}[data-path="{path}"]')


def test_tree_renders_modules_and_groups(lab):
    run = lab.runs["tree"]
    assert run.rendered and not run.errors, run.describe()
    root = lab.cell("tree").locator(ROOT)
    expect(root).to_be_visible()
    expect(node(root, "model")).to_be_visible()
    expect(node(root, "model.transformer")).to_be_visible()
    expect(node(root, "model.lm_head")).to_be_visible()
    # The two GPT-2 blocks are one folded group row, not two rows.
    expect(root.locator(".nnsight-group").first).to_be_attached()
    lab.screenshot("module_tree", lab.cell("tree"))


def test_click_on_node_sets_selected(lab):
    root = lab.cell("tree").locator(ROOT)
    search = root.locator("input").first
    search.fill("h.0.attn")  # reveal the folded block's node by searching for it
    target = node(root, "model.transformer.h[0]")
    expect(target).to_be_visible()
    target.locator(".nnsight-node-label").first.click()
    assert lab.wait_python("tree.selected", "model.transformer.h[0]") == "model.transformer.h[0]"
    search.fill("")


def test_search_filters_nodes(lab):
    root = lab.cell("tree").locator(ROOT)
    visible = root.locator(f"{NODE}:visible")
    before = visible.count()
    search = root.locator("input").first
    search.fill("mlp")
    expect(node(root, "model.lm_head")).to_be_hidden()
    expect(node(root, "model.transformer.h[0].mlp")).to_be_visible()
    expect(node(root, "model.transformer.h[1].mlp")).to_be_visible()
    paths = visible.evaluate_all("els => els.map(e => e.dataset.path)")
    assert 0 < len(paths) < before, (before, paths)
    # Every row left is a match or on the way to one.
    for path in paths:
        assert "mlp" in path or any(p.startswith(path) for p in paths if "mlp" in p), paths
    assert lab.wait_python("tree.query", "mlp") == "mlp"
    lab.screenshot("module_tree_search", lab.cell("tree"))
    search.fill("")
    expect(node(root, "model.lm_head")).to_be_visible()


def test_model_repr_is_a_module_tree(lab):
    run = lab.runs["model_repr"]
    assert run.rendered and not run.errors, run.describe()
    root = lab.cell("model_repr").locator(ROOT)
    expect(root).to_be_visible()
    expect(node(root, "model.transformer")).to_be_visible()
    lab.screenshot("model_repr", lab.cell("model_repr"))
