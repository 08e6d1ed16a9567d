"""Running one request on a model: the server's execution path.

A worker process calls `run` for each request it is given; the client's dry run
(`remote="local"`) calls the same function on its own model. `run` rebuilds the
body from its source text under a file name of its own (lines padded so that
they keep the user's numbers), decodes the values it reads, opens the same
context the user opened (trace, generate, scan or session), runs it, and writes
the saved values as one safetensors file. An exception raised by the body
becomes a `Failure` that names the user's file and lines, with no server frames.

The client's `rename=` aliases are bound on the model's envoys for the request
alone (`renames`); its persistent edits run on a shallow copy of the model that
carries them for the request alone (as `model.edit()` makes one), each edit a
body that the policy checked like the trace's own.

After every request the model must be as it was: parameters' gradients are
dropped; if anything else changed (a weight's version counter, a hook, a
module's mode, the config, its edits), the run is refused and the worker reports
itself `tainted`, to be replaced with a freshly loaded model.
"""

from __future__ import annotations

import ast
import base64
import importlib
import io
import itertools
import linecache
import re
import tempfile
import traceback
import warnings
from contextlib import redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

from ..engine.backends import helpers
from ..engine.edits import Edit, Editor
from ..engine.envoy import Envoy
from ..errors import PolicyError, RemoteError, WireError
from ..models.language_model import add_generator
from ..models.nnsight import NNsight
from ..tracing.source import Body, compile_statements
from . import renames, results, wire
from .schema import RESULT_KEY, Failure, Frame, Kind, Request

MODULES = ("torch", "torch.nn", "torch.nn.functional", "math", "nnsight_lab")
"""Modules a body may read by name from the caller (`torch`, `F`, `math`, `nnsight`)."""

_HOOKS = (
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_backward_pre_hooks",
    "_state_dict_hooks",
    "_load_state_dict_pre_hooks",
)
_counter = itertools.count()
_KEEP = 64
_bodies: dict[tuple[str, int, str | None], Body] = {}
_EDIT_HELPERS = helpers(lambda value: value)  # saving in an edit keeps nothing, as locally


@dataclass(frozen=True)
class Outcome:
    """How one request ended.

    Attributes:
        failure: the error, or None when the result file was written.
        tainted: the body changed the model: the worker must be replaced.
        size: bytes of the result file (0 on failure).
        prints: what the body printed.
        warnings: the warnings it raised, as failures (type, message, the body's line).
    """

    failure: Failure | None
    tainted: bool
    size: int
    prints: str = ""
    warnings: tuple[Failure, ...] = ()


def load_model(spec: str, device_map: str | None = None) -> NNsight:
    """The model a server serves under a spec: a folder or hub id of a causal LM.

    `device_map="auto"` spreads it over the GPUs this process sees (a Ray replica's).
    """
    from ..models.language_model import LanguageModel

    if device_map is None:
        return LanguageModel(spec, dispatch=True)
    return LanguageModel(spec, dispatch=True, device_map=device_map)


