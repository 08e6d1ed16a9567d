"""Remote execution: the same trace code, run on a model server.

`model.trace(..., remote=True)` sends the body to `CONFIG.API.HOST` (see
`client`); `nnsight-lab serve` is the server (`server`, `cli`), whose requests
run in worker processes (`processes`, `worker`) through one execution path
(`execution`), after a check of the body (`policy`). Records on the wire are in
`schema`, values in `wire`.

Importing this package connects it to the models (`models.servers`); it does
not import the server's libraries.
"""

from __future__ import annotations

from typing import Any

from ..config import CONFIG
from ..models import servers


def _backend(remote: bool | str, **options: Any) -> Any:
    from .client import RemoteBackend

    return RemoteBackend(remote, **options)


def _model_folder(name: str) -> str | None:
    from .client import model_folder

    return model_folder(name)


servers.backend = _backend
servers.resolvers.append(_model_folder)


def login(key: str) -> None:
    """Use `key` for the model server from now on (as `CONFIG.set_default_api_key`)."""
    CONFIG.set_default_api_key(key)


def whoami() -> str:
    """The label the server knows this API key by."""
    from .client import Connection

    return str(Connection().call("GET", "/v1/whoami").json()["label"])


def status() -> dict[str, Any]:
    """The server's models, with their replicas, busy replicas and queue lengths.

    Example:
        >>> nnsight.status()["models"][0]
        {'name': 'gpt2', 'replicas': 1, 'busy': 0, 'queued': 0}
    """
    from .client import Connection

    return dict(Connection().call("GET", "/v1/status").json())


__all__ = ["login", "status", "whoami"]
