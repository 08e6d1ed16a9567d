"""Values on the wire: JSON trees plus tensors in safetensors form, never pickle.

`encode` turns a value into a JSON-able tree and puts its tensors in a dict under
fresh keys ("t0", "t1", ...); `decode` turns the tree back, given those tensors.
A tree's lists, strings, numbers, booleans and nulls stand for themselves; every
JSON object standing for a value is a tag, one key starting with "$"
(`{"$tensor": "t0"}`, `{"$tuple": [...]}`). Two tables hold the whole format:
`_RULES` (type -> tree) and `_TAGS` (tag -> value). Decoding knows only those
tags, limits depth and size, and looks up no name it was sent except torch dtypes
(in a table) and `transformers.modeling_outputs` classes. Objects that make sense
on one side only (the model, its envoys, the tracer) travel by reference: the
caller's `ref` names them, its `resolve` finds them on the other side.

A result travels as one file of these trees and tensors (see `results`).
"""

from __future__ import annotations

import base64
import binascii
import functools
import math
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any, cast

import safetensors
import safetensors.torch
import torch
from torch._subclasses.fake_tensor import FakeTensor

from ..engine.cache import Cache, Entry
from ..errors import WireError

Ref = Callable[[Any], tuple[str, Any] | None]
Resolve = Callable[[str, Any], Any]

MAX_DEPTH = 64  # nesting of values, checked on both sides
MAX_NODES = 1_000_000  # values in one tree, checked on both sides

_DTYPES = {name: d for name, d in vars(torch).items() if isinstance(d, torch.dtype)}
_FILE_DTYPES = {  # safetensors' dtype names -> torch's, for the dtypes both know
    code: _DTYPES[name]
    for code, name in (pair.split("=") for pair in (
        "BOOL=bool U8=uint8 I8=int8 U16=uint16 I16=int16 U32=uint32 I32=int32 U64=uint64 "
        "I64=int64 F16=float16 BF16=bfloat16 F32=float32 F64=float64 C64=complex64 "
        "F8_E4M3=float8_e4m3fn F8_E5M2=float8_e5m2"
    ).split())
}  # fmt: skip
_FLOATS = {"nan": math.nan, "inf": math.inf, "-inf": -math.inf}
_HINT = "define it in the body, pass plain values, or use a server started with --trusted"
_MALFORMED = (TypeError, ValueError, RuntimeError, KeyError, IndexError, OverflowError)


def encode(
    value: Any, tensors: dict[str, torch.Tensor], *, where: str, ref: Ref | None = None
) -> Any:
    """A JSON-able tree for `value`, its tensors added to `tensors` under fresh keys.

    Args:
        value: plain values, tensors, model outputs, caches, and what `ref` names.
        tensors: where the tensors go; one dict for all the values of a request.
        where: the value's name for errors, e.g. "`hidden`".
        ref: (tag, argument) for an object that travels by reference, else None;
            asked about every object first.

    Raises:
        WireError: something in `value` cannot travel; the message names its path,
            e.g. "`out`[2]['k'] is a function, ...".

    Example:
        >>> encode((1, torch.ones(2)), {}, where="`x`")
        {'$tuple': [1, {'$tensor': 't0'}]}
    """
    return _Encoder(tensors, ref).root(value, where)


def decode(
    tree: Any, tensors: Mapping[str, torch.Tensor], *, resolve: Resolve | None = None
) -> Any:
    """The value that `encode` made `tree` from; `resolve(tag, arg)` finds references.

    Raises:
        WireError: the tree is malformed (an unknown tag, a tensor not sent, nested
            more than 64 deep, more than 1,000,000 values, ...).

    Example:
        >>> decode({"$tuple": [1, {"$float": "inf"}]}, {})
        (1, inf)
    """
    return _Decoder(tensors, resolve).root(tree)


def pack_tensors(tensors: dict[str, torch.Tensor]) -> str:
    """The base64 text of a safetensors blob holding `tensors` ("" for none)."""
    if not tensors:
        return ""
    try:
        data = safetensors.torch.save(_storable(tensors))
    except (*_MALFORMED, safetensors.SafetensorError) as e:
        raise WireError(f"the tensors cannot be packed for the wire: {e}") from e
    return base64.b64encode(data).decode("ascii")


def unpack_tensors(blob: str, *, max_bytes: int | None = None) -> dict[str, torch.Tensor]:
    """The tensors `pack_tensors` packed; WireError for anything else or over `max_bytes`."""
    if blob == "":
        return {}
    if not isinstance(blob, str):
        raise WireError(f"the tensors on the wire are a {type(blob).__name__}, not base64 text")
    if max_bytes is not None and len(blob) // 4 * 3 > max_bytes:
        raise WireError(f"the tensors on the wire are over the limit of {max_bytes} bytes")
    try:
        return safetensors.torch.load(base64.b64decode(blob, validate=True))
    except (binascii.Error, *_MALFORMED, safetensors.SafetensorError) as e:
        raise WireError(f"the tensors on the wire are not a safetensors blob: {e}") from e