def describe_spec(spec: str) -> dict[str, Any]:
    """What a client needs to build the model without weights or hub access: the config,
    the tokenizer's files (base64) and the module tree (`[path, class name]` rows)."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    config = AutoConfig.from_pretrained(spec)
    with torch.device("meta"):
        module = AutoModelForCausalLM.from_config(config)
    add_generator(module)  # the tree as a LanguageModel of it has it
    files: dict[str, str] = {"config.json": _b64(config.to_json_string().encode())}
    with tempfile.TemporaryDirectory() as folder:
        AutoTokenizer.from_pretrained(spec).save_pretrained(folder)
        for path in Path(folder).iterdir():
            files[path.name] = _b64(path.read_bytes())
    if "tokenizer.json" in files:  # the fast tokenizer's one file holds vocab and merges
        files = {k: v for k, v in files.items() if k not in ("vocab.json", "merges.txt")}
    tree = [[_path(name), type(sub).__name__] for name, sub in module.named_modules()]
    return {"config": config.to_dict(), "files": files, "modules": tree}


def run(
    request: Request,
    model: NNsight,
    result_path: Path,
    *,
    trusted: bool,
    max_result_bytes: int | None = None,
) -> Outcome:
    """Run `request` on `model` and write its saved values to `result_path`.

    `tracer.result`, when the request asks for it, is left out (with a note saying
    why) where it would take the result past `max_result_bytes`.

    Never raises for what the body does: its errors come back as `Outcome.failure`.
    """
    before = fingerprint(model)
    failure, size, tainted = None, 0, False
    printed, caught = io.StringIO(), []
    try:
        try:
            with warnings.catch_warnings(record=True) as recorded, redirect_stdout(printed):
                warnings.simplefilter("always")
                caught = recorded  # the same list: filled as the body runs
                saved = execute(request, model, trusted=trusted)
        finally:
            _reset(model)
            tainted = fingerprint(model) != before
        if tainted:
            raise RemoteError(
                "the body changed the model (a weight, a hook, a module's mode or the config); "
                "a trace may change activations, never the model itself. Nothing was kept, "
                "and the server reloads the model."
            )
        returned = saved.pop(RESULT_KEY, results.NOTHING)
        size = results.write_result(result_path, saved, returned=returned, budget=max_result_bytes)
    except KeyboardInterrupt:
        raise
    except BaseException as error:  # a body's `raise SystemExit` fails its request alone
        failure = failure_of(error, request.filename, _edit_files(request))
    files = _edit_files(request)
    notices = tuple(_warning(w, request.filename, files) for w in caught[:100])
    return Outcome(failure, tainted, size, printed.getvalue()[: 1 << 20], notices)


def execute(request: Request, model: NNsight, *, trusted: bool) -> dict[str, Any]:
    """Run the request's body on `model`; returns its saved values by name (and, when
    the request asks for it, `tracer.result` under `RESULT_KEY`)."""
    with renames.bound(model, request.rename):
        edited = _carrying_edits(model) if request.edits else model
        context = _open(edited, request)
        tensors = wire.unpack_tensors(request.tensors)
        resolve = _resolver(edited, context)
        device = _device(model)

        def value(tree: Any) -> Any:
            return _to(wire.decode(tree, tensors, resolve=resolve), device)

        for edit in request.edits:
            values = {name: value(tree) for name, tree in edit.values.items()}
            body = _compiled(edit.source, edit.line, edit.target)
            globals_ = {"__name__": "__remote__"}
            edited._edits.append(Edit(body, values, globals_, _EDIT_HELPERS))
        scope = {name: value(tree) for name, tree in request.values.items()}
        if request.payload:
            scope.update(_unpickle(request.payload, trusted))
        if request.target:
            scope[request.target] = context
        context.inputs = tuple(value(v) for v in request.inputs)
        context.kwargs = {k: value(v) for k, v in request.kwargs.items()}
        body = _compiled(request.source, request.line, request.target)
        saved = context.execute(body, scope, {"__name__": "__remote__"})
        if request.result and request.kind is not Kind.SESSION:
            saved[RESULT_KEY] = context.result
        return saved


def bodies_of(request: Request) -> list[tuple[str, str, int]]:
    """Every body a request runs, as (source, filename, line): its edits', then its own;
    the policy checks each."""
    edits = [(e.source, e.filename, e.line) for e in request.edits]
    return [*edits, (request.source, request.filename, request.line)]


def _carrying_edits(model: NNsight) -> NNsight:
    """A shallow copy of `model` (the same modules and envoys) with a list of edits of its
    own, empty: the request's edits go there, never on the served model."""
    copy = Editor(model, inplace=False).model
    copy._edits.clear()
    return copy


def _edit_files(request: Request) -> dict[str, str]:
    """The file names the request's edits were compiled under -> the user's file names."""
    found = (_bodies.get((e.source, e.line, e.target)) for e in request.edits)
    pairs = zip(found, request.edits, strict=True)
    return {body.filename: edit.filename for body, edit in pairs if body is not None}


def _open(model: NNsight, request: Request) -> Any:
    """The context the user opened, with no input yet (`execute` sets it)."""
    if request.kind is Kind.SESSION:
        return model.session()
    if request.kind is Kind.SCAN:
        return model.scan()
    if request.kind is Kind.GENERATE:
        if not hasattr(model, "generate"):
            raise RemoteError(f"{type(model).__name__} models cannot generate")
        return model.generate()
    return model.trace()


def _compiled(source: str, line: int, target: str | None) -> Body:
    """A body compiled under a file name of its own, its lines numbered as in the user's
    file; the source stays in `linecache` (a session's traces read their bodies there)
    while the body is among the last `_KEEP` compiled, which are reused."""
    key = (source, line, target)
    body = _bodies.pop(key, None)
    if body is None:
        body = _compile(source, line, target, f"<remote body {next(_counter)}>")
        if len(_bodies) >= _KEEP:
            linecache.cache.pop(_bodies.pop(next(iter(_bodies))).filename, None)
    _bodies[key] = body  # the newest last
    return body


def _compile(source: str, line: int, target: str | None, filename: str) -> Body:
    if line < 1 or line > 10_000_000:
        raise WireError(f"a body's line must be between 1 and 10,000,000, got {line}")
    lines = ["\n"] * (line - 1) + source.splitlines(keepends=True)
    text = "".join(lines)
    tree = ast.parse(text, filename)
    if not tree.body:
        raise RemoteError("the request's body has no statements to run")
    body = compile_statements(tree.body, filename, max(line - 1, 1), lines, target=target)
    linecache.cache[filename] = (len(text), None, lines, filename)
    return body


def _resolver(model: NNsight, context: Any) -> wire.Resolve:
    """How references in a request become objects here: the model, its modules, the
    tracer, and the few modules a body may read by name."""

    def resolve(tag: str, argument: Any) -> Any:
        if tag == "model":
            return model
        if tag == "tracer":
            return context
        if tag == "envoy" and isinstance(argument, str):
            return envoy_at(model, argument)
        if tag == "module" and argument in MODULES:
            return importlib.import_module(argument)
        raise WireError(f"a request cannot refer to {tag} {argument!r}")

    return resolve


