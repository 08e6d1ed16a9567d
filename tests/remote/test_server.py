"""The model server over HTTP: a real `nnsight-lab serve` on 127.0.0.1, driven with `requests`.

One server for the module, with tight limits (5 s per request, 3 unfinished
requests per key, 1 MB bodies, 50 KB results) so that timeouts, queue bounds and size limits
can be reached quickly; one replica, so the queue is observable.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import io
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

import pytest
import requests
import torch

import nnsight_lab
from nnsight_lab.remote import results
from nnsight_lab.remote.schema import WIRE_VERSION, Kind, Request, State, Status

TIMEOUT = 5
RESULT_MB = 0.05  # a layer's output fits, the logits (50257 floats) do not
NORMAL = "hs = llm.transformer.h[0].output.save()\n"
SPIN = "n = 0\nwhile True:\n    n = n + 1\n"


@pytest.fixture(scope="module")
def server(start_server):
    return start_server(
        *("--request-timeout", str(TIMEOUT), "--max-queued-per-key", "3"),
        *("--max-request-mb", "1", "--max-result-mb", str(RESULT_MB)),
    )


def body(source: str = NORMAL, **fields: Any) -> dict[str, Any]:
    request = Request(
        version=WIRE_VERSION,
        model="tiny",
        kind=Kind.TRACE,
        source=source,
        filename="test.py",
        line=10,
        target="tracer",
        inputs=["Hello"],
        values={"llm": {"$ref": ["model", None]}},
    )
    return {**request.to_json(), **fields}


def submit(server, source: str = NORMAL, label: str = "alice", **fields: Any) -> requests.Response:
    return requests.post(
        server.url + "/v1/requests", json=body(source, **fields), headers=server.headers(label)
    )


def status(server, request_id: str, label: str = "alice") -> Status:
    response = requests.get(f"{server.url}/v1/requests/{request_id}", headers=server.headers(label))
    response.raise_for_status()
    return Status.from_json(response.json())


def follow(server, request_id: str, label: str = "alice", seconds: float = 60) -> list[Status]:
    """Every status the stream sends, until a final one (heartbeats, repeats of the last
    status sent while nothing changes, left out)."""
    url = f"{server.url}/v1/requests/{request_id}/events"
    statuses: list[Status] = []
    with requests.get(url, headers=server.headers(label), stream=True, timeout=seconds) as stream:
        assert stream.headers["content-type"].startswith("application/x-ndjson")
        for line in filter(None, stream.iter_lines()):
            status = Status.from_json(json.loads(line))
            if not statuses or status != statuses[-1]:
                statuses.append(status)
    assert statuses[-1].state.final
    return statuses


def wait_running(server, request_id: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while status(server, request_id).state is not State.RUNNING:
        assert time.monotonic() < deadline, "the request never started"
        time.sleep(0.05)


def run_normal(server, label: str = "alice") -> dict[str, Any]:
    """Run the normal body to completion; its saved values."""
    response = submit(server, label=label)
    assert response.status_code == 202
    request_id = response.json()["id"]
    final = follow(server, request_id, label)[-1]
    assert final.state is State.COMPLETED, final
    url = f"{server.url}/v1/requests/{request_id}/result"
    result = requests.get(url, headers=server.headers(label))
    assert result.status_code == 200
    assert result.headers["content-type"] == "application/octet-stream"
    assert int(result.headers["content-length"]) == len(result.content)
    assert requests.get(url, headers=server.headers(label)).status_code == 410  # sent once
    return results.read_result(io.BytesIO(result.content))


def workers(server) -> list[int]:
    """The server's worker processes (its children running nnsight_lab.remote.worker)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            command = (entry / "cmdline").read_bytes()
        except (OSError, ValueError, IndexError):
            continue
        if ppid == server.process.pid and b"nnsight_lab.remote.worker" in command:
            found.append(int(entry.name))
    return found


