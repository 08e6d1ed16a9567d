"""`%%trace`: a cell as a trace body, compared with plain transformers results."""

from __future__ import annotations

import pytest
import torch
from IPython.utils.capture import capture_output

PROMPT = "The Eiffel Tower is in the city of"


@pytest.fixture()
def with_llm(shell, llm, hf_gpt2, gpt2_tokenizer):
    shell.user_ns.update(llm=llm, prompt=PROMPT)
    ids = torch.tensor([gpt2_tokenizer(PROMPT)["input_ids"]])
    blocks = []
    hooks = [
        b.register_forward_hook(lambda m, i, o: blocks.append(o)) for b in hf_gpt2.transformer.h
    ]
    with torch.no_grad():
        reference = hf_gpt2(ids)
    for hook in hooks:
        hook.remove()
    reference.blocks = blocks
    return shell, reference


def run(shell, cell: str):
    with capture_output() as captured:
        result = shell.run_cell(cell, store_history=True)
    return result, captured


def test_saved_values_land_in_the_namespace_and_unsaved_do_not(with_llm):
    shell, reference = with_llm
    result, _ = run(
        shell,
        f'%%trace llm "{PROMPT}"\n'
        "hs = llm.transformer.h[-1].output.save()\n"
        "logits = llm.lm_head.output.save()\n"
        "scratch = logits.sum()\n",
    )
    assert result.success, result.error_in_exec
    torch.testing.assert_close(shell.user_ns["logits"], reference.logits)
    torch.testing.assert_close(shell.user_ns["hs"], reference.blocks[-1], rtol=0, atol=0)
    assert "scratch" not in shell.user_ns and "tracer" not in shell.user_ns


def test_inputs_are_expressions_of_the_namespace(with_llm):
    shell, reference = with_llm
    result, _ = run(shell, "%%trace llm prompt\nlogits = llm.lm_head.output.save()")
    assert result.success, result.error_in_exec
    torch.testing.assert_close(shell.user_ns["logits"], reference.logits)


def test_invokes_when_no_input_and_tracer_bound_inside(with_llm):
    shell, reference = with_llm
    result, _ = run(
        shell,
        "%%trace llm -o tr\n"
        "with tracer.invoke(prompt):\n"
        "    a = llm.lm_head.output[:, -1].save()\n"
        "with tracer.invoke('Hello'):\n"
        "    b = llm.lm_head.output[:, -1].save()\n",
    )
    assert result.success, result.error_in_exec
    torch.testing.assert_close(shell.user_ns["a"], reference.logits[:, -1])
    assert shell.user_ns["tr"].__class__.__name__ == "Tracer"


def test_generate_with_options(with_llm, hf_gpt2, gpt2_tokenizer):
    shell, _ = with_llm
    result, _ = run(
        shell,
        "%%trace llm prompt --generate --max-new-tokens 3 --do-sample False\n"
        "out = llm.generator.output.save()\n",
    )
    assert result.success, result.error_in_exec
    ids = torch.tensor([gpt2_tokenizer(PROMPT)["input_ids"]])
    expected = hf_gpt2.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=50256)
    assert torch.equal(shell.user_ns["out"], expected)


def test_scan(with_llm):
    shell, _ = with_llm
    shell.run_cell("import nnsight_lab as nnsight")
    result, _ = run(
        shell,
        "%%trace llm prompt --scan\nwidth = nnsight.save(llm.transformer.h[0].output.shape[-1])",
    )
    assert result.success and shell.user_ns["width"] == 64


def test_summary_displayed_unless_quiet_or_semicolon(with_llm):
    shell, _ = with_llm
    _, captured = run(shell, "%%trace llm prompt\nlogits = llm.lm_head.output.save()")
    html = captured.outputs[0].data["text/html"]
    assert "logits" in html and "(1, 10, 50257)" in html and "float32" in html
    _, captured = run(shell, "%%trace llm prompt --quiet\nlogits = llm.lm_head.output.save()")
    assert not captured.outputs
    _, captured = run(shell, "%%trace llm prompt\nlogits = llm.lm_head.output.save();")
    assert not captured.outputs


def test_errors_point_at_the_cells_own_line(with_llm):
    shell, _ = with_llm
    result, captured = run(
        shell,
        "%%trace llm prompt\nhs = llm.transformer.h[0].output.save()\n\nhs[:, 99] = 0\n",
    )
    assert isinstance(result.error_in_exec, IndexError)
    frames = [tb for tb in _walk(result.error_in_exec.__traceback__)]
    last = frames[-1]
    assert last.tb_lineno == 4  # line 1 is the %%trace line
    assert "nnsight_lab" not in last.tb_frame.f_code.co_filename
    assert "hs[:, 99] = 0" in captured.stdout + captured.stderr
    assert "hs" not in shell.user_ns
    # the model works normally afterwards
    result, _ = run(shell, "%%trace llm prompt\nok = llm.lm_head.output.save()")
    assert result.success


