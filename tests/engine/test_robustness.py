"""Bodies that crashed, were refused or ran wrong: under a trace function (a debugger,
coverage), starting with `try:`, from several threads, reading a module's value in the
user's own objects. Every test runs with each runner (see conftest) and compares with
plain torch, so a body gives the same result stepped and in a greenlet."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading

import pytest
import torch

import nnsight_lab
from nnsight_lab import NNsight, TraceSourceError, TracingValueError


def _first_column(t):
    return t[:, 0]


# -- torch's errors under a trace function -------------------------------------------

_TORCH_ERRORS = """
import sys
from collections import OrderedDict

import torch
import nnsight_lab as nnsight

tracer, runner = sys.argv[1], sys.argv[2]
if tracer == "settrace":
    sys.settrace(lambda frame, event, arg: None)
before = sys.gettrace()
nnsight.CONFIG.APP.STEPPED = runner == "stepped"
torch.manual_seed(0)
net = torch.nn.Sequential(
    OrderedDict([("layer1", torch.nn.Linear(5, 10)), ("layer2", torch.nn.Linear(10, 2))])
)
model = nnsight.NNsight(net)
x = torch.randn(3, 5)


def first_column(t):
    return t[:, 0]


caught = []
try:
    with model.trace(x):
        h = first_column(model.layer1.output)  # a greenlet body
        bad = h[99]  # IndexError from torch's C++
except IndexError:
    caught.append("greenlet")
try:
    with model.trace(x):
        h = model.layer1.output  # stepped with the stepped runner
        bad = h[:, 99]
except IndexError:
    caught.append("simple")
try:
    with model.trace(x):
        h = first_column(model.layer2.output)
        h.view(7)  # RuntimeError from torch's C++
except RuntimeError:
    caught.append("view")
with model.trace(x):
    out = first_column(model.layer2.output).save()
