"""Driving a JupyterLab notebook from Playwright: run cells, read outputs, inspect canvases.

Cells run through Lab's own command registry (``notebook:run-cell``, what
Run > "Run Selected Cell and Do not Advance" calls), one at a time, so each
widget cell gets its own figures:

* ``render_ms``: ``performance.now()`` in the page from just before the
  run command is issued to the first animation frame at which the widget's
  root element is visible in the cell's output and, for canvas widgets,
  the named canvas holds at least two distinct pixel values (it has been
  drawn). This includes the round trip to the kernel, the Python-side
  widget construction and serialisation, the comm messages, loading the
  widget's ESM module, decoding and drawing.
* ``exec_ms``: from the same start until the run command resolves (the
  execute reply and the kernel's idle status have arrived); a widget can
  render before that.
* ``wire_bytes``: payload bytes of every kernel websocket frame
  (``/api/kernels/*/channels``, both directions) seen by Playwright between
  issuing the command and the render check succeeding;
  ``wire_bytes_until_done`` counts on until the run command resolved.

Canvas pixels are read by copying the canvas onto a scratch 2D canvas
(``drawImage``), never by calling ``getContext`` on the widget's canvas,
which would claim its context.
"""

from __future__ import annotations

import ast
import time
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import Locator, Page, WebSocket

#: Figures the tests measure, printed in pytest's terminal summary (see conftest.py).
METRICS: dict[str, object] = {}

# Installed before Lab's own scripts on every page load.
INIT_SCRIPT = """
window.__nnsightTest = {
  canvasStats(canvas, full) {
    const w = canvas.width, h = canvas.height, rect = canvas.getBoundingClientRect();
    const out = {width: w, height: h, cssWidth: rect.width, cssHeight: rect.height,
                 distinct: 0, painted: 0};
    if (!w || !h) return out;
    const scratch = document.createElement('canvas');
    scratch.width = w; scratch.height = h;
    const ctx = scratch.getContext('2d', {willReadFrequently: true});
    ctx.drawImage(canvas, 0, 0);
    const px = new Uint32Array(ctx.getImageData(0, 0, w, h).data.buffer);
    const colors = new Set();
    let painted = 0, hash = 2166136261;
    for (let i = 0; i < px.length; i++) {
      if (px[i] !== 0) painted++;
      if (colors.size < 4096) colors.add(px[i]);
      if (!full && colors.size >= 2) return {...out, distinct: 2, painted: 1};
      hash = Math.imul(hash ^ px[i], 16777619) >>> 0;
    }
    return {...out, distinct: colors.size, painted: painted / px.length, hash};
  },
  visible(el) {
    if (!el) return false;
    const r = el.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== 'hidden';
  },
  outputText(cell) {
    const area = cell.node.querySelector('.jp-OutputArea');
    return area ? area.innerText : '';
  },
  errors(cell) {
    return cell.model.outputs.toJSON().filter(o => o.output_type === 'error')
      .map(o => `${o.ename}: ${o.evalue}\\n${(o.traceback || []).join('\\n')}`
        .replace(/\\u001b\\[[0-9;]*m/g, ''));
  },
};
"""

NOTEBOOK_READY = """(n) => {
  const app = window.jupyterapp, panel = app && app.shell.currentWidget;
  const kernel = panel && panel.sessionContext && panel.sessionContext.session
    && panel.sessionContext.session.kernel;
  return !!(kernel && kernel.status === 'idle' && kernel.connectionStatus === 'connected'
    && panel.content.widgets.length >= n);
}"""