def test_health_says_version_and_mode(server):
    health = requests.get(server.url + "/v1/health").json()
    assert health == {
        "status": "ok",
        "version": WIRE_VERSION,
        "server": nnsight_lab.__version__,
        "mode": "safe",
    }
    assert "/v1/requests" in requests.get(server.url + "/openapi.json").json()["paths"]


def test_models_are_listed_and_described(server, llm):
    headers = server.headers()
    listed = requests.get(server.url + "/v1/models", headers=headers).json()
    assert [m["name"] for m in listed] == ["tiny"] and listed[0]["replicas"] == 1
    described = requests.get(server.url + "/v1/models/tiny", headers=headers).json()
    assert described["name"] == "tiny" and "tokenizer.json" in described["files"]
    paths = ["model" + (f".{name}" if name else "") for name, _ in llm._module.named_modules()]
    assert [row[0] for row in described["modules"]] == paths
    assert requests.get(server.url + "/v1/models/nope/x", headers=headers).status_code == 404
    rows = requests.get(server.url + "/v1/status", headers=headers).json()["models"]
    assert rows[0]["name"] == "tiny" and set(rows[0]) == {"name", "replicas", "busy", "queued"}


def test_keys_from_the_file_and_the_environment_are_known_by_label(server):
    for label in ("alice", "bob"):
        whoami = requests.get(server.url + "/v1/whoami", headers=server.headers(label))
        assert whoami.json() == {"label": label}


def test_a_missing_or_wrong_key_gets_401_and_is_never_echoed(server):
    key = server.key
    wrong = [key[:-1], key + "0", key.upper(), "wrong-" + key[::-1], "k\u00e9y"]
    calls = [("GET", "/v1/models"), ("GET", "/v1/status"), ("GET", "/v1/whoami")]
    calls += [("POST", "/v1/requests"), ("GET", "/v1/requests/abc"), ("GET", "/v1/models/tiny")]
    for method, path in calls:
        assert requests.request(method, server.url + path).status_code == 401
        for given in wrong:
            headers = {"X-API-Key": given.encode("utf-8").decode("latin-1")}
            response = requests.request(method, server.url + path, headers=headers, json=body())
            assert response.status_code == 401, (method, path)
            assert given not in response.text and key not in response.text
    assert key not in server.log.read_text()


def test_an_oversized_body_gets_413(server):
    big = json.dumps(body(source="x = 1\n" + "#" * (2 * 2**20))).encode()
    response = requests.post(server.url + "/v1/requests", data=big, headers=server.headers())
    assert response.status_code == 413
    chunks = (big[i : i + 2**16] for i in range(0, len(big), 2**16))  # no Content-Length
    response = requests.post(server.url + "/v1/requests", data=chunks, headers=server.headers())
    assert response.status_code == 413


def test_malformed_or_mismatched_requests_get_4xx(server):
    url, headers = server.url + "/v1/requests", server.headers()
    for raw in (b"{not json", b"[]", b'"text"', b"{}", b'{"version": 3}'):
        response = requests.post(url, data=raw, headers=headers)
        assert 400 <= response.status_code < 500, raw
    for fields in ({"line": "ten"}, {"line": 0}, {"kind": "train"}, {"extra": 1}):
        assert requests.post(url, json=body(**fields), headers=headers).status_code == 422
    response = requests.post(url, json=body(version="nnsight_lab/0"), headers=headers)
    assert response.status_code == 409
    assert (
        WIRE_VERSION in response.json()["detail"] and "nnsight_lab/0" in response.json()["detail"]
    )
    assert submit(server, model="nope").status_code == 404
    response = submit(server, payload="gASVAAAAAAAAAAB9lC4=")
    assert response.status_code == 403 and "safe mode" in response.json()["detail"]


def test_a_refused_body_is_an_error_status_naming_its_line_and_rule(server, tmp_path):
    sentinel = tmp_path / "sentinel"
    source = f"x = 1\nopen({str(sentinel)!r}, 'w').write('ran')\n"
    response = submit(server, source)
    assert response.status_code == 202
    refused = Status.from_json(response.json())
    assert refused.state is State.ERROR and refused.failure is not None
    assert refused.failure.type == "PolicyError" and refused.failure.rule
    assert [(f.filename, f.lineno) for f in refused.failure.frames] == [("test.py", 11)]
    assert status(server, refused.id) == refused and not sentinel.exists()


