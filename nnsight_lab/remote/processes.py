"""The default executor: worker processes on this machine, one request at a time each.

Each model gets `settings.replicas` workers (`python -m nnsight_lab.remote.worker`),
each started with an empty environment (only what loading a model needs), in a
fresh empty folder and a process group of its own, speaking newline-delimited
JSON on its stdin and stdout (see `worker`). Idle workers wait in a per-model
`asyncio.Queue`; `run` takes one, sends the request, and waits for the reply,
a cancel, or `request_timeout`, whichever comes first. A worker that timed out,
was cancelled, died, sent nonsense or was changed by its body (`tainted`) is
killed (its whole process group) and replaced in the background; until the new
one has loaded its model, that replica is busy. Nothing here blocks the event
loop: pipes are asyncio streams, file moves run in threads.

The pool logic (idle queue, timeout, cancel, replace) knows a replica only through
`Replica`; `ray_executor` reuses it with replicas that are Ray actors, each
running the same `Worker` on its node.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import importlib.metadata
import itertools
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import nnsight_lab

from . import executor as faults
from .execution import Outcome
from .schema import Failure, Request
from .settings import ServerSettings
from .worker import decode_outcome

log = logging.getLogger(__name__)

PASSED_ENV = ("HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
"""The only variables a worker inherits: where the models are, and whether to stay offline."""

LINE_LIMIT = 32 * 2**20  # longest reply line read from a worker
RETRY_SECONDS = (1, 5, 30, 60)  # waits between failed attempts to replace a worker


class WorkerError(RuntimeError):
    """A worker could not load its model, or stopped speaking the protocol."""


class Replica(Protocol):
    """One copy of a model as the pool sees it: a `Worker` here, a Ray actor's elsewhere."""

    model: str

    @property
    def alive(self) -> bool: ...

    async def request(self, request_id: str, encoded: str, timeout: float) -> dict[str, Any] | None:
        """Send a request (`encoded`: its JSON); the reply, or None if the replica ended."""
        ...

    async def deliver(self, request_id: str, path: Path, limit: int) -> int:
        """Move the result to `path` if at most `limit` bytes; its size (-1: none written)."""
        ...

    def kill(self) -> None: ...

    async def returncode(self) -> int | None: ...

    async def close(self) -> None: ...


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """What a worker is started with: the model and the limits, never a key."""

    spec: str
    max_result_bytes: int
    memory_gb: float
    trusted: bool = False
    device_map: str | None = None

    @classmethod
    def of(cls, settings: ServerSettings, model: str) -> WorkerOptions:
        return cls(
            settings.models[model],
            settings.max_result_bytes,
            settings.worker_memory_gb,
            settings.trusted,
        )

    def command(self) -> list[str]:
        command = [sys.executable, "-m", "nnsight_lab.remote.worker", "--model", self.spec]
        command += ["--max-result-bytes", str(self.max_result_bytes)]
        command += ["--memory-gb", str(self.memory_gb)]
        command += ["--trusted"] if self.trusted else []
        command += ["--device-map", self.device_map] if self.device_map else []
        return command


