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
import sys
from collections.abc import Callable, Mapping
from types import FrameType
from typing import Any

import numpy as np
import torch
import transformers
from torch import nn
from transformers import AutoConfig, AutoTokenizer, PreTrainedTokenizerBase

from ..engine.aliases import Rename
from ..engine.bytecode import following
from ..engine.tracer import Tracer
from ..errors import TracingError
from ..tracing import save
from . import servers
from .generation import Generator, StepStreamer
from .nnsight import NNsight
from .text_batch import FIELDS, batch_rows, count_rows, fields_of, rows_of

_SHARED_KWARGS = ("trust_remote_code", "revision", "token", "cache_dir", "local_files_only")

TASKS = {  # the pipeline task: the transformers auto class that loads its models
    "text-generation": "AutoModelForCausalLM",
    "fill-mask": "AutoModelForMaskedLM",
    "text-classification": "AutoModelForSequenceClassification",
    "sentiment-analysis": "AutoModelForSequenceClassification",
    "token-classification": "AutoModelForTokenClassification",
    "ner": "AutoModelForTokenClassification",
    "question-answering": "AutoModelForQuestionAnswering",
    "feature-extraction": "AutoModel",
}

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
        task: the pipeline task, which picks the model class a hub id loads with:
            "text-generation" (the default: causal LMs), "fill-mask",
            "text-classification", "token-classification", "question-answering",
            "feature-extraction". A model instance runs as it is, whatever the task.
        device: the one device to load the model onto (`"cpu"`, `"cuda:1"`).
        **kwargs: passed to `from_pretrained` (`device_map`, `dtype`/`torch_dtype`,
            `trust_remote_code`, `attn_implementation`, ...).

    Raises:
        ValueError: `task` is none of those (other tasks need their own preprocessing:
            wrap such models with `NNsight(module)`).

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
        device: str | int | torch.device | None = None,
        **kwargs: Any,
    ) -> None:
        task = task or "text-generation"
        if task not in TASKS:
            raise ValueError(
                f"{type(self).__name__} runs the tasks {sorted(TASKS)}; task={task!r} needs "
                "preprocessing of its own: wrap such a model with NNsight(module)."
            )
        shared = {k: kwargs[k] for k in _SHARED_KWARGS if k in kwargs}
        if isinstance(model, nn.Module):
            module, source, name = model, None, None
            if tokenizer is None:
                name = getattr(getattr(model, "config", None), "_name_or_path", None)
                if not name:
                    raise TypeError("LanguageModel(model_instance) needs tokenizer=...")
                tokenizer = AutoTokenizer.from_pretrained(name, **shared)
            if device is not None:
                module.to(device)
        else:
            name = os.fspath(model)  # an alias stays the model's name (for servers)
            source = aliases[name]() if name in aliases else name
            # A name that is not a folder here may be a model of the configured server,
            # which gives its config and tokenizer (no hub, no weights); else the hub.
            files = source if os.path.isdir(source) else servers.resolve(source) or source
            tokenizer = tokenizer or AutoTokenizer.from_pretrained(files, **shared)
            module = _empty_model(files, kwargs, shared, task)
        add_generator(module)
        super().__init__(module, rename=rename, envoys=envoys)
        object.__setattr__(self, "tokenizer", _ready(tokenizer, task == "text-generation"))
        object.__setattr__(self, "_task", task)
        object.__setattr__(self, "_device", device)
        object.__setattr__(self, "_source", source)
        object.__setattr__(self, "_model_name", name or getattr(module.config, "_name_or_path", ""))
        object.__setattr__(self, "_load_kwargs", kwargs)
        if dispatch:
            self.dispatch()

    @property
    def task(self) -> str:
        """The pipeline task the model was loaded for ("text-generation", "fill-mask", ...)."""
        return self._task

    @property
    def attn_implementation(self) -> str | None:
        """The attention implementation the model runs ("sdpa", "eager", ...)."""
        config = getattr(self._module, "config", None)
        return getattr(config, "_attn_implementation", None)

    @property
    def dispatched(self) -> bool:
        """Whether the real weights are loaded."""
        return self._source is None

    def dispatch(self) -> None:
        """Load the real weights (done by the first trace if not called)."""
        if self._source is None:
            return
        auto = getattr(transformers, TASKS[self._task])
        loaded = auto.from_pretrained(self._source, **self._load_kwargs)
        if self._device is not None:
            loaded.to(self._device)
        loaded.eval()
        add_generator(loaded)
        self._rebind(loaded)
        object.__setattr__(self, "_source", None)

    def trace(self, *inputs: Any, **kwargs: Any) -> Tracer:
        inputs = _with_fields(inputs, kwargs)
        remote = kwargs.get("remote", False)
        if not remote or remote == "local":  # a server has the weights: none here
            self.dispatch()
        return super().trace(*inputs, **kwargs)

    def scan(self, *inputs: Any, **kwargs: Any) -> Tracer:
        inputs = _with_fields(inputs, kwargs)  # as `trace`
        return super().scan(*inputs, **kwargs)

    def generate(self, *inputs: Any, **kwargs: Any) -> Any:
        """Generate with the `with` block's body interleaved; each model call is a step.

        Called without a `with` block (`ids = llm.generate("Hello", max_new_tokens=3)`),
        it just generates (with the model's persistent edits) and returns the ids.

        Args:
            *inputs: the prompt(s), as for `trace`; or none, with `tracer.invoke(...)`.
            **kwargs: passed to transformers' `generate` (`max_new_tokens`, ...).

        Returns:
            The tracer, to use as a context manager; or, called without `with`, the
            token ids `[batch, seq]`.

        Example:
            >>> with llm.generate("The Eiffel Tower is in", max_new_tokens=3) as tracer:
            ...     with tracer.iter[:]:
            ...         tokens.append(llm.lm_head.output[0, -1].argmax(dim=-1))
            ...     out = llm.generator.output.save()
        """
        tracer = self.trace(*inputs, entry="_generate", **kwargs)
        if _opens_with(sys._getframe(1)):
            return tracer
        with tracer:
            ids = save(tracer.result)
        return ids

    def pipe(self, *inputs: Any, **kwargs: Any) -> Any:
        """Generate, as `generate`, and give the text-generation pipeline's records.

        `tracer.result` (and `llm.generator.output`) is then a list of
        `{"generated_text": prompt and continuation}` records: one for a lone prompt, a
        list of one per prompt for several. The checkpoint's `task_specific_params` for
        text generation are the defaults (GPT-2's samples: pass `do_sample=False`).

        Returns:
            The tracer, to use as a context manager; or, called without `with`, the records.

        Raises:
            NotImplementedError: the model's task is not text generation.

        Example:
            >>> with llm.pipe("The Eiffel Tower is in", max_new_tokens=3) as tracer:
            ...     records = tracer.result.save()
            >>> records[0]["generated_text"]
        """
        if self._task != "text-generation":
            raise NotImplementedError(
                f"pipe runs the text-generation pipeline; this model's task is {self._task!r}: "
                "read its outputs with `model.trace(...)`"
            )
        config = getattr(self._module, "config", None)
        params = (getattr(config, "task_specific_params", None) or {}).get("text-generation", {})
        for name, value in params.items():
            if name != "max_length" or "max_new_tokens" not in kwargs:
                kwargs.setdefault(name, value)
        tracer = self.trace(*inputs, entry="_generate", **kwargs, **{_RECORDS: True})
        if _opens_with(sys._getframe(1)):
            return tracer
        with tracer:
            records = save(tracer.result)
        return records

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        records = kwargs.pop(_RECORDS, False)  # `pipe`: the pipeline's records, not ids
        kwargs.pop("position_ids", None)  # generate counts positions from the mask itself
        if self.tokenizer.pad_token_id is not None:
            kwargs.setdefault("pad_token_id", self.tokenizer.pad_token_id)
        generator = self._module.generator
        config = kwargs.get("generation_config") or self._module.generation_config
        # No streamer under beam search (also one the generation config asks for):
        # transformers refuses one there.
        if (kwargs.get("num_beams") or getattr(config, "num_beams", None) or 1) == 1:
            kwargs.setdefault("streamer", StepStreamer(generator.streamer))
        ids = self._module.generate(*args, **kwargs)
        return generator(self._records(ids) if records else ids)

    def _records(self, ids: torch.Tensor) -> list:
        """The text-generation pipeline's records for generated `ids` `[batch, seq]`."""
        texts = self.tokenizer.batch_decode(ids, skip_special_tokens=True)
        records = [{"generated_text": text} for text in texts]
        return records if len(records) == 1 else [[record] for record in records]

    # -- inputs ----------------------------------------------------------------

    def _prepare_input(self, *args: Any, **kwargs: Any) -> tuple[Any, int]:
        """One invoke's input as `Rows` of fields (see `text_batch`), and how many rows."""
        if not args:  # `tracer.invoke(input_ids=ids)`
            args = _keyword_input(kwargs)
        if len(args) != 1:
            raise TracingError(
                "a LanguageModel invoke takes one input: a string, a list of strings, token "
                f"ids, a tensor of token ids, or a tokenizer's output; got {len(args)} inputs"
            )
        value, masked = args[0], True
        if isinstance(value, _Given):
            value, masked, kwargs = value.value, value.masked, {**value.fields, **kwargs}
        fields = {k: kwargs.pop(k) for k in list(kwargs) if k in FIELDS}
        values, forward = self._fields(value, fields, kwargs)
        encoder_decoder = bool(getattr(self._module.config, "is_encoder_decoder", False))
        rows = rows_of(values, forward, encoder_decoder, masked)
        return rows, rows.count

    def _fields(self, value: Any, fields: dict, rest: dict) -> tuple[dict, dict]:
        """(the input's fields, the other keywords for the forward)."""
        if isinstance(value, str) or (
            isinstance(value, list) and value and isinstance(value[0], str)
        ):
            return {**fields_of(self.tokenizer(value, **rest)), **fields}, {}
        if isinstance(value, Mapping):
            if "input_ids" not in value and "inputs_embeds" not in value:
                raise TracingError(
                    "a LanguageModel input given as a dict must hold 'input_ids' (token ids), "
                    f"got the keys {list(value)}: pass the tokenizer's output, "
                    '`llm.trace(llm.tokenizer("text", return_tensors="pt"))`, or the ids as '
                    "keywords, `llm.trace(input_ids=ids, attention_mask=mask)`"
                )
            other = {k: v for k, v in value.items() if k not in FIELDS}
            return {**fields_of(value), **fields}, {**other, **rest}
        if isinstance(value, (torch.Tensor, list, tuple, np.ndarray)):
            if isinstance(value, (list, tuple)) and not value:
                raise TracingError("an empty input cannot be run")
            return {"input_ids": value, **fields}, rest
        raise TracingError(
            f"a LanguageModel cannot take a {type(value).__name__} as input: pass a string, a "
            "list of strings, token ids (list or tensor), or a tokenizer's output"
        )

    def _batch_size(self, *inputs: Any, **kwargs: Any) -> int:
        """How many batch rows an input makes (nnsight's name for it)."""
        if len(inputs) == 1 and not kwargs and not isinstance(inputs[0], (str, Mapping)):
            return count_rows(inputs[0])
        return self._prepare_input(*inputs, **kwargs)[1]

    def _batch(self, prepared: list[Any]) -> tuple[tuple, dict]:
        left = self.tokenizer.padding_side == "left"
        batch = batch_rows(prepared, self.tokenizer.pad_token_id, left, self._takes_position_ids)
        device = getattr(self._module, "device", None)
        if device is not None and device.type != "meta":
            batch = {k: _to(v, device) for k, v in batch.items()}
        return (), batch

    def _takes_position_ids(self) -> bool:
        module = self._module
        if "forward" in module.__dict__:  # an instance's own forward (accelerate's hooks)
            return "position_ids" in inspect.signature(module.forward).parameters
        kind = type(module)
        found = _TAKES_POSITIONS.get(kind)
        if found is None:
            found = "position_ids" in inspect.signature(kind.forward).parameters
            _TAKES_POSITIONS[kind] = found
        return found