def test_a_request_runs_once_and_only_its_key_sees_it(server, llm):
    saved = run_normal(server)
    with llm.trace("Hello"):
        here = llm.transformer.h[0].output.save()
    assert torch.equal(saved["hs"], here)
    response = submit(server)
    request_id = response.json()["id"]
    follow(server, request_id)
    for method, path in (("GET", ""), ("GET", "/events"), ("GET", "/result"), ("POST", "/cancel")):
        url = f"{server.url}/v1/requests/{request_id}{path}"
        assert requests.request(method, url, headers=server.headers("bob")).status_code == 404


def test_the_queue_keeps_order_bounds_each_key_and_cancels(server):
    spin = submit(server, SPIN).json()["id"]
    wait_running(server, spin)
    second, third = (Status.from_json(submit(server).json()) for _ in range(2))
    assert (second.position, third.position) == (0, 1)
    refused = submit(server)
    assert refused.status_code == 429 and "--max-queued-per-key" in refused.json()["detail"]
    bobs = Status.from_json(submit(server, label="bob").json())  # the bound is per key
    assert bobs.position == 2
    models = requests.get(server.url + "/v1/models", headers=server.headers()).json()
    assert (models[0]["queued"], models[0]["running"]) == (3, 1)
    cancel = f"{server.url}/v1/requests/{third.id}/cancel"
    assert requests.post(cancel, headers=server.headers()).json()["state"] == "cancelled"
    assert status(server, bobs.id, "bob").position == 1
    cancel = f"{server.url}/v1/requests/{spin}/cancel"  # running: its worker is replaced
    assert requests.post(cancel, headers=server.headers()).json()["state"] == "cancelled"
    states = [(s.state, s.position) for s in follow(server, second.id)]
    assert states == [
        (State.RECEIVED, None),
        (State.QUEUED, 0),
        (State.RUNNING, None),
        (State.COMPLETED, None),
    ]
    assert [s.position for s in follow(server, bobs.id, "bob") if s.position is not None] == [
        2,
        1,
        0,
    ]
    assert status(server, spin).state is State.CANCELLED


def test_a_request_past_the_timeout_is_stopped_and_the_next_runs(server):
    before = workers(server)
    started = time.monotonic()
    final = follow(server, submit(server, SPIN).json()["id"])[-1]
    assert final.state is State.ERROR and final.failure is not None
    assert final.failure.message.startswith(f"timed out after {TIMEOUT} s")
    assert time.monotonic() - started >= TIMEOUT
    assert "hs" in run_normal(server)
    assert workers(server) != before and len(workers(server)) == 1


def test_a_worker_that_dies_fails_its_request_and_the_server_goes_on(server):
    request_id = submit(server, SPIN).json()["id"]
    wait_running(server, request_id)
    (pid,) = workers(server)
    os.kill(pid, signal.SIGKILL)
    final = follow(server, request_id)[-1]
    assert final.state is State.ERROR and final.failure is not None
    assert "died (signal SIGKILL" in final.failure.message
    assert "hs" in run_normal(server)


def test_workers_hold_no_keys_and_are_limited(server):
    (pid,) = workers(server)
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    names = {item.split(b"=", 1)[0].decode() for item in environ if item}
    assert names <= {"HF_HOME", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"} | {
        "TMPDIR",
        "PYTHONPATH",
    }
    assert server.key.encode() not in Path(f"/proc/{pid}/environ").read_bytes()
    folder = Path(os.readlink(f"/proc/{pid}/cwd"))
    assert folder.name.startswith("nnsight-lab-worker-") and folder != server.log.parent
    limits = Path(f"/proc/{pid}/limits").read_text()
    assert "Max core file size        0" in limits
    assert f"Max file size             {int(RESULT_MB * 2**20) + 1} " in limits


