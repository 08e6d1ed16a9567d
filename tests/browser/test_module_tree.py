"""ModuleTree in a real browser: it renders, a click on a node reaches Python, search filters.

Also: a wrapped model left as a cell's last expression (after
``%load_ext nnsight_lab``) renders as the same tree.
"""

from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ROOT = ".nnsight-module-tree"
NODE = ".nnsight-node"


def node(root, path: str):
    return root.locator(f'{NODE}[data-path="{path}"]')


def test_tree_renders_modules(lab):
    run = lab.runs["tree"]
    assert run.rendered and not run.errors, run.describe()
    root = lab.cell("tree").locator(ROOT)
    expect(root).to_be_visible()
    for path in ("model", "model.transformer", "model.transformer.h", "model.lm_head"):
        expect(node(root, path)).to_be_visible()
    # Below the first level the tree starts folded: no block is shown yet.
    expect(node(root, "model.transformer.h[0]")).to_have_count(0)
    lab.screenshot("module_tree", lab.cell("tree"))


def test_blocks_fold_into_a_group_and_a_click_sets_selected(lab):
    root = lab.cell("tree").locator(ROOT)
    node(root, "model.transformer.h").locator(".nnsight-toggle").click()
    # h[0] and h[1] (same class, same structure) are one group row, still folded.
    groups = root.locator(".nnsight-group")
    expect(groups).to_have_count(1)
    expect(groups).to_contain_text("h.0-1")
    expect(node(root, "model.transformer.h[0]")).to_have_count(0)
    groups.locator(".nnsight-group-label").click()
    target = node(root, "model.transformer.h[0]")
    expect(target).to_be_visible()
    expect(node(root, "model.transformer.h[1]")).to_be_visible()
    target.locator(".nnsight-node-label").click()
    expect(target).to_have_class(re.compile(r"\bis-selected\b"))
    assert lab.wait_python("tree.selected", "model.transformer.h[0]") == "model.transformer.h[0]"
    lab.screenshot("module_tree_selected", lab.cell("tree"))


def test_search_filters_nodes(lab):
    root = lab.cell("tree").locator(ROOT)
    search = root.locator("input.nnsight-tree-search")
    search.fill("mlp")
    for path in ("model.transformer.h[0].mlp", "model.transformer.h[1].mlp.c_fc"):
        expect(node(root, path)).to_be_visible()
    for path in ("model.lm_head", "model.transformer.wte", "model.transformer.h[0].attn"):
        expect(node(root, path)).to_have_count(0)
    paths = root.locator(NODE).evaluate_all("els => els.map(e => e.dataset.path)")
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