# Runs cell ``index`` and resolves once it has executed and (if asked) rendered.
RUN_CELL = """async ({index, root, canvas, timeoutMs}) => {
  const T = window.__nnsightTest, app = window.jupyterapp;
  const nb = app.shell.currentWidget.content, cell = nb.widgets[index];
  nb.activeCellIndex = index;
  nb.deselectAll();
  let executed = null, failed = null;
  const t0 = performance.now();
  // Kept for FINISH_RUN: the widget may render before the kernel's reply arrives.
  T.pending = app.commands.execute('notebook:run-cell').then(
    () => { executed = performance.now(); }, e => { failed = String(e); executed = -1; })
    .then(() => ({execMs: executed - t0, failed}));
  const rendered = () => {
    if (!root) return executed !== null;
    const el = cell.node.querySelector(`.jp-OutputArea ${root}`);
    if (!T.visible(el)) return false;
    if (!canvas) return true;
    const c = el.querySelector(canvas);
    return !!c && T.canvasStats(c, false).distinct >= 2;
  };
  while (true) {
    await new Promise(r => requestAnimationFrame(r));
    const now = performance.now();
    if (rendered()) {
      return {execMs: executed === null ? null : executed - t0, renderMs: now - t0,
              rendered: true, errors: T.errors(cell), failed, text: T.outputText(cell)};
    }
    const errors = T.errors(cell);
    if ((executed !== null && (errors.length || failed)) || now - t0 > timeoutMs) {
      return {execMs: executed === null ? null : executed - t0, renderMs: null,
              rendered: false, errors, failed, text: T.outputText(cell)};
    }
  }
}"""

# Resolves when the last RUN_CELL's run command has finished (reply and idle status in).
FINISH_RUN = """async (timeoutMs) => Promise.race([
  window.__nnsightTest.pending,
  new Promise(r => setTimeout(() => r({execMs: null, failed: 'run still pending'}), timeoutMs)),
])"""

APPEND_CELL = """(source) => {
  const nb = window.jupyterapp.shell.currentWidget.content;
  const index = nb.model.cells.length;
  nb.model.sharedModel.insertCell(index, {cell_type: 'code', source, metadata: {}});
  return index;
}"""


@dataclass
class CellRun:
    """What happened when one cell ran."""

    name: str
    index: int
    rendered: bool
    exec_ms: float | None
    render_ms: float | None
    #: Kernel websocket bytes from issuing the run command until the render check passed ...
    wire_bytes: int
    #: ... and until the run command had finished (execute reply and idle status received).
    wire_bytes_until_done: int
    errors: list[str]
    text: str

    def describe(self) -> str:
        parts = [f"cell {self.name!r} (#{self.index}) rendered={self.rendered}"]
        if self.errors:
            parts.append("Python error:\n" + "\n".join(self.errors))
        elif self.text.strip():
            parts.append("output text:\n" + self.text[-2000:])
        return "\n".join(parts)


@dataclass
class WireMeter:
    """Sums payload bytes of the kernel websocket frames the page sends and receives."""

    received: int = 0
    sent: int = 0
    sockets: list[str] = field(default_factory=list)

    @staticmethod
    def _size(payload: str | bytes) -> int:
        return len(payload.encode()) if isinstance(payload, str) else len(payload)

    def attach(self, ws: WebSocket) -> None:
        self.sockets.append(ws.url)
        if "/api/kernels/" not in ws.url:
            return
        ws.on("framereceived", lambda payload: self._add("received", payload))
        ws.on("framesent", lambda payload: self._add("sent", payload))

    def _add(self, direction: str, payload: str | bytes) -> None:
        setattr(self, direction, getattr(self, direction) + self._size(payload))

    @property
    def total(self) -> int:
        return self.received + self.sent


