"""Which bodies compile to generators (`Body.stepped`), and what they yield."""

from __future__ import annotations

import ast
import textwrap
import types

import pytest

from nnsight_lab.tracing.source import compile_statements
from nnsight_lab.tracing.stepped import Call


def _body(source: str):
    text = textwrap.dedent(source).strip("\n")
    lines = [line + "\n" for line in text.splitlines()]
    tree = ast.parse(text)
    return compile_statements(tree.body, "<test>", 1, lines)


@pytest.mark.parametrize(
    "source",
    [
        "h = model.layer1.output.save()",
        "model.layer1.output[:, 0] = 0\nout = model.output.save()",
        "model.layer2.output = model.layer1.output * 2",
        "i = torch.argmax(model.layer1.output, dim=1)\nprint(i.tolist())",
        "for k in range(3):\n    model.layer1.output[:, k] += 1",
        "import math\nscale = math.sqrt(model.layer1.output.shape[-1])",
        "y = 1",
        "for step in tracer.iter[0:2]:\n    h = model.output",
        "with tracer.iter[:] as step:\n    print(step, model.output)",
        "with tracer.all():\n    h = model.output",
        "for step in tracer.all():\n    h = model.output",
        "with loss.backward():\n    g = h.grad.save()\n    h.grad[:] = 0\n    h.grad = g * 2",
        "with model.output.sum().backward(retain_graph=True):\n    pass\nout = model.output",
        "h = model.layer1.source.op_0.output",
        "print(model.layer1.source.op_0.source)",
    ],
)
def test_simple_bodies_compile_to_generators(source):
    body = _body(source)
    assert body.stepped is not None
    assert body.stepped.code.co_flags & 0x20  # CO_GENERATOR


@pytest.mark.parametrize(
    "source",
    [
        "hs = [model.h[i].output for i in range(2)]",  # a comprehension is a nested scope
        "f = lambda: model.layer1.output",
        "def f():\n    return model.layer1.output",
        "with tracer.invoke('a'):\n    h = model.layer1.output",
        "try:\n    h = model.layer1.output\nexcept IndexError:\n    pass",
        "model.layer1.output += 1",  # an augmented write of the value itself
        "a.output, b.output = x, y",
        "del model.layer1.output",
        "fns[0](model.layer1.output)",  # a callee that is not a name or an attribute
        "g = model.layer1.weight.grad",
        "for step in tracer.iter[:]:\n    h = model.output\nelse:\n    pass",
        "with torch.no_grad():\n    h = model.output",
        "global g\ng = 1",
        "with loss.backward():\n    h = model.layer1.output",  # a module read beside backward
        "with loss.backward():\n    model.layer1.output = 0",
        "with loss.backward():\n    for s in tracer.iter[:]:\n        pass",
        "with loss.backward():\n    with loss.backward():\n        pass",
        "with loss.backward() as b:\n    pass",
        "with loss.backward():\n    print(model.source)",
        "loss.backward()\ng = h.grad",  # torch's own `.grad`, through the helper
    ],
)
def test_other_bodies_run_in_greenlets(source):
    assert _body(source).stepped is None


def test_all_is_a_loop_over_steps_only_where_with_or_for_opens_it():
    assert _body("for step in tracer.all():\n    h = model.output").stepped.tracers == ("tracer",)
    assert _body("ok = h.all()\nprint(ok)").stepped.tracers == ()  # a tensor's `.all()`


def test_reads_and_writes_become_yields_in_order():
    body = _body("model.layer2.output = model.layer1.output * 2")
    generator = _make(body, {"model": Envoyish()})
    assert generator.send(None) == (Envoyish.layer1, "output")
    written = generator.send(3)
    assert written == (6, Envoyish.layer2, "output")  # the value first, as Python evaluates it
    with pytest.raises(StopIteration):
        generator.send(None)


def test_a_backward_block_becomes_requests_around_its_gradients():
    body = _body("with loss.backward():\n    g = h.grad * 2\n    h.grad = g\ndone = 1")
    namespace = {"__nnsight_steps__": "STEPS", "__nnsight_backward__": tuple, "loss": [1]}
    namespace["h"] = "h"
    generator = _make(body, namespace)
    assert generator.send(None) == ("STEPS", "backward", (1,))
    assert generator.send(None) == ("STEPS", "grad", "h")
    assert generator.send(3) == ("STEPS", "set_grad", "h", 6)
    assert generator.send(None) == ("STEPS", "backward_end")
    with pytest.raises(StopIteration):
        generator.send(None)
    assert namespace["done"] == 1


def test_source_asks_the_engine_first():
    body = _body("h = model.source.op_0.output")
    namespace = {"__nnsight_steps__": "STEPS", "__nnsight_source__": lambda x: x.source}
    namespace["model"] = model = types.SimpleNamespace(source=types.SimpleNamespace(op_0="op"))
    generator = _make(body, namespace)
    assert generator.send(None) == ("STEPS", "source", model)
    assert generator.send(model) == ("op", "output")


def test_assigned_names_land_in_the_namespace():
    body = _body("a = 1\nfor i in range(2):\n    a = a + i\nimport math as m")
    namespace: dict = {}
    generator = _make(body, namespace)
    with pytest.raises(StopIteration):
        generator.send(None)
    assert namespace["a"] == 2 and namespace["i"] == 1 and namespace["m"].pi > 3


def test_calls_to_check_are_recorded():
    body = _body("t = torch.nn.functional.relu(x)\nprint(t.sum())\ny = x.save()")
    assert body.stepped is not None
    assert set(body.stepped.calls) == {
        Call("torch", ("nn", "functional", "relu")),
        Call("print", ()),
        Call(None, ("sum",)),
    }


def test_frames_keep_the_users_line_numbers():
    body = _body("a = 1\nb = undefined_name")
    generator = _make(body, {})
    with pytest.raises(NameError) as info:
        generator.send(None)
    assert info.traceback[-1].lineno + 1 == 2  # pytest counts lines from 0


class Envoyish:
    layer1 = "layer1"
    layer2 = "layer2"


def _make(body, namespace):
    assert body.stepped is not None
    return types.FunctionType(body.stepped.code, namespace)()
