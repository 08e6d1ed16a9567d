"""`CONFIG`: nested settings, read and set as attributes (`CONFIG.APP.DEBUG = True`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field


@dataclass
class AppConfig:
    """Behaviour of the engine.

    DEBUG: show nnsight_lab's own frames in tracebacks of errors raised in a trace body.
    STEPPED: run simple trace bodies as generators instead of greenlets (faster, the same
        results; see `nnsight_lab.tracing.stepped`). False runs every body in a greenlet.
    """

    DEBUG: bool = False
    STEPPED: bool = True


@dataclass
class ApiConfig:
    """Where remote traces go (used by the remote backend)."""

    KEY: str | None = field(default_factory=lambda: os.environ.get("NNSIGHT_LAB_API_KEY"))
    HOST: str | None = field(default_factory=lambda: os.environ.get("NNSIGHT_LAB_HOST"))


@dataclass
class Config:
    """All settings. `CONFIG` is the one instance."""

    APP: AppConfig = field(default_factory=AppConfig)
    API: ApiConfig = field(default_factory=ApiConfig)

    def set_default_api_key(self, key: str) -> None:
        """Set the API key sent to the model server (nnsight's spelling)."""
        self.API.KEY = key


CONFIG = Config()
