"""`tracer.cache()`: module outputs (and inputs) recorded as the model runs, kept after.

Mental model: a cache observes the values the interleaver offers at module
locations, after every edit. Each call of a covered module is one visit: its
output and, with `include_inputs=True`, its inputs `(args, kwargs)`. Tensors are
detached and moved to the CPU by default (as nnsight does), so a cache pins
neither the autograd graph nor accelerator memory. A cache opened inside an
invoke records that invoke's rows only; several caches in one trace each record
what they cover.

Read it by path, `cache["model.transformer.h.0"].output`, or by attribute,
`cache.model.transformer.h[0].output` (also the short `cache.transformer.h[0]`,
and the model's `rename=` aliases). A module called once gives its value; one
called N times (once per generation step) gives a list of N values, and
`len(cache["model.lm_head"]) == N`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..errors import TracingError
from .batching import map_tensors, narrow
from .inputs import first_input
from .mediator import current_mediator

if TYPE_CHECKING:
    from .envoy import Envoy
    from .interleaver import Interleaver
    from .tracer import Tracer

CPU = torch.device("cpu")


@dataclass
class Entry:
    """What one module produced in a trace: one item per call in each list.

    Attributes:
        outputs: the output of each call (empty without `include_output`).
        inputs: the `(args, kwargs)` of each call (empty without `include_inputs`).
    """

    outputs: list[Any] = field(default_factory=list)
    inputs: list[Any] = field(default_factory=list)

    @property
    def output(self) -> Any:
        """The first call's output (None if none was recorded)."""
        return self.outputs[0] if self.outputs else None

    def visits(self) -> int:
        """How many calls were recorded."""
        return max(len(self.outputs), len(self.inputs))

    def per_visit(self, kind: str) -> list[Any]:
        """`kind` ("output", "inputs", "input") of each call; None where not recorded."""
        values = self.outputs if kind == "output" else self.inputs
        items = [values[i] if i < len(values) else None for i in range(self.visits())]
        if kind == "input":
            return [None if v is None or not (v[0] or v[1]) else first_input(v) for v in items]
        return items


