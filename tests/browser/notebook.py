"""The notebook the browser tests open: a tiny GPT-2 and one cell per widget.

Each cell has a name (kept in its metadata as ``nnsight_test``) so tests
find it by name, not by position. Widget cells keep a handle on the widget
(``tree``, ``src``, ``att``, ``hm``) so a later cell can print its traits.
The attention tensor is built in its own cell, before the AttentionView
cell, so the AttentionView cell's timing and wire bytes are the widget's
own (not ``torch.rand``'s).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from browser.server import KERNEL_NAME

ATTN_SHAPE = (12, 12, 128, 128)  # layers, heads, query tokens, key tokens
HEATMAP_SHAPE = (4, 8)  # layers, positions
LONG_TOKENS = 600
HEATMAP_LAYERS = ["L0", "L1", "L2", "L3"]
HEATMAP_TOKENS = ["The", " Eiffel", " Tower", " is", " in", " the", " city", " of"]


@dataclass(frozen=True)
class Cell:
    name: str
    source: str
    #: CSS selector of the widget's root element in this cell's output (None: no widget).
    root: str | None = None
    #: CSS selector (inside ``root``) of a canvas that must be drawn before the cell counts as rendered.
    canvas: str | None = None
    #: Whether the saved-notebook budget (1 MB per widget) applies: not to the 600-token
    #: attention view, whose shown head alone is 1.4 MB of float32.
    in_save_budget: bool = True


CELLS = [
    Cell(
        "model",
        "import torch\n"
        "from transformers import GPT2Config, GPT2LMHeadModel\n"
        "from nnsight_lab import NNsight\n\n"
        "torch.manual_seed(0)\n"
        "config = GPT2Config(\n"
        "    n_layer=2, n_head=2, n_embd=32, vocab_size=1000, n_positions=64,\n"
        "    bos_token_id=0, eos_token_id=0,\n"
        ")\n"
        "model = NNsight(GPT2LMHeadModel(config))",
    ),
    Cell("load_ext", "%load_ext nnsight_lab"),
    Cell(
        "imports",
        "from nnsight_lab.widgets import AttentionView, ModuleTree, PatchingHeatmap, SourceView",
    ),
    Cell("tree", "tree = ModuleTree(model)\ntree", root=".nnsight-module-tree"),
    Cell("src", "src = SourceView(model.transformer.h[0].attn)\nsrc", root=".nnsight-source-view"),
    Cell(
        "attn_data",
        f"attn = torch.rand{ATTN_SHAPE}.softmax(-1)\n"
        f'tokens = [f"t{{i}}" for i in range({ATTN_SHAPE[2]})]',
    ),
    Cell(
        "att",
        "att = AttentionView(attn, tokens=tokens)\natt",
        root=".nnsight-attention-view",
        canvas="canvas.nnsight-attention-main",
    ),
    Cell(
        "att_long",
        f"att_long = AttentionView(\n"
        f"    torch.rand(1, 4, {LONG_TOKENS}, {LONG_TOKENS}).softmax(-1),\n"
        f'    tokens=[f"w{{i}} " for i in range({LONG_TOKENS})],\n'
        f")\natt_long",
        root=".nnsight-attention-view",
        canvas="canvas.nnsight-attention-main",
        in_save_budget=False,
    ),
    Cell(
        "hm",
        f"hm = PatchingHeatmap(\n"
        f"    torch.randn{HEATMAP_SHAPE},\n"
        f"    tokens={HEATMAP_TOKENS!r},\n"
        f"    layers={HEATMAP_LAYERS!r},\n"
        f'    title="patching",\n'
        f")\nhm",
        root=".nnsight-patching-heatmap",
        canvas="canvas.nnsight-heatmap-canvas",
    ),
    Cell("model_repr", "model", root=".nnsight-module-tree"),
]

WIDGET_CELLS = [cell.name for cell in CELLS if cell.root]
BUDGET_CELLS = [cell.name for cell in CELLS if cell.root and cell.in_save_budget]


def write_notebook(path: Path) -> Path:
    """Write the test notebook (no outputs) with nbformat."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {
        "name": KERNEL_NAME,
        "display_name": "nnsight_lab tests",
        "language": "python",
    }
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(cell.source, metadata={"nnsight_test": cell.name})
        for cell in CELLS
    ]
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb))
    return path