assert torch.equal(out, net(x)[:, 0])
assert sys.gettrace() is before, "the trace function was not put back"
print("caught", *caught)
"""


@pytest.mark.parametrize("tracer", ["settrace", "coverage"])
def test_torch_errors_under_a_trace_function_are_raised_not_a_crash(tmp_path, runner, tracer):
    script = tmp_path / "torch_errors.py"
    script.write_text(_TORCH_ERRORS)
    command = [sys.executable, str(script), tracer, runner]
    if tracer == "coverage":
        data = tmp_path / ".coverage"
        command[1:1] = ["-m", "coverage", "run", f"--data-file={data}"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, f"exit {done.returncode} (-11: SIGSEGV)\n{done.stderr[-3000:]}"
    assert done.stdout.split() == ["caught", "greenlet", "simple", "view"]


# -- bodies that start with `try:` ------------------------------------------------------


def test_a_body_starting_with_try_runs(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)
    with model.trace(x) as tracer:
        try:
            hidden = model.layer1.output.save()
        except ValueError:
            hidden = None
        finally:
            bound = nnsight_lab.save(tracer is not None)  # `as tracer` was bound
    assert torch.allclose(hidden, toy_net.layer1(x)) and bound is True


def test_try_after_a_docstring_or_pass_and_try_star(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)
    with model.trace(x):
        """A docstring first."""
        pass
        try:
            out = model.output.save()
        except* KeyError:
            pass
    assert torch.allclose(out, toy_net(x))


def test_a_try_around_the_with_catches_the_bodys_own_error(toy_net):
    model = NNsight(toy_net)
    with pytest.raises(KeyError, match="mine"):
        with model.trace(torch.rand(2, 5)):
            try:
                hidden = model.layer1.output  # noqa: F841
                raise KeyError("mine")
            except ValueError:
                pass


def test_try_first_in_an_invoke_in_a_function_under_no_grad(toy_net):
    model = NNsight(toy_net)
    x, y = torch.rand(2, 5), torch.rand(1, 5)

    def run():
        with model.trace() as tracer, torch.no_grad():
            with tracer.invoke(x):
                try:
                    a = model.layer2.output.save()
                finally:
                    pass
            with tracer.invoke(y):
                try:
                    b = _first_column(model.layer1.output).save()
                except IndexError:
                    b = None
        return a, b

    a, b = run()
    assert torch.allclose(a, toy_net(x)) and not a.requires_grad
    assert torch.allclose(b, toy_net.layer1(y)[:, 0])


def test_try_first_after_another_managers_name_is_a_clear_error(toy_net, tmp_path):
    model = NNsight(toy_net)
    with pytest.raises(TraceSourceError, match="starts with `try:`"):
        with model.trace(torch.rand(1, 5)), open(tmp_path / "f", "w") as handle:
            try:
                handle.write("x")
            finally:
                pass


def test_try_first_in_an_ipython_cell(toy_net):
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    try:
        shell.user_ns.update(model=NNsight(toy_net), torch=torch)
        cell = textwrap.dedent(
            """
            x = torch.ones(1, 5)
            with model.trace(x):
                try:
                    out = model.output.save()
                except ValueError:
                    pass
            """
        )
        result = shell.run_cell(cell)
        assert result.error_in_exec is None and result.error_before_exec is None
        assert torch.allclose(shell.user_ns["out"], toy_net(torch.ones(1, 5)))
    finally:
        InteractiveShell.clear_instance()


# -- several threads, one model --------------------------------------------------------


def _module_state(net: torch.nn.Module) -> dict:
    return {name: {k: id(v) for k, v in m.__dict__.items()} for name, m in net.named_modules()}


def test_traces_from_several_threads_each_get_their_own_values(toy_net):
    model = NNsight(toy_net)
    before = _module_state(toy_net)
    failures: list[str] = []

    def work(seed: int) -> None:
        generator = torch.Generator().manual_seed(seed)
        for _ in range(6):
            x = torch.rand(seed + 1, 5, generator=generator)
            with model.trace(x):
                hidden = model.layer1.output.save()  # stepped with the stepped runner
            with model.trace(x):
                column = _first_column(model.layer2.output).save()  # a greenlet body
            with model.trace() as tracer:
                with tracer.invoke(x):
                    first = model.output.save()
                with tracer.invoke(x[:1]):
                    second = model.output.save()
            with pytest.raises(ValueError, match="thread's own"):  # an error frees the model
                with model.trace(x):
                    model.layer1.output  # noqa: B018
                    raise ValueError("thread's own")
            plain = toy_net(x)  # beside other threads' traces: their routing must not see it
            if not (
                torch.allclose(hidden, toy_net.layer1(x))
                and torch.allclose(column, plain[:, 0])
                and torch.allclose(first, plain)
                and torch.allclose(second, plain[:1])
            ):
                failures.append(f"thread {seed}: wrong values")

    threads = [threading.Thread(target=work, args=(seed,)) for seed in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads), "a trace hung"
    assert failures == []
    assert _module_state(toy_net) == before  # no routing `forward` left on any module


def test_a_plain_call_from_another_thread_is_not_seen_by_a_trace(toy_net):
    model = NNsight(toy_net)
    inside, done = threading.Event(), threading.Event()
    x, y = torch.rand(2, 5), torch.rand(3, 5)
    expected = toy_net(y)
    results = {}

    def pause(value):
        inside.set()
        assert done.wait(timeout=60)
        return value

    def run():
        with model.trace(x):
            hidden = pause(model.layer1.output).save()  # waits with the model mid-forward
            out = model.output.save()
        results.update(hidden=hidden, out=out)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert inside.wait(timeout=60)
        during = toy_net(y)  # every module's `forward` is routed for the other thread now
    finally:
        done.set()
        thread.join(timeout=60)
    assert torch.allclose(during, expected)
    assert torch.allclose(results["hidden"], toy_net.layer1(x))
    assert torch.allclose(results["out"], toy_net(x))


# -- the user's own objects read a module's value: a greenlet, not a refusal ------------


class _Helper:
    """Methods named like list, dict, str and Tensor methods, and a property, that read
    module values where the body's source does not show it."""

    def __init__(self, model):
        self.model, self.kept = model, []

    def get(self):
        return self.model.layer2.output

    def append(self, envoy):
        self.kept.append(envoy.output * 1)

    def update(self, scale):
        self.model.layer2.output = self.model.layer2.output * scale

    def sum(self):
        return self.model.layer2.output.sum()

    def items(self):
        return [("layer2", self.model.layer2.output)]

    @property
    def value(self):
        return self.model.layer2.output


class _Store(dict):
    def get(self, key, default=None):  # a dict's method, overridden
        return key.output


def test_helper_methods_with_builtin_names_run_in_a_greenlet(toy_net, stepped_runs):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)
    helper = _Helper(model)
    with model.trace(x):
        helper.append(model.layer1)
        got = helper.get().save()
        total = nnsight_lab.save(helper.sum())
        pairs = nnsight_lab.save(helper.items())
    assert torch.allclose(got, toy_net(x)) and torch.allclose(total, toy_net(x).sum())
    assert torch.allclose(helper.kept[0], toy_net.layer1(x))
    assert torch.allclose(pairs[0][1], toy_net(x))
    with model.trace(x):
        helper.update(2.0)  # writes the module's output from inside a method
        out = model.output.save()
    assert torch.allclose(out, toy_net(x) * 2)
    assert stepped_runs == []