class Cache:
    """Values recorded per module path, read as `cache["model.transformer.h.0"].output`.

    Args:
        paths: the module paths to record.
        include_inputs: record each call's inputs `(args, kwargs)`.
        include_output: record each call's output.
        device: move recorded tensors there (None: leave them where they are).
        dtype: cast recorded floating tensors to it (None: keep theirs).
        detach: detach recorded tensors from the autograd graph.
        non_blocking: copy to `device` asynchronously (`Tensor.to(non_blocking=True)`):
            faster from an accelerator, but read the values only after synchronizing.
        model: the root envoy, for attribute access through aliases (optional).
    """

    def __init__(
        self,
        paths: list[str],
        include_inputs: bool = False,
        *,
        include_output: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        detach: bool = False,
        non_blocking: bool = False,
        model: Envoy | None = None,
    ) -> None:
        self.paths = paths
        self.include_inputs = include_inputs
        self.include_output = include_output
        self.device, self.dtype, self.detach = device, dtype, detach
        self.non_blocking = non_blocking
        self._model = model  # private: `cache.model` is the model's root in the cache
        self.entries: dict[str, Entry] = {}
        self._covered = frozenset(paths)

    def wants(self, location: str) -> bool:
        """Whether `location` ("<path>.<input|output>.<call>") is one this cache records."""
        path, kind, _ = location.rsplit(".", 2)
        if path not in self._covered:
            return False
        return self.include_output if kind == "output" else self.include_inputs

    def record(self, location: str, value: Any) -> None:
        """Keep `value`, offered at `location`, if this cache covers it."""
        if not self.wants(location):
            return
        path, kind, _ = location.rsplit(".", 2)
        entry = self.entries.get(path)
        if entry is None:
            entry = self.entries[path] = Entry()
        (entry.outputs if kind == "output" else entry.inputs).append(self._kept(value))

    def _kept(self, value: Any) -> Any:
        if not (self.detach or self.device is not None or self.dtype is not None):
            return value
        return map_tensors(value, self._keep_tensor)

    def _keep_tensor(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.detach:
            tensor = tensor.detach()
        dtype = self.dtype if self.dtype is not None and tensor.is_floating_point() else None
        if self.device is not None or dtype is not None:
            tensor = tensor.to(device=self.device, dtype=dtype, non_blocking=self.non_blocking)
        return tensor

    def __getitem__(self, path: str | int) -> CacheView:
        if isinstance(path, str) and "." not in path and path != "model":
            return getattr(self, path)  # one name: as an attribute of the model
        if isinstance(path, int):
            raise TypeError("index a cache by module path: cache['model.transformer.h.0']")
        if path in self.entries:
            return CacheView(self, path, None)
        if self._model is None:
            return CacheView(self, _full(path), None)
        view: Any = self  # walk the envoys, so aliases (`rename=`) resolve as on the model
        for part in _full(path).split("."):
            view = view[int(part)] if part.lstrip("-").isdigit() else getattr(view, part)
        return view

    def __contains__(self, path: str) -> bool:
        return path in self.entries or _full(path) in self.entries

    def keys(self) -> list[str]:
        """The recorded module paths, in the order their first value came."""
        return list(self.entries)

    def __getattr__(self, name: str) -> CacheView:
        if name.startswith("_") or name in _OWN:
            raise AttributeError(name)
        model = self.__dict__.get("_model")
        if model is None:  # e.g. a cache that came from a server: paths only
            return CacheView(self, _full(name), None)
        envoy = model if name == model._path else getattr(model, name)
        return _view_of(self, envoy, name)

    def __repr__(self) -> str:
        return f"Cache({len(self.entries)} modules: {_listed(self.keys())})"


_OWN = frozenset(
    (
        "paths",
        "include_inputs",
        "include_output",
        "device",
        "dtype",
        "detach",
        "non_blocking",
        "entries",
    )
)


class CacheView:
    """One module (or a path prefix) of a cache: `.output`, `.inputs`, `.input`, `len()`.

    A module called once gives its value; called N times, a list of N (one per call).
    """

    def __init__(self, cache: Cache, path: str, envoy: Envoy | None) -> None:
        self._cache, self._path, self._envoy = cache, path, envoy

    def _entry(self) -> Entry:
        entry = self._cache.entries.get(self._path)
        if entry is None:
            covered = self._path in self._cache._covered
            why = "it never ran in this trace" if covered else "the cache does not cover it"
            raise KeyError(
                f"{self._path!r} has no values in this cache: {why}. Recorded modules: "
                f"{_listed(self._cache.keys())}"
            )
        return entry

    def _values(self, kind: str) -> Any:
        values = self._entry().per_visit(kind)
        return values[0] if len(values) == 1 else values

    @property
    def output(self) -> Any:
        """The module's output (a list of them, one per call, when it ran several times)."""
        return self._values("output")

    @property
    def outputs(self) -> list[Any]:
        """Every call's output, as a list (even for one call)."""
        return self._entry().per_visit("output")

    @property
    def inputs(self) -> Any:
        """The call's `(args, kwargs)`; None unless the cache was opened with
        `include_inputs=True` (a list, one per call, when it ran several times)."""
        return self._values("inputs")

    @property
    def input(self) -> Any:
        """The call's first input (positional, else keyword); None without inputs."""
        return self._values("input")

    def __len__(self) -> int:
        return self._entry().visits()

    def keys(self) -> list[str]:
        """The recorded paths at or below this one."""
        prefix = self._path + "."
        return [k for k in self._cache.entries if k == self._path or k.startswith(prefix)]

    def __getattr__(self, name: str) -> CacheView:
        if name.startswith("_"):
            raise AttributeError(name)
        if self._envoy is None:
            return CacheView(self._cache, f"{self._path}.{name}", None)
        return _view_of(self._cache, getattr(self._envoy, name), name)

    def __getitem__(self, key: int | str) -> CacheView:
        if self._envoy is None:
            return CacheView(self._cache, f"{self._path}.{key}", None)
        return _view_of(self._cache, self._envoy[key], str(key))  # a child, or an alias

    def __repr__(self) -> str:
        return f"CacheView({self._path!r}, cached={_listed(self.keys())})"


class Recording:
    """The caches one run of the model records into, each with the batch rows it covers
    (None: the whole batch): what the interleaver offers values to."""

    def __init__(self, batch_size: int) -> None:
        self.batch_size = batch_size
        self.caches: list[tuple[Cache, tuple[int, int] | None]] = []

    def record(self, location: str, value: Any) -> None:
        for cache, rows in self.caches:
            if rows is None:
                cache.record(location, value)
            elif cache.wants(location):
                cache.record(location, narrow(value, *rows, self.batch_size))


def start(interleaver: Interleaver, cache: Cache, rows: tuple[int, int] | None = None) -> None:
    """Have `interleaver` offer `cache` the values of the modules it covers (of `rows`)."""
    recording = interleaver.cache
    if not isinstance(recording, Recording):
        recording = interleaver.cache = Recording(interleaver.batch_size)
    recording.caches.append((cache, rows))
    for path in cache.paths:
        if cache.include_output:
            interleaver.expect(path, "output")
        if cache.include_inputs:
            interleaver.expect(path, "input")


def open_cache(tracer: Tracer, modules: Iterable[Any] | None, **options: Any) -> Cache:
    """`tracer.cache(...)`: a saved cache, recording from now on (see `Tracer.cache`)."""
    model = tracer.model
    known = [path for path, _ in model._router.modules]
    paths = known if modules is None else [_module_path(m, known) for m in modules]
    cache = tracer.save(Cache(paths, model=model, **options))
    mediator = current_mediator("tracer.cache()", optional=True)
    if mediator is None or mediator.interleaver is None:
        tracer.pending_caches.append(cache)  # collecting invokes: recorded once the model runs
    else:
        start(mediator.interleaver, cache, mediator.rows)
    return cache


def _module_path(module: Any, known: list[str]) -> str:
    path = getattr(module, "_path", module)
    if isinstance(path, str):
        for candidate in (path, _full(path)):
            if candidate in known:
                return candidate
        raise TracingError(
            f"tracer.cache(modules=[...]) got {path!r}, which is no module of this model; "
            f"its modules are {_listed(known)}"
        )
    raise TracingError(
        "tracer.cache(modules=[...]) takes modules of the model (`model.transformer.h[0]`) "
        f"or their paths ('model.transformer.h.0'), got a {type(module).__name__}"
    )


def _view_of(cache: Cache, node: Any, name: str) -> CacheView:
    path = getattr(node, "_path", None)
    if not isinstance(path, str):
        raise AttributeError(f"{name!r} is not a module of the cached model")
    return CacheView(cache, path, node)


def _full(path: str) -> str:
    return path if path == "model" or path.startswith("model.") else f"model.{path}"


def _listed(paths: list[str]) -> str:
    shown = ", ".join(paths[:8])
    return shown + (f", ... ({len(paths)} in all)" if len(paths) > 8 else "") or "none"
