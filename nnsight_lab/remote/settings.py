"""What an operator sets when starting a model server: one frozen record.

`nnsight-lab serve` builds a `ServerSettings` from its command line; tests and
embedders build one directly. The record is checked when it is made, so a server
never starts half-configured: no models, no keys, a trusted server on a public
address and out-of-range limits are refused with a message that says what to do.

API keys come from a file (one per line, `#` comments, optionally `label:key`,
where the label is what `whoami` shows) or from env `NNSIGHT_LAB_API_KEYS`
(comma-separated, same forms). A key's value is never part of any `repr`.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

KEYS_ENV = "NNSIGHT_LAB_API_KEYS"
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class ApiKey:
    """One key the server accepts, and the label `whoami` shows for it."""

    label: str
    key: str = field(repr=False)


@dataclass(frozen=True)
class ServerSettings:
    """How a model server runs.

    Attributes:
        models: model name (as clients ask for it) -> spec (a folder or hub id).
        host, port: where it listens (port 0: an ephemeral port).
        api_keys: the keys it accepts; at least one.
        request_timeout: wall-clock seconds one request may run.
        max_request_mb: largest request body accepted (413 past it).
        max_result_mb: largest result a request may produce.
        max_queued_per_key: unfinished requests one key may have (429 past it).
        trusted: accept cloudpickle payloads and skip the body policy's strict
            rules; only on a loopback host.
        replicas: worker processes (model copies) per model.
        worker_memory_gb: address space a worker may add once its model is
            loaded (0: no limit).
        results_dir: where finished results wait to be fetched (None: a fresh
            temporary folder).
        result_ttl: seconds a result (and its request's status) is kept.
        executor: which executor runs requests ("local": worker processes here;
            "ray": Ray actors, see `ray_executor`).
        ray_address: the Ray cluster to join (None: start a local one); "ray" only.
        gpus_per_replica, cpus_per_replica: what Ray reserves for each replica
            (with GPUs the model is spread over them, `device_map="auto"`).

    Raises:
        ValueError: a setting is out of range or unsafe (the message says which).

    Example::

        settings = ServerSettings(models={"gpt2": "openai-community/gpt2"},
                                  api_keys=parse_keys(["alice:s3cret"]))
    """

    models: Mapping[str, str]
    api_keys: frozenset[ApiKey]
    host: str = "127.0.0.1"
    port: int = 8000
    request_timeout: float = 60.0
    max_request_mb: float = 64.0
    max_result_mb: float = 1024.0
    max_queued_per_key: int = 8
    trusted: bool = False
    replicas: int = 1
    worker_memory_gb: float = 16.0
    results_dir: Path | None = None
    result_ttl: float = 600.0
    executor: str = "local"
    ray_address: str | None = None
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("no models: name at least one with --model SPEC")
        if not self.api_keys:
            raise ValueError(
                f"no API keys: pass --api-keys FILE (one key per line) or set {KEYS_ENV}; "
                "a server does not run without keys"
            )
        if self.trusted and not is_loopback(self.host):
            raise ValueError(
                f"--trusted runs clients' pickled code and is refused on host {self.host!r}: "
                "use a loopback address such as 127.0.0.1"
            )
        _at_least("request_timeout", self.request_timeout, 0.1)
        _at_least("max_request_mb", self.max_request_mb, 0.001)
        _at_least("max_result_mb", self.max_result_mb, 0.001)
        _at_least("max_queued_per_key", self.max_queued_per_key, 1)
        _at_least("replicas", self.replicas, 1)
        _at_least("worker_memory_gb", self.worker_memory_gb, 0)
        _at_least("result_ttl", self.result_ttl, 1)
        _at_least("port", self.port, 0)
        self._check_executor()

    def _check_executor(self) -> None:
        if self.executor not in EXECUTORS:
            raise ValueError(f"unknown executor {self.executor!r}: choose one of {EXECUTORS}")
        _at_least("gpus_per_replica", self.gpus_per_replica, 0)
        _at_least("cpus_per_replica", self.cpus_per_replica, 0)
        ray_only = {
            "--ray-address": self.ray_address is not None,
            "--gpus-per-replica": self.gpus_per_replica != 0,
            "--cpus-per-replica": self.cpus_per_replica != 1,
        }
        given = [flag for flag, set_ in ray_only.items() if set_]
        if given and self.executor != "ray":
            raise ValueError(f"{', '.join(given)} need --executor ray")

    @property
    def mode(self) -> str:
        """`"trusted"` or `"safe"`, as `/v1/health` reports it."""
        return "trusted" if self.trusted else "safe"

    @property
    def max_request_bytes(self) -> int:
        return int(self.max_request_mb * 2**20)

    @property
    def max_result_bytes(self) -> int:
        return int(self.max_result_mb * 2**20)


def _at_least(name: str, value: float, low: float) -> None:
    if isinstance(value, bool) or not value >= low:
        raise ValueError(f"{name} must be at least {low}, not {value!r}")


def is_loopback(host: str) -> bool:
    """Whether `host` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def parse_keys(lines: Iterable[str]) -> frozenset[ApiKey]:
    """Keys from lines of `key` or `label:key`; blank lines and `#` comments skipped.

    A line's first `:` ends its label, so a key holding a `:` needs a label; a `#`
    starts a comment anywhere. A key without a label is shown by `whoami` as `key-` and the first 8 hex digits
    of its SHA-256, which identifies it to its owner without revealing it.
    """
    keys = set()
    for raw in lines:
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        label, sep, key = line.partition(":")
        if not sep:
            label, key = "", label
        label, key = label.strip(), key.strip()
        if not label:
            label = "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
        if key:
            keys.add(ApiKey(label=label, key=key))
    return frozenset(keys)


def load_keys(path: str | os.PathLike[str] | None, environ: Mapping[str, str]) -> frozenset[ApiKey]:
    """The keys in file `path` (if given) and in env `NNSIGHT_LAB_API_KEYS`.

    Raises:
        ValueError: the file cannot be read (the message names it, never its content).
    """
    keys: set[ApiKey] = set(parse_keys(environ.get(KEYS_ENV, "").split(",")))
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as error:
            raise ValueError(f"cannot read the API keys file {str(path)!r}: {error}") from None
        except UnicodeDecodeError:
            raise ValueError(f"the API keys file {str(path)!r} is not UTF-8 text") from None
        keys |= parse_keys(text.splitlines())
    return frozenset(keys)
