"""Fixtures for the real-browser tests: JupyterLab + Debian's Chromium driven by Playwright.

One session: start ``jupyter lab`` headless, write the test notebook, open
it in Chromium, run its cells one by one (recording per-widget render time
and websocket bytes), screenshot the whole notebook, save it with Ctrl+S.
The tests then check each widget in that live page. Chromium is never
downloaded: a missing ``/usr/bin/chromium`` fails the suite and says to run
``apt-get install -y chromium``.

On a failed test the browser console, page errors and the server log tail
are attached to the report. Figures (render ms, wire bytes, notebook
growth) are printed in pytest's terminal summary and written to
``tests/browser/artifacts/metrics.json`` next to the screenshots.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from browser.lab import METRICS, Lab
from browser.notebook import CELLS, write_notebook
from browser.server import JupyterServer, start_jupyter

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
    "--disable-quic",
]
ARTIFACTS = Path(__file__).parent / "artifacts"
NOTEBOOK = "widgets.ipynb"

#: The live notebook, for failure reports (also when the session fixture fails half-way).
_ACTIVE: dict[str, object] = {}


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "browser: real-browser test (JupyterLab + Chromium via Playwright)"
    )


@dataclass
class NotebookSession:
    """The executed notebook, open in the browser, and what its saving measured."""

    lab: Lab
    server: JupyterServer
    path: Path
    initial_size: int
    saved_size: int = 0
    saved: dict = field(default_factory=dict)


@pytest.fixture(scope="session")
def chromium_path() -> str:
    path = os.environ.get("NNSIGHT_LAB_CHROMIUM", CHROMIUM)
    if not Path(path).is_file():
        pytest.fail(
            f"Chromium not found at {path}. The browser tests use the system's Chromium "
            "and never download one: install it with `apt-get install -y chromium`.",
            pytrace=False,
        )
    return path


@pytest.fixture(scope="session")
def notebook(
    chromium_path: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[NotebookSession]:
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    root = tmp_path_factory.mktemp("lab_root")
    path = write_notebook(root / NOTEBOOK)
    server = start_jupyter(root, tmp_path_factory.mktemp("lab_home"))
    _ACTIVE["server"] = server
    playwright = sync_playwright().start()
    browser = None
    try:
        browser = playwright.chromium.launch(
            executable_path=chromium_path, args=CHROMIUM_ARGS, timeout=30_000
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(15_000)
        lab = Lab(page, ARTIFACTS, [cell.name for cell in CELLS])
        _ACTIVE["lab"] = lab
        session = NotebookSession(lab, server, path, initial_size=path.stat().st_size)
        started = time.monotonic()
        lab.open(server.url(f"lab/tree/{NOTEBOOK}"), len(CELLS))
        opened = time.monotonic()
        for cell in CELLS:
            # The first cell imports torch and transformers in a fresh kernel.
            timeout = 90 if cell is CELLS[0] else 10
            lab.run(cell.name, cell.root, cell.canvas, timeout_s=timeout)
        METRICS["setup_s"] = {
            "open_notebook_until_kernel_idle": round(opened - started, 1),
            "run_cells": round(time.monotonic() - opened, 1),
        }
        METRICS["cell_render_ms"] = {
            name: run.render_ms and round(run.render_ms) for name, run in lab.runs.items()
        }
        lab.screenshot_notebook("notebook")
        session.saved_size = lab.save(path)
        session.saved = json.loads(path.read_text())
        yield session
    finally:
        if browser is not None:
            browser.close()
        playwright.stop()
        server.stop()
        _ACTIVE.clear()


@pytest.fixture()
def lab(notebook: NotebookSession) -> Lab:
    return notebook.lab


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    report = yield
    if report.failed and "browser" in item.keywords:
        lab = _ACTIVE.get("lab")
        server = _ACTIVE.get("server")
        if isinstance(lab, Lab):
            report.sections.append(("browser console", "\n".join(lab.console[-200:]) or "<empty>"))
            report.sections.append(
                ("cells run", "\n\n".join(run.describe() for run in lab.runs.values()))
            )
        if isinstance(server, JupyterServer):
            report.sections.append(("jupyter server log (tail)", server.log_tail()))
    return report


def pytest_terminal_summary(terminalreporter) -> None:
    if not METRICS:
        return
    terminalreporter.section("browser figures")
    for key, value in METRICS.items():
        terminalreporter.write_line(f"{key}: {value}")
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "metrics.json").write_text(json.dumps(METRICS, indent=1))
