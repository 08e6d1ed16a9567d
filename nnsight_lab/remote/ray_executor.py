"""The Ray executor (`nnsight-lab serve --executor ray`): each replica is a Ray actor.

Mental model: the same pool as the default executor (`processes.ProcessExecutor`:
one idle queue per model, a wall-clock timeout, cancel, replace whatever failed),
whose replicas are Ray actors instead of local processes. Each actor
(`ray_replica.ReplicaActor`) holds the replica's resources (`num_cpus`,
`num_gpus`; with GPUs the model is loaded with `device_map="auto"` over them) and
runs one ordinary worker process as its child, so the body meets the same limits
(rlimits, empty environment, no keys, no new processes) as with local workers.

A request is one actor call with JSON text in and JSON text out; the result file
comes back as a stream of byte chunks through Ray's object store, written to
`result_path` chunk by chunk. A replica that timed out, was cancelled, crashed,
lost its actor or was changed by its body is stopped (its worker killed, then the
actor) and a fresh actor is started in its place.

Ray is joined when the executor starts: `ray.init(address=...)`, or a local
instance (no dashboard) when the server has no `--ray-address`; `close` shuts down
what it started. Only this module imports Ray; the CLI imports it for
`--executor ray` alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import itertools
import json
import logging
import os
import signal
import sys
import threading
import uuid
from pathlib import Path
from typing import IO, Any

import ray
from ray.exceptions import RayError

from .processes import ProcessExecutor, Replica, WorkerError, WorkerOptions
from .ray_replica import ReplicaActor
from .settings import ServerSettings

log = logging.getLogger(__name__)

NAMESPACE = "nnsight_lab"  # actors are named NAMESPACE/<server>/<model>/<n> in it
STOP_SECONDS = 10  # how long an actor may take to stop its worker before it is killed
IN_FLIGHT_CHUNKS = 2  # result chunks the actor may put in the object store ahead of us


class RayReplica:
    """The server's handle on one replica actor (a `processes.Replica`)."""

    def __init__(self, model: str, actor: Any, name: str) -> None:
        self.model, self.actor, self.name = model, actor, name
        self._dead = False
        self._code: int | None = None  # the worker's exit status, when the actor reported it
        self._stopping: Any = None  # the ObjectRef of the actor's `stop`
        self._watching: asyncio.Task[None] | None = None

    def watch(self) -> None:
        """Notice when the actor or its worker ends, also while idle (`alive` turns False)."""
        self._watching = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        try:
            code = await self.actor.watch.remote()
            self._code = code if self._code is None else self._code
        except RayError:  # the actor itself ended
            pass
        self._dead = True

    def __str__(self) -> str:
        return f"Ray actor {self.name}"

    @property
    def alive(self) -> bool:
        return not self._dead

    async def request(self, request_id: str, encoded: str, timeout: float) -> dict[str, Any] | None:
        try:
            # Submitting serializes `encoded` (up to --max-request-mb): not on the event loop.
            ref = await asyncio.to_thread(self.actor.ask.remote, request_id, encoded, timeout)
            reply, code = await ref
        except RayError:  # killed, crashed, its node lost (which error depends on the moment)
            self._dead = True
            return None
        if reply is None:  # the actor lives, its worker died
            self._dead, self._code = True, code
            return None
        data = json.loads(reply)
        if not isinstance(data, dict):
            raise WorkerError("the replica sent a reply that is not a JSON object")
        return data

    async def deliver(self, request_id: str, path: Path, limit: int) -> int:
        """Stream the result from the actor into `path`: at most one chunk in memory here."""
        chunks = self.actor.result.options(
            num_returns="streaming", _generator_backpressure_num_objects=IN_FLIGHT_CHUNKS
        ).remote(request_id, limit)
        try:
            size = _typed(await (await anext(chunks)), int)
            if not 0 <= size <= limit:
                return size
            file = await asyncio.to_thread(open, path, "wb")
            try:
                written = await _write(chunks, file, size)
            finally:
                await asyncio.to_thread(file.close)
        except (RayError, WorkerError, StopAsyncIteration):  # it ended, or sent what it should not
            self._dead = True
            written = -1
        if written != size:
            path.unlink(missing_ok=True)
            return -1
        return size

    def kill(self) -> None:
        """Stop the replica now: the actor kills its worker (`close` then ends the actor)."""
        self._dead = True
        if self._stopping is None:
            self._stopping = self.actor.stop.remote()

    async def returncode(self) -> int | None:
        return self._code

    async def close(self) -> None:
        self.kill()
        if self._watching is not None:
            self._watching.cancel()
        with contextlib.suppress(RayError, TimeoutError):
            await asyncio.wait_for(_awaited(self._stopping), STOP_SECONDS)
        with contextlib.suppress(RayError, ValueError):
            await asyncio.to_thread(ray.kill, self.actor, no_restart=True)


