"""A finished tracer (or session) as a `Request`: the body's source and what it reads.

The body travels as text with its place in the user's file; the variables it
reads from the caller travel as plain values (`wire`). The model, its modules,
the tracer and a few modules (`torch`, `math`, `nnsight_lab`) travel as
references that the server resolves to its own objects. Anything else (a
function, an open file) cannot travel to a safe server: the error names the
variable and says what to do; for a `--trusted` server such values travel as
one cloudpickle payload. The model's `rename=` aliases travel with the body, and
so do its persistent edits (`model.edit()`): each is a body of its own, with the
plain values it read. The traced call's return value comes back (`tracer.result`)
only when the caller holds the tracer, so a trace bound to no name does not pay
for the model's whole output.
"""

from __future__ import annotations

import base64
import builtins
import itertools
from typing import Any

import torch

from ..engine.edits import Edit, Editor
from ..engine.envoy import Envoy
from ..engine.session import Session
from ..engine.tracer import Tracer
from ..errors import RemoteError, WireError
from ..models.nnsight import NNsight
from . import renames, wire
from .execution import envoy_at, is_allowed_module
from .schema import WIRE_VERSION, EditBody, Kind, Request

_KINDS = {"_run": Kind.TRACE, "_generate": Kind.GENERATE}


def kind_of(context: Tracer | Session, scan: bool) -> Kind:
    """What the context runs on the server."""
    if isinstance(context, Session):
        return Kind.SESSION
    if scan:
        return Kind.SCAN
    return _KINDS.get(context.entry, Kind.TRACE)


def model_name(model: NNsight) -> str:
    """The model's name on the server (the name the user loaded it by)."""
    name = getattr(model, "_model_name", None)
    if not name:
        raise RemoteError(
            f"a {type(model).__name__} wrapped around a module in memory has no name a server "
            "knows: remote execution runs models the server holds, e.g. "
            '`LanguageModel("openai-community/gpt2")`.'
        )
    return str(name)


def build(context: Tracer | Session, kind: Kind, *, trusted: bool) -> Request:
    """The request for a finished context (its body captured, its scope set).

    Raises:
        WireError: a value the body reads cannot travel (names the variable).
    """
    body, scope = context.body, context.scope
    assert body is not None and scope is not None
    model = context.model
    ref = _references(model)
    tensors: dict[str, torch.Tensor] = {}
    edits = [_edit(edit, tensors, ref) for edit in model._edits]
    values, pickled = _values(body.reads, scope, tensors, ref, trusted)
    inputs = [
        wire.encode(v, tensors, where=f"input {i}", ref=ref) for i, v in enumerate(context.inputs)
    ]
    kwargs = {
        k: wire.encode(v, tensors, where=f"`{k}=`", ref=ref) for k, v in context.kwargs.items()
    }
    return Request(
        version=WIRE_VERSION,
        model=model_name(model),
        kind=kind,
        source=body.source,
        filename=body.filename,
        line=body.start,
        target=body.target,
        inputs=inputs,
        kwargs=kwargs,
        values=values,
        tensors=wire.pack_tensors(tensors),
        payload=_pickle(pickled) if pickled else None,
        rename=renames.encode(model._options[0]),
        edits=edits,
        result=kind is not Kind.SESSION and _held(context, scope),
    )


def _edit(edit: Edit, tensors: dict[str, torch.Tensor], ref: wire.Ref) -> EditBody:
    """A persistent edit as the request carries it: its body and the values it read."""
    body = edit.body
    try:
        values, _ = _values(body.reads, (edit.values, edit.scope), tensors, ref, trusted=False)
    except WireError as error:
        raise WireError(
            f"{error} (read by the persistent edit at {body.filename}, line {body.lineno}; "
            "an edit's values travel as plain values, even to a --trusted server)"
        ) from None
    return EditBody(body.source, body.filename, body.start, body.target, values)


def _held(context: Tracer | Session, scope: tuple[dict, dict]) -> bool:
    """Whether the caller holds the tracer in a variable (`as tracer`, `tracer = ...`), so
    that it can read `tracer.result` after the block."""
    return any(value is context for value in itertools.chain(*(s.values() for s in scope)))


def _values(
    names: tuple[str, ...],
    scope: tuple[dict, dict],
    tensors: dict[str, torch.Tensor],
    ref: wire.Ref,
    trusted: bool,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The caller's variables the body reads, encoded; and those only pickling carries."""
    caller_locals, caller_globals = scope
    values: dict[str, Any] = {}
    pickled: dict[str, Any] = {}
    for name in names:
        if name.startswith("__"):
            continue  # the interpreter's own (`__builtins__`): the server's policy answers it
        if name in caller_locals:
            value = caller_locals[name]
        elif name in caller_globals:
            value = caller_globals[name]
        else:
            continue  # a builtin, or a name the server will report as undefined
        if name in builtins.__dict__ and value is builtins.__dict__[name]:
            continue
        try:
            values[name] = wire.encode(value, tensors, where=f"`{name}`", ref=ref)
        except WireError:
            if not trusted:
                raise
            pickled[name] = value
    return values, pickled


def _references(model: NNsight) -> wire.Ref:
    """How objects of this side travel by reference (see the module docstring)."""

    def ref(value: Any) -> tuple[str, Any] | None:
        if isinstance(value, Envoy):
            root = value._module is model._model
            if isinstance(value, NNsight) and root:
                return ("model", None)
            if _belongs(model, value):
                return ("envoy", value._path)
            raise WireError(
                f"{value._path} belongs to another model than the one this trace runs on a "
                "server; a remote body can use only its own model."
            )
        if isinstance(value, (Tracer, Session, Editor)):  # an edit's tracer: the trace's
            return ("tracer", None)
        if is_allowed_module(value):
            return ("module", value.__name__)
        return None

    return ref


def _belongs(model: NNsight, envoy: Envoy) -> bool:
    try:
        return envoy_at(model, envoy._path)._module is envoy._module
    except WireError:  # no such path in this model
        return False


def _pickle(values: dict[str, Any]) -> str:
    import cloudpickle

    return base64.b64encode(cloudpickle.dumps(values)).decode("ascii")
