"""An IPython shell with nnsight_lab's extension loaded (the way a notebook runs cells)."""

from __future__ import annotations

import pytest


@pytest.fixture()
def shell():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    result = shell.run_cell("%load_ext nnsight_lab", store_history=True)
    assert result.success
    before = set(shell.user_ns)
    yield shell
    for name in set(shell.user_ns) - before:
        del shell.user_ns[name]
    shell.magics_manager.registry["TraceMagics"].defaults.clear()