class _Encoder:
    """One request's (or result's) encoding: its tensors so far, and where it stands."""

    def __init__(
        self, tensors: dict[str, torch.Tensor], ref: Ref | None, *, copy: bool = True
    ) -> None:
        self.tensors, self.ref = tensors, ref
        self.copy = copy  # False: keep the tensors themselves (to count their bytes)
        self.keys: dict[int, tuple[str, torch.Tensor]] = {}  # id -> key (tensor kept alive)
        self.path: list[tuple[str, Any]] = []  # (format, item), formatted only for errors
        self.nodes = 0

    def root(self, value: Any, where: str) -> Any:
        self.path, self.nodes = [("{}", where)], 0
        return self.encode(value)

    def fail(self, what: str) -> WireError:
        return WireError("".join(fmt.format(item) for fmt, item in self.path) + " " + what)

    def child(self, value: Any, fmt: str, item: Any = "") -> Any:
        self.path.append((fmt, item))
        tree = self.encode(value)
        self.path.pop()
        return tree

    def items(self, values: Any) -> list[Any]:
        return [self.child(x, "[{}]", i) for i, x in enumerate(values)]

    def encode(self, v: Any) -> Any:
        self.nodes += 1
        if len(self.path) > MAX_DEPTH + 1:
            raise self.fail(f"is nested more than {MAX_DEPTH} deep (or holds itself)")
        if self.nodes > MAX_NODES:
            raise self.fail(f"holds more than {MAX_NODES:,} values: send them as a tensor")
        if self.ref is not None and (named := self.ref(v)) is not None:
            return {"$ref": list(named)}
        if v is None:
            return None
        for kind, rule in _RULES:
            if isinstance(v, kind):
                return rule(self, v)
        if (hf := _transformers()) is not None and isinstance(v, hf[1]):
            return self.kv(v)
        raise self.fail(f"is {_kind(v)}, which cannot be sent to a model server: {_HINT}")

    def mapping(self, v: dict[Any, Any]) -> Any:
        if type(v) is not dict and (hf := _transformers()) and isinstance(v, hf[0]):
            fields = {k: self.child(x, ".{}", k) for k, x in v.items()}
            return {"$output": [type(v).__name__, fields]}
        items = enumerate(v.items())
        pairs = [
            [self.child(k, ".keys()[{}]", i), self.child(x, "[{!r}]", k)] for i, (k, x) in items
        ]
        return {"$dict": pairs}

    def tensor(self, t: torch.Tensor) -> Any:
        if isinstance(t, FakeTensor) or t.device.type == "meta":
            return {"$meta": {"shape": [int(n) for n in t.shape], "dtype": _dtype_name(t.dtype)}}
        if id(t) in self.keys:
            return {"$tensor": self.keys[id(t)][0]}
        if t.layout != torch.strided:
            raise self.fail(f"is a {t.layout} tensor, which cannot be sent: send `.to_dense()`")
        if t.dtype not in _FILE_DTYPES.values():
            raise self.fail(f"is a {t.dtype} tensor, which cannot be sent: convert it first")
        n = len(self.tensors)
        while f"t{n}" in self.tensors:
            n += 1
        self.tensors[f"t{n}"] = _own(t) if self.copy else t
        self.keys[id(t)] = (f"t{n}", t)
        return {"$tensor": f"t{n}"}

    def kv(self, cache: Any) -> Any:
        layers = getattr(cache, "layers", None)
        if layers is None:  # transformers from before `Cache.layers`
            pairs = list(zip(cache.key_cache, cache.value_cache, strict=True))
        elif all(hasattr(layer, "keys") and hasattr(layer, "values") for layer in layers):
            pairs = [(layer.keys, layer.values) for layer in layers]
        else:
            raise self.fail(f"is a {type(cache).__name__} whose layers are not keys and values")
        kv = [
            [self.child(k, ".layers[{}].keys", i), self.child(v, ".layers[{}].values", i)]
            for i, (k, v) in enumerate(pairs)
        ]
        return {"$kv": kv}

    def nnsight_cache(self, cache: Cache) -> Any:
        at = "[{!r}].outputs", "[{!r}].inputs"
        entries = [
            [str(p), self.child(e.outputs, at[0], p), self.child(e.inputs, at[1], p)]
            for p, e in cache.entries.items()
        ]
        paths, include_inputs = [str(p) for p in cache.paths], bool(cache.include_inputs)
        return {"$cache": {"paths": paths, "include_inputs": include_inputs, "entries": entries}}


