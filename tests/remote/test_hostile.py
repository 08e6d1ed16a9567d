"""Hostile bodies sent with a valid key: each is refused, or stopped, with nothing of it
run or leaked (a sentinel file is never made), and the server goes on serving; after a
body that tried to change the model, another user's clean trace equals a fresh local one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import LanguageModel

PROMPT = "The Eiffel Tower is in the city of"

REFUSED = {
    "import": "import os\nos.system('touch {s}')",
    "from import": "from os import system\nsystem('touch {s}')",
    "__import__": "__import__('os').system('touch {s}')",
    "subclasses walk": "x = ().__class__.__bases__[0].__subclasses__()",
    "open": "open('{s}', 'w').write('x')",
    "eval": "eval(\"open('{s}', 'w')\")",
    "exec": "exec(\"open('{s}', 'w')\")",
    "getattr on builtins": "getattr(__builtins__, 'open')('{s}', 'w')",
    "private model": "state = llm._model.state_dict()",
    "globals of a function": "f = lambda: 0\ng = f.__globals__",
    "weight write": "llm.lm_head.weight[:] = 0",
    "weight in place": "llm.lm_head.weight.mul_(0)",
    "torch.save": "torch.save(llm.lm_head.output, '{s}')",
    "save_pretrained": "llm.tokenizer.save_pretrained('{s}')",
    "format walk": "t = '{{0.__class__}}'.format(1)",
}


@pytest.fixture(scope="module")
def hostile(start_server, client_of):
    """A server with a short request timeout, and the client's model of it."""
    served = start_server("--request-timeout", "8", "--max-queued-per-key", "64")
    with client_of(served):
        yield LanguageModel(served.model)


def run_body(model: LanguageModel, body: str, path: Path) -> None:
    """Run `body` remotely as the body of a trace written in a file of its own."""
    lines = "".join(f"        {line}\n" for line in body.splitlines())
    path.write_text(f"def go(llm, torch):\n    with llm.trace('Hello', remote=True):\n{lines}")
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    namespace["go"](model, torch)


def clean_trace_equals_local(model: LanguageModel, llm) -> None:
    with model.trace(PROMPT, remote=True):
        logits = model.lm_head.output.save()
    with llm.trace(PROMPT):
        here = llm.lm_head.output.save()
    assert torch.equal(logits, here)


@pytest.mark.parametrize("name", list(REFUSED))
def test_refused_with_nothing_run(hostile, name, tmp_path):
    sentinel = tmp_path / "sentinel"
    body = REFUSED[name].format(s=sentinel)
    with pytest.raises(nnsight.PolicyError) as info:
        run_body(hostile, body, tmp_path / "body.py")
    assert info.value.rule and info.value.lineno >= 3
    assert str(tmp_path / "body.py") in str(info.value)
    assert not sentinel.exists()


def test_an_endless_loop_is_stopped_and_the_server_goes_on(hostile, llm, tmp_path):
    with pytest.raises(nnsight.RemoteError, match="timed out"):
        run_body(hostile, "while True:\n    pass", tmp_path / "loop.py")
    clean_trace_equals_local(hostile, llm)


def test_a_huge_allocation_fails_alone(hostile, llm, tmp_path):
    with pytest.raises((RuntimeError, nnsight.RemoteError, MemoryError)):
        run_body(hostile, "x = torch.zeros(10**12).save()", tmp_path / "huge.py")
    clean_trace_equals_local(hostile, llm)


def test_a_weight_changed_through_an_alias_is_caught_and_undone(hostile, llm, tmp_path):
    body = "w = llm.lm_head.weight\nwith torch.no_grad():\n    w.mul_(0)\nout = llm.lm_head.output.save()"
    with pytest.raises(nnsight.RemoteError, match="changed the model"):
        run_body(hostile, body, tmp_path / "alias.py")
    clean_trace_equals_local(hostile, llm)  # the next user gets the model as it was


def test_an_edit_made_in_a_body_does_not_reach_the_next_request(hostile, llm, tmp_path):
    body = "llm.transformer.h[0].output[:] = 0\nout = llm.lm_head.output.save()"
    run_body(hostile, body, tmp_path / "edit.py")
    clean_trace_equals_local(hostile, llm)


def test_the_clients_timeout_bounds_its_wait_and_cancel_stops_the_request(hostile, llm):
    with pytest.raises(nnsight.RemoteError, match="no result within 1"):
        with hostile.trace(PROMPT, remote=True, timeout=1) as tracer:
            while True:
                pass
    assert tracer.backend.cancel().state.value == "cancelled"
    clean_trace_equals_local(hostile, llm)


@pytest.mark.parametrize(
    "values",
    [
        {"x": {"$tensor": "t9"}},  # a tensor the request does not carry
        {"x": {"$nope": 1}},  # an unknown tag
        {"x": {"$ref": ["envoy", "model.no.such.module"]}},
        {"x": {"$ref": ["module", "os"]}},  # a module a body may not have
        {"x": {"$dtype": "load"}},  # a name that is not a dtype
    ],
)
def test_malformed_values_fail_their_request_alone(hostile, llm, values):
    final = _final_event(values=values)
    assert '"state":"error"' in final and "WireError" in final
    clean_trace_equals_local(hostile, llm)


@pytest.mark.parametrize(
    ("fields", "error"),
    [
        ({"rename": [["transformer.h", ["_layers"]]]}, "WireError"),  # past the client's check
        ({"rename": [["transformer.h", ["trace"]]]}, "Error"),  # would hide `model.trace`
        ({"rename": [[{"class": "os.system"}, ["run"]]]}, None),  # no module is one: no alias
        ({"edits": [{"source": "import os\n", "filename": "e.py", "line": 1}]}, "PolicyError"),
        ({"edits": [{"source": "y = (\n", "filename": "e.py", "line": 1}]}, "Error"),
    ],
)
def test_hostile_renames_and_edits_fail_their_request_alone(hostile, llm, fields, error):
    final = _final_event(**fields)
    if error is None:
        assert '"state":"completed"' in final, final
    else:
        assert '"state":"error"' in final and error in final, final
    clean_trace_equals_local(hostile, llm)


def _final_event(**fields):
    """The last status of a request posted as it is (no client checks), with `fields`."""
    import requests

    from nnsight_lab import CONFIG
    from nnsight_lab.remote.schema import API_KEY_HEADER, WIRE_VERSION

    body = {"version": WIRE_VERSION, "model": "tiny", "kind": "trace", "filename": "t.py"}
    body |= {"source": "y = 1\n", "line": 3, "inputs": ["Hello"]} | fields
    headers = {API_KEY_HEADER: CONFIG.API.KEY}
    sent = requests.post(CONFIG.API.HOST + "/v1/requests", json=body, headers=headers, timeout=30)
    assert sent.status_code == 202, sent.text
    events = requests.get(
        f"{CONFIG.API.HOST}/v1/requests/{sent.json()['id']}/events", headers=headers, timeout=60
    )
    return [line for line in events.text.splitlines() if line][-1].replace(" ", "")
