"""The body policy: what a model server runs of a stranger's trace body, and what it refuses."""

from __future__ import annotations

import textwrap

import pytest

from nnsight_lab.errors import NNsightError, PolicyError, RemoteError
from nnsight_lab.remote.policy import check

ACCEPTED = [
    "hs = llm.transformer.h[5].output.save()",
    "llm.transformer.h[2].output[:, -1, :] *= 1.5",
    "out = llm.generator.output.save()",
    "llm.transformer.h[6].output[:] = paris",
    "model.layer1.output = model.layer1.output * 2",
    "model.layer1.output += 1",
    "x = model.layer1.inputs[0][0]; y = model.layer2.input",
    'with tracer.invoke("The Eiffel Tower is in"):\n    hs = llm.transformer.h[0].output.save()',
    "with tracer.iter[:] as step:\n    if step == 2: llm.transformer.h[0].output[:] = 0",
    "for step in tracer.iter[0:3]:\n    ...",
    "barrier = tracer.barrier(2); barrier()",
    "with loss.backward():\n    g = hs.grad.save(); hs.grad[:] = 0",
    "hs.grad = None; hs.grad *= 2",
    "loss = llm.lm_head.output.sum(); loss.backward()",
    "op = llm.transformer.h[0].attn.source.attention_interface_0.output.save()",
    "cache = tracer.cache(); tracer.stop(); llm.transformer.h[1].skip(x)",
    "tokens = nnsight.save(list()); tokens.append(llm.lm_head.output[0, -1].argmax(dim=-1))",
    "logits = torch.softmax(x, dim=-1); torch.nn.functional.relu(x); math.sqrt(2)",
    "w = llm.lm_head.weight  # reading a weight is fine (logit lens)\nw @ h",
    "logits = llm.lm_head.weight.float() @ llm.transformer.h[0].output[0, -1]",
    "[h.output.save() for h in llm.transformer.h]; {i: v for i, v in enumerate(xs)}",
    "f = lambda t: t * 2",
    "def f(t):\n    return t * 2\nhs = f(llm.transformer.h[0].output).save()",
    "print(x.shape); len(xs); range(3); x.clone(); x.detach(); x.mean(); x.norm(); x[..., 0]",
    "while i < 3: i += 1",
    "while True:\n    pass",
    'with llm.trace("Hello"):\n    hs = llm.transformer.h[0].output.save()',
    "hs = llm.transformer.h[0].output; hs.requires_grad_(); hs.mul_(2); hs[:, 0] = 0",
    "llm.transformer.h[0].output.mul_(0); llm.transformer.h[0].output[0].T[:] = 0",
    "y = x.float(); z = x.to(torch.float16); x.cpu(); type(x)",
    "torch.nn.init.zeros_(hs); torch.add(a, b, out=hs); torch.manual_seed(0)",
    "with torch.no_grad():\n    y = llm.lm_head(x).softmax(-1)",
    'for _ in range(3):\n    print(f"{x!r:>10} {_}")',
    "try:\n    y = 1 / x\nexcept ZeroDivisionError as e:\n    y = 0",
    "xs = [1, 2]; xs[0] = 3; del xs[1]; d = {}; d.update(a=1)",
    # `h` names modules in the comprehension and a tensor after it: it is the body's own name
    "hs = [h.output for h in llm.transformer.h]\nh = llm.transformer.h[0].output\nh[:] = 0",
    "logits = llm.lm_head(llm.transformer.ln_f(hs)).float(); t = type(hs)",
    'tokens = nnsight.save(list()); s = f"{llm.tokenizer.decode(ids)}"',
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_accepts_what_a_body_does(body: str) -> None:
    check(body, "script.py", 10)


# (the offending line, its rule, a part of it the message must quote)
REFUSED = [
    ("import os", "no imports", "import os"),
    ("from os import system", "no imports", "from os import system"),
    ('__import__("os")', "no imports", "__import__"),
    ("x.__class__", "no private or dunder names", "x.__class__"),
    ("().__class__.__bases__[0].__subclasses__()", "no private or dunder names", "__bases__"),
    ("g = f.__globals__", "no private or dunder names", "f.__globals__"),
    ("m = llm._model", "no private or dunder names", "llm._model"),
    ("y = _secret", "no private or dunder names", "_secret"),
    ("sd = llm._module.state_dict()", "no private or dunder names", "llm._module"),
    ("g = (x for x in y).gi_frame", "no private or dunder names", "gi_frame"),
    ('f = open("/etc/passwd")', "no builtin `open`", "open"),
    ('eval("1")', "no builtin `eval`", "eval"),
    ('exec("1")', "no builtin `exec`", "exec"),
    ('compile("1", "f", "exec")', "no builtin `compile`", "compile"),
    ('getattr(x, "y")', "no builtin `getattr`", "getattr"),
    ('setattr(x, "y", 1)', "no builtin `setattr`", "setattr"),
    ('delattr(x, "y")', "no builtin `delattr`", "delattr"),
    ('hasattr(x, "y")', "no builtin `hasattr`", "hasattr"),
    ("g = globals()", "no builtin `globals`", "globals"),
    ("v = locals()", "no builtin `locals`", "locals"),
    ("v = vars(x)", "no builtin `vars`", "vars"),
    ("d = dir(x)", "no builtin `dir`", "dir"),
    ("breakpoint()", "no builtin `breakpoint`", "breakpoint"),
    ("s = input()", "no builtin `input`", "input"),
    ("help(x)", "no builtin `help`", "help"),
    ("exit()", "no builtin `exit`", "exit"),
    ("quit()", "no builtin `quit`", "quit"),
    ('m = memoryview(b"")', "no builtin `memoryview`", "memoryview"),
    ("s = super()", "no builtin `super`", "super"),
    ("o = object()", "no builtin `object`", "object"),
    ("c = classmethod(f)", "no builtin `classmethod`", "classmethod"),
    ("c = staticmethod(f)", "no builtin `staticmethod`", "staticmethod"),
    ("c = property(f)", "no builtin `property`", "property"),
    ("b = __builtins__", "no builtin `__builtins__`", "__builtins__"),
    ('A = type("A", (), {})', "no builtin `type`", 'type("A"'),
    ("t = type", "no builtin `type`", "type"),
    ('m = type(llm)("gpt2")', "no builtin `type`", "type(llm)"),
    ("c = type(llm.tokenizer)", "no builtin `type`", "type(llm.tokenizer)"),
    ("llm.lm_head.weight[:] = 0", "no writes to parameters or model state", "weight[:]"),
    ("llm.lm_head.weight[:] += 1", "no writes to parameters or model state", "weight[:]"),
    ("llm.lm_head.weight += 1", "no writes to parameters or model state", "weight"),
    ("llm.lm_head.weight.mul_(0)", "no writes to parameters or model state", "mul_(0)"),
    ("llm.lm_head.weight.data.zero_()", "no writes to parameters or model state", "zero_"),
    (
        "torch.nn.init.zeros_(llm.lm_head.weight)",
        "no writes to parameters or model state",
        "zeros_",
    ),
    ("llm.lm_head.weight = x", "no writes to parameters or model state", "llm.lm_head.weight"),
    ("llm.transformer.h[0].foo = 1", "no writes to parameters or model state", "foo"),
    ("del llm.transformer.h[0]", "no writes to parameters or model state", "h[0]"),
    (
        "llm.transformer.h[0] = llm.transformer.h[1]",
        "no writes to parameters or model state",
        "h[0]",
    ),
    ("llm.lm_head.weight.view(-1)[0] = 1", "no writes to parameters or model state", "view(-1)[0]"),
    ("llm.lm_head.weight.T.zero_()", "no writes to parameters or model state", "T.zero_()"),
    ("llm.lm_head.weight.detach().fill_(1)", "no writes to parameters or model state", "fill_"),
    ("torch.add(a, b, out=llm.lm_head.weight)", "no writes to parameters or model state", "out="),
    (
        "torch.Tensor.copy_(llm.lm_head.weight, x)",
        "no writes to parameters or model state",
        "copy_",
    ),
    ("x.copy_(llm.lm_head.weight.data)", "no writes to parameters or model state", "data"),
    ("llm.half()", "no writes to parameters or model state", "llm.half()"),
    ('llm.lm_head.to("cpu")', "no writes to parameters or model state", "to("),
    ("llm.transformer.h[0].float()", "no writes to parameters or model state", "float()"),
    ("llm.requires_grad_(False)", "no writes to parameters or model state", "requires_grad_"),
    ("llm.eval()", "no writes to parameters or model state", "llm.eval"),
    ("llm.lm_head.register_forward_hook(f)", "no writes to parameters or model state", "register"),
    (
        "for p in llm.parameters(): p.zero_()",
        "no writes to parameters or model state",
        "parameters",
    ),
    ("llm.load_state_dict(sd)", "no writes to parameters or model state", "load_state_dict"),
    ("llm.transformer.h.append(m)", "no writes to parameters or model state", "append"),
    ("llm.config.update(d)", "no writes to parameters or model state", "update"),
    ("ms = dict(llm.named_modules())", "no writes to parameters or model state", "named_modules"),
    ("llm.edit(inplace=True)", "no writes to parameters or model state", "edit"),
    ("a = x.numpy()", "no writes to parameters or model state", "numpy"),
    ("s = x.untyped_storage()", "no writes to parameters or model state", "untyped_storage"),
    ("p = x.data_ptr()", "no writes to parameters or model state", "data_ptr"),
    ("x.set_(y)", "no writes to parameters or model state", "set_"),
    ('torch.save(x, "f.pt")', "no I/O or code loading", "torch.save"),
    ('x = torch.load("f.pt")', "no I/O or code loading", "torch.load"),
    ('torch.os.system("ls")', "no I/O or code loading", "torch.os"),
    ('t = torch.hub.load("a", "b")', "no I/O or code loading", "torch.hub"),
    ('llm.save_pretrained("out")', "no I/O or code loading", "save_pretrained"),
    ("f = torch.compile(f)", "no I/O or code loading", "torch.compile"),
    ('llm.tokenizer.backend_tokenizer.save("t.json")', "no I/O or code loading", "backend"),
    ('x.save("out.pt")', "no I/O or code loading", 'x.save("out.pt")'),
    ('m = f("evil/repo", trust_remote_code=True)', "no I/O or code loading", "trust_remote_code"),
    ('m = nnsight.LanguageModel("gpt2")', "no I/O or code loading", "nnsight.LanguageModel"),
    ("nnsight.CONFIG.APP.STEPPED = False", "no changes to server settings", "nnsight.CONFIG"),
    ('s = "{0.__class__}".format(x)', "no `str.format`", "format"),
    ("torch.set_default_dtype(torch.float16)", "no changes to server settings", "set_default"),
    ("torch.backends.cudnn.benchmark = True", "no changes to server settings", "backends"),
    ("torch.cuda.empty_cache()", "no changes to server settings", "torch.cuda"),
    ("class A:\n    def __init__(self): pass", "no classes", "class A"),
    ("match x:\n    case 1:\n        pass", "no unsupported statements", "match x"),
    ("y: int = 1", "no unsupported statements", "y: int = 1"),
    ("print = 1", "no reserved names", "print = 1"),
    ("x = (", "syntax", "x = ("),
    ("yield 1", "syntax", "yield 1"),
]
PREFIX = "hs = llm.transformer.h[0].output.save()\nz = hs.sum()\n"  # the bad line is the 3rd


@pytest.mark.parametrize(("bad", "rule", "quoted"), REFUSED, ids=[r[0] for r in REFUSED])
def test_refuses_with_rule_and_users_line(bad: str, rule: str, quoted: str) -> None:
    with pytest.raises(PolicyError) as caught:
        check(PREFIX + bad, "script.py", 40)
    error = caught.value
    assert (error.rule, error.lineno, error.filename) == (rule, 42, "script.py")
    message = str(error)
    assert message.startswith("script.py:42: `")
    assert f"rule: {rule}" in message
    assert quoted in message.split("`")[1]  # the quote is the offending code
    assert message.split("`")[1] in bad


def test_message_says_what_to_do() -> None:
    with pytest.raises(PolicyError) as caught:
        check("import os", "script.py", 12)
    assert str(caught.value) == (
        "script.py:12: `import os` is not allowed on a model server (rule: no imports). A trace "
        "body may use the model, tensors, torch and math functions; compute what needs other "
        "modules locally, before or after the trace."
    )
    assert isinstance(caught.value, RemoteError) and isinstance(caught.value, NNsightError)


def test_lines_inside_blocks_count_from_the_body() -> None:
    body = textwrap.dedent(
        """\
        with tracer.invoke("Hello"):
            hs = llm.transformer.h[0].output.save()
            with tracer.iter[1:3]:
                llm.lm_head.weight[:] = 0
        """
    )
    with pytest.raises(PolicyError) as caught:
        check(body, "Cell In[3]", 7)
    assert (caught.value.lineno, caught.value.rule) == (
        10,
        "no writes to parameters or model state",
    )
    assert str(caught.value).startswith("Cell In[3]:10: `llm.lm_head.weight[:]`")


def test_the_first_offending_line_is_reported() -> None:
    with pytest.raises(PolicyError) as caught:
        check("x = 1\ny = llm._module\nimport os\n", "script.py", 1)
    assert (caught.value.lineno, caught.value.rule) == (2, "no private or dunder names")


def test_an_import_by_builtin_is_an_import_not_a_private_name() -> None:
    with pytest.raises(PolicyError) as caught:
        check('m = __import__("os")', "script.py", 1)
    assert caught.value.rule == "no imports"


def test_a_model_used_without_a_tracing_attribute_is_unknown() -> None:
    """A documented limit: the model is known by how the body uses it."""
    check("llm.half()", "script.py", 1)
    with pytest.raises(PolicyError):
        check("llm.half()\nhs = llm.transformer.h[0].output", "script.py", 1)


def test_trusted_servers_check_nothing() -> None:
    check("import os\nos.system('ls')", "script.py", 1, trusted=True)
    with pytest.raises(PolicyError):
        check("import os\nos.system('ls')", "script.py", 1)


def test_a_null_byte_is_a_syntax_error_on_the_first_line() -> None:
    with pytest.raises(PolicyError) as caught:
        check("x = 1\0", "script.py", 5)
    assert (caught.value.rule, caught.value.lineno) == ("syntax", 5)


@pytest.mark.parametrize("depth", [100, 400, 900, 5000])
def test_deep_nesting_is_refused_not_crashed(depth: int) -> None:
    body = "x = " + " + ".join(["1"] * depth)
    try:
        check(body, "script.py", 1)
    except PolicyError as error:
        assert error.rule == "syntax"
    if depth >= 5000:
        with pytest.raises(PolicyError):
            check(body, "script.py", 1)