def envoy_at(model: NNsight, path: str) -> Envoy:
    """The envoy at a dotted path ("model.transformer.h.0")."""
    envoy: Envoy = model
    for part in path.split(".")[1:]:
        children = envoy._children
        if part not in children:
            raise WireError(f"the model has no module {path!r}")
        envoy = children[part]
    return envoy


def failure_of(error: BaseException, filename: str, files: dict[str, str] | None = None) -> Failure:
    """`error` as the user should see it: its type, message and the body's own frames
    (the ones compiled from the request), under the user's file name (`files`: the
    user's file of a body compiled under that name, an edit's)."""
    files = files or {}
    frames = [
        Frame(files.get(code.co_filename, filename), lineno, _frame_name(code.co_name))
        for frame, lineno in traceback.walk_tb(error.__traceback__)
        if (code := frame.f_code).co_filename.startswith("<remote body ")
    ]
    if isinstance(error, PolicyError) and error.lineno:
        frames = [Frame(filename, error.lineno, "<module>")]
    rule = error.rule if isinstance(error, PolicyError) else None
    kind = type(error)
    message = _users_names(str(error), filename, files)
    return Failure(kind.__name__, kind.__module__, message, frames, rule)


def _warning(
    caught: warnings.WarningMessage, filename: str, files: dict[str, str] | None = None
) -> Failure:
    """A warning the body raised, at the body's line (library lines are not shown)."""
    kind = caught.category
    files = files or {}
    frames = []
    if str(caught.filename).startswith("<remote body "):
        frames = [Frame(files.get(caught.filename, filename), caught.lineno, "<module>")]
    message = _users_names(str(caught.message), filename, files)
    return Failure(kind.__name__, kind.__module__, message, frames)


_COMPILED = re.compile(r"<remote body \d+>")


def _users_names(text: str, filename: str, files: dict[str, str]) -> str:
    """`text` with the names bodies were compiled under as the user's file names (an
    engine message may name the file: "line 6 of <remote body 0>")."""
    return _COMPILED.sub(lambda m: files.get(m.group(0), filename), text)


def fingerprint(model: NNsight) -> tuple:
    """What must not change across a request: every module's identity, mode, hooks and
    attributes; every weight's identity, version counter and storage; the config."""
    module = model._model
    rows: list[Any] = [len(model._edits), *_configs(module)]
    for name, sub in module.named_modules():
        hooks = tuple(len(getattr(sub, h, ())) for h in _HOOKS)
        rows.append((name, id(sub), sub.training, hooks, tuple(sub.__dict__)))
        for key, tensor in itertools.chain(sub._parameters.items(), sub._buffers.items()):
            state = None if tensor is None else (id(tensor), tensor._version, tensor.data_ptr())
            rows.append((key, state))
    globals_ = torch.nn.modules.module
    rows.append((len(globals_._global_forward_hooks), len(globals_._global_forward_pre_hooks)))
    rows.append((torch.get_default_dtype(), torch.is_grad_enabled()))
    return tuple(rows)


def _reset(model: NNsight) -> None:
    """Drop what a request may leave that is not the model's own state: the weights'
    gradients (a body's `loss.backward()` fills them). A request's edits were never on
    `model` (see `_carrying_edits`); the fingerprint counts its own."""
    for parameter in model._model.parameters():
        parameter.grad = None


def _configs(module: torch.nn.Module) -> list[dict[str, Any]]:
    """The model's config and generation config, as shallow copies of their fields."""
    configs = (getattr(module, name, None) for name in ("config", "generation_config"))
    return [dict(vars(config)) for config in configs if config is not None]


def _unpickle(payload: str, trusted: bool) -> dict[str, Any]:
    """The cloudpickled variables of a request, on a `--trusted` server only."""
    if not trusted:
        raise PolicyError(
            "this server is in safe mode and does not accept pickled values (functions, "
            "classes): define helpers inside the trace body, or use a server started with "
            "--trusted.",
            rule="no pickled values",
        )
    import cloudpickle

    values = cloudpickle.load(io.BytesIO(base64.b64decode(payload)))
    if not isinstance(values, dict):
        raise WireError("a request's payload must be a dict of variables")
    return values


def _to(value: Any, device: torch.device) -> Any:
    """`value` with its tensors moved to the model's device."""
    if isinstance(value, torch.Tensor):
        return value if value.device == device or value.device.type == "meta" else value.to(device)
    if isinstance(value, list):
        return [_to(v, device) for v in value]
    if isinstance(value, tuple) and not hasattr(value, "_fields"):
        return tuple(_to(v, device) for v in value)
    if type(value) is dict:
        return {k: _to(v, device) for k, v in value.items()}
    return value


def _device(model: NNsight) -> torch.device:
    parameter = next(model._model.parameters(), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def _frame_name(name: str) -> str:
    return "<module>" if name.startswith("<") else name


def _path(name: str) -> str:
    return f"model.{name}" if name else "model"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def is_allowed_module(value: object) -> bool:
    """Whether a module may travel by name (see `MODULES`)."""
    return isinstance(value, ModuleType) and value.__name__ in MODULES