_SLICE = ("start", "stop", "step")
_RULES: list[tuple[Any, Callable[[_Encoder, Any], Any]]] = [  # in order: bool is an int
    (bool, lambda e, v: v),
    (int, lambda e, v: int(v)),  # subclasses (IntEnum, ...) as the plain value
    (float, lambda e, v: _float(v)),
    (str, lambda e, v: str.__str__(v)),
    (torch.Tensor, _Encoder.tensor),
    (list, _Encoder.items),
    (torch.Size, lambda e, v: {"$size": [int(n) for n in v]}),
    (tuple, lambda e, v: {"$tuple": e.items(v)}),  # named tuples too, as plain tuples
    (dict, _Encoder.mapping),
    (slice, lambda e, v: {"$slice": [e.child(getattr(v, n), "." + n) for n in _SLICE]}),
    (types.EllipsisType, lambda e, v: {"$ellipsis": None}),
    (torch.dtype, lambda e, v: {"$dtype": _dtype_name(v)}),
    (torch.device, lambda e, v: {"$device": str(v)}),
    (complex, lambda e, v: {"$complex": [_float(v.real), _float(v.imag)]}),
    (Cache, _Encoder.nnsight_cache),
]


def _float(x: float) -> Any:
    if math.isfinite(x):
        return float(x)
    return {"$float": "nan" if math.isnan(x) else ("inf" if x > 0 else "-inf")}


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _own(t: torch.Tensor) -> torch.Tensor:
    """`t` detached, on the CPU, contiguous, owning all its storage (copied only if not)."""
    t = t.detach()
    if type(t) is not torch.Tensor:
        t = t.as_subclass(torch.Tensor)
    t = t.resolve_conj().resolve_neg().cpu().contiguous()
    return t.clone() if t.untyped_storage().nbytes() != t.nbytes else t


