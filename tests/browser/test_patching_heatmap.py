"""PatchingHeatmap in a real browser: the canvas is drawn; a click on a cell reaches Python."""

from __future__ import annotations

import pytest
from browser.notebook import HEATMAP_SHAPE
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ROOT = ".nnsight-patching-heatmap"
CANVAS = "canvas.nnsight-heatmap-canvas"


def test_heatmap_is_drawn(lab):
    run = lab.runs["hm"]
    assert run.rendered and not run.errors, run.describe()
    root = lab.cell("hm").locator(ROOT)
    expect(root).to_be_visible()
    expect(root).to_contain_text("patching")
    stats = lab.canvas_stats(root.locator(CANVAS))
    assert stats["cssWidth"] > 0 and stats["cssHeight"] > 0, stats
    # 4 x 8 random values: many distinct colours, the whole canvas painted.
    assert stats["distinct"] >= 8 and stats["painted"] > 0.9, stats
    lab.screenshot("patching_heatmap", lab.cell("hm"))


@pytest.mark.parametrize("layer,position", [(2, 5), (0, 0)])
def test_click_on_cell_sets_selected(lab, layer, position):
    rows, cols = HEATMAP_SHAPE
    canvas = lab.cell("hm").locator(f"{ROOT} {CANVAS}")
    box = canvas.bounding_box()
    assert box, "heatmap canvas has no layout box"
    # Cells tile the displayed canvas evenly (rows = layers, columns = positions).
    canvas.click(
        position={
            "x": (position + 0.5) * box["width"] / cols,
            "y": (layer + 0.5) * box["height"] / rows,
        }
    )
    assert lab.wait_python("list(hm.selected)", [layer, position]) == [layer, position]
