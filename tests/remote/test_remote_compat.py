"""What a remote trace shares with a local one, against a real server on 127.0.0.1: the
model's `rename=` aliases, `tracer.result`, persistent edits (`model.edit()`), and the
ValueError for a server address that is no URL. Each compares with the same trace run
here on the same weights."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
import torch
from transformers.models.gpt2.modeling_gpt2 import GPT2MLP

import nnsight_lab as nnsight
from nnsight_lab import CONFIG, LanguageModel
from nnsight_lab.remote import execution, renames, request, results
from nnsight_lab.remote.client import RemoteBackend
from nnsight_lab.remote.schema import OMITTED_KEY, RESULT_KEY, Request

PROMPT = "The Eiffel Tower is in the city of"
RENAME = {"transformer.h": "layers", "attn": "self_attn", GPT2MLP: "ff"}


@pytest.fixture(scope="module")
def remote(served, client_of):
    """The server's tiny GPT-2 as a client builds it (meta weights), without aliases."""
    with client_of(served):
        yield LanguageModel(served.model)


@pytest.fixture(scope="module")
def renamed(served, client_of):
    """The same, with `rename=` aliases (a path, a name tried everywhere, a class)."""
    with client_of(served):
        yield LanguageModel(served.model, rename=RENAME)


# -- rename= ---------------------------------------------------------------------------


def test_a_remote_body_that_uses_aliases_equals_the_local_trace(renamed, llm):
    with renamed.trace(PROMPT, remote=True):
        attn = renamed.layers[0].self_attn.output[0].save()
        renamed.layers[1].ff.output[:] *= 0.5
        logits = renamed.lm_head.output.save()
    with llm.trace(PROMPT):
        attn_here = llm.transformer.h[0].attn.output[0].save()
        llm.transformer.h[1].mlp.output[:] *= 0.5
        logits_here = llm.lm_head.output.save()
    assert torch.equal(attn, attn_here) and torch.equal(logits, logits_here)


def test_aliases_work_in_a_remote_session(renamed, llm):
    with renamed.session(remote=True):
        with renamed.trace("The Eiffel Tower is in"):
            paris = renamed.layers[1].output[:, -1, :]
        with renamed.trace("The Colosseum is in"):
            renamed.layers[1].output[:, -1, :] = paris
            patched = renamed.lm_head.output.save()
    with llm.session():
        with llm.trace("The Eiffel Tower is in"):
            paris = llm.transformer.h[1].output[:, -1, :]
        with llm.trace("The Colosseum is in"):
            llm.transformer.h[1].output[:, -1, :] = paris
            patched_here = llm.lm_head.output.save()
    assert torch.equal(patched, patched_here)


def test_aliases_do_not_outlive_their_request(renamed, remote):
    with renamed.trace(PROMPT, remote=True):
        renamed.layers[0].output.save()
    with pytest.raises(AttributeError, match="layers"):  # the server's model has none
        with remote.trace(PROMPT, remote=True):
            remote.get("layers")[0].output.save()


def test_an_alias_a_remote_body_cannot_read_is_refused_here(served, client_of):
    with client_of(served):
        hidden = LanguageModel(served.model, rename={"transformer.h": "_layers"})
        with pytest.raises(nnsight.RemoteError, match="'_layers' starts with '_'"):
            with hidden.trace(PROMPT, remote=True):
                hidden.lm_head.output.save()


# -- tracer.result ---------------------------------------------------------------------


def test_tracer_result_reaches_the_client(remote, llm):
    with remote.trace(PROMPT, remote=True) as tracer:
        remote.transformer.h[0].output[:] *= 2
    with llm.trace(PROMPT) as here:
        llm.transformer.h[0].output[:] *= 2
    assert type(tracer.result).__name__ == type(here.result).__name__
    assert torch.equal(tracer.result.logits, here.result.logits)


def test_trace_false_runs_on_the_server_and_returns_the_output(remote, llm):
    output = remote.trace(PROMPT, trace=False, remote=True)
    assert torch.equal(output.logits, llm.trace(PROMPT, trace=False).logits)


def test_generate_result_is_the_token_ids(remote, llm):
    with remote.generate(PROMPT, max_new_tokens=3, remote=True) as tracer:
        pass
    with llm.generate(PROMPT, max_new_tokens=3) as here:
        pass
    assert torch.equal(tracer.result, here.result) and tracer.result.shape[1] > 8


def test_a_non_blocking_wait_sets_the_result(remote, llm):
    with remote.trace(PROMPT, remote=True, blocking=False) as tracer:
        logits = remote.lm_head.output.save()  # noqa: F841 (comes back from `wait`)
    saved = tracer.backend.wait(timeout=60)
    with llm.trace(PROMPT) as here:
        pass
    assert RESULT_KEY not in saved and len(saved) == 1
    assert torch.equal(tracer.result.logits, here.result.logits)


def test_the_result_is_asked_for_only_when_the_caller_holds_the_tracer(llm):
    sent: list[Request] = []

    def keep(context):
        sent.append(request.build(context, request.kind_of(context, False), trusted=False))
        return {}

    def in_a_function():
        with llm.trace(PROMPT, backend=keep) as tracer:
            llm.lm_head.output.save()
        return tracer

    in_a_function()
    with llm.trace(PROMPT, backend=keep):
        llm.lm_head.output.save()
    held = llm.trace(PROMPT, backend=keep)
    with held:
        llm.lm_head.output.save()
    assert [r.result for r in sent] == [True, False, True]


