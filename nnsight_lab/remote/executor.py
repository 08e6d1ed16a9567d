"""The seam between a model server's queue and whatever runs requests on models.

An executor holds `replicas(model)` copies of each model (worker processes here,
Ray actors elsewhere), each running one request at a time. The queue hands it a
request with `run` once it has a replica for it; `run` waits for a free replica,
calls `on_start` when the request really starts on one, and returns an
`Outcome`: the result file written at `result_path`, or a `Failure`. Faults of the
replica itself (timeout, crash, out of memory, cancel) are `Failure`s too, made by
the functions below so that every executor words them alike; `run` raises only
for bugs. A replica that failed or was changed by a body is replaced behind the
scenes; while it loads it is busy.

The server knows executors only through this protocol, so a new one (issue 13:
Ray) plugs in without touching the server or the queue.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from .schema import Failure, Request

if TYPE_CHECKING:
    from .execution import Outcome


class Executor(Protocol):
    """Runs requests on replicas of the server's models (see the module docstring)."""

    async def start(self) -> None:
        """Load every model's replicas; returns once all are ready, raises if one fails."""
        ...

    def replicas(self, model: str) -> int:
        """How many replicas `model` has (loaded or loading)."""
        ...

    def busy(self, model: str) -> int:
        """How many of `model`'s replicas are running a request or (re)loading."""
        ...

    async def run(
        self,
        model: str,
        request_id: str,
        request: Request,
        result_path: Path,
        *,
        on_start: Callable[[], None] | None = None,
    ) -> Outcome:
        """Run `request` on a free replica of `model`, the result written to `result_path`.

        Waits for a free replica first; `on_start` is called when the request
        reaches one. Returns the body's `Outcome`, or one whose `failure` says the
        request timed out, its replica died, its result was too large or it was
        cancelled.
        """
        ...

    def cancel(self, request_id: str) -> None:
        """Stop `request_id` if it waits for or runs on a replica (its `run` returns soon)."""
        ...

    async def close(self) -> None:
        """Stop every replica and free what they hold."""
        ...


def fault(message: str) -> Failure:
    """A failure of the server's side of a request (not of the body), as the user sees it."""
    return Failure(type="RemoteError", module="nnsight_lab.errors", message=message)


def timed_out(seconds: float) -> Failure:
    return fault(
        f"timed out after {seconds:g} s: the request was stopped and its worker replaced"
        " (the server's --request-timeout)"
    )


def died(returncode: int | None) -> Failure:
    """The replica running the request ended; `returncode` as `Popen` gives it."""
    if returncode is None:
        how = "it stopped answering"
    elif returncode < 0:
        name = _signal_name(-returncode)
        how = f"signal {name}"
        if name == "SIGKILL":
            how += ", maybe killed for using too much memory"
        elif name == "SIGXCPU":
            how += ": it used more CPU time than the server allows"
    else:
        how = f"exit code {returncode}"
    return fault(f"the worker running the request died ({how}); the server goes on")


def cancelled() -> Failure:
    return fault("the request was cancelled")


def result_too_large(limit: int) -> Failure:
    """The result would exceed `limit` bytes (the server's `--max-result-mb`)."""
    return fault(
        f"the result is larger than this server sends ({limit / 2**20:g} MB, its"
        " --max-result-mb): save fewer or smaller values"
    )


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return str(number)
