"""Saving the notebook from the UI (Ctrl+S) with widget state on: under 1 MB per widget.

The session saved the executed notebook once, right after every widget
rendered. Lab is set to save widget state into the notebook
(``saveState: true``; off by default), so the saved file holds each
widget's model state (its traits, binary buffers as base64) as well as its
output: what a notebook whose widgets survive a reload costs. Per widget we
count its cell's outputs plus its model's saved state; the figures with
outputs only (Lab's default) are reported too.
"""

from __future__ import annotations

import json

import pytest
from browser.lab import METRICS
from browser.notebook import BUDGET_CELLS, WIDGET_CELLS

pytestmark = pytest.mark.browser

MAX_BYTES_PER_WIDGET = 1_000_000
VIEW_MIME = "application/vnd.jupyter.widget-view+json"
STATE_MIME = "application/vnd.jupyter.widget-state+json"


def _size(value) -> int:
    return len(json.dumps(value, separators=(",", ":")).encode())


def test_saved_notebook_grows_less_than_1mb_per_widget(notebook):
    saved = notebook.saved
    cells = {c["metadata"].get("nnsight_test"): c for c in saved["cells"]}
    state = saved["metadata"].get("widgets", {}).get(STATE_MIME, {}).get("state", {})
    assert state, "no widget state was saved (saveState should be on)"
    per_widget, outputs_only = {}, {}
    for name in BUDGET_CELLS:
        outputs = cells[name]["outputs"]
        views = [o["data"][VIEW_MIME] for o in outputs if VIEW_MIME in o.get("data", {})]
        assert views, f"cell {name!r} saved no widget view: {outputs}"
        model_id = views[0]["model_id"]
        assert model_id in state, f"cell {name!r}: model {model_id} not in the saved state"
        outputs_only[name] = _size(outputs)
        per_widget[name] = _size(outputs) + _size(state[model_id])
    growth = notebook.saved_size - notebook.initial_size
    METRICS["notebook_bytes_before_after_save"] = [notebook.initial_size, notebook.saved_size]
    METRICS["notebook_bytes_per_widget_with_state"] = per_widget
    METRICS["notebook_bytes_per_widget_outputs_only"] = outputs_only  # Lab's default
    for name, size in per_widget.items():
        assert size < MAX_BYTES_PER_WIDGET, f"{name}: {size} bytes in the saved notebook"
    assert growth < MAX_BYTES_PER_WIDGET * len(WIDGET_CELLS), growth
