"""AttentionView in a real browser: 12 layers x 12 heads x 128 tokens.

Rendering: the head thumbnails and the big canvas are drawn; clicking a
thumbnail sets ``att.head``; the layer picker sets ``att.layer``.

Performance, measured when the session ran the cell (see ``lab.py``):
websocket bytes from issuing the run command to the big canvas being drawn
stay under 4 MB, and that render time stays under 1 s.
"""

from __future__ import annotations

import pytest
from browser.lab import METRICS
from browser.notebook import ATTN_SHAPE
from playwright.sync_api import expect

pytestmark = pytest.mark.browser

ROOT = ".nnsight-attention-view"
MAIN = "canvas.nnsight-attention-main"
THUMB = "canvas.nnsight-head-thumb"
MAX_WIRE_BYTES = 4_000_000
MAX_RENDER_MS = 1000.0


def test_attention_is_drawn(lab):
    run = lab.runs["att"]
    assert run.rendered and not run.errors, run.describe()
    root = lab.cell("att").locator(ROOT)
    expect(root).to_be_visible()
    main = lab.canvas_stats(root.locator(MAIN))
    assert main["cssWidth"] > 0 and main["cssHeight"] > 0, main
    assert main["distinct"] >= 16, main
    thumbs = root.locator(THUMB)
    expect(thumbs).to_have_count(ATTN_SHAPE[1])
    for head in range(ATTN_SHAPE[1]):
        thumb = root.locator(f'{THUMB}[data-head="{head}"]')
        stats = lab.canvas_stats(thumb)
        assert stats["cssWidth"] > 0 and stats["distinct"] >= 2, (head, stats)
    lab.screenshot("attention_view", lab.cell("att"))


def test_wire_bytes_and_render_time(lab):
    run = lab.runs["att"]
    assert run.rendered and not run.errors, run.describe()
    METRICS["attention_view_wire_bytes"] = run.wire_bytes
    METRICS["attention_view_render_ms"] = round(run.render_ms, 1)
    METRICS["attention_view_kernel_exec_ms"] = run.exec_ms and round(run.exec_ms, 1)
    assert run.wire_bytes < MAX_WIRE_BYTES, f"{run.wire_bytes} bytes on the wire"
    assert run.render_ms < MAX_RENDER_MS, f"rendered after {run.render_ms:.0f} ms"


def test_click_on_thumbnail_sets_head(lab):
    root = lab.cell("att").locator(ROOT)
    root.locator(f'{THUMB}[data-head="3"]').click()
    assert lab.wait_python("att.head", 3) == 3


def test_layer_picker_sets_layer(lab):
    root = lab.cell("att").locator(ROOT)
    picker = root.locator("select").first
    expect(picker).to_be_visible()
    before = lab.canvas_stats(root.locator(MAIN))
    picker.select_option("5")
    assert lab.wait_python("att.layer", 5) == 5
    # The new layer's values arrive and are drawn (random data: a different image).
    after = lab.canvas_stats(root.locator(MAIN))
    assert after["distinct"] >= 16, after
    lab.screenshot("attention_view_layer5", lab.cell("att"))
    assert before != after or before["distinct"] == 4096, (before, after)
