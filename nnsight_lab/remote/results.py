"""A result on the wire: one safetensors file of the saved values, read as a stream.

The saved values' tensors are the file's tensors (a tensor saved twice is written
once); their trees (`wire.encode`), with the wire version, are JSON in its metadata,
`tracer.result` among them under a name no variable has (`RESULT_KEY`) when asked.
`read_result` reads the file in one pass from a stream (an HTTP response, a file),
each tensor's bytes straight into a tensor allocated for them, so a result is held
in memory about once, and checks every offset, size and dtype on the way: a
malformed or cut-off file is a `WireError`, never a crash.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any, BinaryIO, cast

import safetensors.torch
import torch

from ..errors import WireError
from .schema import OMITTED_KEY, RESULT_KEY, WIRE_VERSION
from .wire import _FILE_DTYPES, _MALFORMED, Ref, Resolve, _Decoder, _Encoder, _storable

MAX_HEADER = 100_000_000  # bytes of a result file's JSON header (safetensors' own limit)
METADATA_KEY = "nnsight_lab"


NOTHING: Any = object()
"""`write_result`'s `returned` when the request did not ask for `tracer.result`."""


def write_result(
    path: str | os.PathLike,
    saved: dict[str, Any],
    *,
    ref: Ref | None = None,
    returned: Any = NOTHING,
    budget: int | None = None,
) -> int:
    """Write the saved values (name -> value) as one safetensors file; returns its size.

    The values' tensors are its tensors (a tensor saved twice is written once); their
    trees, with `WIRE_VERSION`, are JSON in its metadata under "nnsight_lab".

    Args:
        path: where to write the file.
        saved: the values, by name.
        ref: how objects that travel by reference are named (see `encode`).
        returned: what the traced call returned (`tracer.result`), written under
            `RESULT_KEY`; where its tensors would take the file's past `budget` bytes,
            a note saying so is written under `OMITTED_KEY` instead.
        budget: see `returned`.

    Raises:
        WireError: a saved value cannot travel (see `encode`).
    """
    tensors: dict[str, torch.Tensor] = {}
    encoder = _Encoder(tensors, ref)
    trees = {name: encoder.root(value, f"`{name}`") for name, value in saved.items()}
    if returned is not NOTHING:
        where = "`tracer.result`"
        extra = _new_bytes(returned, where, encoder, ref)
        if budget is None or sum(t.nbytes for t in tensors.values()) + extra <= budget:
            trees[RESULT_KEY] = encoder.root(returned, where)
        else:
            trees[OMITTED_KEY] = (
                f"tracer.result was left out: its {extra / 2**20:,.1f} MiB would take the "
                f"result past the server's limit of {budget / 2**20:,.1f} MiB; save the part "
                "you need in the body instead (e.g. `tracer.result.logits[:, -1].save()`)."
            )
    doc = json.dumps({"version": WIRE_VERSION, "saved": trees}, allow_nan=False)
    safetensors.torch.save_file(_storable(tensors), path, metadata={METADATA_KEY: doc})
    return os.path.getsize(path)


def _new_bytes(value: Any, where: str, encoder: _Encoder, ref: Ref | None) -> int:
    """Bytes of the tensors in `value` that `encoder` does not hold yet (nothing copied)."""
    found: dict[str, torch.Tensor] = {}
    _Encoder(found, ref, copy=False).root(value, where)
    return sum(t.nbytes for t in found.values() if id(t) not in encoder.keys)


def read_result(
    stream: BinaryIO, *, resolve: Resolve | None = None, max_bytes: int | None = None
) -> dict[str, Any]:
    """The saved values in a file from `write_result`, read from a stream in one pass.

    Each tensor's bytes are read (`readinto`) straight into a tensor allocated for
    them, so the result is in memory about once; nothing reads to the stream's end.

    Args:
        stream: an open file, an HTTP response's raw stream, ...
        resolve: finds objects sent by reference (see `decode`).
        max_bytes: the most bytes the file may hold.

    Raises:
        WireError: the stream ends early, is over `max_bytes`, or is not such a file.

    Example:
        >>> with open("result.safetensors", "rb") as f:
        ...     hidden = read_result(f)["hidden"]
    """
    limit = MAX_HEADER if max_bytes is None else min(MAX_HEADER, max_bytes - 8)
    size = int.from_bytes(_read_exact(stream, 8), "little")
    if not 2 <= size <= limit:
        raise WireError(f"the result's header claims {size} bytes (at most {limit} allowed)")
    header = _json(_read_exact(stream, size), "the result's header")
    if type(header) is not dict:
        raise WireError("the result's header is not a JSON object")
    trees = _saved_trees(header.pop("__metadata__", None))
    entries = _layout(header, None if max_bytes is None else max_bytes - 8 - size)
    decoder = _Decoder(_read_tensors(stream, entries), resolve)
    return {name: decoder.root(tree) for name, tree in trees.items()}


