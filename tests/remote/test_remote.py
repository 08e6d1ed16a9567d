"""`remote=True` against a real `nnsight-lab serve` on 127.0.0.1: remote results equal the
same traces run here, errors come back as the user's own, and the client needs no hub."""

from __future__ import annotations

import threading

import pytest
import torch

import nnsight_lab as nnsight
from nnsight_lab import CONFIG, LanguageModel

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture(scope="module")
def remote(served, client_of):
    """The server's tiny GPT-2 as a client builds it from the server alone (meta weights)."""
    with client_of(served):
        yield LanguageModel(served.model)


def test_the_client_builds_the_model_from_the_server_without_weights(remote, llm):
    assert not remote.dispatched
    assert next(remote._model.parameters()).device.type == "meta"
    assert [p for p, _ in remote.named_modules()] == [p for p, _ in llm.named_modules()]
    assert remote.tokenizer(PROMPT)["input_ids"] == llm.tokenizer(PROMPT)["input_ids"]


def test_trace_equals_local(remote, llm):
    with remote.trace(PROMPT, remote=True):
        hs = remote.transformer.h[0].output.save()
        remote.transformer.h[1].output[:, -1, :] *= 1.5
        logits = remote.lm_head.output.save()
    with llm.trace(PROMPT):
        hs_here = llm.transformer.h[0].output.save()
        llm.transformer.h[1].output[:, -1, :] *= 1.5
        logits_here = llm.lm_head.output.save()
    assert torch.equal(hs, hs_here) and torch.equal(logits, logits_here)
    assert not remote.dispatched  # no weights were loaded on the client


def test_values_the_body_reads_travel(remote, llm):
    scale = torch.linspace(0, 1, 64)
    layer = remote.transformer.h[0]
    with remote.trace(PROMPT, remote=True):
        layer.output[:] = layer.output * scale
        out = remote.lm_head.output[:, -1].argmax(dim=-1).save()
    with llm.trace(PROMPT):
        llm.transformer.h[0].output[:] = llm.transformer.h[0].output * scale
        out_here = llm.lm_head.output[:, -1].argmax(dim=-1).save()
    assert torch.equal(out, out_here)


def test_invokes_and_barrier_equal_local(remote, llm):
    def run(model, **kwargs):
        with model.trace(**kwargs) as tracer:
            barrier = tracer.barrier(2)
            with tracer.invoke("The Eiffel Tower is in"):
                paris = model.transformer.h[1].output[:, -1, :]
                barrier()
            with tracer.invoke("The Colosseum is in"):
                barrier()
                model.transformer.h[1].output[:, -1, :] = paris
                logits = model.lm_head.output.save()
        return logits

    assert torch.equal(run(remote, remote=True), run(llm))


def test_generate_with_iter_equals_local(remote, llm):
    def run(model, **kwargs):
        with model.generate(PROMPT, max_new_tokens=4, **kwargs) as tracer:
            tokens = nnsight.save(list())
            with tracer.iter[0:4] as step:
                if step == 1:
                    model.transformer.h[0].output[:] = 0
                tokens.append(model.lm_head.output[0, -1].argmax(dim=-1))
            out = model.generator.output.save()
        return tokens, out

    tokens, out = run(remote, remote=True)
    tokens_here, out_here = run(llm)
    assert len(tokens) == 4 and torch.equal(torch.stack(tokens), torch.stack(tokens_here))
    assert torch.equal(out, out_here)


def test_gradients_equal_local(remote, llm):
    def run(model, **kwargs):
        with model.trace(PROMPT, **kwargs):
            hs = model.transformer.h[0].output
            loss = model.lm_head.output.sum()
            with loss.backward():
                grad = hs.grad.save()
        return grad

    grad = run(remote, remote=True)
    assert grad.abs().sum() > 0 and torch.allclose(grad, run(llm))


