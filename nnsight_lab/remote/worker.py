"""A model server's worker: one process holding one copy of one model, running bodies.

`ProcessExecutor` starts it as `python -m nnsight_lab.remote.worker --model SPEC ...`
with an empty environment, in a fresh empty folder, in a process group of its own.
It loads the model once, then limits itself (no core files, a file-size limit of
the largest result, an address-space limit, no new processes) and answers requests
one at a time until its stdin closes, or the server kills it.

The protocol is newline-delimited JSON, one object a line:

    worker -> server   {"ready": {"pid": 1234}}                  once the model is loaded
                       {"failed": "OSError: no such model"}      instead, then it exits
    server -> worker   {"id": ID, "request": Request.to_json(), "result": PATH, "timeout": S}
    worker -> server   {"id": ID, "outcome": encode_outcome(outcome)}

The worker writes protocol lines on a private copy of its stdout and reads them
from a private copy of its stdin; file descriptors 1 and 0 then point at stderr
and /dev/null, so nothing a body prints can corrupt the protocol.
"""

from __future__ import annotations

import argparse
import ctypes
import dataclasses
import errno
import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path
from typing import IO, Any

from . import execution
from .execution import Outcome
from .executor import fault, result_too_large
from .schema import Failure, Frame, Request

MAX_PRINTS = 2**20  # characters of a body's prints sent back; the rest is cut
MAX_MESSAGE = 2**16  # characters of an error's message sent back
MAX_WARNINGS = 100  # warnings of one request sent back
NPROC_HEADROOM = 64  # threads the model may still start once the worker is limited

_SPAWNERS = (
    *("fork", "forkpty", "system", "popen", "posix_spawn", "posix_spawnp"),
    *("execl", "execle", "execlp", "execlpe", "execv", "execve", "execvp", "execvpe"),
    *("spawnl", "spawnle", "spawnlp", "spawnlpe", "spawnv", "spawnve", "spawnvp", "spawnvpe"),
)


def encode_outcome(outcome: Outcome) -> dict[str, Any]:
    """An `execution.Outcome` as a JSON object (the worker's side of the protocol)."""
    failure = outcome.failure
    return {
        "failure": None if failure is None else _failure_json(failure),
        "tainted": bool(outcome.tainted),
        "size": int(outcome.size),
        "prints": str(outcome.prints)[:MAX_PRINTS],
        "warnings": [_failure_json(w) for w in outcome.warnings[:MAX_WARNINGS]],
    }


def _failure_json(failure: Failure) -> dict[str, Any]:
    frames = [{"filename": f.filename, "lineno": f.lineno, "name": f.name} for f in failure.frames]
    return {
        "type": failure.type,
        "module": failure.module,
        "message": failure.message[:MAX_MESSAGE],
        "frames": frames[-1000:],
        "rule": failure.rule,
    }


def decode_outcome(data: Any) -> Outcome:
    """The server's side: an `Outcome` from a worker's JSON, checked field by field.

    Raises:
        ValueError: `data` is not an outcome (the worker is then treated as broken).
    """
    if not isinstance(data, dict):
        raise ValueError("an outcome is a JSON object")
    failure = data.get("failure")
    return Outcome(
        failure=None if failure is None else _decode_failure(failure),
        tainted=_typed(data.get("tainted"), bool),
        size=_typed(data.get("size"), int),
        prints=_typed(data.get("prints", ""), str)[:MAX_PRINTS],
        warnings=tuple(
            _decode_failure(w) for w in _typed(data.get("warnings", []), list)[:MAX_WARNINGS]
        ),
    )


def _decode_failure(data: Any) -> Failure:
    if not isinstance(data, dict):
        raise ValueError("a failure is a JSON object")
    frames = [
        Frame(_typed(f["filename"], str), _typed(f["lineno"], int), _typed(f["name"], str))
        for f in _typed(data.get("frames", []), list)
    ]
    rule = data.get("rule")
    return Failure(
        type=_typed(data["type"], str),
        module=_typed(data["module"], str),
        message=_typed(data["message"], str)[:MAX_MESSAGE],
        frames=frames,
        rule=None if rule is None else _typed(rule, str),
    )


def _typed(value: Any, kind: type) -> Any:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"expected {kind.__name__}, got {type(value).__name__}")
    return value


def main(argv: list[str] | None = None) -> int:
    """Load the model, report ready, answer requests until stdin closes."""
    options = _parse(argv)
    reader, writer = _claim_protocol()
    _die_with_parent()
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    try:
        model = execution.load_model(options.model, device_map=options.device_map)
    except Exception as error:
        _send(writer, {"failed": f"{type(error).__name__}: {error}"})
        return 1
    _limit_resources(options)
    _forbid_new_processes()
    _send(writer, {"ready": {"pid": os.getpid()}})
    for line in iter(reader.readline, b""):
        message = json.loads(line)
        _send(writer, {"id": message["id"], "outcome": _answer(message, model, options)})
    return 0


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m nnsight_lab.remote.worker")
    parser.add_argument("--model", required=True, help="folder or hub id of the model")
    parser.add_argument("--trusted", action="store_true")
    parser.add_argument("--max-result-bytes", type=int, required=True)
    parser.add_argument("--memory-gb", type=float, default=0.0)
    parser.add_argument("--device-map", help='"auto": spread the model over the visible GPUs')
    return parser.parse_args(argv)