def _json(data: bytes | bytearray | str, what: str) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:
        raise WireError(f"{what} is not JSON: {e}") from e


def _saved_trees(metadata: Any) -> dict[str, Any]:
    if type(metadata) is not dict or type(metadata.get(METADATA_KEY)) is not str:
        raise WireError(f"not an nnsight_lab result: no {METADATA_KEY!r} in its metadata")
    doc = _json(metadata[METADATA_KEY], "the result's metadata")
    version = doc.get("version") if type(doc) is dict else None
    if version != WIRE_VERSION or type(doc.get("saved")) is not dict:
        raise WireError(
            f"the result speaks wire version {version!r:.40}, this side {WIRE_VERSION!r}: "
            "use the same nnsight_lab version on both sides"
        )
    return cast(dict[str, Any], doc["saved"])


def _layout(header: dict[str, Any], budget: int | None) -> list[tuple[Any, ...]]:
    """The header's tensors as (begin, end, name, dtype, shape), checked, in file order."""
    entries = sorted(_entry(name, spec) for name, spec in header.items())
    end = 0
    for begin, stop, name, *_ in entries:
        if begin < end:
            raise WireError(f"the result's tensor {name!r:.40} overlaps the one before it")
        end = stop
    if budget is not None and end > budget:
        raise WireError(f"the result is over the limit ({end} bytes of tensors)")
    return entries


def _entry(name: str, spec: Any) -> tuple[Any, ...]:
    spec = spec if type(spec) is dict else {}
    code, shape, offsets = spec.get("dtype"), spec.get("shape"), spec.get("data_offsets")
    dtype = _FILE_DTYPES.get(code) if type(code) is str else None
    ok = dtype is not None and type(shape) is list and type(offsets) is list
    ok = ok and all(type(n) is int and n >= 0 for n in [*shape, *offsets]) and len(offsets) == 2
    if not ok or not offsets[0] <= offsets[1] or _nbytes(shape, dtype) != offsets[1] - offsets[0]:
        raise WireError(
            f"the result's tensor {name!r:.40} is malformed: dtype {code!r:.20}, "
            f"shape {shape!r:.40}, offsets {offsets!r:.40}"
        )
    return offsets[0], offsets[1], name, dtype, shape


def _nbytes(shape: list[int], dtype: Any) -> int:
    return math.prod(shape) * cast(torch.dtype, dtype).itemsize


def _read_tensors(stream: BinaryIO, entries: list[tuple[Any, ...]]) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = {}
    at = 0
    for begin, end, name, dtype, shape in entries:
        while at < begin:  # a gap between tensors: read past it
            at += len(_read_exact(stream, min(begin - at, 1 << 16)))
        try:
            t = torch.empty(shape, dtype=dtype)
        except _MALFORMED as e:  # too big for this machine, or for torch
            raise WireError(f"the result's tensor {name!r:.40} cannot be allocated: {e}") from e
        if end > begin:
            _fill(stream, memoryview(cast(Any, t.reshape(-1).view(torch.uint8).numpy())))
        tensors[name], at = t, end
    return tensors


def _read_exact(stream: BinaryIO, n: int) -> bytearray:
    buf = bytearray(n)
    _fill(stream, memoryview(buf))
    return buf


def _fill(stream: BinaryIO, view: memoryview) -> None:
    """Fill `view` from `stream`, however short its reads (`read(n)` if no `readinto`)."""
    readinto = getattr(stream, "readinto", None)
    while view.nbytes:
        if readinto is not None:
            n = readinto(view)
        else:
            chunk = stream.read(view.nbytes)
            n = len(chunk)
            view[:n] = chunk
        if not n:
            raise WireError("the result ends early (it was cut off); run the request again")
        view = view[n:]
