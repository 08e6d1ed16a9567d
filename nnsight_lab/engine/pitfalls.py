"""Two silent surprises of transformers models, turned into messages that name the fix.

1. From transformers 5 on, a decoder block (GPT-2's `GPT2Block`, Llama's
   `LlamaDecoderLayer`, ...) returns its hidden states `[batch, seq, hidden]`
   itself, not a tuple holding them. Code written for transformers 4 reads
   `block.output[0]`, which is now the first batch row: no error, a wrong value
   (and its `.grad` never arrives). `warn_output_index` sees `[0]` applied to such
   an output, by reading the bytecode that follows the read in the user's frame,
   and warns once per line (`OutputIndexWarning`, Python's usual once-per-location
   rule). Only blocks whose output is a tensor are checked: a tuple output is read
   with `[0]` as intended.
2. The attention modules of transformers' fused kernels (SDPA, flash) never call
   their `attn_dropout` submodule, so a body reading its input (the attention
   pattern, as older guides do) waits for a call that never comes.
   `never_ran_hint` says why and how to load the model so that it runs.
"""

from __future__ import annotations

import sys
import warnings
from types import CodeType, FrameType
from typing import Any

import torch
from torch import nn

from ..errors import OutputIndexWarning
from .bytecode import following

_SUBSCRIPTS = frozenset(("BINARY_SUBSCR", "STORE_SUBSCR"))
# (id of code, instruction) -> (the code, kept so its id stays its own; does `[0]` follow)
_indexed: dict[tuple[int, int], tuple[CodeType, bool]] = {}
_registry: dict[Any, Any] = {}  # the warnings module's once-per-location record


def is_block(module: nn.Module) -> bool:
    """Whether `module` is a transformers layer (the class every decoder block derives from)."""
    layers = sys.modules.get("transformers.modeling_layers")  # not imported: no such module
    base = getattr(layers, "GradientCheckpointingLayer", None)
    return base is not None and isinstance(module, base)


def warn_output_index(path: str, value: Any, frame: FrameType | None) -> None:
    """Warn if the code running in `frame` indexes `value`, a block's output, with `[0]`.

    Args:
        path: the block's path, for the message.
        value: what the body got for `block.output`.
        frame: the body's frame, stopped at the read (a generator's at its `yield`).
    """
    if frame is None or not isinstance(value, torch.Tensor):
        return
    code = frame.f_code
    key = (id(code), frame.f_lasti)  # a code object's own hash reads all of it: slow
    known = _indexed.get(key)
    if known is None or known[0] is not code:
        if len(_indexed) > 4096:
            _indexed.clear()
        known = _indexed[key] = (code, _zero_index_follows(frame))
    if not known[1]:
        return
    access = _access(path)
    warnings.warn_explicit(
        f"`{access}.output[0]` is the first batch row, not the hidden states: from "
        f"transformers 5 on, {access} returns the hidden states tensor "
        f"{tuple(value.shape)} itself, not a tuple. Write `{access}.output` "
        f"(line {frame.f_lineno} of {frame.f_code.co_filename}).",
        OutputIndexWarning,
        frame.f_code.co_filename,
        frame.f_lineno,
        registry=_registry,
    )


def _zero_index_follows(frame: FrameType) -> bool:
    """Whether the frame's next instructions are `[0]` (a read or a write)."""
    after = following(frame, 2)
    if len(after) < 2:
        return False
    constant, subscript = after
    return (
        constant.opname in ("LOAD_CONST", "LOAD_SMALL_INT")
        and type(constant.argval) is int
        and constant.argval == 0
        and (subscript.opname in _SUBSCRIPTS or subscript.argrepr == "[]")
    )


def never_ran_hint(modules: list[tuple[str, nn.Module]], path: str) -> str:
    """Why the module at `path` never ran, when it is attention dropout (else "")."""
    by_path = dict(modules)
    module, parent = by_path.get(path), by_path.get(parent_path(path))
    implementation = getattr(getattr(parent, "config", None), "_attn_implementation", None)
    if not isinstance(module, nn.Dropout) or implementation is None:
        return ""
    reorder = hasattr(parent, "reorder_and_upcast_attn")  # GPT-2 and its relatives
    if implementation != "eager":
        why = (
            f"this model computes attention with {implementation!r}, a fused kernel that "
            "never calls the attention's dropout module"
        )
    elif reorder and not getattr(parent, "reorder_and_upcast_attn", False):
        why = (
            "transformers' eager attention applies dropout as a function; it calls this "
            "module only on its upcast-and-reorder path"
        )
    else:
        return ""
    options = 'attn_implementation="eager"' + (", reorder_and_upcast_attn=True" if reorder else "")
    return (
        f" Why: {why}. To read the attention pattern there, load the model with "
        f"`LanguageModel(..., {options})`; or, with eager attention, read the weights as "
        f"`{_access(parent_path(path))}.source.attention_interface_0.output[1]`."
    )


def parent_path(path: str) -> str:
    """`model.transformer.h.0.attn.attn_dropout` -> `model.transformer.h.0.attn`."""
    return path.rpartition(".")[0]


def _access(path: str) -> str:
    """`model.transformer.h.0` -> `model.transformer.h[0]`."""
    parts = [f"[{p}]" if p.isdigit() else f".{p}" for p in path.split(".")]
    return "".join(parts).lstrip(".")