def test_a_result_over_the_limit_fails_its_request_and_the_next_runs(server):
    response = submit(server, "logits = llm.lm_head.output.save()\n")
    final = follow(server, response.json()["id"])[-1]
    assert final.state is State.ERROR and final.failure is not None
    assert "--max-result-mb" in final.failure.message
    assert "hs" in run_normal(server)


def test_serve_refuses_to_start_without_keys_or_trusted_on_a_public_host(
    tmp_path, monkeypatch, capsys
):
    from nnsight_lab.remote import cli

    monkeypatch.delenv("NNSIGHT_LAB_API_KEYS", raising=False)
    assert cli.main(["serve", "--model", "gpt2"]) == 2
    assert "no API keys" in capsys.readouterr().err
    keys = tmp_path / "keys.txt"
    keys.write_text("alice:s3cret-key\n")
    public = ["serve", "--model", "gpt2", "--api-keys", str(keys), "--host", "0.0.0.0"]
    assert cli.main([*public, "--trusted"]) == 2
    error = capsys.readouterr().err
    assert "loopback" in error and "s3cret-key" not in error


def test_key_files_take_labels_comments_and_bare_keys():
    from nnsight_lab.remote.settings import parse_keys

    keys = parse_keys(["# a comment", "", "alice: k1  # trailing", "k2", "bob:k:3"])
    by_key = {k.key: k.label for k in keys}
    assert by_key["k1"] == "alice" and by_key["k:3"] == "bob"
    assert by_key["k2"].startswith("key-") and "k2" not in by_key["k2"]
    assert "k1" not in repr(keys)


class HeldExecutor:
    """An executor whose one replica takes a request only when the test releases it."""

    def __init__(self) -> None:
        self.gates: dict[str, asyncio.Event] = {}
        self.cancelled: set[str] = set()

    def replicas(self, model: str) -> int:
        return 1

    def busy(self, model: str) -> int:
        return len(self.gates)

    async def run(self, model, request_id, request, result_path, *, on_start=None):
        from nnsight_lab.remote.execution import Outcome
        from nnsight_lab.remote.executor import cancelled

        gate = self.gates.setdefault(request_id, asyncio.Event())
        await gate.wait()
        del self.gates[request_id]
        if request_id in self.cancelled:
            return Outcome(failure=cancelled(), tainted=False, size=0)
        on_start()
        result_path.write_bytes(b"result")
        return Outcome(failure=None, tainted=False, size=6)

    def cancel(self, request_id: str) -> None:
        self.cancelled.add(request_id)
        self.gates[request_id].set()


def test_the_queue_alone_cancels_a_request_waiting_for_its_replica_and_expires_results(tmp_path):
    from nnsight_lab.remote.queue import RequestQueue

    async def scenario() -> None:
        executor = HeldExecutor()
        queue = RequestQueue(executor, tmp_path, max_per_key=2)
        request = Request.from_json(body())
        first = queue.submit("first", "alice", request)
        second = queue.submit("second", "alice", request)
        await asyncio.sleep(0)
        assert list(executor.gates) == ["first"]  # handed over, the replica not free yet
        assert (first.status.position, second.status.position) == (0, 1)
        assert queue.cancel(first).state is State.CANCELLED
        assert second.status.position == 0 and queue.running("tiny") == 0
        while "second" not in executor.gates:
            await asyncio.sleep(0)
        executor.gates["second"].set()
        async for status in queue.follow(second):
            last = status
        assert last.state is State.COMPLETED and queue.get("second", "bob") is None
        path = queue.take_result(second)
        assert path is not None and path.read_bytes() == b"result"
        assert queue.take_result(second) is None  # once
        queue.expire(ttl=0)
        assert queue.get("second", "alice") is None and not path.exists()
        assert not (tmp_path / "first.result").exists()

    # A thread of its own: an earlier test (Playwright's sync API) may leave a loop running here.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, scenario()).result()
