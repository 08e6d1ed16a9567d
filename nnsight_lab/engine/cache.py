"""`tracer.cache()`: every module's output (and optionally inputs), kept after the trace.

The cache asks the interleaver to offer it the output of each module it covers,
so it records the values that flowed on (after any edit). Look values up by
path, `cache["model.transformer.h.0"].output`, or by attribute,
`cache.model.transformer.h[0].output`. A module called several times (each
generation step) keeps one value per call in `.outputs`; `.output` is the first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Entry:
    """What one module produced in the trace."""

    outputs: list[Any] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)

    @property
    def output(self) -> Any:
        """The output of the module's first call."""
        return self.outputs[0] if self.outputs else None

    @property
    def input(self) -> Any:
        """The first input of the module's first call (with `include_inputs=True`)."""
        if not self.inputs:
            return None
        args, kwargs = self.inputs[0]
        return args[0] if args else next(iter(kwargs.values()), None)


class Cache:
    """Values recorded per module path, e.g. `cache["model.transformer.h.0"].output`."""

    def __init__(self, paths: list[str], include_inputs: bool) -> None:
        self.paths = paths
        self.include_inputs = include_inputs
        self.entries: dict[str, Entry] = {}

    def record(self, location: str, value: Any) -> None:
        path, kind, _ = location.rsplit(".", 2)
        if path not in self.paths:
            return
        entry = self.entries.setdefault(path, Entry())
        if kind == "output":
            entry.outputs.append(value)
        elif self.include_inputs:
            entry.inputs.append(value)

    def __getitem__(self, path: str) -> Entry:
        if path not in self.entries:
            raise KeyError(
                f"{path!r} is not in the cache; cached modules: {list(self.entries)[:8]}..."
            )
        return self.entries[path]

    def __contains__(self, path: str) -> bool:
        return path in self.entries

    def keys(self) -> list[str]:
        return list(self.entries)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name in ("paths", "include_inputs", "entries"):
            raise AttributeError(name)
        return _Node(self, name)

    def __repr__(self) -> str:
        return f"Cache({len(self.entries)} modules)"


class _Node:
    """A path prefix in a cache, for `cache.model.transformer.h[0].output`."""

    def __init__(self, cache: Cache, path: str) -> None:
        self._cache, self._path = cache, path

    def __getattr__(self, name: str) -> Any:
        if name in ("output", "outputs", "input", "inputs") and self._path in self._cache:
            return getattr(self._cache[self._path], name)
        return _Node(self._cache, f"{self._path}.{name}")

    def __getitem__(self, index: int | str) -> _Node:
        return _Node(self._cache, f"{self._path}.{index}")
