"""`Envoy`: a module of the wrapped model, as the trace body sees it.

An envoy mirrors one `torch.nn.Module`: its children are envoys reachable by
attribute and index (`model.transformer.h[5].attn`), any other attribute is the
module's own (`model.layer1.weight`), and inside a trace body `.output`,
`.input` and `.inputs` are the real values flowing through the module now
(read them, edit them in place, or assign to replace them). A child named like
one of those values (BERT's `output`) is `.E_output` (see `moved_names`).
"""

from __future__ import annotations

import functools
import inspect
import sys
import warnings
import weakref
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from typing import Any, ClassVar

import torch
from torch import nn

from ..errors import NNsightDeprecationWarning, TracingError
from .aliases import Rename, bind, envoy_class
from .envoy_repr import envoy_repr
from .eproperty import body_mediator, eproperty, flush
from .inputs import FirstInput
from .iteration import Iteration, Steps
from .mediator import current_mediator
from .moved_names import WARNED, attribute_of, warn_moved
from .pitfalls import is_block, warn_output_index
from .source import SourceView, source_view
from .watched_call import call_watched

_VALUES = ("output", "input", "inputs")
_BUILDING: ContextVar[dict[int, Envoy] | None] = ContextVar("_BUILDING", default=None)
"""While a tree is built: module id -> its envoy (not kept after: it would be a cycle)."""


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
        object.__setattr__(self, "_options", (rename, envoys))  # for modules added later
        if is_block(module):
            object.__setattr__(self, "_block", True)
        object.__setattr__(self, "_children", {})
        known = _BUILDING.get()
        token = _BUILDING.set({}) if known is None else None
        moved = WARNED.set(set()) if known is None else None
        try:
            built = _BUILDING.get()
            assert built is not None
            built.setdefault(id(module), self)
            for name, child in module._modules.items():  # every entry, shared ones too
                if child is not None:
                    self._adopt(name, child, built)
        finally:
            if token is not None:
                _BUILDING.reset(token)
            if moved is not None:
                WARNED.reset(moved)
        if rename:
            bind(self, rename)

    def _adopt(self, name: str, module: nn.Module, known: dict[int, Envoy]) -> Envoy:
        """Make `module` this envoy's child `name`: the envoy `known` has for it (a module
        two paths reach has one envoy, at its first path), else a new one."""
        child = known.get(id(module))
        if child is None:
            rename, envoys = self._options
            child_path = f"{self._path}.{name}"
            cls = envoy_class(envoys, rename, module, child_path) or Envoy
            child = cls(module, child_path, rename=rename, envoys=envoys)
            known[id(module)] = child
        if child.parent is None and child is not self.root:
            object.__setattr__(child, "_parent", weakref.ref(self))
        self._children[name] = child
        attribute = attribute_of(Envoy, name)
        if attribute != name and self.__dict__.get(attribute) is not child:
            warn_moved(self, name, attribute)
        if not hasattr(type(self), attribute):
            object.__setattr__(self, attribute, child)
        return child

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
        if name in _DEPRECATED and not hasattr(module, name):
            return _DEPRECATED[name]()
        value = getattr(module, name)
        if isinstance(value, nn.Module):  # a module reached by a property or a plain attribute
            return self._envoy_of(name, value)
        if inspect.ismethod(value) and value.__self__ is module:
            return _returning_envoy(self, value)
        return value

    def _envoy_of(self, name: str, module: nn.Module) -> Envoy:
        """The envoy of `module`, an attribute of this envoy's module that is no child:
        the one of the tree if it has one (`base_model` on a base model is the model
        itself), else a new child (a module set with `object.__setattr__`)."""
        for envoy in self.root.modules():
            if envoy._module is module:
                return envoy
        child = self._adopt(name, module, {})
        self.root._tree_changed()
        return child

    def __getitem__(self, key: int | str | slice) -> Any:
        children = list(self._children.values())
        if isinstance(key, str):
            child = self._children.get(key)
            if child is None:  # an alias, `rename={"1": "second_layer"}`: `h["second_layer"]`
                child = self.__dict__.get(key)
                if not isinstance(child, Envoy):
                    raise KeyError(f"{self._path} has no submodule or alias {key!r}")
            return child
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

    def __bool__(self) -> bool:
        return bool(self._module)  # as the module: an empty ModuleList is falsy, a leaf is not

    def modules(self, include_fn: Callable[[Envoy], bool] | None = None) -> list[Envoy]:
        """This envoy's whole subtree, children first, this envoy last.

        A module two paths reach is listed once (as `torch.nn.Module.named_modules()`).

        Args:
            include_fn: keep only the envoys it returns True for.

        Returns:
            The envoys.

        Example:
            >>> linears = model.modules(include_fn=lambda e: isinstance(e._module, nn.Linear))
        """
        found: list[Envoy] = []
        seen: set[int] = set()
        stack: list[tuple[Envoy, bool]] = [(self, False)]
        while stack:
            envoy, expanded = stack.pop()
            if expanded:
                if include_fn is None or include_fn(envoy):
                    found.append(envoy)
                continue
            if id(envoy) in seen:
                continue
            seen.add(id(envoy))
            stack.append((envoy, True))
            stack.extend((child, False) for child in reversed(envoy._children.values()))
        return found

    def named_modules(
        self, include_fn: Callable[[Envoy], bool] | None = None
    ) -> list[tuple[str, Envoy]]:
        """`(path, envoy)` for every envoy of `modules(include_fn)`, in that order."""
        return [(envoy._path, envoy) for envoy in self.modules(include_fn)]

    def _tree_changed(self) -> None:
        """Called on the root when modules were added or replaced (a model re-routes)."""

    def __repr__(self) -> str:
        return envoy_repr(self)

    def _rebind(self, module: nn.Module) -> None:
        """Point this envoy tree at `module` (same structure), e.g. after loading weights."""
        object.__setattr__(self, "_module", module)
        for name, child in self._children.items():
            child._rebind(getattr(module, name))

    # -- values inside a trace -------------------------------------------------

    @property
    def output(self) -> Any:
        """The module's output (of this call), as the model returned it."""
        mediator = _mediator(self._path, "output")
        value = mediator.get(self._path, "output")
        if self._block:  # `block.output[0]` on a tensor is a transformers-4 habit: warn
            generator = getattr(mediator, "generator", None)  # a stepped body's frame
            frame = generator.gi_frame if generator is not None else sys._getframe(1)
            warn_output_index(self._path, value, frame)
        return value

    @output.setter
    def output(self, value: Any) -> None:
        _mediator(self._path, "output").set(self._path, "output", value)

    @property
    def inputs(self) -> tuple[tuple, dict]:
        """All inputs of the module: `(args, kwargs)`."""
        return _mediator(self._path, "inputs").get(self._path, "input")

    @inputs.setter
    def inputs(self, value: tuple[tuple, dict]) -> None:
        args, kwargs = value
        _mediator(self._path, "inputs").set(self._path, "input", (tuple(args), kwargs))

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
        _mediator(self._path, "skip").skip(self._path, value)

    def __call__(self, *args: Any, hook: bool = False, **kwargs: Any) -> Any:
        """Apply the module to any value.

        Inside a trace the call is unseen by it by default: nothing the module or its
        submodules compute is served or counted, so `model.lm_head(hidden)` does not
        disturb the run. `hook=True` lets the trace see the call, for a module
        attached to the tree that the model itself never calls (an adapter, an SAE):
        its submodules' `.output` are then served to the other bodies that wait on them.

        Args:
            *args, **kwargs: the module's input.
            hook: run the call routed through the trace.

        Returns:
            What the module returned.

        Example:
            >>> model.fc1.adapter = Adapter()
            >>> with model.edit(inplace=True):
            ...     model.fc1.output = model.fc1.adapter(model.fc1.output, hook=True)
            >>> with model.trace(x):
            ...     inner = model.fc1.adapter.inner.output.save()
        """
        mediator = current_mediator(self._path, optional=True)
        router = mediator.interleaver.router if mediator is not None else None
        if router is None or router.interleaver is None:
            return self._module(*args, **kwargs)
        if hook:
            return call_watched(mediator.interleaver, self._module, args, kwargs)
        return router.call_unrouted(self._module, args, kwargs)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _VALUES or isinstance(getattr(type(self), name, None), (property, eproperty)):
            object.__setattr__(self, name, value)  # the setters of `.output`, an eproperty's
            return
        children = self.__dict__.get("_children", {})
        if name.startswith("E_") and name[2:] in children and attribute_of(Envoy, name[2:]) == name:
            name = name[2:]  # the submodule `output` that `E_output` names
        setattr(self._module, name, value)  # torch registers or replaces a submodule
        if isinstance(value, nn.Module) or name in children:
            self._replace_child(name)

    def _replace_child(self, name: str) -> None:
        """Mirror the module's entry `name` again, after it was set: its old envoy (and
        any alias of it) goes, the module now there gets an envoy."""
        old = self._children.pop(name, None)
        dropped = {id(e) for e in old.modules()} if old is not None else set()
        root = self.root
        known = {id(e._module): e for e in root.modules()} if old is None else {}
        if old is not None:  # envoys outside the replaced subtree stay who they are
            known = {id(e._module): e for e in root.modules() if id(e) not in dropped}
        module = self._module._modules.get(name, getattr(self._module, name, None))
        if old is not None and self.__dict__.get(attribute_of(Envoy, name)) is old:
            object.__delattr__(self, attribute_of(Envoy, name))
        new = self._adopt(name, module, known) if isinstance(module, nn.Module) else None
        order = {key: i for i, key in enumerate(self._module._modules)}  # keep the module's order
        children = sorted(self._children.items(), key=lambda kv: order.get(kv[0], len(order)))
        object.__setattr__(self, "_children", dict(children))
        for envoy in root.modules():  # aliases naming the old envoy name the new one
            for key, held in list(envoy.__dict__.items()):
                if id(held) in dropped and key != "_parent":
                    if held is old and new is not None:
                        object.__setattr__(envoy, key, new)
                    else:
                        object.__delattr__(envoy, key)
        root._tree_changed()

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


# nnsight < 0.8's spellings, found by `__getattr__` (so no attribute of the class: the
# stepped runner takes Envoy's attribute names for the engine's, and a tensor has `.all()`).


def _deprecated_iter() -> Steps:
    warnings.warn(
        "model.iter is deprecated; use tracer.iter (`for step in tracer.iter[...]:`).",
        NNsightDeprecationWarning,
        stacklevel=3,
    )
    return Steps()


def _deprecated_all() -> Callable[[], Iteration]:
    def all_steps() -> Iteration:
        warnings.warn(
            "model.all() is deprecated; use tracer.all() (`for step in tracer.all():`).",
            NNsightDeprecationWarning,
            stacklevel=2,
        )
        return Steps()[:]

    return all_steps


_DEPRECATED: dict[str, Callable[[], Any]] = {"iter": _deprecated_iter, "all": _deprecated_all}


def _mediator(path: str, kind: str) -> Any:
    """The running body's mediator (see `eproperty.body_mediator`), after writing back a
    view an eproperty with a transform gave it."""
    mediator = body_mediator(path, kind)
    if "_pending_view" in mediator.__dict__:
        flush(mediator)
    return mediator


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
