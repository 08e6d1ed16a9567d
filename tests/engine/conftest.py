"""Every test here runs twice: simple bodies stepped, and every body in a greenlet."""

from __future__ import annotations

import pytest

from nnsight_lab.engine.stepped_mediator import SteppedMediator


@pytest.fixture(autouse=True)
def _every_runner(runner: str) -> str:
    return runner


@pytest.fixture()
def stepped_runs(monkeypatch):
    """How many bodies ran stepped during the test."""
    runs = []
    start = SteppedMediator.start

    def counted(self, interleaver):
        runs.append(self)
        start(self, interleaver)

    monkeypatch.setattr(SteppedMediator, "start", counted)
    return runs
