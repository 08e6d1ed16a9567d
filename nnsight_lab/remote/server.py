"""The model server: one FastAPI app, endpoints under `/v1/`, requests run by an executor.

A request's life: `POST /v1/requests` reads the body (never more than
`max_request_mb`, counted while it arrives), checks the wire version (409), the
model (404), a pickled payload on a safe server (403), the key's share of the
queue (429) and the body's policy; a refused body becomes a request whose status
is already `error` (202, like every accepted request, so that a client handles
all failures from the status). The rest wait in their model's line (`queue`)
for a replica of the executor (`processes` by default). Clients follow
`/events` (NDJSON statuses) or poll, then fetch `/result` once; results and
statuses are forgotten after `result_ttl`.

Every endpoint but health needs an API key in `X-API-Key`, compared in constant
time against every key; a request is visible only to the key that sent it.
Errors are JSON `{"detail": ...}` and never contain a key or a traceback.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Query
from fastapi import Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.security import APIKeyHeader
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.background import BackgroundTask
from starlette.exceptions import HTTPException as StarletteHTTPException

import nnsight_lab

from . import execution, policy
from .executor import Executor
from .http import BodyLimit, Json
from .queue import QueueFull, Record, RequestQueue
from .schema import API_KEY_HEADER, WIRE_VERSION, Failure, Frame, Request, State
from .settings import ApiKey, ServerSettings

log = logging.getLogger(__name__)
INLINE_BYTES = 1 << 20  # the largest result sent inline at the end of its status stream


class EditModel(BaseModel):
    """One persistent edit of a request (`EditBody`)."""

    model_config = ConfigDict(extra="forbid")
    source: str
    filename: str
    line: int = Field(ge=1, le=10_000_000)
    target: str | None = None
    values: dict[str, Any] = {}


class RequestBody(BaseModel):
    """`Request.to_json()`, as the OpenAPI schema describes `POST /v1/requests`."""

    model_config = ConfigDict(extra="forbid")
    version: str
    model: str
    kind: Literal["trace", "generate", "scan", "session"]
    source: str
    filename: str
    line: int = Field(ge=1, le=10_000_000)
    target: str | None = None
    inputs: list[Any] = []
    kwargs: dict[str, Any] = {}
    values: dict[str, Any] = {}
    tensors: str = ""
    payload: str | None = None
    rename: list[Any] = Field(default=[], max_length=256)
    edits: list[EditModel] = Field(default=[], max_length=100)
    result: bool = False


class Lab:
    """The server's state: settings, executor, queue, model descriptions, readiness."""

    def __init__(self, settings: ServerSettings, executor: Executor) -> None:
        self.settings, self.executor = settings, executor
        self.results = Path(settings.results_dir or tempfile.mkdtemp(prefix="nnsight-lab-"))
        self.queue = RequestQueue(executor, self.results, settings.max_queued_per_key)
        self.descriptions: dict[str, dict[str, Any]] = {}
        self.ready = False
        self.failure: str | None = None
        self.started = asyncio.Event()  # set once ready, or once starting failed
        self._keys = [(k.key.encode(), k) for k in settings.api_keys]
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Load the models; the server accepts requests once this is done."""
        try:
            names, specs = zip(*self.settings.models.items(), strict=True)
            describe = [asyncio.to_thread(execution.describe_spec, spec) for spec in specs]
            found, _ = await asyncio.gather(asyncio.gather(*describe), self.executor.start())
            self.descriptions = {
                name: {"name": name, **d} for name, d in zip(names, found, strict=True)
            }
            self.results.mkdir(parents=True, exist_ok=True)
            self._tasks.append(asyncio.create_task(self._sweep()))
            self.ready = True
        except Exception as error:
            log.exception("the server could not start")
            self.failure = f"{type(error).__name__}: {error}"
        finally:
            self.started.set()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.queue.close()
        await self.executor.close()
        if self.settings.results_dir is None:
            await asyncio.to_thread(shutil.rmtree, self.results, ignore_errors=True)

    def key_of(self, given: str | None) -> ApiKey:
        """The key `given` matches, compared with every key in constant time; else 401."""
        offered = (given or "").encode("latin-1", "replace")  # the header's own bytes
        found = None
        for secret, key in self._keys:
            if hmac.compare_digest(offered, secret):
                found = key
        if found is None or not given:
            raise HTTPException(401, f"missing or unknown API key: send yours in {API_KEY_HEADER}")
        return found

    def record(self, request_id: str, key: ApiKey) -> Record:
        record = self.queue.get(request_id, key)
        if record is None:
            raise HTTPException(404, f"no request {request_id!r} for this key (or it expired)")
        return record

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(min(self.settings.result_ttl / 4, 30))
            self.queue.expire(self.settings.result_ttl)


def create_app(settings: ServerSettings, executor: Executor | None = None) -> FastAPI:
    """The server as an ASGI app; `executor` defaults to worker processes (`ProcessExecutor`).

    Example::

        app = create_app(ServerSettings(models={"gpt2": "./gpt2"}, api_keys=keys))
        uvicorn.run(app, host="127.0.0.1", port=8000)  # or: nnsight-lab serve
    """
    if executor is None:
        from .processes import ProcessExecutor

        executor = ProcessExecutor(settings)
    lab = Lab(settings, executor)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        starting = asyncio.create_task(lab.start())  # health says 503 until it is done
        try:
            yield
        finally:
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
            await lab.stop()

    app = FastAPI(
        title="nnsight_lab model server",
        version=nnsight_lab.__version__,
        lifespan=lifespan,
        default_response_class=Json,
    )
    app.state.lab = lab
    app.add_middleware(BodyLimit, limit=settings.max_request_bytes)
    _handle_errors(app)
    _routes(app, lab)
    return app


def _handle_errors(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: HttpRequest, error: StarletteHTTPException) -> Json:
        return Json({"detail": error.detail}, error.status_code, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: HttpRequest, error: RequestValidationError) -> Json:
        errors = [{k: e[k] for k in ("loc", "msg", "type") if k in e} for e in error.errors()]
        return Json({"detail": errors}, 422)

    @app.exception_handler(Exception)
    async def unexpected(request: HttpRequest, error: Exception) -> Json:
        error_id = uuid.uuid4().hex
        log.error("error %s on %s %s", error_id, request.method, request.url.path, exc_info=error)
        return Json({"detail": "internal server error", "error_id": error_id}, 500)


_HEADER = APIKeyHeader(name=API_KEY_HEADER, auto_error=False)


async def _key(http: HttpRequest, given: Annotated[str | None, Depends(_HEADER)]) -> ApiKey:
    """The caller's key (401 without a known one)."""
    lab: Lab = http.app.state.lab
    return lab.key_of(given)