def test_source_cache_and_scan_equal_local(remote, llm):
    def run(model, **kwargs):
        with model.trace(PROMPT, **kwargs) as tracer:
            cache = tracer.cache(modules=[model.transformer.h[1]])
            op = model.transformer.h[0].attn.source.attention_interface_0.output[0].save()
        return cache, op

    cache, op = run(remote, remote=True)
    cache_here, op_here = run(llm)
    assert torch.equal(op, op_here)
    path = "model.transformer.h.1"
    assert torch.equal(cache[path].output, cache_here[path].output)
    with remote.scan(PROMPT, remote=True):
        width = nnsight.save(remote.transformer.h[0].output.shape[-1])
    assert width == 64


def test_session_shares_unsaved_values_and_returns_only_saved(remote, llm):
    def run(model, **kwargs):
        with model.session(**kwargs):
            with model.trace("The Eiffel Tower is in"):
                paris = model.transformer.h[1].output[:, -1, :]
            with model.trace("The Colosseum is in"):
                model.transformer.h[1].output[:, -1, :] = paris
                patched = model.lm_head.output.save()
        assert "paris" not in locals()
        return patched

    assert torch.equal(run(remote, remote=True), run(llm))


def test_an_error_comes_back_as_its_type_at_the_users_line(remote):
    with pytest.raises(IndexError) as info:
        with remote.trace(PROMPT, remote=True):
            remote.transformer.h[0].output[0, 99].save()  # the line the traceback names
    last = info.traceback[-1]
    assert last.path.name == "test_remote.py"
    assert "output[0, 99]" in str(last.statement)
    with pytest.raises(nnsight.OutOfOrderError):
        with remote.trace(PROMPT, remote=True):
            late = remote.transformer.h[1].output.save()
            early = remote.transformer.h[0].output.save()  # noqa: F841
        del late


def test_a_function_cannot_travel_to_a_safe_server(remote):
    def helper(x):
        return x * 2

    with pytest.raises(nnsight.WireError, match="`helper`"):
        with remote.trace(PROMPT, remote=True):
            out = helper(remote.lm_head.output).save()  # noqa: F841


def test_non_blocking_returns_a_handle_to_wait_on(remote, llm):
    with remote.trace(PROMPT, remote=True, blocking=False) as tracer:
        logits = remote.lm_head.output.save()
    assert "logits" not in locals() or logits is None
    saved = tracer.backend.wait(timeout=60)
    with llm.trace(PROMPT):
        here = llm.lm_head.output.save()
    assert torch.equal(saved["logits"], here)


def test_dry_run_runs_the_servers_path_here(llm):
    with llm.trace(PROMPT, remote="local"):
        logits = llm.lm_head.output.save()
    with llm.trace(PROMPT):
        here = llm.lm_head.output.save()
    assert torch.equal(logits, here)
    with pytest.raises(nnsight.PolicyError, match="import") as info:
        with llm.trace(PROMPT, remote="local"):
            import os  # noqa: F401
    assert info.value.rule and info.traceback[-1].path.name == "test_remote.py"


def test_status_and_whoami(remote, served):
    assert nnsight.whoami() == served.label
    models = {m["name"]: m for m in nnsight.status()["models"]}
    assert models[served.model]["replicas"] >= 1


def test_sixteen_concurrent_clients_each_get_their_own_result(remote, llm):
    prompts = [f"Prompt number {i} is" for i in range(16)]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with remote.trace(prompts[i], remote=True):
                out = remote.lm_head.output[:, -1].save()
            results[i] = out
        except BaseException as error:  # reported below, with the others
            errors.append(error)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert not errors and len(results) == 16
    for i, prompt in enumerate(prompts):
        with llm.trace(prompt):
            here = llm.lm_head.output[:, -1].save()
        assert torch.equal(results[i], here)


