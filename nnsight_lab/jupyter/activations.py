"""Statistics of every module's output in a `%%trace` run, for the module tree.

The magic has each run record a summary per module (shape, a few statistics, a
histogram) instead of the tensors themselves, so showing a model after a cell
costs a few numbers per module, not its activations' memory.
"""

from __future__ import annotations

import weakref
from typing import Any

from ..engine.cache import Cache
from ..models.nnsight import NNsight
from .serialization import summary

_last: weakref.WeakKeyDictionary[NNsight, dict[str, Any]] = weakref.WeakKeyDictionary()


class ActivationStats(Cache):
    """A cache that keeps the summary of each module's first output, not the value."""

    def record(self, location: str, value: Any) -> None:
        path, kind, _ = location.rsplit(".", 2)
        if kind == "output" and path not in self.entries:
            info = summary(value)
            if info is not None:
                self.entries[path] = info  # type: ignore[assignment]


def start(tracer: Any) -> ActivationStats:
    """Have `tracer` record the summaries of its model's module outputs."""
    stats = ActivationStats([path for path, _ in tracer.model._router.modules], False)
    tracer.pending_caches.append(stats)
    return stats


def keep(model: NNsight, stats: ActivationStats) -> None:
    """Remember `stats` as the model's latest run (shown by its module tree)."""
    if stats.entries:
        _last[model] = dict(stats.entries)


def latest(model: NNsight) -> dict[str, Any] | None:
    """The summaries of the model's latest `%%trace` run, by module path, if any."""
    return _last.get(model)
