"""The Ray actor of one model replica: a thin supervisor of one ordinary worker process.

`RayExecutor` makes this class a Ray actor (`ray.remote(ReplicaActor)`), with the
replica's `num_cpus`/`num_gpus`; Ray sets `CUDA_VISIBLE_DEVICES` in the actor's
process. The actor then starts `python -m nnsight_lab.remote.worker` as a child,
exactly as the default executor does (`processes.Worker`: empty environment, own
folder and process group, rlimits, no new processes, NDJSON), adding only the GPUs
Ray gave it. The body runs in that child, never in the actor.

What crosses between the server and the actor is plain data our code made: the
request's JSON text in, the worker's reply re-encoded as JSON text out, and the
result file's bytes, streamed in chunks (`result`, a Ray streaming generator).
The server never unpickles anything a body made, because no body's value ever
is a Python object on this side: the worker writes JSON and a file.

This module does not import Ray (the actor class is plain Python).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .processes import Worker, WorkerOptions

CHUNK_BYTES = 4 * 2**20  # one piece of a streamed result
GPU_ENV = ("CUDA_VISIBLE_DEVICES",)  # what Ray sets for the GPUs it gave this actor


class ReplicaActor:
    """One replica on a Ray node: loads the model in a worker child, answers one request at a time.

    Example (what `RayExecutor` does)::

        actor = ray.remote(ReplicaActor).options(num_gpus=1).remote("gpt2", options)
        await actor.start.remote()
        reply, code = await actor.ask.remote(request_id, request_json, 60.0)
    """

    def __init__(self, model: str, options: WorkerOptions) -> None:
        self.model, self.options = model, options
        self.worker: Worker | None = None

    async def start(self) -> dict[str, Any]:
        """Start the worker and wait until its model is loaded (raises `WorkerError` if not)."""
        extra = {name: os.environ[name] for name in GPU_ENV if name in os.environ}
        parent = Path(tempfile.gettempdir()) / "nnsight-lab-ray" / str(os.getpid())
        await asyncio.to_thread(_sweep, parent.parent)
        parent.mkdir(parents=True, exist_ok=True)
        self.worker = await Worker.spawn(self.model, self.options, extra, parent)
        return {"pid": os.getpid(), "worker": self.worker.process.pid}

    async def ask(
        self, request_id: str, encoded: str, timeout: float
    ) -> tuple[str | None, int | None]:
        """Run one request: (the worker's reply as JSON text, None), or (None, its exit code)."""
        worker = self._worker()
        reply = await worker.request(request_id, encoded, timeout)
        if reply is None:
            return None, await worker.returncode()
        return json.dumps(reply), None

    async def result(self, request_id: str, limit: int) -> AsyncIterator[int | bytes]:
        """The result file: first its size (-1: none), then its bytes in chunks if within `limit`.

        Called with `num_returns="streaming"`: each yield is one object in Ray's store,
        so the server holds one chunk at a time, never the whole result.
        """
        path = self._worker().folder / f"result-{request_id}"
        size = path.stat().st_size if path.exists() else -1
        yield size
        try:
            if 0 <= size <= limit:
                with open(path, "rb") as file:
                    while chunk := await asyncio.to_thread(file.read, CHUNK_BYTES):
                        yield chunk
        finally:
            path.unlink(missing_ok=True)

    async def watch(self) -> int:
        """Return once the worker has ended, with its exit status (the server then replaces us)."""
        return await self._worker().process.wait()

    async def stop(self) -> None:
        """Kill the worker and everything it started; remove its folder."""
        if self.worker is not None:
            await self.worker.close()
            with contextlib.suppress(OSError):
                self.worker.folder.parent.rmdir()

    def _worker(self) -> Worker:
        if self.worker is None:
            raise RuntimeError("the replica was asked before it started")
        return self.worker


def _sweep(folder: Path) -> None:
    """Remove the folders of actors that ended without stopping (killed, or their node lost).

    Each actor's workers live in `folder/<actor pid>/`; whoever starts next on the node
    removes those whose actor no longer runs.
    """
    for entry in folder.glob("*") if folder.is_dir() else []:
        if entry.name.isdigit() and not Path(f"/proc/{entry.name}").exists():
            shutil.rmtree(entry, ignore_errors=True)