class Worker:
    """One worker process: its pipes, its folder, and the tail of its log (a `Replica`)."""

    def __init__(self, model: str, process: asyncio.subprocess.Process, folder: Path) -> None:
        self.model, self.process, self.folder = model, process, folder
        self.log: collections.deque[str] = collections.deque(maxlen=40)
        self._drain = asyncio.create_task(self._read_log())

    @classmethod
    async def spawn(
        cls,
        model: str,
        options: WorkerOptions,
        extra_env: Mapping[str, str] | None = None,
        parent: Path | None = None,
    ) -> Worker:
        """Start a worker for `model` and wait until it has loaded it.

        `extra_env` adds to its empty environment (a Ray actor passes the GPUs Ray gave
        it); its folder is made in `parent` (default: the temporary folder).
        """
        folder = Path(tempfile.mkdtemp(prefix="nnsight-lab-worker-", dir=parent))
        process = await asyncio.create_subprocess_exec(
            *options.command(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=folder,
            env=worker_environment(folder) | dict(extra_env or {}),
            start_new_session=True,  # its own process group: one killpg stops what it started
            limit=LINE_LIMIT,
        )
        worker = cls(model, process, folder)
        try:
            await worker._ready()
        except BaseException:
            await worker.close()
            raise
        return worker

    async def _ready(self) -> None:
        reply = await self._receive()
        if reply is None or "ready" not in reply:
            code = await self.returncode()
            why = reply.get("failed") if reply else f"it exited with {code}"
            tail = "\n".join(self.log)
            raise WorkerError(
                f"a worker could not load model {self.model!r}: {why}\n{tail}".rstrip()
            )

    def __str__(self) -> str:
        return f"pid {self.process.pid}"

    @property
    def alive(self) -> bool:
        return self.process.returncode is None

    async def request(self, request_id: str, encoded: str, timeout: float) -> dict[str, Any] | None:
        result = self.folder / f"result-{request_id}"
        head = {"id": request_id, "result": str(result), "timeout": timeout}
        return await self.ask(json.dumps(head)[:-1] + f', "request": {encoded}}}')

    async def deliver(self, request_id: str, path: Path, limit: int) -> int:
        result = self.folder / f"result-{request_id}"
        size = result.stat().st_size if result.exists() else -1
        if 0 <= size <= limit:
            await asyncio.to_thread(shutil.move, result, path)
        else:
            result.unlink(missing_ok=True)
        return size

    async def ask(self, line: str) -> dict[str, Any] | None:
        """Send one request (a JSON line); its reply, or None if the worker ended first."""
        assert self.process.stdin is not None
        self.process.stdin.write(line.encode() + b"\n")
        try:
            await self.process.stdin.drain()
        except (BrokenPipeError, ConnectionResetError):
            return None
        return await self._receive()

    async def _receive(self) -> dict[str, Any] | None:
        assert self.process.stdout is not None
        try:
            line = await self.process.stdout.readline()
            reply = json.loads(line) if line else None
        except (ValueError, asyncio.LimitOverrunError) as error:
            raise WorkerError(f"the worker sent a malformed reply ({error})") from None
        if reply is not None and not isinstance(reply, dict):
            raise WorkerError("the worker sent a reply that is not a JSON object")
        return reply

    async def _read_log(self) -> None:
        """Keep the worker's stderr flowing (a full pipe would stall it); keep its tail."""
        assert self.process.stderr is not None
        async for raw in self.process.stderr:
            line = raw.decode("utf-8", "replace").rstrip()
            self.log.append(line)
            log.info("worker %s: %s", self.process.pid, line)

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)

    async def returncode(self) -> int | None:
        """The exit status once the worker has ended (None: it still runs after 5 s)."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.process.wait(), 5)
        return self.process.returncode

    async def close(self) -> None:
        """Kill the worker and everything it started; remove its folder."""
        self.kill()
        await self.process.wait()
        self._drain.cancel()
        await asyncio.to_thread(shutil.rmtree, self.folder, ignore_errors=True)


def worker_environment(folder: Path) -> dict[str, str]:
    """A worker's whole environment: no keys, no tokens, nothing of the server's."""
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env["TMPDIR"] = str(folder)
    try:
        importlib.metadata.distribution("nnsight_lab")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout
        env["PYTHONPATH"] = str(Path(nnsight_lab.__file__).resolve().parent.parent)
    return env


class ProcessExecutor:
    """`Executor` backed by local worker processes (see the module docstring).

    Example::

        executor = ProcessExecutor(settings)
        await executor.start()
        outcome = await executor.run("gpt2", request_id, request, Path("result"))
    """

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self._idle: dict[str, asyncio.Queue[Replica]] = {}
        self._live: set[Replica] = set()
        self._cancels: dict[str, asyncio.Event] = {}
        self._background: set[asyncio.Task[None]] = set()
        self._closing = False

    async def start(self) -> None:
        self._idle = {model: asyncio.Queue() for model in self.settings.models}
        starts = [self._add(m) for m in self.settings.models for _ in range(self.settings.replicas)]
        try:
            await asyncio.gather(*starts)
        except BaseException:
            await self.close()
            raise

    def replicas(self, model: str) -> int:
        return self.settings.replicas

    def busy(self, model: str) -> int:
        return self.settings.replicas - self._idle[model].qsize()

    async def run(
        self,
        model: str,
        request_id: str,
        request: Request,
        result_path: Path,
        *,
        on_start: Callable[[], None] | None = None,
    ) -> Outcome:
        cancel = self._cancels[request_id] = asyncio.Event()
        try:
            try:  # before any worker is involved
                encoded = await asyncio.to_thread(lambda: json.dumps(request.to_json()))
            except (RecursionError, ValueError):
                return _failed(faults.fault("the request's values are nested too deeply to send"))
            worker = await self._take(model, cancel)
            if worker is None:
                return _failed(faults.cancelled())
            if on_start is not None:
                on_start()
            healthy = False
            try:
                outcome, healthy = await self._exchange(worker, request_id, encoded, cancel)
                if outcome.failure is None:
                    outcome = await self._deliver(outcome, worker, request_id, result_path)
            finally:  # a worker that may hold anything of this request is not reused
                if healthy:
                    self._idle[model].put_nowait(worker)
                else:
                    self._replace(worker)
            return outcome
        finally:
            del self._cancels[request_id]

    def cancel(self, request_id: str) -> None:
        event = self._cancels.get(request_id)
        if event is not None:
            event.set()

    async def close(self) -> None:
        self._closing = True
        for task in self._background:
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        await asyncio.gather(*(worker.close() for worker in list(self._live)))
        self._live.clear()

    async def _spawn(self, model: str) -> Replica:
        """A new replica of `model`, loaded; raises `WorkerError` if it cannot load."""
        return await Worker.spawn(model, WorkerOptions.of(self.settings, model))

    async def _add(self, model: str) -> None:
        worker = await self._spawn(model)
        if self._closing:
            await worker.close()
            return
        self._live.add(worker)
        self._idle[model].put_nowait(worker)

    async def _take(self, model: str, cancel: asyncio.Event) -> Replica | None:
        """A live idle worker of `model`, or None if the request is cancelled first."""
        while True:
            getting = asyncio.ensure_future(self._idle[model].get())
            cancelling = asyncio.ensure_future(cancel.wait())
            try:
                await asyncio.wait({getting, cancelling}, return_when=asyncio.FIRST_COMPLETED)
            except asyncio.CancelledError:  # the server stops: a worker already got goes back
                if getting.done() and not getting.cancelled():
                    self._idle[model].put_nowait(getting.result())
                raise
            finally:
                cancelling.cancel()
                if not getting.done():
                    getting.cancel()  # asyncio.Queue keeps the item of a cancelled get
            if getting.cancelled():
                return None
            worker = getting.result()
            if cancel.is_set():
                self._idle[model].put_nowait(worker)
                return None
            if worker.alive:
                return worker
            self._replace(worker)  # it died while idle

    async def _exchange(
        self, worker: Replica, request_id: str, encoded: str, cancel: asyncio.Event
    ) -> tuple[Outcome, bool]:
        """Send the request to `worker`; its outcome, and whether the worker may be reused."""
        timeout = self.settings.request_timeout
        asking = asyncio.ensure_future(worker.request(request_id, encoded, timeout))
        cancelling = asyncio.ensure_future(cancel.wait())
        try:
            done, _ = await asyncio.wait(
                {asking, cancelling}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            cancelling.cancel()
            if not asking.done():
                asking.cancel()
        if asking in done and not cancel.is_set():
            return await self._answered(worker, asking)
        if asking.done() and not asking.cancelled():
            asking.exception()  # retrieved: the request ends as cancelled anyway
        worker.kill()
        return _failed(faults.cancelled() if cancel.is_set() else faults.timed_out(timeout)), False

    async def _answered(self, worker: Replica, asking: asyncio.Future[Any]) -> tuple[Outcome, bool]:
        """The outcome in the worker's reply; a died failure if it has none."""
        try:
            reply = asking.result()
            outcome = None if reply is None else decode_outcome(reply.get("outcome"))
        except Exception as error:  # a worker that breaks the protocol is not trusted again
            log.warning("worker %s broke the protocol: %s", worker, error)
            worker.kill()
            outcome = None
        if outcome is None:
            return _failed(faults.died(await worker.returncode())), False
        return outcome, not outcome.tainted

    async def _deliver(
        self, outcome: Outcome, worker: Replica, request_id: str, path: Path
    ) -> Outcome:
        """Bring the result file from the worker to `path`, checking its size."""
        limit = self.settings.max_result_bytes
        size = await worker.deliver(request_id, path, limit)
        failure: Failure | None = None
        if size < 0:
            failure = faults.fault("the worker reported a result but wrote none")
        elif size > limit:
            failure = faults.result_too_large(limit)
        if failure is None:
            return dataclasses.replace(outcome, failure=None, size=size)
        path.unlink(missing_ok=True)
        return dataclasses.replace(outcome, failure=failure, size=0)

    def _replace(self, worker: Replica) -> None:
        """Kill `worker` and start another for its model in the background."""
        worker.kill()
        self._live.discard(worker)
        if not self._closing:
            task = asyncio.create_task(self._replacement(worker))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _replacement(self, old: Replica) -> None:
        await old.close()
        for attempt in itertools.count():
            try:
                await self._add(old.model)
                return
            except WorkerError as error:
                wait = RETRY_SECONDS[min(attempt, len(RETRY_SECONDS) - 1)]
                log.error("%s; trying again in %s s", error, wait)
                await asyncio.sleep(wait)


def _failed(failure: Failure) -> Outcome:
    return Outcome(failure=failure, tainted=False, size=0)