def test_a_traceback_names_the_running_cell(with_llm):
    shell, _ = with_llm
    run(shell, "y = 1")  # IPython counts each cell before it runs: the label must not be n + 1
    result, captured = run(shell, "%%trace llm prompt\nhs = llm.transformer.h[0].output\nhs[:, 99]")
    last = list(_walk(result.error_in_exec.__traceback__))[-1]
    label = shell.compile.format_code_name(last.tb_frame.f_code.co_filename)
    assert label == ("Cell", f"In[{result.execution_count}]")


@pytest.mark.parametrize(
    ("cell", "message"),
    [
        ("%%trace llm\nx = llm.lm_head.output.save()", "this trace has no input"),
        ("%%trace net torch.ones(1, 3) --bogus 1\nx = net[0].output.save()", "unexpected keyword"),
        ("%%trace llm prompt\nx = llm.lm_head.output.save(\n", "SyntaxError: '(' was never"),
    ],
)
def test_errors_of_the_magics_line_are_one_message_without_frames(with_llm, cell, message):
    shell, _ = with_llm
    import nnsight_lab

    shell.user_ns.update(
        torch=torch, net=nnsight_lab.NNsight(torch.nn.Sequential(torch.nn.Linear(3, 2)))
    )
    result, captured = run(shell, cell)
    assert type(result.error_in_exec).__name__ == "UsageError", result.error_in_exec
    shown = captured.stdout + captured.stderr
    assert message in shown
    assert "Traceback" not in shown and "magic.py" not in shown and "File " not in shown
    if "SyntaxError" in message:
        assert f"Cell In[{result.execution_count}], line 2" in shown  # where the ( opened


def _walk(tb):
    while tb is not None:
        yield tb
        tb = tb.tb_next


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%%trace", "needs the model"),
        ("%%trace nope prompt", "cannot evaluate MODEL `nope`"),
        ("%%trace prompt", "not a wrapped model"),
        ("%%trace llm prompt --frobnicate", "--frobnicate needs a value"),
        ("%%trace llm prompt -x", "unknown option -x"),
        ("%%trace llm prompt -o 1abc", "-o takes a variable name"),
        ("%%trace llm prompt --generate --scan", "cannot be combined"),
        ("%%trace llm prompt remote", "needs a model server"),
        ("%%trace llm prompt --scan remote", "needs a model server"),  # a scan runs there too
    ],
)
def test_bad_lines_give_a_usage_message(with_llm, line, message):
    shell, _ = with_llm
    result, captured = run(shell, line + "\nx = llm.lm_head.output.save()")
    assert not result.success
    assert message in captured.stdout + captured.stderr + str(result.error_in_exec)


def test_default_model_from_trace_config(with_llm, capsys):
    shell, reference = with_llm
    run(shell, "%trace_config model=llm")
    result, _ = run(shell, "%%trace prompt\nlogits = llm.lm_head.output.save()")
    assert result.success, result.error_in_exec
    torch.testing.assert_close(shell.user_ns["logits"], reference.logits)


def test_module_tree_shows_the_latest_cells_activations(with_llm):
    shell, reference = with_llm
    run(shell, "%%trace llm prompt --quiet\nlogits = llm.lm_head.output.save()")
    bundle, _ = shell.display_formatter.format(shell.user_ns["llm"])  # what `llm` shows
    assert "application/vnd.jupyter.widget-view+json" in bundle
    from ipywidgets.widgets.widget import _instances  # the live widgets, by model id

    widget = _instances[bundle["application/vnd.jupyter.widget-view+json"]["model_id"]]
    stats = widget.stats["llm.transformer.h[1]"]
    expected = reference.blocks[1]
    assert stats["shape"] == list(expected.shape)
    assert stats["mean"] == pytest.approx(expected.mean().item(), rel=1e-4)
    assert widget.tree["children"][0]["path"] == "llm.transformer"


def test_a_source_listing_displays_as_a_source_view(with_llm):
    shell, _ = with_llm
    listing = shell.user_ns["llm"].transformer.h[0].attn.source
    bundle, _ = shell.display_formatter.format(listing)
    from ipywidgets.widgets.widget import _instances

    widget = _instances[bundle["application/vnd.jupyter.widget-view+json"]["model_id"]]
    assert widget.module_path == "llm.transformer.h[0].attn"
    assert bundle["text/plain"] == str(listing)  # the printed listing, for consoles
