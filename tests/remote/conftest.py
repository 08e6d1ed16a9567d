"""A real `nnsight-lab serve` on 127.0.0.1 for the remote tests.

`start_server(*options)` starts `python -m nnsight_lab.remote.cli serve` on an
ephemeral port with the tiny GPT-2 (named `tiny`) and two keys (`alice`, `bob`),
reads the URL it prints once healthy, and stops it when the session ends
(terminate, then kill: no process outlives the tests). `served` is one such
server for the client's tests, with room for many requests per key.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from nnsight_lab.remote.schema import API_KEY_HEADER

START_SECONDS = 180  # loading torch, transformers and the model twice on a slow machine
MODEL = "tiny"


@dataclass(frozen=True)
class Served:
    """A running server: where it listens, its keys (by label) and its process."""

    url: str
    keys: dict[str, str]
    model: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def key(self) -> str:
        return self.keys["alice"]

    @property
    def label(self) -> str:
        return "alice"

    def headers(self, label: str = "alice") -> dict[str, str]:
        return {API_KEY_HEADER: self.keys[label]}


def _start(model: Path, folder: Path, options: tuple[str, ...]) -> Served:
    keys = {"alice": secrets.token_hex(16), "bob": secrets.token_hex(16)}
    key_file = folder / "keys.txt"
    key_file.write_text(f"# test keys\nalice:{keys['alice']}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("NNSIGHT_LAB_")}
    env |= {"NNSIGHT_LAB_API_KEYS": f"bob:{keys['bob']}", "HF_TOKEN": "hf_not_for_workers"}
    out, log = folder / "stdout.txt", folder / "stderr.txt"
    command = [sys.executable, "-m", "nnsight_lab.remote.cli", "serve"]
    command += ["--model", f"{MODEL}={model}", "--host", "127.0.0.1", "--port", "0"]
    command += ["--api-keys", str(key_file), *options]
    with open(out, "wb") as stdout, open(log, "wb") as stderr:
        process = subprocess.Popen(command, stdout=stdout, stderr=stderr, env=env, cwd=folder)
    try:
        url = _wait_for_url(process, out, log)
        served = Served(url, keys, MODEL, process, log)
        _wait_healthy(served)
    except BaseException:
        _stop(process)
        raise
    return served


def _wait_for_url(process: subprocess.Popen[bytes], out: Path, log: Path) -> str:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://\S+)", out.read_text())
        if found:
            return found.group(1)
        if process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}:\n{log.read_text()}")
        time.sleep(0.1)
    raise TimeoutError(f"the server did not start in {START_SECONDS} s:\n{log.read_text()}")


def _wait_healthy(served: Served) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            if requests.get(served.url + "/v1/health", timeout=5).status_code == 200:
                return
        except requests.ConnectionError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("the server printed its URL but is not healthy")
        time.sleep(0.1)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)


@contextlib.contextmanager
def _client_of(served: Served) -> Iterator[None]:
    """`CONFIG.API` pointed at `served` (its URL and alice's key) for the block."""
    from nnsight_lab import CONFIG

    before = CONFIG.API.HOST, CONFIG.API.KEY
    CONFIG.API.HOST, CONFIG.API.KEY = served.url, served.key
    try:
        yield
    finally:
        CONFIG.API.HOST, CONFIG.API.KEY = before


@pytest.fixture(scope="session")
def client_of() -> Callable[[Served], contextlib.AbstractContextManager[None]]:
    """`with client_of(served):` points `CONFIG.API` at `served` (URL, alice's key)."""
    return _client_of


@pytest.fixture(scope="session")
def start_server(
    tiny_gpt2_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Callable[..., Served]]:
    """A function that starts a server with extra `serve` options; all stop at the end."""
    started: list[Served] = []

    def start(*options: str) -> Served:
        served = _start(tiny_gpt2_path, tmp_path_factory.mktemp("server"), options)
        started.append(served)
        return served

    try:
        yield start
    finally:
        for served in started:
            _stop(served.process)


@pytest.fixture(scope="session")
def served(start_server: Callable[..., Served]) -> Served:
    """A server for the client's tests: default limits, but many requests per key."""
    return start_server("--max-queued-per-key", "64")