def _answer(message: dict[str, Any], model: Any, options: argparse.Namespace) -> dict[str, Any]:
    """Run one request; every error becomes the outcome's failure."""
    _cpu_backstop(float(message["timeout"]))
    result = Path(message["result"])
    limit = options.max_result_bytes
    try:
        request = Request.from_json(message["request"])
        outcome = execution.run(
            request, model, result, trusted=options.trusted, max_result_bytes=limit
        )
    except OSError as error:
        if error.errno != errno.EFBIG:
            raise
        outcome = Outcome(failure=result_too_large(limit), tainted=False, size=0)
    except Exception as error:  # our own code failed: answer, then be replaced
        failure = Failure(type(error).__name__, type(error).__module__, str(error))
        outcome = Outcome(failure=failure, tainted=True, size=0)
    return encode_outcome(_within_limit(outcome, result, limit))


def _within_limit(outcome: Outcome, result: Path, limit: int) -> Outcome:
    """`outcome`, or a failure where the result hit the size limit or is missing.

    RLIMIT_FSIZE is `limit + 1`: a file longer than `limit` was cut off there, and
    a write past it failed with EFBIG, which the body's run may have reported.
    """
    size = result.stat().st_size if result.exists() else 0
    failure = outcome.failure
    if size > limit or (failure is not None and os.strerror(errno.EFBIG) in failure.message):
        failure = result_too_large(limit)
    elif failure is None and not result.exists():
        failure = fault("the worker wrote no result")
    else:
        return outcome
    result.unlink(missing_ok=True)
    return dataclasses.replace(outcome, failure=failure, size=0)


def _claim_protocol() -> tuple[IO[bytes], IO[bytes]]:
    """Private copies of stdin and stdout for the protocol; fds 0 and 1 go elsewhere."""
    reader = os.fdopen(os.dup(0), "rb")
    writer = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdin = open(os.devnull, encoding="utf-8")
    sys.stdout = sys.stderr
    return reader, writer


def _send(writer: IO[bytes], message: dict[str, Any]) -> None:
    writer.write(json.dumps(message).encode() + b"\n")
    writer.flush()


def _die_with_parent() -> None:
    """Be killed with the server (Linux's PR_SET_PDEATHSIG), so no worker outlives it."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL, 0, 0, 0)  # 1: PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the server died before prctl took effect
        os._exit(1)


def _limit_resources(options: argparse.Namespace) -> None:
    """Limits that hold for every request, set once the model is loaded.

    The address-space limit is the loaded size plus `--memory-gb`: set before the
    load it would also have to cover the weights, and CUDA reserves large virtual
    ranges when it starts. The file-size limit is the largest result; a larger
    write then fails with EFBIG (SIGXFSZ is ignored so that it does not kill us).
    """
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    _lower(resource.RLIMIT_FSIZE, options.max_result_bytes + 1)
    if options.memory_gb > 0:
        _lower(resource.RLIMIT_AS, _address_space() + int(options.memory_gb * 2**30))
    # RLIMIT_NPROC counts every process and thread of the user, and root ignores it:
    # on a server run as root this line changes nothing; the spawn functions
    # replaced below are what stops a body there.
    if os.getuid() != 0:
        _lower(resource.RLIMIT_NPROC, _tasks_of(os.getuid()) + NPROC_HEADROOM)


def _lower(which: int, value: int) -> None:
    _, hard = resource.getrlimit(which)
    if hard != resource.RLIM_INFINITY:
        value = min(value, hard)
    resource.setrlimit(which, (value, value))


def _address_space() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[0]) * resource.getpagesize()


def _tasks_of(uid: int) -> int:
    """Processes and threads that `uid` runs now (what RLIMIT_NPROC counts)."""
    count = 0
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if entry.stat().st_uid == uid:
                    count += len(os.listdir(f"/proc/{entry.name}/task"))
            except OSError:  # the process ended meanwhile
                continue
    return count


def _cpu_backstop(timeout: float) -> None:
    """Let this request use at most `4 * timeout + 10` more CPU seconds (SIGXCPU past it).

    The server's wall-clock timeout is the main guard; this one holds if the
    server could not act (the kernel stops a worker that spins on many threads).
    """
    usage = resource.getrusage(resource.RUSAGE_SELF)
    soft = int(usage.ru_utime + usage.ru_stime + timeout * 4 + 10)
    _, hard = resource.getrlimit(resource.RLIMIT_CPU)
    if hard != resource.RLIM_INFINITY:
        soft = min(soft, hard)
    resource.setrlimit(resource.RLIMIT_CPU, (soft, hard))


def _forbid_new_processes() -> None:
    """Replace every way of starting a process with one that raises PermissionError."""
    import _posixsubprocess
    import posix

    def refuse(*args: object, **kwargs: object) -> Any:
        raise PermissionError("no new processes: a model server's worker cannot start programs")

    for module in (os, posix):
        for name in _SPAWNERS:
            if hasattr(module, name):
                setattr(module, name, refuse)
    subprocess.Popen = refuse  # type: ignore[misc, assignment]
    _posixsubprocess.fork_exec = refuse


if __name__ == "__main__":
    sys.exit(main())
