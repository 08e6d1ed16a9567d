"""Requests waiting in line: one FIFO per model, handed to the executor in order.

Every request the server accepts becomes a `Record`: who sent it, its model, and
the history of its `Status` (received, queued at each position it held, running,
then one final state). A model's line holds the requests that have not started;
position 0 is next. At most `executor.replicas(model)` of them are handed to the
executor at once (the head of the line, still "queued" until a replica takes one
and `on_start` marks it running), so the positions stay true while a replica
reloads. Each key may have `max_per_key` unfinished requests (`QueueFull` past
that). Finished records and their results are kept for the server's result TTL.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import AsyncIterator, Hashable
from dataclasses import dataclass, field
from pathlib import Path

from .execution import Outcome
from .executor import Executor, fault
from .schema import Failure, Request, State, Status

log = logging.getLogger(__name__)

HEARTBEAT_SECONDS = 10.0  # a status stream repeats the last status this often while idle


class QueueFull(Exception):
    """A key already has as many unfinished requests as the server allows."""


@dataclass(eq=False)
class Record:
    """One request on the server: its owner, its model, and every status it had."""

    id: str
    owner: Hashable
    model: str
    request: Request | None  # dropped once the request has run
    result: Path  # where the executor puts the result file
    history: list[Status] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    handed: bool = False  # given to the executor
    counted: bool = False  # counts against its owner's unfinished requests
    finished_at: float | None = None  # time.monotonic() of its final state
    taken: bool = False  # its result was fetched (or expired)

    @property
    def status(self) -> Status:
        return self.history[-1]

    def _append(self, status: Status) -> None:
        self.history.append(status)
        self.changed.set()
        self.changed = asyncio.Event()


class RequestQueue:
    """The server's requests: lines per model, records by id (see the module docstring)."""

    def __init__(self, executor: Executor, results: Path, max_per_key: int) -> None:
        self.executor, self.results, self.max_per_key = executor, results, max_per_key
        self._records: dict[str, Record] = {}
        self._lines: dict[str, list[Record]] = collections.defaultdict(list)
        self._handed: collections.Counter[str] = collections.Counter()
        self._running: collections.Counter[str] = collections.Counter()
        self._unfinished: collections.Counter[Hashable] = collections.Counter()
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, request_id: str, owner: Hashable) -> Record | None:
        """The record of `request_id`, if `owner` sent it (others get None, as for no record)."""
        record = self._records.get(request_id)
        return record if record is not None and record.owner == owner else None

    def queued(self, model: str) -> int:
        return len(self._lines[model])

    def running(self, model: str) -> int:
        return self._running[model]

    def refuse(self, request_id: str, owner: Hashable, model: str, failure: Failure) -> Record:
        """Record a request that was refused before queueing (nothing of it runs)."""
        record = self._new(request_id, owner, model, None)
        self._finish(record, State.ERROR, failure)
        return record

    def submit(self, request_id: str, owner: Hashable, request: Request) -> Record:
        """Put `request` at the end of its model's line.

        Raises:
            QueueFull: `owner` already has `max_per_key` unfinished requests.
        """
        if self._unfinished[owner] >= self.max_per_key:
            raise QueueFull(
                f"this key already has {self._unfinished[owner]} unfinished requests, the most"
                " this server allows (its --max-queued-per-key): wait for one to finish"
            )
        record = self._new(request_id, owner, request.model, request)
        record.counted = True
        self._unfinished[owner] += 1
        self._lines[record.model].append(record)
        self._reposition(record.model)
        self._pump(record.model)
        return record

    def cancel(self, record: Record) -> Status:
        """Stop a queued or running request; a finished one is left as it is."""
        if record.status.state.final:
            return record.status
        self._leave_line(record)
        if record.handed:
            self.executor.cancel(record.id)
        self._finish(record, State.CANCELLED, None)
        return record.status

    async def follow(self, record: Record) -> AsyncIterator[Status]:
        """Every status of `record`, from the first, until a final one (for the stream)."""
        sent = 0
        while True:
            while sent < len(record.history):
                sent += 1
                yield record.history[sent - 1]
            if record.status.state.final:
                return
            changed = record.changed
            try:
                await asyncio.wait_for(changed.wait(), HEARTBEAT_SECONDS)
            except TimeoutError:
                yield record.status

    def take_result(self, record: Record) -> Path | None:
        """The result file of a completed request, once: later calls get None."""
        if record.status.state is not State.COMPLETED or record.taken:
            return None
        record.taken = True
        return record.result

    def expire(self, ttl: float) -> None:
        """Forget requests that finished more than `ttl` seconds ago, and their results."""
        now = time.monotonic()
        for record in list(self._records.values()):
            if record.finished_at is not None and now - record.finished_at > ttl:
                record.result.unlink(missing_ok=True)
                del self._records[record.id]

    async def close(self) -> None:
        """Stop dispatching; cancel what is being run."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _new(self, request_id: str, owner: Hashable, model: str, request: Request | None) -> Record:
        result = self.results / f"{request_id}.result"
        record = Record(request_id, owner, model, request, result)
        record._append(Status(request_id, State.RECEIVED, message="received"))
        self._records[request_id] = record
        return record

    def _reposition(self, model: str) -> None:
        """Give every waiting request of `model` a new status where its place changed."""
        for position, record in enumerate(self._lines[model]):
            if record.status.position != position:
                ahead = "next" if position == 0 else f"{position} ahead"
                status = Status(record.id, State.QUEUED, position, f"queued ({ahead})")
                record._append(status)

    def _pump(self, model: str) -> None:
        """Hand the head of `model`'s line to the executor while it has replicas for it."""
        for record in self._lines[model]:
            if self._handed[model] >= self.executor.replicas(model):
                return
            if not record.handed:
                record.handed = True
                self._handed[model] += 1
                task = asyncio.create_task(self._run(record))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _leave_line(self, record: Record) -> None:
        line = self._lines[record.model]
        if record in line:
            line.remove(record)
            self._reposition(record.model)

    def _started(self, record: Record) -> None:
        self._leave_line(record)
        if not record.status.state.final:
            self._running[record.model] += 1
            record._append(Status(record.id, State.RUNNING, message="running"))

    async def _run(self, record: Record) -> None:
        assert record.request is not None
        outcome = None
        try:
            outcome = await self.executor.run(
                record.model,
                record.id,
                record.request,
                record.result,
                on_start=lambda: self._started(record),
            )
            failure = outcome.failure
        except Exception:
            log.exception("request %s could not be run", record.id)
            failure = fault("the server could not run the request (its log says why)")
        finally:
            self._handed[record.model] -= 1
            self._leave_line(record)  # whatever happened
        if record.status.state.final:  # cancelled meanwhile: nothing of it is kept
            record.result.unlink(missing_ok=True)
        else:
            state = State.ERROR if failure else State.COMPLETED
            self._finish(record, state, failure, outcome)
        self._pump(record.model)

    def _finish(
        self, record: Record, state: State, failure: Failure | None, outcome: Outcome | None = None
    ) -> None:
        if record.status.state is State.RUNNING:
            self._running[record.model] -= 1
        message = failure.message if failure else state.value
        prints, notices = (outcome.prints, list(outcome.warnings)) if outcome else ("", [])
        status = Status(record.id, state, None, message, failure, prints, notices)
        record._append(status)
        record.finished_at = time.monotonic()
        record.request = None
        if record.counted:
            record.counted = False
            self._unfinished[record.owner] -= 1