async def _ready(http: HttpRequest, owner: Annotated[ApiKey, Depends(_key)]) -> ApiKey:
    """The caller's key, once the server accepts requests (503 before)."""
    if not http.app.state.lab.ready:
        raise HTTPException(503, "the server is still loading its models: try again soon")
    return owner


Caller = Annotated[ApiKey, Depends(_key)]
Owner = Annotated[ApiKey, Depends(_ready)]


def _routes(app: FastAPI, lab: Lab) -> None:
    """The endpoints about the server and its models."""

    @app.get("/v1/health")
    async def health() -> Json:
        if not lab.ready:
            return Json({"status": "starting", "detail": lab.failure or "loading models"}, 503)
        return Json({"status": "ok", **_about(lab)})

    @app.get("/v1/whoami")
    async def whoami(owner: Caller) -> dict[str, str]:
        return {"label": owner.label}

    @app.get("/v1/status")
    async def status(owner: Owner) -> dict[str, Any]:
        executor, queue = lab.executor, lab.queue
        rows = [
            {
                "name": m,
                "replicas": executor.replicas(m),
                "busy": executor.busy(m),
                "queued": queue.queued(m),
            }
            for m in lab.settings.models
        ]
        return {"models": rows, **_about(lab)}

    _model_routes(app, lab)
    _submit_route(app, lab)
    _request_routes(app, lab)


def _model_routes(app: FastAPI, lab: Lab) -> None:
    """The endpoints that list and describe the models."""

    @app.get("/v1/models")
    async def models(owner: Owner) -> list[dict[str, Any]]:
        executor, queue = lab.executor, lab.queue
        return [
            {
                "name": m,
                "replicas": executor.replicas(m),
                "queued": queue.queued(m),
                "running": queue.running(m),
            }
            for m in lab.settings.models
        ]

    @app.get("/v1/models/{name:path}")
    async def model(name: str, owner: Owner) -> dict[str, Any]:
        if name not in lab.descriptions:
            raise HTTPException(404, f"this server has no model {name!r}")
        return lab.descriptions[name]


def _submit_route(app: FastAPI, lab: Lab) -> None:
    schema = {"content": {"application/json": {"schema": RequestBody.model_json_schema()}}}

    @app.post(
        "/v1/requests",
        status_code=202,
        openapi_extra={"requestBody": {**schema, "required": True}},
    )
    async def submit(http: HttpRequest, owner: Owner) -> Json:
        """Queue a request; a body the policy refuses gets a final `error` status at once."""
        request = _parse(await _json(http), lab)
        request_id = uuid.uuid4().hex
        refusal = _refusal(request, lab.settings.trusted)
        if refusal is not None:
            record = lab.queue.refuse(request_id, owner, request.model, refusal)
        else:
            try:
                record = lab.queue.submit(request_id, owner, request)
            except QueueFull as full:
                raise HTTPException(429, str(full)) from None
        return Json(record.status.to_json(), 202)