class RayExecutor(ProcessExecutor):
    """`Executor` whose replicas are Ray actors (see the module docstring).

    Example::

        executor = RayExecutor(ServerSettings(..., executor="ray", replicas=2))
        await executor.start()  # joins or starts Ray, then starts 2 actors per model
    """

    def __init__(self, settings: ServerSettings) -> None:
        super().__init__(settings)
        self._server = uuid.uuid4().hex[:8]
        self._serial = itertools.count()
        self._actor: Any = None
        self._own_ray = False

    async def start(self) -> None:
        await asyncio.to_thread(self._connect)
        _give_back_signals()
        await super().start()

    async def close(self) -> None:
        await super().close()
        if self._own_ray:
            self._own_ray = False
            await asyncio.to_thread(ray.shutdown)

    async def _spawn(self, model: str) -> Replica:
        settings = self.settings
        options = WorkerOptions.of(settings, model)
        if settings.gpus_per_replica > 0:
            options = dataclasses.replace(options, device_map="auto")
        name = f"{NAMESPACE}/{self._server}/{model}/{next(self._serial)}"
        actor = self._actor.options(
            name=name,
            num_cpus=settings.cpus_per_replica,
            num_gpus=settings.gpus_per_replica,
            max_restarts=0,  # a replica that died is replaced by us, with a fresh worker
            max_task_retries=0,
        ).remote(model, options)
        replica = RayReplica(model, actor, name)
        try:
            await actor.start.remote()
        except RayError as error:
            await replica.close()
            cause = getattr(error, "cause", None) or error
            raise WorkerError(f"a Ray replica of model {model!r} did not start: {cause}") from None
        except BaseException:
            await replica.close()
            raise
        replica.watch()
        return replica

    def _connect(self) -> None:
        """Join the cluster (or start a local one); check that one replica fits on a node."""
        address = self.settings.ray_address
        if ray.is_initialized():  # an embedder's own Ray: used, and left running
            pass
        elif address is None:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(namespace=NAMESPACE, include_dashboard=False, log_to_driver=False)
            self._own_ray = True
        else:
            ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
            self._own_ray = True
        self._actor = ray.remote(ReplicaActor)
        _check_fits(self.settings)
        gcs = ray.get_runtime_context().gcs_address
        print(f"nnsight-lab serve: Ray cluster at {gcs}", file=sys.stderr, flush=True)


def _give_back_signals() -> None:
    """Reinstall the server's own SIGINT/SIGTERM handlers, which joining Ray replaced.

    Ray's core worker installs C-level handlers that print a stack and end the
    process at once; re-setting the Python handlers (uvicorn's) keeps the graceful
    stop that closes the actors and the Ray instance.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    for number in (signal.SIGINT, signal.SIGTERM):
        handler = signal.getsignal(number)
        if handler is not None:
            signal.signal(number, handler)


def _check_fits(settings: ServerSettings) -> None:
    """Raise unless the cluster can hold every replica (else an actor would wait forever).

    One replica must fit on one node, and all of them in the cluster's total: a
    cluster that adds nodes on demand is not covered (start it with enough nodes).
    """
    need = {"CPU": settings.cpus_per_replica, "GPU": settings.gpus_per_replica}
    count = settings.replicas * len(settings.models)
    nodes = [node.get("Resources", {}) for node in ray.nodes() if node.get("Alive")]
    flags = "lower --replicas, --cpus-per-replica or --gpus-per-replica, or add nodes"
    if not any(all(have.get(k, 0) >= v for k, v in need.items() if v) for have in nodes):
        raise WorkerError(
            f"no node of the Ray cluster has {need['CPU']:g} CPUs and {need['GPU']:g} GPUs"
            f" for one replica: {flags}"
        )
    for kind, each in need.items():
        total = sum(have.get(kind, 0) for have in nodes)
        if each * count > total:
            raise WorkerError(
                f"{count} replicas need {each * count:g} {kind}s and the Ray cluster has"
                f" {total:g}: {flags}"
            )


async def _write(chunks: Any, file: IO[bytes], size: int) -> int:
    """Write the streamed chunks to `file`; the bytes written (-1 past `size`)."""
    written = 0
    async for ref in chunks:
        chunk = _typed(await ref, bytes)
        written += len(chunk)
        if written > size:
            return -1
        await asyncio.to_thread(file.write, chunk)
    return written


def _typed(value: Any, kind: type) -> Any:
    if type(value) is not kind:
        raise WorkerError(f"the replica sent a {type(value).__name__}, not {kind.__name__}")
    return value


async def _awaited(ref: Any) -> Any:
    return await ref
