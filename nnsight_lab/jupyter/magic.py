"""`%%trace MODEL [INPUT ...] [remote] [options]`: a notebook cell as a trace body.

The cell runs exactly as the body of `with MODEL.trace(INPUT...) as tracer:`
(or `.generate`, `.scan`): the cell's text is compiled as that body under a
file name IPython shows as `Cell In[n]`, with the `%%trace` line as line 1, so
tracebacks point at the cell's own lines. Saved values land in the notebook's
namespace, unsaved ones do not; a summary of what was saved is displayed.
"""

from __future__ import annotations

import ast
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from ..config import CONFIG
from ..models.nnsight import NNsight
from ..tracing.source import Body, compile_statements
from . import activations, cell_errors
from .cell_args import USAGE, CellArgs, parse, split
from .summary import SavedSummary


@magics_class
class TraceMagics(Magics):
    """`%%trace` and `%trace_config`."""

    def __init__(self, shell: Any) -> None:
        super().__init__(shell)
        self.defaults: dict[str, str] = {}  # set by `%trace_config`

    @cell_magic
    def trace(self, line: str, cell: str) -> None:
        """Run the cell as the body of a trace: `%%trace llm "The Eiffel Tower is in"`."""
        __tracebackhide__ = True  # noqa: F841
        args = parse(self._with_default_model(line))
        model = self._evaluate(args.model, "MODEL")
        if not isinstance(model, NNsight):
            raise UsageError(
                f"{args.model} is a {type(model).__name__}, not a wrapped model "
                f"(NNsight / LanguageModel).\n{USAGE}"
            )
        tracer = self._tracer(model, args)
        body = self._compile(line, cell)
        stats = None if args.remote else activations.start(tracer)  # a server runs remote ones
        try:
            saved = tracer.execute(body, {"tracer": tracer}, self._shell.user_ns)
        except BaseException as error:
            if CONFIG.APP.DEBUG:
                raise
            raise cell_errors.shown(error, args, line, body.filename) from error.__cause__
        if stats is not None:
            activations.keep(model, stats)
        self._shell.user_ns.update(saved)
        if args.output:
            self._shell.user_ns[args.output] = tracer
        if saved and not (args.quiet or cell.rstrip().endswith(";")):
            display(SavedSummary(saved))

    @line_magic
    def trace_config(self, line: str) -> None:
        """`%trace_config model=llm`: defaults for `%%trace` (`%trace_config` shows them)."""
        for word in line.split():
            key, sep, value = word.partition("=")
            if not sep or key not in ("model",):
                raise UsageError("usage: %trace_config model=NAME  (no argument: show settings)")
            self.defaults[key] = value
        if not line.strip():
            print(self.defaults or "no %%trace defaults set")

    @property
    def _shell(self) -> Any:
        """The shell that runs the cells (IPython sets it when it registers the magics)."""
        if self.shell is None:
            raise UsageError("%%trace runs inside IPython or Jupyter")
        return self.shell

    def _with_default_model(self, line: str) -> str:
        """The line, with `%trace_config`'s model put first if the line names none."""
        default = self.defaults.get("model")
        words = split(line)
        if default and (not words or not isinstance(self._shell.user_ns.get(words[0]), NNsight)):
            return f"{default} {line}"
        return line

    def _evaluate(self, source: str, what: str) -> Any:
        try:
            return eval(source, self._shell.user_ns)  # noqa: S307  (the user's own expression)
        except Exception as error:
            raise UsageError(f"cannot evaluate {what} `{source}`: {error!r}.\n{USAGE}") from None

    def _tracer(self, model: NNsight, args: CellArgs) -> Any:
        inputs = [self._evaluate(source, "INPUT") for source in args.inputs]
        kwargs = {k: self._evaluate(v, f"--{k}") for k, v in args.kwargs.items()}
        if args.remote:
            kwargs["remote"] = True
        if args.generate:
            if not hasattr(model, "generate"):
                raise UsageError(f"--generate needs a model with .generate(), not {args.model}")
            return model.generate(*inputs, **kwargs)
        return model.scan(*inputs, **kwargs) if args.scan else model.trace(*inputs, **kwargs)

    def _compile(self, line: str, cell: str) -> Body:
        """The cell as a trace body, line 1 being the `%%trace` line."""
        text = f"# %%trace {line}\n{cell}"
        number = cell_errors.cell_number(self._shell)
        filename = self._shell.compile.cache(text, number)
        try:
            tree = ast.parse(text, filename)
        except SyntaxError as error:
            raise cell_errors.syntax(error, f"Cell In[{number}]") from None
        if not tree.body:
            raise UsageError(f"the %%trace cell has no code to run.\n{USAGE}")
        return compile_statements(tree.body, filename, 1, text.splitlines(True), target="tracer")
