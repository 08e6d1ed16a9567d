"""The line of `%%trace MODEL [INPUT ...] [remote] [options]`, parsed.

Words are split at spaces outside brackets and strings (Python's tokenizer does
the work), so an INPUT may be any expression: `"a prompt"`, `prompts[0]`,
`["a", "b"]`. Expressions stay text here; the magic evaluates them in the
notebook's namespace.
"""

from __future__ import annotations

import io
import keyword
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass, field

from IPython.core.error import UsageError

USAGE = (
    "usage: %%trace MODEL [INPUT ...] [remote] [--generate [--max-new-tokens N]] [--scan] "
    "[--KEY VALUE ...] [-o NAME] [--quiet]\n"
    '  e.g. %%trace llm "The Eiffel Tower is in the city of"'
)
FLAGS = ("--generate", "--scan", "--quiet")


@dataclass
class CellArgs:
    """What the magic line asks for; expressions are unevaluated source text."""

    model: str
    inputs: list[str] = field(default_factory=list)
    kwargs: dict[str, str] = field(default_factory=dict)
    remote: bool = False
    generate: bool = False
    scan: bool = False
    quiet: bool = False
    output: str | None = None


def parse(line: str) -> CellArgs:
    """Parse the magic's line.

    Raises:
        UsageError: a missing model, an option without its value, an unknown shape.
    """
    words = split(line)
    if not words or words[0].startswith("-"):
        raise UsageError(f"%%trace needs the model to run first.\n{USAGE}")
    args = CellArgs(model=words[0])
    rest = iter(words[1:])
    for word in rest:
        if word == "remote":
            args.remote = True
        elif word in FLAGS:
            setattr(args, word[2:], True)
        elif word == "-o":
            args.output = _value(rest, word)
            if not args.output.isidentifier() or keyword.iskeyword(args.output):
                raise UsageError(f"-o takes a variable name, got {args.output!r}.\n{USAGE}")
        elif word.startswith("--") and len(word) > 2:
            name = word[2:].replace("-", "_")
            if not name.isidentifier():
                raise UsageError(f"{word} is not an option name.\n{USAGE}")
            args.kwargs[name] = _value(rest, word)
        elif word.startswith("-"):
            raise UsageError(f"unknown option {word}.\n{USAGE}")
        else:
            args.inputs.append(word)
    if args.generate and args.scan:
        raise UsageError(f"--generate and --scan cannot be combined.\n{USAGE}")
    return args


def split(line: str) -> list[str]:
    """The line's words: spaces inside brackets and strings do not split."""
    try:
        tokens = list(tokenize.generate_tokens(io.StringIO(line.strip()).readline))
    except (tokenize.TokenError, SyntaxError, IndentationError) as error:
        raise UsageError(f"cannot read the %%trace line: {error}.\n{USAGE}") from None
    words: list[str] = []
    depth, end = 0, None
    for token in tokens:
        if token.type in (tokenize.NEWLINE, tokenize.NL, tokenize.ENDMARKER, tokenize.COMMENT):
            continue
        if token.type == tokenize.ERRORTOKEN and not token.string.strip():
            continue
        glued = end is not None and (token.start[1] == end or depth > 0)
        if glued:
            words[-1] += line.strip()[end : token.end[1]]
        else:
            words.append(token.string)
        end = token.end[1]
        if token.string in "([{" and token.type == tokenize.OP:
            depth += 1
        elif token.string in ")]}" and token.type == tokenize.OP:
            depth -= 1
    return words


def _value(rest: Iterator[str], option: str) -> str:
    value = next(rest, None)
    if value is None:
        raise UsageError(f"{option} needs a value.\n{USAGE}")
    return value
