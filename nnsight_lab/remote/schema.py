"""The wire schema between the client and a model server: typed records, one version.

Everything that crosses the wire is JSON made of these records, plus tensors in
safetensors form (see `wire`); neither side ever unpickles the other's bytes,
except a server started with `--trusted`, which accepts cloudpickle payloads.

A request is a trace body as source text, where it stands in the user's file,
and the values it reads (`values`, encoded by `wire.encode`); the model is never
sent, only how the client names its modules (`rename`) and its persistent edits
(`edits`, bodies like the trace's). A result is the saved values, by name (and
the traced call's return value, `tracer.result`, when the client asks for it).
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass, field
from typing import Any

WIRE_VERSION = "nnsight_lab/2"  # bumped when a record changes shape

API_KEY_HEADER = "X-API-Key"

RESULT_KEY = "<tracer.result>"
"""The name (no variable's) under which a result holds `tracer.result`, when asked."""
OMITTED_KEY = "<tracer.result omitted>"
"""The name under which a result says why it leaves `tracer.result` out (too large)."""


class Kind(enum.StrEnum):
    """What the body runs in on the server."""

    TRACE = "trace"  # model.trace(...)
    GENERATE = "generate"  # model.generate(...)
    SCAN = "scan"  # model.scan(...)
    SESSION = "session"  # model.session(): a body holding several traces


class State(enum.StrEnum):
    """Where a request stands; `COMPLETED`, `ERROR` and `CANCELLED` are final."""

    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    ERROR = "error"
    CANCELLED = "cancelled"

    @property
    def final(self) -> bool:
        return self in (State.COMPLETED, State.ERROR, State.CANCELLED)


@dataclass(frozen=True)
class EditBody:
    """One persistent edit of the client's model (`model.edit()`), run before the body.

    Attributes:
        source: the edit block's source text, dedented.
        filename: the user's file it stands in.
        line: the line of `source`'s first line there.
        target: the name after `as` in its `with` statement, if one.
        values: the variables it read when it was recorded, by name (encoded; their
            tensors are in the request's `tensors`).
    """

    source: str
    filename: str
    line: int
    target: str | None = None
    values: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Request:
    """One trace (or session) to run on a server's model.

    Attributes:
        version: `WIRE_VERSION` of the client that made it.
        model: the model's name on the server (as `/v1/models` lists it).
        kind: trace, generate, scan or session.
        source: the body's source text, dedented (what `Body.source` holds).
        filename: the user's file (or notebook cell) the body stands in.
        line: the line of `source`'s first line in that file.
        target: the name after `as` in the `with` statement (the tracer), if one.
        inputs: the trace's positional inputs (encoded, see `wire`).
        kwargs: the trace's keyword arguments (encoded).
        values: the variables the body reads from the caller, by name (encoded).
        tensors: the tensors that `inputs`, `kwargs` and `values` refer to, as one
            base64 safetensors blob ("" when none).
        payload: a base64 cloudpickle of the variables that are not plain values
            (functions, classes); only a `--trusted` server accepts it.
        rename: the client model's `rename=` as `[key, [alias, ...]]` pairs; a key is
            a module path, or `{"class": "module.QualName"}` for a module class.
        edits: the client model's persistent edits, in the order they run.
        result: send back what the traced call returned (`tracer.result`); the
            client asks when it holds the tracer after the block.
    """

    version: str
    model: str
    kind: Kind
    source: str
    filename: str
    line: int
    target: str | None = None
    inputs: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    values: dict[str, Any] = field(default_factory=dict)
    tensors: str = ""
    payload: str | None = None
    rename: list[Any] = field(default_factory=list)
    edits: list[EditBody] = field(default_factory=list)
    result: bool = False

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Request:
        edits = [EditBody(**e) for e in data.get("edits", [])]
        return cls(**{**data, "kind": Kind(data["kind"]), "edits": edits})


@dataclass(frozen=True)
class Frame:
    """One frame of a traceback, in the user's code: file, line, function."""

    filename: str
    lineno: int
    name: str


@dataclass(frozen=True)
class Failure:
    """An exception raised while a request ran, as the user should see it.

    Attributes:
        type: the exception's class name (`ValueError`, `OutOfOrderError`).
        module: the module of that class (`builtins`, `nnsight_lab.errors`).
        message: `str(exception)`.
        frames: the traceback's frames in the user's code, outermost first (no
            server frames).
        rule: for a `PolicyError`, the rule the body broke.
    """

    type: str
    module: str
    message: str
    frames: list[Frame] = field(default_factory=list)
    rule: str | None = None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Failure:
        frames = [Frame(**f) for f in data.get("frames", [])]
        return cls(**{**data, "frames": frames})


@dataclass(frozen=True)
class Status:
    """A request's state, as the status endpoints give it.

    Attributes:
        id: the request's id.
        state: where it stands.
        position: place in its model's queue (0: next), while queued.
        message: a line for the user ("queued (2 ahead)", "timed out after 60 s").
        failure: the error, when `state` is `ERROR`.
        prints: what the body printed, once it ended.
        warnings: the warnings it raised, once it ended (as failures: type, message, line).
    """

    id: str
    state: State
    position: int | None = None
    message: str | None = None
    failure: Failure | None = None
    prints: str = ""
    warnings: list[Failure] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "state": self.state.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Status:
        failure = data.get("failure")
        return cls(
            id=data["id"],
            state=State(data["state"]),
            position=data.get("position"),
            message=data.get("message"),
            failure=Failure.from_json(failure) if failure else None,
            prints=data.get("prints", ""),
            warnings=[Failure.from_json(w) for w in data.get("warnings", [])],
        )
