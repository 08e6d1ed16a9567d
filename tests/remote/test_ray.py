"""`nnsight-lab serve --executor ray --replicas 2` on 127.0.0.1, with the local Ray
instance the server starts itself: remote results equal local ones, two replicas
serve at once, a replica killed mid-request fails that request alone and is
replaced, hostile bodies are refused or stopped as with the default executor, and
nothing of Ray is imported unless the Ray executor is asked for.

One server for the module (Ray's start and two actors take a while on a small
machine); the test that kills an actor joins the server's Ray cluster as a driver.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from remote.test_hostile import REFUSED, clean_trace_equals_local, run_body
from remote.test_remote import (  # noqa: F401  (run here against this module's Ray server)
    test_generate_with_iter_equals_local,
    test_trace_equals_local,
)

import nnsight_lab as nnsight
from nnsight_lab import LanguageModel
from nnsight_lab.remote.cli import main
from nnsight_lab.remote.settings import ServerSettings, parse_keys

pytestmark = pytest.mark.ray

PROMPT = "The Eiffel Tower is in the city of"
SLOW_SPINS = 3_000_000  # a body loop of a few seconds: long enough to act on mid-request


@pytest.fixture(scope="module")
def ray_served(start_server):
    return start_server(
        *("--executor", "ray", "--replicas", "2"),
        *("--request-timeout", "8", "--max-queued-per-key", "64"),
    )


@pytest.fixture(scope="module")
def remote(ray_served, client_of):
    with client_of(ray_served):
        yield LanguageModel(ray_served.model)


def spin_trace(model: LanguageModel, spins: int, **kwargs: Any) -> torch.Tensor:
    """The logits of a trace whose body first counts to `spins` (to keep a replica busy)."""
    with model.trace(PROMPT, **kwargs):
        n = 0
        while n < spins:
            n += 1
        logits = model.lm_head.output.save()
    return logits


def test_session_equals_local(remote, llm):
    def run(model, **kwargs):
        with model.session(**kwargs):
            with model.trace("The Eiffel Tower is in"):
                paris = model.transformer.h[1].output[:, -1, :]
            with model.trace("The Colosseum is in"):
                model.transformer.h[1].output[:, -1, :] = paris
                patched = model.lm_head.output.save()
        return patched

    assert torch.equal(run(remote, remote=True), run(llm))


def test_a_result_of_many_chunks_arrives_whole(remote):
    values = torch.arange(3_000_000, dtype=torch.float32)  # 12 MB: three streamed chunks
    with remote.trace(PROMPT, remote=True):
        back = (remote.lm_head.output.sum() * 0 + values).save()
    assert torch.equal(back, values)


def test_eight_clients_are_served_by_both_replicas_at_once(remote, llm):
    expected = spin_trace(llm, 0)
    results: list[torch.Tensor | BaseException] = []

    def client() -> None:
        for _ in range(2):
            try:
                results.append(spin_trace(remote, SLOW_SPINS // 10, remote=True))
            except BaseException as error:  # noqa: BLE001 - reported by the assert below
                results.append(error)

    clients = [threading.Thread(target=client) for _ in range(8)]
    for thread in clients:
        thread.start()
    busy, queued = set(), set()
    while any(thread.is_alive() for thread in clients):
        row = nnsight.status()["models"][0]
        busy.add(row["busy"])
        queued.add(row["queued"])
        time.sleep(0.05)
    for thread in clients:
        thread.join()
    assert len(results) == 16
    assert all(isinstance(r, torch.Tensor) and torch.equal(r, expected) for r in results), results
    assert nnsight.status()["models"][0]["replicas"] == 2
    assert 2 in busy and max(busy) == 2 and max(queued) > 0, (busy, queued)


@contextlib.contextmanager
def ray_cluster_of(served) -> Iterator[Any]:
    """`ray` joined to the Ray instance `served` started (the address it logged)."""
    found = re.search(r"Ray cluster at (\S+)", served.log.read_text())
    assert found, served.log.read_text()
    before = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "token"  # a local instance's default: the token in ~/.ray
    import ray  # reads RAY_AUTH_MODE when first imported

    try:
        ray.init(address=found.group(1), log_to_driver=False)
        yield ray
    finally:
        ray.shutdown()
        if before is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = before


def test_a_replica_killed_mid_request_fails_that_request_and_is_replaced(remote, ray_served, llm):
    outcomes: dict[int, str] = {}

    def client(index: int) -> None:
        try:
            spin_trace(remote, SLOW_SPINS, remote=True)
            outcomes[index] = "ok"
        except nnsight.RemoteError as error:
            outcomes[index] = str(error)

    with ray_cluster_of(ray_served) as ray:
        actors = ray.util.list_named_actors(all_namespaces=True)
        assert len(actors) == 2, actors
        clients = [threading.Thread(target=client, args=(i,)) for i in range(2)]
        for thread in clients:
            thread.start()
        deadline = time.monotonic() + 30
        while remote_running(remote) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert remote_running(remote) == 2
        time.sleep(0.5)  # both bodies are spinning in their workers
        ray.kill(ray.get_actor(actors[0]["name"], namespace=actors[0]["namespace"]))
        for thread in clients:
            thread.join(timeout=60)
    failed = [message for message in outcomes.values() if message != "ok"]
    assert len(outcomes) == 2 and len(failed) == 1, outcomes
    assert "died" in failed[0] and "the server goes on" in failed[0]
    clean_trace_equals_local(remote, llm)  # on the other replica, or the fresh one
    deadline = time.monotonic() + 60
    while nnsight.status()["models"][0]["busy"] and time.monotonic() < deadline:
        time.sleep(0.2)  # the fresh replica loads
    assert nnsight.status()["models"][0] == {"name": "tiny", "replicas": 2, "busy": 0, "queued": 0}


def remote_running(model: LanguageModel) -> int:
    import requests

    from nnsight_lab import CONFIG
    from nnsight_lab.remote.schema import API_KEY_HEADER

    rows = requests.get(
        CONFIG.API.HOST + "/v1/models", headers={API_KEY_HEADER: CONFIG.API.KEY}, timeout=10
    ).json()
    return int(rows[0]["running"])


@pytest.mark.parametrize("name", list(REFUSED))
def test_hostile_bodies_are_refused_with_nothing_run(remote, name, tmp_path):
    sentinel = tmp_path / "sentinel"
    with pytest.raises(nnsight.PolicyError) as info:
        run_body(remote, REFUSED[name].format(s=sentinel), tmp_path / "body.py")
    assert info.value.rule and info.value.lineno >= 3
    assert not sentinel.exists()


def test_an_endless_loop_times_out_and_the_server_goes_on(remote, llm, tmp_path):
    with pytest.raises(nnsight.RemoteError, match="timed out after 8 s"):
        run_body(remote, "while True:\n    pass", tmp_path / "loop.py")
    clean_trace_equals_local(remote, llm)


def test_a_huge_allocation_fails_alone(remote, llm, tmp_path):
    with pytest.raises((RuntimeError, nnsight.RemoteError, MemoryError)):
        run_body(remote, "x = torch.zeros(10**12).save()", tmp_path / "huge.py")
    clean_trace_equals_local(remote, llm)


def test_ray_flags_need_the_ray_executor(capsys):
    keys = parse_keys(["k"])
    with pytest.raises(ValueError, match="--ray-address, --gpus-per-replica need --executor ray"):
        ServerSettings(models={"m": "m"}, api_keys=keys, ray_address="auto", gpus_per_replica=1)
    with pytest.raises(SystemExit):
        main(["serve", "--model", "m", "--executor", "nope"])
    assert "invalid choice: 'nope'" in capsys.readouterr().err


NO_RAY = """
import asyncio, os, signal, sys
import nnsight_lab, nnsight_lab.remote.server
from nnsight_lab.remote import cli
from nnsight_lab.remote.settings import ServerSettings, parse_keys
print("imported", "ray" in sys.modules, flush=True)
settings = ServerSettings(models={"tiny": sys.argv[1]}, api_keys=parse_keys(["k"]), port=0)
def announce(url):
    print("serving", "ray" in sys.modules, flush=True)
    os.kill(os.getpid(), signal.SIGTERM)  # the server's graceful stop
sys.exit(asyncio.run(cli.serve(settings, announce)))
"""


def test_nnsight_lab_and_a_default_server_never_import_ray(tiny_gpt2_path: Path):
    run = subprocess.run(
        [sys.executable, "-c", NO_RAY, str(tiny_gpt2_path)],
        capture_output=True,
        text=True,
        timeout=180,
        env={**os.environ, "NNSIGHT_LAB_API_KEYS": ""},
    )
    # uvicorn re-raises the SIGTERM once it has stopped: the exit status is -15
    assert run.returncode in (0, -15), run.stderr[-2000:]
    assert run.stdout.split() == ["imported", "False", "serving", "False"], run.stderr[-2000:]
