"""Every test here runs twice: simple bodies stepped, and every body in a greenlet."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _every_runner(runner: str) -> str:
    return runner