_TAKES_POSITIONS: dict[type, bool] = {}  # per module class (a class's forward does not change)


TransformersModel = LanguageModel
"""nnsight 0.8's name for its Hugging Face model class: here the same class."""


class _Given:
    """The trace's own input with the fields given beside it as keywords
    (`llm.trace(ids, attention_mask=mask)`), so they are batched with it."""

    def __init__(self, value: Any, fields: dict, masked: bool) -> None:
        self.value, self.fields, self.masked = value, fields, masked


def _with_fields(inputs: tuple, kwargs: dict) -> tuple:
    """`trace`'s input, with the fields given as its keywords taken out of `kwargs`."""
    masked = "past_key_values" not in kwargs and "cache" not in kwargs
    if not inputs:  # `llm.trace(input_ids=ids, attention_mask=mask)`: keyword input
        inputs = _keyword_input(kwargs)
        if not inputs:
            return inputs
    if len(inputs) != 1:
        return inputs
    fields = {k: kwargs.pop(k) for k in list(kwargs) if k in FIELDS}
    if not fields and masked:
        return inputs
    value = inputs[0]
    if isinstance(value, Mapping) and fields:
        value, fields = {**value, **fields}, {}
    return (_Given(value, fields, masked),)


def _keyword_input(kwargs: dict) -> tuple:
    """The input given as keywords (`input_ids=`, `inputs_embeds=`, `attention_mask=`,
    ...), taken out of `kwargs` as one tokenizer-like dict; () when there is none."""
    if kwargs.get("input_ids") is None and kwargs.get("inputs_embeds") is None:
        return ()
    given = {k: kwargs.pop(k) for k in list(kwargs) if k in FIELDS}
    return ({k: v for k, v in given.items() if v is not None},)