def _storable(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`tensors` as safetensors takes them: no two share storage (it refuses that)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for key, t in tensors.items():
        t = _own(t)
        if t.nbytes and t.untyped_storage().data_ptr() in seen:  # `x` and `x.view(...)`
            t = t.clone()
        seen.add(t.untyped_storage().data_ptr())
        out[key] = t
    return out


def _transformers() -> tuple[Any, Any] | None:
    """(ModelOutput, Cache) once transformers is imported (before, no value is either)."""
    if "transformers" not in sys.modules:
        return None
    from transformers.cache_utils import Cache as KVCache
    from transformers.utils import ModelOutput

    return ModelOutput, KVCache


def _kind(v: Any) -> str:
    functions = (types.FunctionType, types.BuiltinFunctionType, types.MethodType)
    if isinstance(v, (*functions, functools.partial)):
        return "a function"
    if isinstance(v, type):
        return "a class"
    module = type(v).__module__
    return f"a {'' if module == 'builtins' else module + '.'}{type(v).__qualname__}"


class _Decoder:
    """One tree's decoding: its tensors, its resolver, how deep and how big it is so far."""

    def __init__(self, tensors: Mapping[str, torch.Tensor], resolve: Resolve | None) -> None:
        self.tensors, self.resolve = tensors, resolve
        self.depth = self.nodes = 0

    def root(self, tree: Any) -> Any:
        self.depth = self.nodes = 0
        return self.decode(tree)

    def decode(self, tree: Any) -> Any:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise WireError(f"a value on the wire holds more than {MAX_NODES:,} values")
        if tree is None or type(tree) in (bool, int, float, str):
            return tree
        if type(tree) is list:
            return self.items(tree)
        if type(tree) is not dict or len(tree) != 1:
            raise WireError(f"a value on the wire is not JSON or not one tag: {tree!r:.60}")
        ((tag, arg),) = tree.items()
        if tag not in _TAGS:
            raise WireError(f"unknown tag {tag!r:.40} on the wire (is the other side newer?)")
        try:
            return _TAGS[tag](self, arg)
        except _MALFORMED as e:
            raise WireError(f"a malformed {tag} on the wire: {e}") from e

    def child(self, tree: Any) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise WireError(f"a value on the wire is nested more than {MAX_DEPTH} deep")
        try:
            return self.decode(tree)
        finally:
            self.depth -= 1

    def items(self, arg: Any, n: int | None = None) -> list[Any]:
        _need(type(arg) is list and n in (None, len(arg)), f"not a list of {n or 'values'}")
        return [self.child(x) for x in arg]

    def pairs(self, arg: Any) -> list[tuple[Any, Any]]:
        _need(type(arg) is list and all(type(p) is list and len(p) == 2 for p in arg), "pairs")
        return [(self.child(a), self.child(b)) for a, b in arg]

    def meta(self, arg: Any) -> torch.Tensor:
        _need(type(arg) is dict and set(arg) == {"shape", "dtype"}, "not a shape and a dtype")
        dtype = _lookup(_DTYPES, arg["dtype"], "a torch dtype")
        return torch.empty(_sizes(arg["shape"]), dtype=dtype, device="meta")

    def output(self, arg: Any) -> Any:
        _need(type(arg) is list and len(arg) == 2, "not a class name and fields")
        name, raw = arg
        _need(type(name) is str and type(raw) is dict, "not a class name and fields")
        fields = {_typed(k, str): self.child(v) for k, v in raw.items()}
        try:
            import transformers.modeling_outputs as outputs
            from transformers.utils import ModelOutput
        except ImportError:
            return fields
        cls = vars(outputs).get(name)  # a lookup in that one module, never an import
        if not (isinstance(cls, type) and issubclass(cls, ModelOutput)):
            return fields
        try:
            return cls(**fields)
        except _MALFORMED:  # another transformers version, with other fields
            return fields

    def kv(self, arg: Any) -> Any:
        try:
            from transformers.cache_utils import DynamicCache
        except ImportError as e:
            raise WireError("a key-value cache came over the wire: install transformers") from e
        cache = DynamicCache()
        for i, (k, v) in enumerate(self.pairs(arg)):
            if k is not None or v is not None:  # (None, None): a layer not filled yet
                _need(isinstance(k, torch.Tensor) and isinstance(v, torch.Tensor), "not tensors")
                cache.update(k, v, i)
        return cache

    def cache(self, arg: Any) -> Cache:
        _need(type(arg) is dict and set(arg) == {"paths", "include_inputs", "entries"}, "keys")
        paths, include_inputs, entries = arg["paths"], arg["include_inputs"], arg["entries"]
        _need(type(paths) is list and all(type(p) is str for p in paths), "paths")
        _need(type(include_inputs) is bool and type(entries) is list, "include_inputs, entries")
        cache = Cache(paths, include_inputs)
        for entry in entries:
            _need(type(entry) is list and len(entry) == 3 and type(entry[0]) is str, "entry")
            outputs, inputs = self.child(entry[1]), self.child(entry[2])
            _need(type(outputs) is list and type(inputs) is list, "not outputs and inputs")
            cache.entries[entry[0]] = Entry(outputs=outputs, inputs=inputs)
        return cache

    def ref(self, arg: Any) -> Any:
        _need(type(arg) is list and len(arg) == 2 and type(arg[0]) is str, "not tag, argument")
        if self.resolve is None:
            raise WireError(f"a value on the wire refers to {arg[0]!r:.40}; nothing resolves it")
        return self.resolve(arg[0], arg[1])


_TAGS: dict[str, Callable[[_Decoder, Any], Any]] = {
    "$float": lambda d, arg: _lookup(_FLOATS, arg, "'nan', 'inf' or '-inf'"),
    "$tuple": lambda d, arg: tuple(d.items(arg)),
    "$dict": lambda d, arg: dict(d.pairs(arg)),
    "$tensor": lambda d, arg: _lookup(d.tensors, arg, "a tensor that was sent"),
    "$meta": _Decoder.meta,
    "$slice": lambda d, arg: slice(*d.items(arg, 3)),
    "$ellipsis": lambda d, arg: _ellipsis(arg),
    "$size": lambda d, arg: torch.Size(_sizes(arg)),
    "$dtype": lambda d, arg: _lookup(_DTYPES, arg, "a torch dtype"),
    "$device": lambda d, arg: torch.device(_typed(arg, str)),
    "$complex": lambda d, arg: complex(*(_typed(x, int, float) for x in d.items(arg, 2))),
    "$output": _Decoder.output,
    "$kv": _Decoder.kv,
    "$cache": _Decoder.cache,
    "$ref": _Decoder.ref,
}


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(what)  # `_Decoder.decode` makes it a WireError naming the tag


def _ellipsis(arg: Any) -> Any:
    _need(arg is None, f"{arg!r:.40} is not null")
    return ...


def _lookup(table: Mapping[str, Any], key: Any, what: str) -> Any:
    _need(type(key) is str and key in table, f"{key!r:.40} is not {what}")
    return table[key]


def _sizes(arg: Any) -> list[int]:
    _need(type(arg) is list and all(type(n) is int and n >= 0 for n in arg), "not sizes")
    return cast(list[int], arg)


def _typed(x: Any, *kinds: type) -> Any:
    _need(type(x) in kinds, f"{x!r:.40} is not {' or '.join(k.__name__ for k in kinds)}")
    return x