def test_a_result_over_the_servers_limit_is_left_out_with_a_warning(llm, tmp_path):
    sent: list[Request] = []

    def keep(context):
        sent.append(request.build(context, request.kind_of(context, False), trusted=False))
        return {}

    with llm.trace(PROMPT, backend=keep) as tracer:
        last = llm.lm_head.output[:, -1].save()  # noqa: F841 (comes back in the result)
    path = tmp_path / "result"
    outcome = execution.run(sent[0], llm, path, trusted=False, max_result_bytes=4096)
    assert outcome.failure is None
    with open(path, "rb") as file:
        saved = results.read_result(file)
    with llm.trace(PROMPT):
        last_here = llm.lm_head.output[:, -1].save()
    assert torch.equal(saved["last"], last_here) and RESULT_KEY not in saved
    backend = RemoteBackend("local")
    backend.context = tracer
    with pytest.warns(nnsight.NNsightWarning, match="tracer.result was left out"):
        assert set(backend._returned(saved)) == {"last"}
    assert OMITTED_KEY not in saved


# -- persistent edits ------------------------------------------------------------------


def test_a_persistent_edit_travels_and_equals_the_local_edit(remote, llm):
    scale = torch.linspace(0, 1, 64)

    def run(model, **kwargs):
        with model.edit() as edited:
            edited.transformer.h[0].output[:] = edited.transformer.h[0].output * scale
        with edited.trace(PROMPT, **kwargs):
            logits = edited.lm_head.output.save()
        return logits

    there, here = run(remote, remote=True), run(llm)
    with llm.trace(PROMPT):
        plain = llm.lm_head.output.save()
    assert torch.equal(there, here) and not torch.equal(here, plain)
    with remote.trace(PROMPT, remote=True):  # the edit stayed with the edited copy
        unedited = remote.lm_head.output.save()
    assert torch.equal(unedited, plain)


def test_an_edit_with_its_tracer_repeats_per_generation_step(remote, llm):
    def run(model, **kwargs):
        with model.edit() as (tracer, edited):
            with tracer.iter[1:3]:
                edited.transformer.h[1].output[:] = 0
        with edited.generate(PROMPT, max_new_tokens=4, **kwargs):
            out = edited.generator.output.save()
        return out

    assert torch.equal(run(remote, remote=True), run(llm))


def test_an_edit_the_policy_refuses_names_the_edits_line(remote):
    with remote.edit() as edited:
        edited.transformer.h[0].output[:] = 0
        import os  # noqa: F401
    with pytest.raises(nnsight.PolicyError, match="import") as info:
        with edited.trace(PROMPT, remote=True):
            edited.lm_head.output.save()
    frame = info.traceback[-1]
    assert Path(frame.path).name == "test_remote_compat.py"
    assert "import os" in str(frame.statement)


def test_an_edit_in_a_dry_run_applies_and_stays_with_the_edited_copy(llm):
    with llm.edit() as (tracer, edited):
        edited.transformer.h[0].output[:] = 0
    with edited.trace(PROMPT, remote="local"):
        out = edited.transformer.h[0].output.save()
    assert torch.all(out == 0) and len(edited._edits) == 1  # the dry run kept the edit
    with llm.trace(PROMPT, remote="local"):
        clean = llm.transformer.h[0].output.save()
    assert torch.any(clean != 0)


def test_an_engine_warning_names_the_users_file_not_the_servers(llm):
    with pytest.warns(nnsight.OutputIndexWarning) as caught:
        with llm.trace(PROMPT, remote="local"):
            llm.transformer.h[0].output[0].save()
    message = str(caught[0].message)
    assert "test_remote_compat.py" in message and "<remote body" not in message


# -- the server's address --------------------------------------------------------------


def test_an_address_that_is_no_url_is_a_value_error_at_the_trace(remote):
    with pytest.raises(ValueError, match="must start with http:// or https://"):
        remote.trace(PROMPT, remote="127.0.0.1:8000")  # raised here, before any body
    before = CONFIG.API.HOST
    CONFIG.API.HOST = "localhost:8000"
    try:
        with pytest.raises(ValueError, match="CONFIG.API.HOST"):
            with remote.trace(PROMPT, remote=True):
                remote.lm_head.output.save()
    finally:
        CONFIG.API.HOST = before
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with remote.trace(PROMPT, remote=True):  # the configured server still answers
            remote.lm_head.output.save()


# -- a rename as the server reads it ---------------------------------------------------


@pytest.mark.parametrize(
    "pairs",
    [
        {"transformer.h": "layers"},  # not pairs
        [["transformer.h", "layers"]],  # aliases not a list
        [["transformer.h", ["_layers"]]],  # an alias a body could not read
        [["transformer.h", ["__class__"]]],
        [["transformer.h", []]],
        [["transformer.h;x", ["layers"]]],
        [[{"class": 1}, ["layers"]]],
        [[{"module": "os.system"}, ["layers"]]],
    ],
)
def test_a_malformed_rename_is_a_wire_error(llm, pairs):
    with pytest.raises(nnsight.WireError):
        with renames.bound(llm, pairs):
            pass


def test_a_class_key_names_only_classes_the_model_has(llm):
    before = {id(e): set(e.__dict__) for e in llm.modules()}
    pairs = [
        [{"class": "transformers.models.gpt2.modeling_gpt2.GPT2MLP"}, ["ff"]],
        [{"class": "os.Sandbox"}, ["nothing"]],  # no module is one: skipped, nothing imported
    ]
    with renames.bound(llm, pairs):
        assert llm.transformer.h[0].ff is llm.transformer.h[0].mlp
    assert {id(e): set(e.__dict__) for e in llm.modules()} == before
    assert not hasattr(llm.transformer.h[0], "ff")
