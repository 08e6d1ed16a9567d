"""Errors in a trace body surface as themselves, pointing at the user's line."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import traceback
from pathlib import Path

import pytest
import torch

import nnsight_lab
from nnsight_lab import NNsight, TraceSourceError

pytestmark = pytest.mark.usefixtures("runner")  # each test runs stepped and in a greenlet

SCRIPT = textwrap.dedent(
    """
    import torch
    from nnsight_lab import NNsight
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10), torch.nn.Linear(10, 2)))
    with model.trace(torch.rand(1, 5)):
        hidden = model[0].output
        model[0].output[:, 10] = 0  # the faulty line
    """
)


def _script(runner: str) -> str:
    """SCRIPT run the way `runner` says (its first line is blank: the lines stay put)."""
    setting = f"import nnsight_lab; nnsight_lab.CONFIG.APP.STEPPED = {runner == 'stepped'}"
    return SCRIPT.replace("\n", setting + "\n", 1)


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, timeout=120, **kwargs
    )


def _user_frames_only(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip().startswith("File ")]


def test_script_traceback_names_the_users_line(tmp_path, runner):
    script = tmp_path / "experiment.py"
    script.write_text(_script(runner))
    result = _run([str(script)])
    assert result.returncode == 1
    assert "IndexError: index 10 is out of bounds" in result.stderr
    assert f'File "{script}", line 7' in result.stderr
    assert "model[0].output[:, 10] = 0  # the faulty line" in result.stderr
    frames = _user_frames_only(result.stderr)
    assert not any("nnsight_lab/engine" in f or "greenlet" in f for f in frames), frames


def test_python_dash_c_traceback_shows_the_source_line(runner):
    result = _run(["-c", _script(runner)])
    assert result.returncode == 1
    assert 'File "<string>", line 7' in result.stderr
    assert "model[0].output[:, 10] = 0  # the faulty line" in result.stderr


def test_ipython_cell_traceback_names_the_cell_line():
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        cell = SCRIPT.strip("\n")
        result = shell.run_cell(cell, store_history=True)
        error = result.error_in_exec
        assert isinstance(error, IndexError)
        entries = traceback.extract_tb(error.__traceback__)
        assert entries[-1].line == "model[0].output[:, 10] = 0  # the faulty line"
        faulty = [n for n, line in enumerate(cell.splitlines(), 1) if "faulty" in line]
        assert [entries[-1].lineno] == faulty
        # No frame of ours (the `with` block's exit re-raises with a bare `raise`); judged by
        # the package's real path, since the checkout's folder may be named nnsight_lab too.
        package = Path(nnsight_lab.__file__).resolve().parent
        ours = [Path(e.filename).resolve() for e in entries if Path(e.filename).is_absolute()]
        ours = [f.relative_to(package) for f in ours if f.is_relative_to(package)]
        assert ours == []
    finally:
        InteractiveShell.clear_instance()


def test_exception_type_and_line_in_process():
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10)))
    with pytest.raises(IndexError) as info:
        with model.trace(torch.rand(1, 5)):
            model[0].output[:, 10] = 0
    last = traceback.extract_tb(info.value.__traceback__)[-1]
    assert last.filename == __file__ and last.line == "model[0].output[:, 10] = 0"


def test_debug_shows_internal_frames():
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10)))
    nnsight_lab.CONFIG.APP.DEBUG = True
    try:
        with pytest.raises(IndexError) as info:
            with model.trace(torch.rand(1, 5)):
                model[0].output[:, 10] = 0
    finally:
        nnsight_lab.CONFIG.APP.DEBUG = False
    files = [e.filename for e in traceback.extract_tb(info.value.__traceback__)]
    assert any("nnsight_lab" in f and "mediator" in f for f in files)


def test_breakpoint_inside_body_drops_into_pdb(tmp_path):
    script = tmp_path / "debugme.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            from nnsight_lab import NNsight
            model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10)))
            with model.trace(torch.rand(1, 5)):
                out = model[0].output
                breakpoint()
                done = 1
            print("after")
            """
        )
    )
    result = _run([str(script)], input="p tuple(out.shape)\nc\n", env={"PYTHONBREAKPOINT": ""})
    assert "(1, 10)" in result.stdout
    assert "debugme.py(8)" in result.stdout
    assert "after" in result.stdout


def test_pass_only_body_runs_the_model():
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10)))
    with model.trace(torch.rand(1, 5)) as tracer:
        pass
    assert tracer.result.shape == (1, 10)


def test_body_on_the_with_line_is_a_clear_error():
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10)))
    with pytest.raises(TraceSourceError, match="own line"):
        with model.trace(torch.rand(1, 5)): model.output.save()  # noqa: E701  # fmt: skip


def test_return_inside_body_is_a_clear_error():
    model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10)))

    def run():
        with model.trace(torch.rand(1, 5)):
            return model.output

    with pytest.raises(TraceSourceError, match="return"):
        run()


def test_trace_tracing_of_debugger_is_restored():
    calls = []

    def tracer(frame, event, arg):
        calls.append(event)
        return None

    model = NNsight(torch.nn.Sequential(torch.nn.Linear(5, 10)))
    sys.settrace(tracer)
    try:
        with model.trace(torch.rand(1, 5)):
            model.output.save()
        assert sys.gettrace() is tracer
    finally:
        sys.settrace(None)


class _Recorder(torch.nn.Module):
    """Raises and catches an error inside forward, and records what it chained to."""

    def __init__(self) -> None:
        super().__init__()
        self.contexts: list = []

    def forward(self, x):
        try:
            raise KeyError("inside forward")
        except KeyError as error:
            self.contexts.append(error.__context__)
        return x


def test_errors_inside_the_model_do_not_chain_to_the_engines_skip():
    # The body runs inside the `with`'s __exit__, where Python handles the exception that
    # skipped the body; the engine lets go of it, so the model's own errors stay plain.
    recorder = _Recorder()
    model = NNsight(torch.nn.Sequential(recorder))
    with model.trace(torch.rand(1, 5)):
        handled = nnsight_lab.save(sys.exc_info()[0])
        out = model.output.save()
    assert handled is None and out.shape == (1, 5)
    assert recorder.contexts == [None]


def _chain(error: BaseException | None) -> list[str]:
    names = []
    while error is not None:
        names.append(type(error).__name__)
        error = error.__cause__ or error.__context__
    return names


def test_a_bodys_error_is_not_chained_to_the_engines_abort(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(ValueError) as info:
        with model.trace(torch.rand(2, 5)):
            hidden = model.layer1.output  # noqa: F841
            raise ValueError("mine")
    assert _chain(info.value) == ["ValueError"]
    shown = "".join(traceback.format_exception(info.value))
    assert "During handling" not in shown and "Abort" not in shown


def test_a_bodys_own_exception_chain_is_kept(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(KeyError) as info:
        with model.trace() as tracer:
            with tracer.invoke(torch.rand(1, 5)):
                out = model.output.save()  # noqa: F841  (still waiting when the next fails)
            with tracer.invoke(torch.rand(1, 5)):
                hidden = model.layer1.output
                try:
                    hidden[99]
                except IndexError:
                    raise KeyError("the user's")  # noqa: B904  (chained implicitly)
    assert _chain(info.value) == ["KeyError", "IndexError"]
    shown = "".join(traceback.format_exception(info.value))
    assert shown.count("During handling") == 1 and "Abort" not in shown
