"""SourceView in a real browser: the forward's source renders with op chips; a click reaches Python."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ROOT = ".nnsight-source-view"


def test_source_renders_with_operation_chips(lab):
    run = lab.runs["src"]
    assert run.rendered and not run.errors, run.describe()
    root = lab.cell("src").locator(ROOT)
    expect(root).to_be_visible()
    expect(root).to_contain_text("def forward")
    assert root.locator(".nnsight-op").count() >= 3
    lab.screenshot("source_view", lab.cell("src"))


def test_click_on_operation_sets_selected(lab):
    chip = lab.cell("src").locator(f"{ROOT} .nnsight-op").first
    op = chip.get_attribute("data-op")
    assert op, "the first op chip has no data-op"
    chip.click()
    expected = f"model.transformer.h[0].attn.source.{op}.output"
    assert lab.wait_python("src.selected", expected) == expected