def _request_routes(app: FastAPI, lab: Lab) -> None:
    """The endpoints of one request: status, stream, result, cancel."""

    @app.get("/v1/requests/{request_id}")
    async def poll(request_id: str, owner: Owner) -> Json:
        return Json(lab.record(request_id, owner).status.to_json())

    @app.get("/v1/requests/{request_id}/events")
    async def events(
        request_id: str, owner: Owner, inline: Annotated[int, Query(ge=0)] = 0
    ) -> StreamingResponse:
        """Every status of the request, one JSON object a line, until a final one; then,
        if `inline` > 0 and the result has at most that many bytes (and `INLINE_BYTES`),
        the result itself, `{"result": base64}`, taken as `/result` would (a small
        result then costs no second round trip)."""
        record = lab.record(request_id, owner)

        async def lines() -> AsyncIterator[str]:
            async for status in lab.queue.follow(record):
                yield json.dumps(status.to_json()) + "\n"
            data = _small_result(lab, record, min(inline, INLINE_BYTES))
            if data is not None:
                yield json.dumps({"result": base64.b64encode(data).decode("ascii")}) + "\n"

        return StreamingResponse(lines(), media_type="application/x-ndjson")

    @app.get("/v1/requests/{request_id}/result", response_model=None)
    async def result(request_id: str, owner: Owner) -> FileResponse:
        """The result file, once: it is deleted when sent."""
        record = lab.record(request_id, owner)
        state = record.status.state.value
        if state != "completed":
            raise HTTPException(409, f"request {request_id} has no result: it is {state}")
        path = lab.queue.take_result(record)
        if path is None or not path.exists():
            raise HTTPException(410, f"the result of {request_id} was already fetched or expired")
        done = BackgroundTask(path.unlink, missing_ok=True)
        return FileResponse(path, media_type="application/octet-stream", background=done)

    @app.post("/v1/requests/{request_id}/cancel")
    async def cancel(request_id: str, owner: Owner) -> Json:
        return Json(lab.queue.cancel(lab.record(request_id, owner)).to_json())


def _small_result(lab: Lab, record: Record, limit: int) -> bytes | None:
    """The result file's bytes, taken and deleted, if it has at most `limit` bytes."""
    path = record.result
    if record.status.state is not State.COMPLETED or not path.exists():
        return None
    if path.stat().st_size > limit or lab.queue.take_result(record) is None:
        return None
    data = path.read_bytes()
    path.unlink(missing_ok=True)
    return data


async def _json(http: HttpRequest) -> Any:
    """The request's JSON body (read within the size limit); 400 if it is not JSON."""
    raw = await http.body()
    try:
        if len(raw) > 2**20:  # parse big bodies off the event loop
            return await asyncio.to_thread(json.loads, raw)
        return json.loads(raw)
    except (ValueError, RecursionError):
        raise HTTPException(400, "the request body is not valid JSON") from None


def _parse(data: Any, lab: Lab) -> Request:
    """A `Request` from JSON: version first (409), then shape (422), model (404), payload (403)."""
    version = data.get("version") if isinstance(data, dict) else None
    if isinstance(version, str) and version != WIRE_VERSION:
        raise HTTPException(
            409,
            f"this server speaks {WIRE_VERSION} (nnsight_lab {nnsight_lab.__version__}) and the"
            f" request {version!r}: use the same version of nnsight_lab on both sides",
        )
    try:
        body = RequestBody.model_validate(data)
    except ValidationError as invalid:
        errors = invalid.errors(include_input=False, include_url=False, include_context=False)
        detail = [{k: e[k] for k in ("loc", "msg", "type")} for e in errors]
        raise HTTPException(422, detail) from None
    if body.model not in lab.settings.models:
        raise HTTPException(404, f"this server has no model {body.model!r}")
    if body.payload is not None and not lab.settings.trusted:
        raise HTTPException(
            403,
            "this server is in safe mode and does not accept pickled values (functions, classes):"
            " define helpers inside the trace body, or use a server started with --trusted",
        )
    return Request.from_json(body.model_dump())


def _refusal(request: Request, trusted: bool) -> Failure | None:
    """Why the policy refuses the body or one of its edits (None: they may run)."""
    for source, filename, line in execution.bodies_of(request):
        try:
            policy.check(source, filename, line, trusted=trusted)
        except Exception as error:  # PolicyError, or a body the policy itself cannot read
            failure = execution.failure_of(error, filename)
            if not failure.frames:
                failure = Failure(
                    failure.type,
                    failure.module,
                    failure.message,
                    [Frame(filename, line, "<module>")],
                    failure.rule,
                )
            return failure
    return None


def _about(lab: Lab) -> dict[str, str]:
    return {
        "version": WIRE_VERSION,
        "server": nnsight_lab.__version__,
        "mode": lab.settings.mode,
    }