def test_the_magic_with_remote_gives_the_values_of_a_local_cell(remote, llm):
    from IPython.core.interactiveshell import InteractiveShell
    from IPython.utils.capture import capture_output

    shell = InteractiveShell.instance()
    assert shell.run_cell("%load_ext nnsight_lab").success
    shell.user_ns.update(remote_llm=remote, llm=llm, prompt=PROMPT)
    cell = "hs = {m}.transformer.h[1].output.save()\nlogits = {m}.lm_head.output.save()\n"
    try:
        with capture_output():
            there = shell.run_cell(
                f"%%trace remote_llm prompt remote\n{cell.format(m='remote_llm')}"
            )
            assert there.success, there.error_in_exec
            values = shell.user_ns.pop("hs"), shell.user_ns.pop("logits")
            here = shell.run_cell(f"%%trace llm prompt\n{cell.format(m='llm')}")
            assert here.success, here.error_in_exec
            failed = shell.run_cell(
                "%%trace remote_llm prompt remote\nx = 1\nremote_llm.lm_head.output[0, 99]\n"
            )
        assert torch.equal(values[0], shell.user_ns["hs"])
        assert torch.equal(values[1], shell.user_ns["logits"])
        assert isinstance(failed.error_in_exec, IndexError)
        last = failed.error_in_exec.__traceback__
        while last.tb_next is not None:
            last = last.tb_next
        assert last.tb_lineno == 3 and last.tb_frame.f_code.co_filename.startswith("<ipython-input")
    finally:
        for name in ("remote_llm", "llm", "prompt", "hs", "logits", "x"):
            shell.user_ns.pop(name, None)


def test_a_trusted_server_takes_functions_from_the_notebook(start_server, client_of, llm):
    served = start_server("--trusted")

    def double(x):
        return x * 2

    with client_of(served):
        model = LanguageModel(served.model)
        assert nnsight.status()["mode"] == "trusted"  # the client can tell a trusted server
        with model.trace(PROMPT, remote=True):
            out = double(model.lm_head.output).save()
    with llm.trace(PROMPT):
        here = llm.lm_head.output.save()
    assert torch.equal(out, here * 2)


def test_one_status_line_unless_remote_logging_is_off(remote, capsys):
    with remote.trace(PROMPT, remote=True):
        remote.lm_head.output.save()
    shown = capsys.readouterr().err
    assert "completed" in shown and shown.count("\n") == 1  # one line, rewritten in place
    CONFIG.APP.REMOTE_LOGGING = False
    try:
        with remote.trace(PROMPT, remote=True):
            remote.lm_head.output.save()
    finally:
        CONFIG.APP.REMOTE_LOGGING = True
    assert capsys.readouterr().err == ""


def test_prints_and_warnings_of_the_body_come_back(remote, capsys):
    with pytest.warns(nnsight.NNsightWarning, match="never runs|skipped|cannot run") as caught:
        with remote.generate(PROMPT, max_new_tokens=2, remote=True) as tracer:
            print("inside the body")
            with tracer.iter[:]:
                remote.lm_head.output.save()
            after = remote.lm_head.output.save()  # noqa: F841  (skipped: the warning names it)
    assert "inside the body" in capsys.readouterr().out
    assert caught[0].filename == __file__


def test_a_url_names_a_server_for_one_call(remote, served, llm):
    before = CONFIG.API.HOST
    CONFIG.API.HOST = None  # no default server: the call's own URL is the one used
    try:
        with remote.trace(PROMPT, remote=served.url):
            logits = remote.lm_head.output.save()
    finally:
        CONFIG.API.HOST = before
    with llm.trace(PROMPT):
        here = llm.lm_head.output.save()
    assert torch.equal(logits, here)


def test_a_version_mismatch_is_one_clear_error(remote, monkeypatch):
    from nnsight_lab.remote import client
    from nnsight_lab.remote.schema import WIRE_VERSION

    monkeypatch.setattr(client, "WIRE_VERSION", "nnsight_lab/0")
    monkeypatch.setattr(client, "_checked", {})
    with pytest.raises(
        nnsight.RemoteError, match=f"speaks {WIRE_VERSION} .* this client nnsight_lab/0"
    ):
        with remote.trace(PROMPT, remote=True):
            remote.lm_head.output.save()