class Lab:
    """One open notebook in JupyterLab, with the browser's console kept for failure reports."""

    def __init__(self, page: Page, artifacts: Path, cell_names: list[str]):
        self.page = page
        self.artifacts = artifacts
        self.cell_names = list(cell_names)
        self.console: list[str] = []
        self.wire = WireMeter()
        self.runs: dict[str, CellRun] = {}
        page.add_init_script(INIT_SCRIPT)
        page.on("console", lambda m: self.console.append(f"[{m.type}] {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"[pageerror] {e}"))
        page.on("websocket", self.wire.attach)

    def open(self, url: str, n_cells: int, timeout_s: float = 60.0) -> None:
        """Load the notebook and wait until its kernel is connected and idle."""
        self.page.goto(url, wait_until="domcontentloaded", timeout=timeout_s * 1000)
        self.page.wait_for_function(NOTEBOOK_READY, arg=n_cells, timeout=timeout_s * 1000)
        self.page.evaluate("() => window.jupyterapp.shell.collapseLeft()")  # room for widgets

    def cell(self, name: str) -> Locator:
        """The cell's DOM node in the notebook."""
        return self.page.locator(".jp-Notebook .jp-Cell").nth(self.cell_names.index(name))

    def run(
        self,
        name: str,
        root: str | None = None,
        canvas: str | None = None,
        timeout_s: float = 30.0,
    ) -> CellRun:
        """Run the named cell; wait for execution and, if ``root`` is given, its widget."""
        index = self.cell_names.index(name)
        before = self.wire.total
        result = self.page.evaluate(
            RUN_CELL,
            {"index": index, "root": root, "canvas": canvas, "timeoutMs": timeout_s * 1000},
        )
        wire_bytes = self.wire.total - before
        finished = self.page.evaluate(FINISH_RUN, timeout_s * 1000)
        failed = result["failed"] or finished["failed"]
        run = CellRun(
            name=name,
            index=index,
            rendered=result["rendered"],
            exec_ms=finished["execMs"],
            render_ms=result["renderMs"],
            wire_bytes=wire_bytes,
            wire_bytes_until_done=self.wire.total - before,
            errors=result["errors"] + ([failed] if failed else []),
            text=result["text"],
        )
        self.runs[name] = run
        return run

    def run_code(self, code: str, timeout_s: float = 30.0) -> CellRun:
        """Append a code cell with ``code`` at the end of the notebook and run it."""
        index = self.page.evaluate(APPEND_CELL, code)
        name = f"extra{index}"
        assert index == len(self.cell_names), (index, self.cell_names)
        self.cell_names.append(name)
        return self.run(name, timeout_s=timeout_s)

    def python(self, expr: str, timeout_s: float = 30.0):
        """Value of a Python expression in the kernel, printed by a new cell and read from the page."""
        run = self.run_code(f"print(repr({expr}))", timeout_s=timeout_s)
        assert run.rendered and not run.errors, run.describe()
        lines = [line for line in run.text.splitlines() if line.strip()]
        text = lines[-1].strip() if lines else ""
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError) as exc:
            raise AssertionError(f"cannot read {expr!r} from cell output {text!r}") from exc

    def wait_python(self, expr: str, expected, timeout_s: float = 5.0):
        """Print ``expr`` until it equals ``expected`` (widget messages are asynchronous)."""
        deadline = time.monotonic() + timeout_s
        value = self.python(expr)
        while value != expected and time.monotonic() < deadline:
            time.sleep(0.2)
            value = self.python(expr)
        return value

    def canvas_stats(self, canvas: Locator) -> dict:
        return canvas.evaluate("c => window.__nnsightTest.canvasStats(c, true)")

    def screenshot(self, name: str, target: Locator | None = None) -> Path:
        """Scroll ``target`` into view and save a screenshot of the page."""
        if target is not None:
            target.scroll_into_view_if_needed(timeout=5000)
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def screenshot_notebook(self, name: str = "notebook") -> Path:
        """The whole notebook: the viewport is stretched to the notebook's height for the shot."""
        size = self.page.viewport_size
        # Lab scrolls the notebook inside its own element: grow the page by what is hidden there.
        hidden = self.page.evaluate(
            """() => {
              const outer = document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer');
              return outer ? outer.scrollHeight - outer.clientHeight : 0;
            }"""
        )
        height = min(size["height"] + hidden + 50, 16000)
        self.page.set_viewport_size({"width": size["width"], "height": height})
        try:
            self.page.wait_for_timeout(300)
            self.page.evaluate(
                "() => document.querySelector('.jp-NotebookPanel .jp-WindowedPanel-outer')"
                ".scrollTo(0, 0)"
            )
            self.page.wait_for_timeout(100)
            return self.screenshot(name)
        finally:
            self.page.set_viewport_size(size)

    def save(self, path: Path, timeout_s: float = 15.0) -> int:
        """Save with Ctrl+S from the notebook, wait for the file to change; return its size."""
        before = path.stat().st_mtime_ns
        self.cell(self.cell_names[0]).locator(".jp-InputPrompt").click()
        self.page.keyboard.press("Escape")
        self.page.keyboard.press("Control+s")
        self.page.wait_for_function(
            "() => !window.jupyterapp.shell.currentWidget.context.model.dirty",
            timeout=timeout_s * 1000,
        )
        deadline = time.monotonic() + timeout_s
        while path.stat().st_mtime_ns == before and time.monotonic() < deadline:
            time.sleep(0.1)
        assert path.stat().st_mtime_ns != before, "Ctrl+S did not write the notebook"
        return path.stat().st_size
