"""`Envoy`: a module of the wrapped model, as the trace body sees it.

An envoy mirrors one `torch.nn.Module`: its children are envoys reachable by
attribute and index (`model.transformer.h[5].attn`), any other attribute is the
module's own (`model.layer1.weight`), and inside a trace body `.output`,
`.input` and `.inputs` are the real values flowing through the module now
(read them, edit them in place, or assign to replace them).
"""

from __future__ import annotations

import functools
import inspect
import sys
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import TracingError
from .aliases import Rename, bind, envoy_class
from .inputs import FirstInput
from .mediator import current_mediator
from .pitfalls import is_block, warn_output_index
from .source import SourceView, source_view

_VALUES = ("output", "input", "inputs")


class Envoy(FirstInput):
    """One module of a wrapped model.

    Args:
        module: the module.
        path: its dotted path from the root, the root being `"model"`.
        rename: extra names for modules, e.g. `{"transformer.h": "layers"}` (see `aliases`).
        envoys: the Envoy class to use per module: one class, or a dict keyed by module
            class or by path suffix (see `aliases`).

    Example:
        >>> class Attention(Envoy):
        ...     pass
        >>> model = NNsight(net, envoys={torch.nn.MultiheadAttention: Attention})
    """

    _block = False  # a transformers block: check `.output[0]` on it (see `pitfalls`)
    root_class: ClassVar[type[Envoy] | None] = None
    """What an envoy made alone, `Envoy(module)` (or a subclass's), also is: a traceable
    model (`NNsight`), as in nnsight, where the root envoy is the model. Set by `models`,
    which the engine does not import."""

    def __new__(cls, module: nn.Module, path: str = "model", **kwargs: Any) -> Envoy:
        root = Envoy.root_class
        if path == "model" and root is not None and not issubclass(cls, root):
            cls = _traceable(cls, root)  # Python then runs its `__init__(module, **kwargs)`
        return object.__new__(cls)

    def __init__(
        self,
        module: nn.Module,
        path: str = "model",
        *,
        rename: Rename | None = None,
        envoys: Any = None,
    ) -> None:
        object.__setattr__(self, "_module", module)
        object.__setattr__(self, "_path", path)
        if is_block(module):
            object.__setattr__(self, "_block", True)
        children = {}
        for name, child in module.named_children():
            child_path = f"{path}.{name}"
            cls = envoy_class(envoys, rename, child, child_path) or Envoy
            children[name] = cls(child, child_path, rename=rename, envoys=envoys)
            object.__setattr__(children[name], "_parent", weakref.ref(self))
        object.__setattr__(self, "_children", children)
        for name, child in children.items():
            if not hasattr(type(self), name):
                object.__setattr__(self, name, child)
        if rename:
            bind(self, rename)

    @property
    def path(self) -> str:
        """The module's dotted path from the root (`"model.transformer.h.0"`): where its
        values are in a trace, and its key in `tracer.cache()`. Aliases share it."""
        return self._path

    # -- the tree ------------------------------------------------------------

    @property
    def parent(self) -> Envoy | None:
        """The envoy this one is a child of (`None` for the model; an alias is no child)."""
        ref = self.__dict__.get("_parent")
        return None if ref is None else ref()

    @property
    def root(self) -> Envoy:
        """The model envoy at the top of the tree."""
        envoy = self
        while (parent := envoy.parent) is not None:
            envoy = parent
        return envoy

    def get(self, path: str) -> Any:
        """What the dotted `path` below this envoy names, for a path built at run time.

        Example:
            >>> with model.trace("Hello"):
            ...     out = model.get("transformer.h.0.mlp.output").save()
        """
        found: Any = self
        for part in path.split("."):
            found = (
                found[int(part)]
                if part.isdigit() and isinstance(found, Envoy)
                else getattr(found, part)
            )
        return found

    @property
    def device(self) -> torch.device | None:
        """The device of the module's first parameter (`None` when it has none)."""
        return next((p.device for p in self._module.parameters()), None)

    @property
    def devices(self) -> set[torch.device]:
        """Every device the module's parameters are on."""
        return {p.device for p in self._module.parameters()}

    def __getattr__(self, name: str) -> Any:
        children = self.__dict__.get("_children")
        if children is not None and name in children:
            return children[name]
        module = self.__dict__.get("_module")
        if module is None:
            raise AttributeError(name)
        value = getattr(module, name)
        if inspect.ismethod(value) and value.__self__ is module:
            return _returning_envoy(self, value)
        return value

    def __getitem__(self, key: int | str | slice) -> Any:
        children = list(self._children.values())
        if isinstance(key, str):
            return self._children[key]
        if isinstance(key, slice):
            return children[key]
        try:
            return children[key]
        except IndexError:
            raise IndexError(
                f"{self._path} has {len(children)} submodules; index {key} is out of range"
            ) from None

    def __len__(self) -> int:
        return len(self._children)

    def __iter__(self) -> Iterator[Envoy]:
        return iter(self._children.values())

    def modules(self) -> Iterator[Envoy]:
        """This envoy and all below it, parents first."""
        yield self
        for child in self._children.values():
            yield from child.modules()

    def named_modules(self) -> Iterator[tuple[str, nn.Module]]:
        """(path, module) for this module and all below it, parents first."""
        for envoy in self.modules():
            yield envoy._path, envoy._module

    def __repr__(self) -> str:
        return repr(self._module)

    def _rebind(self, module: nn.Module) -> None:
        """Point this envoy tree at `module` (same structure), e.g. after loading weights."""
        object.__setattr__(self, "_module", module)
        for name, child in self._children.items():
            child._rebind(getattr(module, name))

    # -- values inside a trace -------------------------------------------------

    @property
    def output(self) -> Any:
        """The module's output (of this call), as the model returned it."""
        mediator = current_mediator(self._path, "output")
        value = mediator.get(self._path, "output")
        if self._block:  # `block.output[0]` on a tensor is a transformers-4 habit: warn
            generator = getattr(mediator, "generator", None)  # a stepped body's frame
            frame = generator.gi_frame if generator is not None else sys._getframe(1)
            warn_output_index(self._path, value, frame)
        return value

    @output.setter
    def output(self, value: Any) -> None:
        current_mediator(self._path, "output").set(self._path, "output", value)

    @property
    def inputs(self) -> tuple[tuple, dict]:
        """All inputs of the module: `(args, kwargs)`."""
        return current_mediator(self._path, "inputs").get(self._path, "input")

    @inputs.setter
    def inputs(self, value: tuple[tuple, dict]) -> None:
        args, kwargs = value
        current_mediator(self._path, "inputs").set(self._path, "input", (tuple(args), kwargs))

    def skip(self, value: Any) -> None:
        """Do not run this module in this call; use `value` as its output.

        Args:
            value: the output to use instead, e.g. an earlier module's `.output`.

        Raises:
            TracingError: `value` is not a tensor or a tuple/list/dict of them.
        """
        if isinstance(value, Envoy) or not isinstance(value, (torch.Tensor, tuple, list, dict)):
            raise TracingError(
                f"`{self._path}.skip(value)` takes the output to use instead of running the "
                f"module (a tensor, or a tuple/dict of tensors), got {type(value).__name__}; "
                "e.g. `model.layer2.skip(model.layer1.output)`."
            )
        current_mediator(self._path, "skip").skip(self._path, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Apply the module to any value, without disturbing the running trace."""
        mediator = current_mediator(self._path, optional=True)
        router = mediator.interleaver.router if mediator is not None else None
        if router is None or router.interleaver is None:
            return self._module(*args, **kwargs)
        return router.call_unrouted(self._module, args, kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _VALUES:
            object.__setattr__(self, name, value)  # the property setters above
        elif name in self.__dict__.get("_children", {}):
            raise AttributeError(f"cannot replace the submodule envoy {self._path}.{name}")
        else:
            setattr(self._module, name, value)

    # -- operations inside forward (.source) -----------------------------------

    @property
    def source(self) -> SourceView:
        """The module's `forward`, with every call it makes exposed as an operation.

        Print it to list the source with each call site's name (`self_c_attn_0`,
        `split_1`, ...); inside a trace, `.source.<name>` has `.output`, `.input` and
        `.inputs` like a module. Once used, the module's traced calls run a rewritten
        copy of its forward (outside traces nothing changes).

        Returns:
            The listing, whose attributes are the operations.

        Raises:
            TracingError: the module's forward has no Python source to rewrite.

        Example:
            >>> print(llm.transformer.h[0].attn.source)
            >>> with llm.trace("Hello"):
            ...     attn = llm.transformer.h[0].attn.source.attention_interface_0.output.save()
        """
        return source_view(self._module, self._path)


_TRACEABLE: dict[type, type] = {}


def _traceable(cls: type[Envoy], root: type[Envoy]) -> type[Envoy]:
    """`cls` with the model's methods (`trace`, `generate`, ...) of `root`, for a root envoy."""
    if cls is Envoy:
        return root
    if cls not in _TRACEABLE:
        names = {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
        _TRACEABLE[cls] = type(cls.__name__, (cls, root), names)
    return _TRACEABLE[cls]


def _returning_envoy(envoy: Envoy, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` of the envoy's module, giving the envoy where it gives the module itself
    (`model.to("cpu")`, `model.eval()`: the wrapper, not the bare module)."""

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        result = method(*args, **kwargs)
        return envoy if result is envoy._module else result

    return call