def _to(value: Any, device: torch.device) -> Any:
    return value.to(device) if isinstance(value, torch.Tensor) else value


def _opens_with(frame: FrameType) -> bool:
    """Whether the caller at `frame` puts the value it gets into a `with` statement (or is
    nnsight_lab itself, which hands the tracer on)."""
    if str(frame.f_globals.get("__name__", "")).startswith("nnsight_lab"):
        return True
    after = following(frame, 1)
    return not after or after[0].opname in _WITH_OPS


_RECORDS = "_nnsight_lab_pipe_records"  # the keyword by which `pipe` asks for records

_WITH_OPS = frozenset(("BEFORE_WITH", "BEFORE_ASYNC_WITH", "LOAD_SPECIAL", "SETUP_WITH"))


def add_generator(module: nn.Module) -> None:
    """Give the model its `generator` submodule (see `generation`), once."""
    if not isinstance(getattr(module, "generator", None), Generator):
        module.generator = Generator()


def _empty_model(source: str, kwargs: dict, shared: dict, task: str) -> nn.Module:
    """The model's architecture on the meta device: no weights read."""
    config = AutoConfig.from_pretrained(source, **shared)
    dtype = kwargs.get("dtype", kwargs.get("torch_dtype"))
    extra = {"dtype": dtype} if isinstance(dtype, torch.dtype) else {}
    with torch.device("meta"):
        remote_code = {k: v for k, v in shared.items() if k == "trust_remote_code"}
        auto = getattr(transformers, TASKS[task])
        return auto.from_config(config, **extra, **remote_code)


def _ready(tokenizer: PreTrainedTokenizerBase, causal: bool) -> PreTrainedTokenizerBase:
    """A pad token, and for a causal LM left padding, so the last position of every row
    of a batch is a real token (an encoder keeps the tokenizer's side)."""
    if causal:
        tokenizer.padding_side = "left"
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
