"""Where models meet model servers, without importing the remote package.

`nnsight_lab.remote` fills these in when it is imported (`import nnsight_lab`
does): `backend` makes the backend that sends a trace to a server
(`model.trace(..., remote=True)`), and `resolvers` turn a model name that is not
a local folder into a folder holding its config and tokenizer, fetched from the
configured server, so a client builds the model without the hub. The models
package knows only these two seams; the client, the wire format and the server
live in `remote/`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..errors import TracingError

BackendMaker = Callable[..., Callable[[Any], dict[str, Any]]]

backend: BackendMaker | None = None
"""`backend(remote, blocking=..., timeout=...)`: a backend that runs traces on a server."""

resolvers: list[Callable[[str], str | None]] = []
"""Each takes a model name and returns a folder with its config and tokenizer, or None."""


def remote_backend(remote: Any, options: dict[str, Any]) -> Callable[[Any], dict[str, Any]]:
    """The backend for `remote=` (True, a server URL, or "local"), with `blocking=`,
    `timeout=` taken from `options`."""
    if backend is None:
        raise TracingError(
            "remote execution needs nnsight_lab.remote, which could not be imported; "
            "reinstall nnsight_lab with its dependencies (requests, safetensors)."
        )
    return backend(remote, **options)


def resolve(name: str) -> str | None:
    """A local folder for `name` from the first resolver that knows it, else None."""
    for resolver in resolvers:
        folder = resolver(name)
        if folder is not None:
            return folder
    return None
