"""`nnsight-lab`, the command line: `nnsight-lab serve` starts a model server.

    nnsight-lab serve --model ./gpt2-folder --model gpt2=openai-community/gpt2 \\
        --host 127.0.0.1 --port 8000 --api-keys keys.txt

With `--executor ray` the replicas are Ray actors (`ray_executor`, imported only then):

    nnsight-lab serve --executor ray --ray-address auto --model ./gpt2-folder \\
        --replicas 2 --gpus-per-replica 1 --api-keys keys.txt

The command parses and checks its arguments into `ServerSettings` first; the
server's libraries (FastAPI, uvicorn) are imported only when it starts serving. Once
every model is loaded it prints `serving on http://HOST:PORT` (with the real
port when `--port 0` picked one) and serves until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .settings import EXECUTORS, KEYS_ENV, ServerSettings, load_keys

if TYPE_CHECKING:
    from .executor import Executor


def main(argv: list[str] | None = None) -> int:
    """Run `nnsight-lab` with `argv` (default: the command line); returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command != "serve":
        parser.print_help()
        return 2
    try:
        settings = settings_of(args)
    except ValueError as error:
        print(f"nnsight-lab serve: {error}", file=sys.stderr)
        return 2
    try:
        return asyncio.run(serve(settings))
    except KeyboardInterrupt:
        return 130


def settings_of(args: argparse.Namespace) -> ServerSettings:
    """`ServerSettings` from parsed `serve` arguments.

    Raises:
        ValueError: an argument is wrong or unsafe (the message says which).
    """
    if args.executor == "ray" and importlib.util.find_spec("ray") is None:
        raise ValueError(
            "--executor ray needs Ray, which is not installed: pip install 'nnsight_lab[ray]'"
        )
    return ServerSettings(
        models=dict(_model(spec) for spec in args.model),
        api_keys=load_keys(args.api_keys, os.environ),
        host=args.host,
        port=args.port,
        request_timeout=args.request_timeout,
        max_request_mb=args.max_request_mb,
        max_result_mb=args.max_result_mb,
        max_queued_per_key=args.max_queued_per_key,
        trusted=args.trusted,
        replicas=args.replicas,
        worker_memory_gb=args.worker_memory_gb,
        results_dir=args.results_dir,
        result_ttl=args.result_ttl,
        executor=args.executor,
        ray_address=args.ray_address,
        gpus_per_replica=args.gpus_per_replica,
        cpus_per_replica=args.cpus_per_replica,
    )


async def serve(settings: ServerSettings, announce: Callable[[str], None] = print) -> int:
    """Run the server until SIGINT/SIGTERM; `announce("serving on URL")` once it is healthy.

    Returns 0 after a normal stop, 1 if it could not listen or load its models.
    """
    import uvicorn  # the server's libraries load only when a server runs

    from .server import Lab, create_app

    app = create_app(settings, _executor(settings))
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="warning",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started and not serving.done():
        await asyncio.sleep(0.05)
    lab: Lab = app.state.lab
    if server.started:
        await lab.started.wait()
    if lab.failure is not None:
        print(f"nnsight-lab serve: {lab.failure}", file=sys.stderr, flush=True)
        server.should_exit = True
    elif server.started:
        port = server.servers[0].sockets[0].getsockname()[1]
        host = f"[{settings.host}]" if ":" in settings.host else settings.host
        announce(f"serving on http://{host}:{port}")
        sys.stdout.flush()
    await serving
    return 0 if lab.failure is None and server.started else 1


def _executor(settings: ServerSettings) -> Executor | None:
    """The executor `settings` names; None: the server's default (worker processes here).

    Ray's module is imported only here, so a default server never imports Ray.
    """
    if settings.executor != "ray":
        return None
    from .ray_executor import RayExecutor

    return RayExecutor(settings)


def _model(text: str) -> tuple[str, str]:
    """`NAME=SPEC` or `SPEC` (named as given) -> (name, spec)."""
    name, sep, spec = text.partition("=")
    if not sep or Path(text).exists():
        return text, text
    if not name or not spec:
        raise ValueError(f"--model {text!r}: write NAME=SPEC or SPEC")
    return name, spec


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnsight-lab", description="nnsight_lab tools.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser(
        "serve",
        help="run a model server",
        description="Serve models to nnsight_lab clients (remote=True). Safe by default: "
        "every request needs an API key, bodies are checked and run in limited worker "
        "processes.",
    )
    add = serve.add_argument
    add(
        "--model",
        action="append",
        required=True,
        metavar="[NAME=]SPEC",
        help="a model folder or hub id, optionally named (repeat for several)",
    )
    add("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add("--port", type=int, default=8000, help="port (default 8000; 0 picks a free one)")
    add(
        "--api-keys",
        type=Path,
        metavar="FILE",
        help=f"file of API keys, one per line as KEY or LABEL:KEY (or env {KEYS_ENV})",
    )
    add(
        "--request-timeout",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="wall-clock seconds a request may run (default 60)",
    )
    add("--max-request-mb", type=float, default=64.0, help="largest request (default 64)")
    add("--max-result-mb", type=float, default=1024.0, help="largest result (default 1024)")
    add(
        "--max-queued-per-key",
        type=int,
        default=8,
        help="unfinished requests one key may have (default 8)",
    )
    add("--replicas", type=int, default=1, help="copies of each model (default 1)")
    add(
        "--worker-memory-gb",
        type=float,
        default=16.0,
        help="address space a worker may add to its loaded model (default 16; 0: no limit)",
    )
    add("--results-dir", type=Path, help="where results wait (default: a temporary folder)")
    add(
        "--result-ttl",
        type=float,
        default=600.0,
        metavar="SECONDS",
        help="how long results and statuses are kept (default 600)",
    )
    add(
        "--trusted",
        action="store_true",
        help="accept pickled helpers from clients (loopback hosts only)",
    )
    _executor_flags(serve)
    return parser


def _executor_flags(serve: argparse.ArgumentParser) -> None:
    add = serve.add_argument
    add(
        "--executor",
        default="local",
        choices=EXECUTORS,
        help="what runs requests: 'local' worker processes here (default), or 'ray' actors",
    )
    add(
        "--ray-address",
        metavar="ADDRESS",
        help="the Ray cluster to join ('auto', HOST:PORT; default: start one here)",
    )
    add(
        "--gpus-per-replica",
        type=float,
        default=0.0,
        help="GPUs Ray gives each replica (model spread over them; default 0)",
    )
    add(
        "--cpus-per-replica",
        type=float,
        default=1.0,
        help="CPUs Ray reserves for each replica (default 1)",
    )


if __name__ == "__main__":
    sys.exit(main())
