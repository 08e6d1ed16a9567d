"""`CONFIG`: nested settings, read and set as attributes (`CONFIG.APP.DEBUG = True`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class AppConfig:
    """Behaviour of the engine.

    DEBUG: show nnsight_lab's own frames in tracebacks of errors raised in a trace body.
    STEPPED: run simple trace bodies as generators instead of greenlets (faster, the same
        results; see `nnsight_lab.tracing.stepped`). False runs every body in a greenlet.
    REMOTE_LOGGING: show a remote request's status while it waits and runs (one line,
        updated in place).
    """

    DEBUG: bool = False
    STEPPED: bool = True
    REMOTE_LOGGING: bool = True


@dataclass
class ApiConfig:
    """Where remote traces go (used by the remote backend).

    KEY: the API key sent to the server (env NNSIGHT_LAB_API_KEY, or NDIF_API_KEY).
    HOST: the server's URL, "http://host:port" (env NNSIGHT_LAB_HOST).
    """

    KEY: str | None = field(
        default_factory=lambda: (
            os.environ.get("NNSIGHT_LAB_API_KEY") or os.environ.get("NDIF_API_KEY")
        )
    )
    HOST: str | None = field(default_factory=lambda: os.environ.get("NNSIGHT_LAB_HOST"))


@dataclass
class Config:
    """All settings. `CONFIG` is the one instance."""

    APP: AppConfig = field(default_factory=AppConfig)
    API: ApiConfig = field(default_factory=ApiConfig)

    def set_default_api_key(self, key: str) -> None:
        """Set the API key sent to the model server (nnsight's spelling)."""
        self.API.KEY = key

    @property
    def API_KEY(self) -> str | None:  # noqa: N802  (nnsight guides write CONFIG.API_KEY = ...)
        return self.API.KEY

    @API_KEY.setter
    def API_KEY(self, key: str | None) -> None:  # noqa: N802
        self.API.KEY = key


CONFIG = Config()


def cache_root() -> Path:
    """Where nnsight_lab keeps files between runs: the demo model, server models' configs
    (env NNSIGHT_LAB_CACHE, else ~/.cache/nnsight_lab)."""
    root = os.environ.get("NNSIGHT_LAB_CACHE")
    return Path(root) if root else Path.home() / ".cache" / "nnsight_lab"
