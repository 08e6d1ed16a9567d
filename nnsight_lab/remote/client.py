"""The client: `remote=True` sends a trace to a model server over HTTP (`requests`).

`RemoteBackend` is a backend like the local one (it takes the finished tracer
and returns the saved values): it builds the request (`request.build`), submits
it, follows its status stream while showing one status line, then streams the
result back (`results.read_result`) or raises the body's error at the user's line.
The server's version and mode are checked once per host. `remote="local"` is a
dry run: the exact request is serialized, checked by the server's policy and
run here through the server's own execution path (`execution.run`).
"""

from __future__ import annotations

import hashlib
import io
import json
import tempfile
import threading
import time
import warnings
from base64 import b64decode
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from ..config import CONFIG, cache_root
from ..errors import NNsightWarning, PolicyError, RemoteError, TracingError, TracingValueError
from . import execution, policy, request, results
from .failures import raise_failure, replay
from .progress import StatusLine
from .schema import (
    API_KEY_HEADER,
    OMITTED_KEY,
    RESULT_KEY,
    WIRE_VERSION,
    Request,
    State,
    Status,
)

_CONNECT_TIMEOUT = 10.0
INLINE_BYTES = 1 << 20  # results up to this size come at the end of the status stream


@dataclass(frozen=True)
class ServerInfo:
    """What a server said of itself when first asked (`/v1/health`)."""

    version: str
    server: str
    mode: str  # "safe" or "trusted"

    @property
    def trusted(self) -> bool:
        return self.mode == "trusted"


_checked: dict[str, ServerInfo] = {}
_local = threading.local()  # one HTTP session (kept-alive connections) per thread and host


def _session(host: str) -> requests.Session:
    sessions = _local.__dict__.setdefault("sessions", {})
    if host not in sessions:
        sessions[host] = requests.Session()
    return sessions[host]


class Connection:
    """One server and the key sent to it."""

    def __init__(self, host: str | None = None, key: str | None = None) -> None:
        host = host or CONFIG.API.HOST
        if not host:
            raise TracingError(
                "remote=True needs a model server, and none is configured: set "
                'nnsight_lab.CONFIG.API.HOST (or NNSIGHT_LAB_HOST), pass remote="http://host:port", '
                "or drop remote=True to run locally."
            )
        self.host = checked_host(host).rstrip("/")
        self.key = key or CONFIG.API.KEY
        self.http = _session(self.host)

    def call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One HTTP call; errors of the server become `RemoteError` with its message."""
        headers = {API_KEY_HEADER: self.key} if self.key else {}
        kwargs.setdefault("timeout", (_CONNECT_TIMEOUT, 60.0))
        try:
            response = self.http.request(method, self.host + path, headers=headers, **kwargs)
        except requests.ConnectionError:
            raise RemoteError(
                f"cannot reach the model server at {self.host}: is `nnsight-lab serve` running "
                "there, and is CONFIG.API.HOST right?"
            ) from None
        if response.status_code >= 400:
            raise RemoteError(f"{self.host}{path}: {_detail(response)}")
        return response

    def info(self) -> ServerInfo:
        """The server's version and mode, asked once per host; a version mismatch raises."""
        known = _checked.get(self.host)
        if known is None:
            data = self.call("GET", "/v1/health").json()
            known = ServerInfo(data.get("version", "?"), data.get("server", "?"), data["mode"])
            if known.version != WIRE_VERSION:
                raise RemoteError(
                    f"the server at {self.host} speaks {known.version} (nnsight_lab "
                    f"{known.server}) and this client {WIRE_VERSION}: install the server's "
                    "version of nnsight_lab here, or ask its operator to upgrade."
                )
            _checked[self.host] = known
        return known

    def submit(self, body: Request) -> Status:
        if not self.key:
            raise RemoteError(
                "no API key for the model server: call nnsight_lab.login(key), "
                "CONFIG.set_default_api_key(key), or set NNSIGHT_LAB_API_KEY."
            )
        return Status.from_json(self.call("POST", "/v1/requests", json=body.to_json()).json())

    def status(self, request_id: str) -> Status:
        return Status.from_json(self.call("GET", f"/v1/requests/{request_id}").json())

    def events(self, request_id: str, timeout: float | None) -> Any:
        """The request's statuses as the server streams them, until a final one; then a
        small result's bytes, if the server sent it inline."""
        read = (_CONNECT_TIMEOUT, timeout) if timeout else (_CONNECT_TIMEOUT, None)
        path = f"/v1/requests/{request_id}/events?inline={INLINE_BYTES}"
        response = self.call("GET", path, stream=True, timeout=read)
        with response:
            for line in response.iter_lines():
                if line:
                    data = json.loads(line)
                    yield b64decode(data["result"]) if "result" in data else Status.from_json(data)

    def result(self, request_id: str) -> dict[str, Any]:
        response = self.call("GET", f"/v1/requests/{request_id}/result", stream=True)
        with response:
            return results.read_result(response.raw)


def checked_host(host: str) -> str:
    """`host` if it is an http(s) URL.

    Raises:
        TracingValueError: it is not (a ValueError, as nnsight raises), naming the fix.
    """
    if not host.startswith(("http://", "https://")):
        raise TracingValueError(
            f"the model server's address {host!r} must start with http:// or https:// "
            f"(e.g. 'http://{host}'): fix remote=... or CONFIG.API.HOST (NNSIGHT_LAB_HOST)."
        )
    return host


