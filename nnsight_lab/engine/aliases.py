"""Extra names for a model's modules (`rename=`) and envoy classes per module (`envoys=`).

`rename={"transformer.h": "layers", "attn": "self_attn"}` gives modules more
names. A key is a module path relative to an envoy, tried from every envoy of
the tree (`"attn"` names the attention of every block; `"transformer.h"` the
root's layer list); a `*` part stands for any one child (`"*.h"`), and a module
class names the one direct child of that class. The value is an alias or a list
of them; the alias becomes an attribute of the envoy the key was tried from (a
dotted alias, `"attn.o_proj"`, of the envoy its prefix names), pointing at the
same envoy. So `model.layers[0].self_attn` and `model.transformer.h[0].attn` are
one envoy, with one path: renaming changes spellings, never locations.

`envoys=` chooses the Envoy class of each module: one class for all, or a dict
keyed by module class (tried along its MRO) or by path suffix (`"attn"`,
`"transformer.h"`, `"layers.*"`), matched on the module's path and on its
spellings under `rename`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from torch import nn

from ..errors import TracingValueError

Rename = Mapping[Any, "str | list[str]"]


def bind(envoy: Any, rename: Rename) -> None:
    """Attach every alias that `rename` defines from `envoy` (see the module docstring).

    Raises:
        TracingValueError: a key names two modules from here, or an alias would hide a
            child, an attribute of the envoy, or one of the module.
    """
    for key, aliases in rename.items():
        matches = named(envoy, key)
        if not matches:
            continue  # one rename serves several architectures: keys may not apply here
        if len(matches) > 1:
            shown = key.__name__ if isinstance(key, type) else repr(key)
            raise TracingValueError(
                f"`rename` key {shown} matches {len(matches)} modules under `{envoy._path}` "
                f"({', '.join(p for p, _ in matches)}); an alias names one module: key "
                "them by name instead."
            )
        relative, target = matches[0]
        for alias in _aliases(aliases):
            host, name = envoy, alias
            if "." in alias:
                prefix, _, name = alias.rpartition(".")
                host = _walk(envoy, prefix) if relative.startswith(prefix + ".") else None
                if host is None:
                    raise TracingValueError(
                        f"rename alias {alias!r} for {relative!r}: a dotted alias is bound "
                        "on the module its prefix names, so the prefix must start the key's "
                        f"path (e.g. {{'attn.c_proj': 'attn.o_proj'}})."
                    )
            _attach(host, name, target, relative)


def _attach(host: Any, name: str, target: Any, relative: str) -> None:
    held = host.__dict__.get(name)
    if held is target:
        return  # already that envoy (`{"attn": "attn"}`, tied modules)
    if name in host._children:
        hidden = "shadow a child module of that name"
    elif name in host.__dict__ and _is_envoy(held):
        hidden = f"be bound twice: it is already bound to `{held._path}`"
    elif name in host.__dict__:
        hidden = "shadow an attribute of that name"
    elif any(name in vars(cls) for cls in type(host).__mro__):
        hidden = f"shadow the envoy attribute `Envoy.{name}`"
    elif hasattr(host._module, name):
        hidden = "shadow an attribute of the wrapped module"
    else:
        object.__setattr__(host, name, target)
        return
    raise TracingValueError(
        f"`rename` alias {name!r} for {relative!r} would {hidden} on `{host._path}`, "
        "making it unreachable by that name: pick another alias."
    )


def named(envoy: Any, key: Any) -> list[tuple[str, Any]]:
    """The envoys `key` names from `envoy`, as (path relative to it, envoy), once each."""
    if isinstance(key, type):
        found = [(n, c) for n, c in envoy._children.items() if isinstance(c._module, key)]
    else:
        found = [("", envoy)]
        for part in key.strip(".").split("."):
            found = [
                (f"{path}.{name}".lstrip("."), child)
                for path, node in found
                for name, child in _steps(node, part)
            ]
    unique: dict[int, tuple[str, Any]] = {}
    for path, match in found:
        unique.setdefault(id(match), (path, match))
    return list(unique.values())


def _steps(node: Any, part: str) -> Iterator[tuple[str, Any]]:
    if part == "*":
        yield from node._children.items()
        return
    child = node.__dict__.get(part)  # a child or an alias bound below already
    if child is None:
        child = node._children.get(part)
    if child is None and isinstance(getattr(type(node._module), part, None), property):
        child = getattr(node, part)  # a module a property gives (`base_model`)
    if _is_envoy(child):
        yield part, child


def _walk(envoy: Any, path: str) -> Any:
    for part in path.split("."):
        envoy = next(_steps(envoy, part), (None, None))[1]
        if envoy is None:
            return None
    return envoy


def _is_envoy(value: Any) -> bool:
    return "_children" in getattr(value, "__dict__", ())


def _aliases(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


# -- envoys= -------------------------------------------------------------------------


def envoy_class(envoys: Any, rename: Rename | None, module: nn.Module, path: str) -> type | None:
    """The Envoy class `envoys` gives the module at `path` (None: the default one)."""
    if envoys is None or isinstance(envoys, type):
        return envoys
    for cls in type(module).__mro__:
        if cls in envoys:
            return envoys[cls]
    for spelling in spellings(rename, path, module):
        for key, chosen in envoys.items():
            if isinstance(key, str) and ends_with(spelling, key):
                return chosen
    return None


def spellings(rename: Rename | None, path: str, module: nn.Module | None = None) -> list[str]:
    """`path` and its other spellings under `rename` (aliases of it or of its ancestors).

    Example: under `{"transformer.h": "layers", "attn": "self_attn"}`,
    `model.transformer.h.0.attn` is also `model.layers.0.self_attn` (and two mixes).
    """
    parent, _, last = path.rpartition(".")
    if not parent:
        return [path]
    found = [f"{p}.{last}" for p in spellings(rename, parent)]
    parts = path.split(".")
    for key, aliases in (rename or {}).items():
        if isinstance(key, type):
            depth = 1 if isinstance(module, key) else 0
        else:
            depth = key.strip(".").count(".") + 1
            if depth >= len(parts) or not ends_with(path, key):
                depth = 0
        for alias in _aliases(aliases) if depth else ():
            down = alias.count(".")  # a dotted alias hangs that many levels further down
            if down < depth:
                host = ".".join(parts[: len(parts) - depth + down])
                name = alias.rpartition(".")[2]
                found += [f"{p}.{name}" for p in spellings(rename, host)]
    return found


def ends_with(path: str, key: str) -> bool:
    """Whether dotted `path` ends with dotted `key`, part by part (`*` matches any part)."""
    parts, wanted = path.split("."), key.strip(".").split(".")
    if len(wanted) > len(parts):
        return False
    return all(w in ("*", p) for p, w in zip(parts[-len(wanted) :], wanted, strict=True))