def test_a_property_or_an_overridden_container_method_runs_in_a_greenlet(toy_net, stepped_runs):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)
    helper, store, helpers = _Helper(model), _Store(), [_Helper(model)]
    with model.trace(x):
        by_property = helper.value.save()
    with model.trace(x):
        by_store = store.get(model.layer1).save()
    with model.trace(x):
        in_a_list = helpers[0].get().save()
    assert torch.allclose(by_property, toy_net(x)) and torch.allclose(in_a_list, toy_net(x))
    assert torch.allclose(by_store, toy_net.layer1(x))
    assert stepped_runs == []


class _Reader:
    """Dunder methods that read module values: iteration, truth, indexing, arithmetic."""

    def __init__(self, model):
        self.model = model

    def __iter__(self):
        yield self.model.layer1.output

    def __bool__(self):
        return bool(self.model.layer1.output.shape[0])

    def __getitem__(self, envoy):
        return envoy.output

    def __radd__(self, other):
        return other + self.model.layer2.output


def test_dunder_methods_that_read_values_run_in_a_greenlet(toy_net, stepped_runs):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)
    reader = _Reader(model)
    with model.trace(x):
        for first in reader:
            kept = first.save()
        if reader:
            picked = reader[model.layer1].save()
        total = (torch.zeros(2, 2) + reader).save()
    assert torch.allclose(kept, toy_net.layer1(x)) and torch.allclose(picked, kept)
    assert torch.allclose(total, toy_net(x))
    assert stepped_runs == []


def test_plain_values_still_step(toy_net, runner, stepped_runs):
    model = NNsight(toy_net)
    x, scale, names = torch.rand(2, 5), 2.0, {"out": "layer2"}
    with model.trace(x):
        hidden = (model.layer1.output * scale).save()
        out = nnsight_lab.save(model.output.sum(dim=-1))
    assert torch.allclose(hidden, toy_net.layer1(x) * 2) and names == {"out": "layer2"}
    assert torch.allclose(out, toy_net(x).sum(dim=-1))
    assert len(stepped_runs) == (1 if runner == "stepped" else 0)


# -- `.save()` where no body's rewrite reaches ------------------------------------------


def test_tensor_save_outside_a_trace_names_the_line_and_the_fix():
    tensor = torch.rand(2)
    with pytest.raises(TracingValueError, match="outside one, the tensor is already yours") as info:
        tensor.save()
    line = info.tb.tb_lineno
    assert f"{__file__}, line {line}" in str(info.value) and isinstance(info.value, ValueError)
    with pytest.raises(TracingValueError, match="outside a trace"):
        nnsight_lab.save(tensor)


def test_tensor_save_in_a_function_the_body_calls_keeps_the_value(toy_net):
    model = NNsight(toy_net)
    x = torch.rand(2, 5)

    def last_column(envoy):
        return envoy.output[:, -1].save()  # not rewritten: the tensor's own `save`

    with model.trace(x):
        column = last_column(model.layer2)
    assert torch.allclose(column, toy_net(x)[:, -1])


def test_a_greenlet_body_runs_far_below_its_stack_edge():
    """torch records 64 native frames of every error it raises (`greenlet_stack`): the
    frames between a body and its greenlet's edge must be more than that."""
    import ctypes

    from nnsight_lab.engine.greenlet_stack import run_deep

    frames = (ctypes.c_void_p * 512)()
    backtrace = ctypes.CDLL(None).backtrace
    namespace = {"count": lambda: backtrace(frames, 512)}
    exec("shallow = count()", namespace)
    run_deep(compile("deep = count()", "<test>", "exec"), namespace)
    assert namespace["deep"] - namespace["shallow"] >= 70


def test_nnsights_own_traces_still_save_tensors_with_ours_imported(tmp_path):
    script = tmp_path / "both.py"
    script.write_text(
        textwrap.dedent(
            """
            import torch
            import nnsight_lab
            import nnsight

            net = torch.nn.Sequential(torch.nn.Linear(5, 10), torch.nn.Linear(10, 2))
            x = torch.rand(2, 5)
            model = nnsight.NNsight(net)
            with model.trace(x):
                out = model.output.save()  # `Tensor.save` is ours: it defers to nnsight's
            assert torch.allclose(out, net(x))
            ours = nnsight_lab.NNsight(net)
            with ours.trace(x):
                mine = ours.output.save()
            assert torch.allclose(mine, net(x))
            print("ok")
            """
        )
    )
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0 and done.stdout.split() == ["ok"], done.stderr[-3000:]