class RemoteBackend:
    """Runs a trace (or session) on a model server; see the module docstring.

    After a `blocking=False` trace, this object is `tracer.backend`: `.status()`,
    `.wait(timeout)` (the saved values, by name) and `.cancel()`.
    """

    def __init__(
        self,
        remote: bool | str = True,
        *,
        blocking: bool = True,
        timeout: float | None = None,
        scan: bool = False,
    ) -> None:
        if isinstance(remote, str) and remote != "local":
            checked_host(remote)  # at the `model.trace(..., remote=URL)` line
        self.remote = remote
        self.blocking = blocking
        self.timeout = timeout
        self.scan = scan
        self.request_id: str | None = None
        self.connection: Connection | None = None
        self.inline: bytes | None = None  # a small result that came with the statuses
        self.context: Any = None  # the tracer sent, once sent

    def __call__(self, context: Any) -> dict[str, Any]:
        kind = request.kind_of(context, self.scan)
        self.context = context  # `tracer.result` lands there
        if self.remote == "local":
            built = request.build(context, kind, trusted=False)
            return self._returned(dry_run(built, context.model))
        host = self.remote if isinstance(self.remote, str) else None
        self.connection = connection = Connection(host)
        info = connection.info()
        status = connection.submit(request.build(context, kind, trusted=info.trusted))
        self.request_id = status.id
        if not self.blocking:
            return {}
        return self.wait(self.timeout, first=status)

    def status(self) -> Status:
        """Where the request stands now."""
        connection, request_id = self._sent()
        return connection.status(request_id)

    def cancel(self) -> Status:
        """Stop the request (queued or running)."""
        connection, request_id = self._sent()
        return Status.from_json(connection.call("POST", f"/v1/requests/{request_id}/cancel").json())

    def wait(self, timeout: float | None = None, *, first: Status | None = None) -> dict[str, Any]:
        """Wait for the request to end; returns its saved values, or raises its error."""
        connection, request_id = self._sent()
        line = StatusLine()
        final = first if first is not None and first.state.final else None
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            if first is not None:
                line.show(first)
            while final is None:
                final = self._follow(connection, request_id, line, deadline)
                if final is None and deadline is not None and time.monotonic() >= deadline:
                    raise RemoteError(
                        f"no result within {timeout} s; request {request_id} is still on the "
                        "server: `tracer.backend.wait()` waits again, `.cancel()` stops it.",
                        request_id,
                    )
        finally:
            line.close()
        replay(final)
        if final.failure is not None:
            raise_failure(final.failure, request_id)
        if final.state.value != "completed":
            raise RemoteError(f"request {request_id} was {final.state.value}", request_id)
        if self.inline is not None:
            inline, self.inline = self.inline, None
            return self._returned(results.read_result(io.BytesIO(inline)))
        return self._returned(connection.result(request_id))

    def _returned(self, saved: dict[str, Any]) -> dict[str, Any]:
        """The saved values, once `tracer.result` (sent under a name no variable has) is
        set on the tracer; a note that the server left it out is a warning."""
        if RESULT_KEY in saved:
            self.context.result = saved.pop(RESULT_KEY)
        note = saved.pop(OMITTED_KEY, None)
        body = getattr(self.context, "body", None)
        if note is not None and body is not None:  # at the `with` line of the trace
            warnings.warn_explicit(str(note), NNsightWarning, body.filename, body.lineno)
        elif note is not None:
            warnings.warn(str(note), NNsightWarning, stacklevel=2)
        return saved

    def _follow(
        self, connection: Connection, request_id: str, line: StatusLine, deadline: float | None
    ) -> Status | None:
        """Follow the status stream until a final status (None: the stream broke off or
        the deadline passed)."""
        left = None if deadline is None else max(deadline - time.monotonic(), 0.01)
        final = None
        try:
            for item in connection.events(request_id, left):
                if isinstance(item, bytes):
                    self.inline = item
                    continue
                line.show(item)
                final = item if item.state.final else None
        except requests.exceptions.RequestException:
            time.sleep(0.2)  # the stream broke off or timed out: the caller asks again
        return final

    def _sent(self) -> tuple[Connection, str]:
        if self.connection is None or self.request_id is None:
            raise RemoteError("this trace has not been sent to a server yet")
        return self.connection, self.request_id


def dry_run(body: Request, model: Any) -> dict[str, Any]:
    """Run a request here exactly as a safe server would: serialized, checked, executed."""
    sent = Request.from_json(json.loads(json.dumps(body.to_json())))
    for source, filename, line in execution.bodies_of(sent):
        try:
            policy.check(source, filename, line)
        except PolicyError as error:
            raise_failure(execution.failure_of(error, filename))
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "result.safetensors"
        outcome = execution.run(sent, model, path, trusted=False)
        replay(
            Status("local", State.COMPLETED, prints=outcome.prints, warnings=list(outcome.warnings))
        )
        if outcome.failure is not None:
            raise_failure(outcome.failure)
        with open(path, "rb") as file:
            return results.read_result(file)


def model_folder(name: str) -> str | None:
    """A folder with the config and tokenizer of the server's model `name`, fetched from
    the configured server (None: no server, or it does not serve `name`)."""
    if not CONFIG.API.HOST:
        return None
    try:
        connection = Connection()
        files = connection.call("GET", f"/v1/models/{name}").json()["files"]
    except (RemoteError, requests.RequestException, ValueError, KeyError):
        return None  # not a model of that server: the hub may know it
    digest = hashlib.sha256(connection.host.encode()).hexdigest()[:12]
    folder = cache_root() / "servers" / digest / name.replace("/", "--")
    folder.mkdir(parents=True, exist_ok=True)
    for filename, data in files.items():
        if "/" in filename or filename.startswith("."):
            continue  # only plain file names land in the folder
        (folder / filename).write_bytes(b64decode(data))
    return str(folder)


def _detail(response: requests.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except ValueError:
        detail = response.text
    return f"{response.status_code} {detail}"
