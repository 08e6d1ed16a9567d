"""`LanguageModel`: a Hugging Face causal LM with its tokenizer, traceable.

Loading is lazy: the constructor reads the config and tokenizer and builds the
model on the meta device (no weights read); the first trace, or `dispatch=True`,
loads the real weights with `AutoModelForCausalLM.from_pretrained` and points
the envoys at them. Inputs (text, token ids, tensors, a tokenizer's output) are
tokenized per invoke and padded on the left into one batch, so that the last
position of every row is a real token; padded rows get position ids counted
over their real tokens, so each row gives the result it would give alone.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerBase

from ..engine.aliases import Rename
from ..engine.tracer import Tracer
from ..errors import TracingError
from . import servers
from .generation import Generator, StepStreamer
from .nnsight import NNsight

_SHARED_KWARGS = ("trust_remote_code", "revision", "token", "cache_dir", "local_files_only")

aliases: dict[str, Callable[[], str]] = {}
"""Short model names that give a local folder (`demo_model` adds "smollm2-135m")."""


class LanguageModel(NNsight):
    """A causal language model from the Hugging Face hub, a local folder, or memory.

    `TransformersModel` (nnsight 0.8's name) is this same class.

    Args:
        model: a hub id or a local folder (loaded with `AutoModelForCausalLM`), or a
            model instance (then pass `tokenizer=` too).
        tokenizer: a tokenizer to use instead of loading one from `model`.
        dispatch: load the weights now instead of at the first trace.
        rename: extra names for modules, e.g. `{"transformer.h": "layers"}` (see `NNsight`).
        envoys: the Envoy subclass per module (see `NNsight`).
        task: nnsight 0.8's pipeline task; only "text-generation" (the default) is
            supported: this class loads causal language models.
        **kwargs: passed to `from_pretrained` (`device_map`, `dtype`/`torch_dtype`,
            `trust_remote_code`, `attn_implementation`, ...).

    Raises:
        ValueError: `task` is not "text-generation".

    Example:
        >>> llm = LanguageModel("openai-community/gpt2", device_map="auto")
        >>> with llm.trace("The Eiffel Tower is in the city of"):
        ...     logits = llm.lm_head.output.save()
    """

    _kwargs_are_input = False  # keywords are model or generation settings

    def __init__(
        self,
        model: str | os.PathLike | nn.Module,
        *,
        tokenizer: PreTrainedTokenizerBase | None = None,
        dispatch: bool = False,
        rename: Rename | None = None,
        envoys: Any = None,
        task: str | None = None,
        **kwargs: Any,
    ) -> None:
        if task not in (None, "text-generation"):
            raise ValueError(
                f"{type(self).__name__} loads causal language models (task='text-generation'); "
                f"task={task!r} is not supported: wrap other models with NNsight(module)."
            )
        shared = {k: kwargs[k] for k in _SHARED_KWARGS if k in kwargs}
        if isinstance(model, nn.Module):
            module, source, name = model, None, None
            if tokenizer is None:
                name = getattr(getattr(model, "config", None), "_name_or_path", None)
                if not name:
                    raise TypeError("LanguageModel(model_instance) needs tokenizer=...")
                tokenizer = AutoTokenizer.from_pretrained(name, **shared)
        else:
            name = os.fspath(model)  # an alias stays the model's name (for servers)
            source = aliases[name]() if name in aliases else name
            # A name that is not a folder here may be a model of the configured server,
            # which gives its config and tokenizer (no hub, no weights); else the hub.
            files = source if os.path.isdir(source) else servers.resolve(source) or source
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(files, **shared)
            module = _empty_model(files, kwargs, shared)
        add_generator(module)
        super().__init__(module, rename=rename, envoys=envoys)
        object.__setattr__(self, "tokenizer", _ready(tokenizer))
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_model_name", name or getattr(module.config, "_name_or_path", ""))
        object.__setattr__(self, "_load_kwargs", kwargs)
        if dispatch:
            self.dispatch()

    @property
    def dispatched(self) -> bool:
        """Whether the real weights are loaded."""
        return self._source is None

    def dispatch(self) -> None:
        """Load the real weights (done by the first trace if not called)."""
        if self._source is None:
            return
        loaded = AutoModelForCausalLM.from_pretrained(self._source, **self._load_kwargs)
        loaded.eval()
        add_generator(loaded)
        self._rebind(loaded)
        object.__setattr__(self, "_source", None)

    def trace(self, *inputs: Any, **kwargs: Any) -> Tracer:
        if not inputs:  # `llm.trace(input_ids=ids, attention_mask=mask)`: keyword input
            inputs = _keyword_input(kwargs)
        remote = kwargs.get("remote", False)
        if not remote or remote == "local":  # a server has the weights: none here
            self.dispatch()
        return super().trace(*inputs, **kwargs)

    def scan(self, *inputs: Any, **kwargs: Any) -> Tracer:
        if not inputs:  # `llm.scan(input_ids=ids)`, as `trace`
            inputs = _keyword_input(kwargs)
        return super().scan(*inputs, **kwargs)

    def generate(self, *inputs: Any, **kwargs: Any) -> Tracer:
        """Generate with the `with` block's body interleaved; each model call is a step.

        Args:
            *inputs: the prompt(s), as for `trace`; or none, with `tracer.invoke(...)`.
            **kwargs: passed to transformers' `generate` (`max_new_tokens`, ...).

        Example:
            >>> with llm.generate("The Eiffel Tower is in", max_new_tokens=3) as tracer:
            ...     with tracer.iter[:]:
            ...         tokens.append(llm.lm_head.output[0, -1].argmax(dim=-1))
            ...     out = llm.generator.output.save()
        """
        return self.trace(*inputs, entry="_generate", **kwargs)

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("position_ids", None)  # generate counts positions from the mask itself
        if self.tokenizer.pad_token_id is not None:
            kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        generator = self._module.generator
        if kwargs.get("num_beams", 1) == 1:
            kwargs.setdefault("streamer", StepStreamer(generator.streamer))
        return generator(self._module.generate(*args, **kwargs))

    # -- inputs ----------------------------------------------------------------

    def _prepare_input(self, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        if not args:  # `tracer.invoke(input_ids=ids)`
            args = _keyword_input(kwargs)
        if len(args) != 1:
            raise TracingError(
                "a LanguageModel invoke takes one input: a string, a list of strings, token "
                f"ids, a tensor of token ids, or a tokenizer's output; got {len(args)} inputs"
            )
        rows = self._rows(args[0], kwargs)
        return rows, len(rows[0])

    def _rows(self, value: Any, kwargs: dict) -> tuple[list[list[int]], list[list[int]]]:
        """(input_ids, attention_mask) as unpadded lists of rows."""
        if isinstance(value, str) or (
            isinstance(value, list) and value and isinstance(value[0], str)
        ):
            encoded = self.tokenizer(value, **kwargs)
            return _as_rows(encoded["input_ids"]), _as_rows(encoded["attention_mask"])
        if isinstance(value, Mapping):
            if "input_ids" not in value:
                raise TracingError(
                    "a LanguageModel input given as a dict must hold 'input_ids' (token ids), "
                    f"got the keys {list(value)}: pass the tokenizer's output, "
                    '`llm.trace(llm.tokenizer("text", return_tensors="pt"))`, or the ids as '
                    "keywords, `llm.trace(input_ids=ids, attention_mask=mask)`"
                )
            ids = _as_rows(value["input_ids"])
            mask = value.get("attention_mask")
            return ids, (_as_rows(mask) if mask is not None else [[1] * len(r) for r in ids])
        if isinstance(value, (torch.Tensor, list)):
            ids = _as_rows(value)
            return ids, [[1] * len(r) for r in ids]
        raise TracingError(
            f"a LanguageModel cannot take a {type(value).__name__} as input: pass a string, a "
            "list of strings, token ids (list or tensor), or a tokenizer's output"
        )

    def _batch(self, prepared: list[Any]) -> tuple[tuple, dict]:
        ids = [row for rows, _ in prepared for row in rows]
        masks = [row for _, rows in prepared for row in rows]
        width = max(len(r) for r in ids)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([[pad] * (width - len(r)) + r for r in ids])
        mask = torch.tensor([[0] * (width - len(m)) + m for m in masks])
        batch = {"input_ids": input_ids, "attention_mask": mask}
        if len(ids) > 1 and not bool(mask.all()) and self._takes_position_ids():
            # Left padding shifts every padded row; positions counted over real tokens
            # give each row the result it would have alone (as generate() does).
            batch["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        device = getattr(self._module, "device", None)
        if device is not None and device.type != "meta":
            batch = {k: v.to(device) for k, v in batch.items()}
        return (), batch

    def _takes_position_ids(self) -> bool:
        return "position_ids" in inspect.signature(self._module.forward).parameters


TransformersModel = LanguageModel
"""nnsight 0.8's name for its Hugging Face model class: here the same class."""

_INPUT_KEYS = ("input_ids", "attention_mask")


def _keyword_input(kwargs: dict) -> tuple:
    """The input given as keywords (`input_ids=`, `attention_mask=`), taken out of
    `kwargs` as one tokenizer-like dict; () when there is none."""
    if "input_ids" not in kwargs:
        return ()
    given = {k: kwargs.pop(k, None) for k in _INPUT_KEYS}
    return ({k: v for k, v in given.items() if v is not None},)


def add_generator(module: nn.Module) -> None:
    """Give the model its `generator` submodule (see `generation`), once."""
    if not isinstance(getattr(module, "generator", None), Generator):
        module.generator = Generator()


def _empty_model(source: str, kwargs: dict, shared: dict) -> nn.Module:
    """The model's architecture on the meta device: no weights read."""
    config = AutoConfig.from_pretrained(source, **shared)
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    extra = {"dtype": dtype} if isinstance(dtype, torch.dtype) else {}
    with torch.device("meta"):
        remote_code = {k: v for k, v in shared.items() if k == "trust_remote_code"}
        return AutoModelForCausalLM.from_config(config, **extra, **remote_code)


def _ready(tokenizer: PreTrainedTokenizerBase) -> PreTrainedTokenizerBase:
    """Left padding and a pad token, so batches keep the last position meaningful."""
    tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _as_rows(value: Any) -> list[list[int]]:
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if not value:
        raise TracingError("an empty input cannot be run")
    if isinstance(value[0], int):
        rows = [list(value)]
    else:
        rows = [list(row) if isinstance(row, (list, tuple)) else [row] for row in value]
    for row in rows:
        if not row or not all(isinstance(t, int) for t in row):
            raise TracingError(
                "token ids must be rows of ints (a list, a list of lists, or an integer "
                f"tensor), got a row {row[:4]!r}{'...' if len(row) > 4 else ''}"
            )
    return rows
