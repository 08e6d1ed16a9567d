"""The wire: values as JSON trees plus safetensors, and the streamed result file."""

from __future__ import annotations

import base64
import ctypes
import enum
import io
import json
import math
import random
import struct
import tracemalloc
from typing import Any

import pytest
import safetensors.torch
import torch
from safetensors import safe_open

from nnsight_lab.engine.cache import Cache
from nnsight_lab.errors import WireError
from nnsight_lab.remote import results, wire
from nnsight_lab.remote.schema import WIRE_VERSION


def round_trip(value: Any, **kw: Any) -> tuple[Any, Any, dict[str, torch.Tensor]]:
    """(decoded, tree, tensors) for `value`, through JSON text and a safetensors blob."""
    tensors: dict[str, torch.Tensor] = {}
    tree = wire.encode(value, tensors, where="`v`", ref=kw.get("ref"))
    text = json.dumps(tree, allow_nan=False)  # JSON-able, with no NaN literals
    got = wire.unpack_tensors(wire.pack_tensors(tensors))
    return wire.decode(json.loads(text), got, resolve=kw.get("resolve")), tree, tensors


def assert_same(a: Any, b: Any) -> None:
    """`a` equals `b` by value: same types all the way down, tensors equal in dtype and shape."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.device) == (b.dtype, b.shape, b.device)
        assert a.device.type == "meta" or torch.equal(a, b)
    elif isinstance(a, float) and math.isnan(a):
        assert math.isnan(b)
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            assert_same(x, y)
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            assert_same(a[k], b[k])
    else:
        assert a == b


# --- plain values -------------------------------------------------------------


class Color(enum.IntEnum):
    RED = 1


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -7, 2**80, 1.5, -0.0, "", "héllo", math.nan, math.inf, -math.inf],
)
def test_scalars_round_trip(value):
    assert_same(round_trip(value)[0], value)


def test_non_finite_floats_travel_as_tags():
    _, tree, _ = round_trip([math.nan, math.inf, -math.inf, 1.0])
    assert tree == [{"$float": "nan"}, {"$float": "inf"}, {"$float": "-inf"}, 1.0]


def test_subclasses_of_plain_types_travel_as_the_plain_value():
    got = round_trip([Color.RED, torch.tensor(1.0).item()])[0]
    assert got == [1, 1.0] and type(got[0]) is int


def test_nested_containers_keep_their_types():
    value = {
        "a": [1, (2, 3), {"b": (None, [4.5])}],
        7: "int key",
        (1, "x"): "tuple key",
        None: False,
        "empty": ([], (), {}),
    }
    got, tree, _ = round_trip(value)
    assert_same(got, value)
    assert tree["$dict"][0][0] == "a"  # every value object is one "$" tag
    assert all(len(n) == 1 and next(iter(n)).startswith("$") for n in _objects(tree))


def _objects(tree: Any):
    if isinstance(tree, dict):
        yield tree
        for v in tree.values():
            yield from _objects(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _objects(v)


@pytest.mark.parametrize(
    "value",
    [
        slice(1, None, -2),
        slice(None),
        ...,
        torch.Size([2, 0, 3]),
        torch.bfloat16,
        torch.bool,
        torch.device("cpu"),
        torch.device("cuda", 1),
        1 + 2j,
        complex(math.nan, -math.inf),
        [slice(0, 2), ..., torch.int64],
    ],
)
def test_torch_and_python_objects_round_trip(value):
    got = round_trip(value)[0]
    if isinstance(value, complex) and math.isnan(value.real):
        assert math.isnan(got.real) and got.imag == -math.inf
    else:
        assert_same(got, value)


# --- tensors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "dtype",
    [
        torch.float32,
        torch.float16,
        torch.bfloat16,
        torch.float64,
        torch.int64,
        torch.int32,
        torch.int8,
        torch.uint8,
        torch.bool,
        torch.complex64,
    ],
)
@pytest.mark.parametrize("shape", [(), (0,), (0, 3), (2, 3, 4)])
def test_tensors_round_trip(dtype, shape):
    torch.manual_seed(0)
    t = (torch.randn(shape) * 10).to(dtype)
    got, tree, _ = round_trip(t)
    assert tree == {"$tensor": "t0"}
    assert_same(got, t)


def test_a_view_sends_only_its_own_bytes():
    big = torch.arange(1_000_000, dtype=torch.float32)
    got, _, tensors = round_trip({"row": big[10:20], "col": big.view(1000, 1000)[:3, 7]})
    assert_same(got, {"row": big[10:20].clone(), "col": big.view(1000, 1000)[:3, 7].clone()})
    assert len(base64.b64decode(wire.pack_tensors(tensors))) < 1000


def test_the_same_tensor_twice_gets_one_key_and_decodes_to_one_tensor():
    x = torch.randn(3)
    got, tree, tensors = round_trip([x, x, {"again": x}])
    assert list(tensors) == ["t0"]
    assert got[0] is got[1] is got[2]["again"]


def test_two_tensors_over_one_storage_can_be_packed(tmp_path):
    x = torch.randn(2, 5)
    got, _, tensors = round_trip([x, x.view(10), x.detach()])
    assert len(tensors) == 3  # safetensors refuses shared storage; we make copies
    assert_same(got, [x, x.view(10), x])
    results.write_result(tmp_path / "r", {"a": x, "b": x.view(10)})


def test_keys_are_fresh_across_encodes_into_one_dict():
    tensors: dict[str, torch.Tensor] = {}
    a = wire.encode(torch.ones(1), tensors, where="`a`")
    b = wire.encode(torch.zeros(1), tensors, where="`b`")
    assert (a, b) == ({"$tensor": "t0"}, {"$tensor": "t1"})


def test_parameters_and_grads_arrive_as_plain_tensors():
    p = torch.nn.Parameter(torch.randn(3))
    got = round_trip([p, p * 2])[0]
    assert all(type(t) is torch.Tensor and not t.requires_grad for t in got)
    assert torch.equal(got[1], p.detach() * 2)


def test_meta_and_fake_tensors_travel_as_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        fake = torch.empty(2, 3, dtype=torch.float16)
    meta = torch.empty(4, 0, device="meta", dtype=torch.int64)
    got, tree, tensors = round_trip([fake, meta])
    assert tree[0] == {"$meta": {"shape": [2, 3], "dtype": "float16"}} and not tensors
    assert_same(got, [torch.empty(2, 3, dtype=torch.float16, device="meta"), meta])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_gpu_tensors_arrive_on_the_cpu():
    x = torch.randn(4, 4, device="cuda")
    got = round_trip([x, x.T[1:3]])[0]
    assert_same(got, [x.cpu(), x.cpu().T[1:3].contiguous()])


# --- transformers and the engine's cache ----------------------------------------


@pytest.fixture(scope="module")
def gpt2_output():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        n_layer=2, n_embd=32, n_head=2, vocab_size=100, bos_token_id=0, eos_token_id=0
    )
    model = GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        return model(torch.tensor([[1, 2, 3, 4]]), use_cache=True)


def _kv_cache(output: Any) -> Any:
    from transformers.cache_utils import DynamicCache

    (cache,) = [v for v in output.values() if isinstance(v, DynamicCache)]
    return cache


def _assert_same_output(got: Any, out: Any) -> None:
    assert type(got) is type(out) and list(got.keys()) == list(out.keys())
    assert_same(got.logits, out.logits)
    want, have = _kv_cache(out), _kv_cache(got)
    assert len(have.layers) == len(want.layers) == 2
    for a, b in zip(have.layers, want.layers, strict=True):
        assert_same(a.keys, b.keys)
        assert_same(a.values, b.values)


def test_a_gpt2_output_and_its_kv_cache_round_trip(gpt2_output):
    got, tree, tensors = round_trip(gpt2_output)
    assert tree["$output"][0] == "CausalLMOutputWithCrossAttentions"
    assert len(tensors) == 5  # the logits, and a key and a value per layer
    _assert_same_output(got, gpt2_output)


def test_a_gpt2_output_round_trips_through_a_result_file(gpt2_output, tmp_path):
    results.write_result(tmp_path / "r", {"out": gpt2_output})
    with open(tmp_path / "r", "rb") as f:
        _assert_same_output(results.read_result(f)["out"], gpt2_output)


def test_a_model_output_of_a_class_not_in_modeling_outputs_decodes_as_a_dict():
    for name in ("NoSuchOutput", "Cache", "dataclass", "torch", "__builtins__"):
        assert wire.decode({"$output": [name, {"logits": 1}]}, {}) == {"logits": 1}


def test_an_engine_cache_round_trips_with_its_lookups():
    x, y, mask = torch.randn(2, 4), torch.randn(2, 4), torch.ones(2, dtype=torch.bool)
    cache = Cache(["model.h.0", "model.h.1"], include_inputs=True)
    cache.record("model.h.0.output.0", (x, None))
    cache.record("model.h.0.input.0", ((y,), {"mask": mask}))
    cache.record("model.h.0.output.1", (y, None))
    cache.record("model.h.1.output.0", x)
    got = round_trip({"cache": cache})[0]["cache"]
    assert type(got) is Cache and got.paths == cache.paths and got.include_inputs
    assert len(got["model.h.0"]) == 2  # two calls: a value per call, as in nnsight
    assert_same(got["model.h.0"].output, [(x, None), (y, None)])
    assert_same(got["model.h.0"].outputs[1], (y, None))
    assert_same(got["model.h.0"].inputs, [((y,), {"mask": mask}), None])
    assert_same(got["model.h.0"].input, [y, None])
    assert_same(got.model.h[1].output, x)
    assert got.keys() == ["model.h.0", "model.h.1"]


# --- references -----------------------------------------------------------------


def test_objects_named_by_ref_travel_by_reference():
    client_model, server_model = object(), object()

    def ref(obj):
        if obj is client_model:
            return ("model", None)
        return ("module", "torch") if obj is torch else None

    def resolve(tag, arg):
        return {("model", None): server_model, ("module", "torch"): torch}[(tag, arg)]

    got, tree, _ = round_trip([client_model, torch, 3], ref=ref, resolve=resolve)
    assert tree == [{"$ref": ["model", None]}, {"$ref": ["module", "torch"]}, 3]
    assert got[0] is server_model and got[1] is torch


def test_ref_is_asked_before_the_other_rules():
    special = [1, 2]
    tree = wire.encode(
        [special, [1, 2]], {}, where="`v`", ref=lambda o: ("p", 0) if o is special else None
    )
    assert tree == [{"$ref": ["p", 0]}, [1, 2]]


def test_a_reference_without_a_resolver_is_refused():
    with pytest.raises(WireError, match="nothing resolves it"):
        wire.decode({"$ref": ["model", None]}, {})


# --- what cannot be sent ----------------------------------------------------------


def helper():
    return 1


def test_a_function_is_refused_with_what_to_do():
    with pytest.raises(WireError) as info:
        wire.encode(helper, {}, where="`helper`")
    message = str(info.value)
    assert message.startswith("`helper` is a function, which cannot be sent to a model server: ")
    assert "define it in the body" in message and "--trusted" in message


def test_the_error_names_the_path_to_the_bad_value():
    with pytest.raises(WireError, match=r"^`out`\[2\]\['k'\] is a function"):
        wire.encode([1, 2, {"k": lambda: 0}], {}, where="`out`")
    with pytest.raises(WireError, match=r"^`d`\.keys\(\)\[1\] is a class"):
        wire.encode({"a": 1, int: 2}, {}, where="`d`")


@pytest.mark.parametrize(
    "value, kind",
    [
        ({1, 2}, "a set"),
        (frozenset(), "a frozenset"),
        (object(), "an? object"),
        (torch.nn.Linear(2, 2), "torch.nn.modules.linear.Linear"),
        (torch.zeros(2, dtype=torch.complex128), "torch.complex128 tensor"),
        (torch.zeros(2, 2).to_sparse(), "sparse_coo tensor"),
        (b"bytes", "a bytes"),
    ],
)
def test_values_that_are_not_plain_are_refused(value, kind):
    with pytest.raises(WireError, match=kind):
        wire.encode({"x": [value]}, {}, where="`v`")


def test_a_value_that_holds_itself_is_refused():
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(WireError, match="nested more than 64 deep"):
        wire.encode(loop, {}, where="`loop`")


def test_encoding_refuses_what_decoding_would():
    deep: Any = 1
    for _ in range(70):
        deep = [deep]
    with pytest.raises(WireError, match="nested more than 64"):
        wire.encode(deep, {}, where="`deep`")
    ok: Any = 1
    for _ in range(64):
        ok = [ok]
    assert wire.decode(wire.encode(ok, {}, where="`ok`"), {}) == ok


# --- malformed trees ------------------------------------------------------------


def _nested(n: int, leaf: Any = 1) -> Any:
    for _ in range(n):
        leaf = {"$tuple": [leaf]}
    return leaf


def _deep_list(n: int) -> Any:
    tree: Any = []
    for _ in range(n):
        tree = [tree]
    return tree


@pytest.mark.parametrize(
    "tree",
    [
        {"$nope": 1},
        {"$tuple": [], "$dict": []},
        {},
        {"a": 1},
        {"$tensor": "t9"},
        {"$tensor": ["t0"]},
        {"$dtype": "load"},
        {"$dtype": "Tensor"},
        {"$dtype": "__class__"},
        {"$dtype": ["float32"]},
        {"$float": "1e5"},
        {"$float": None},
        {"$meta": {"shape": [-1], "dtype": "float32"}},
        {"$meta": {"shape": [2]}},
        {"$meta": {"shape": [True], "dtype": "float32"}},
        {"$meta": {"shape": [2**70], "dtype": "float32"}},
        {"$slice": [1, 2]},
        {"$size": [1.5]},
        {"$size": "12"},
        {"$device": "nonsense"},
        {"$device": [1]},
        {"$complex": ["a", 1]},
        {"$complex": [1]},
        {"$dict": [[1]]},
        {"$dict": [[[1], 2]]},
        {"$dict": 5},
        {"$output": ["X"]},
        {"$output": "X"},
        {"$output": [1, {}]},
        {"$kv": [[1, 2]]},
        {"$kv": [[{"$tensor": "t0"}, None]]},
        {"$kv": [[{"$tensor": "t0"}, {"$tensor": "t0"}]]},  # 0-dim: cannot be concatenated
        {"$cache": {}},
        {"$cache": {"paths": [1], "include_inputs": False, "entries": []}},
        {"$cache": {"paths": [], "include_inputs": False, "entries": [["p", 1, []]]}},
        {"$ref": "model"},
        {"$ellipsis": 1},
        _nested(100),
        _deep_list(100),
        (1, 2),
        {1, 2},
        [object()],
        {1: "non-str key"},
    ],
)
def test_malformed_trees_raise_wire_error(tree):
    with pytest.raises(WireError):
        wire.decode(tree, {"t0": torch.tensor(1.0)})


def test_a_very_deep_tree_raises_wire_error_not_recursion_error():
    with pytest.raises(WireError, match="nested more than 64"):
        wire.decode(_nested(10_000), {})


def test_a_tree_with_too_many_values_is_refused(monkeypatch):
    monkeypatch.setattr(wire, "MAX_NODES", 100)
    assert len(wire.decode(list(range(99)), {})) == 99
    with pytest.raises(WireError, match="more than 100 values"):
        wire.decode(list(range(100)), {})


def test_random_corruptions_of_a_tree_raise_only_wire_error():
    tensors: dict[str, torch.Tensor] = {}
    value = {"a": [1, (2.5, torch.ones(2))], "s": slice(1, 2), "d": torch.float32, "c": 1j}
    tree = wire.encode(value, tensors, where="`v`")
    junk = [None, 1, -1, "t0", "x", "$tuple", [], {}, [1, 2], {"$tensor": "t0"}, {"$x": 1}]
    rng = random.Random(0)
    for _ in range(500):
        mutated = json.loads(json.dumps(tree))
        _mutate(mutated, rng, junk)
        try:
            wire.decode(mutated, tensors)
        except WireError:
            pass


def _mutate(tree: Any, rng: random.Random, junk: list[Any]) -> None:
    node = tree
    for _ in range(rng.randrange(1, 6)):
        children = list(node.items()) if isinstance(node, dict) else list(enumerate(node))
        if not children:
            return
        key, child = rng.choice(children)
        if not isinstance(child, dict | list) or rng.random() < 0.3:
            node[key] = json.loads(json.dumps(rng.choice(junk)))
            return
        node = child


# --- tensor blobs -------------------------------------------------------------------


def test_no_tensors_pack_to_an_empty_string():
    assert wire.pack_tensors({}) == ""
    assert wire.unpack_tensors("") == {}


@pytest.mark.parametrize(
    "blob",
    ["!!!!", "aGVsbG8gd29ybGQ=", base64.b64encode(b"\xff" * 8 + b"{}").decode(), b"AAAA", None],
)
def test_garbage_blobs_raise_wire_error(blob):
    with pytest.raises(WireError):
        wire.unpack_tensors(blob)


def test_a_blob_over_the_limit_is_refused():
    blob = wire.pack_tensors({"t0": torch.zeros(1000)})
    assert wire.unpack_tensors(blob, max_bytes=10_000)["t0"].shape == (1000,)
    with pytest.raises(WireError, match="limit"):
        wire.unpack_tensors(blob, max_bytes=1000)


# --- result files -------------------------------------------------------------------


@pytest.fixture()
def saved():
    torch.manual_seed(0)
    x = torch.randn(64, 32)
    return {
        "hidden": x,
        "same": x,
        "pair": (torch.arange(10)[2:7], {"k": torch.ones(3, dtype=torch.bfloat16)}),
        "meta": torch.empty(2, device="meta"),
        "plain": [1, "two", 3.0, math.nan, None],
        "empty": torch.zeros(0, 5),
        "scalar": torch.tensor(True),
    }


def test_a_result_file_round_trips_and_is_plain_safetensors(saved, tmp_path):
    path = tmp_path / "result.safetensors"
    size = results.write_result(path, saved)
    assert size == path.stat().st_size
    with open(path, "rb") as f:
        got = results.read_result(f)
    assert_same(got, saved)
    assert got["hidden"] is got["same"]
    with safe_open(str(path), "pt") as f:
        meta = json.loads(f.metadata()["nnsight_lab"])
    assert meta["version"] == WIRE_VERSION and set(meta["saved"]) == set(saved)
    assert len(safetensors.torch.load_file(path)) == 5  # `same` is written once


class ShortReads(io.RawIOBase):
    """A pipe-like stream: each `readinto` gives at most `most` bytes."""

    def __init__(self, data: bytes, most: int = 1000) -> None:
        self.source, self.most, self.calls = io.BytesIO(data), most, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        self.calls += 1
        chunk = self.source.read(min(len(buffer), self.most))
        buffer[: len(chunk)] = chunk
        return len(chunk)


def test_a_result_reads_from_a_stream_of_short_reads(saved, tmp_path):
    results.write_result(tmp_path / "r", saved)
    data = (tmp_path / "r").read_bytes()
    raw = ShortReads(data)
    assert_same(results.read_result(raw), saved)
    assert raw.calls > len(data) // 1000
    assert_same(results.read_result(io.BufferedReader(ShortReads(data))), saved)


class Strict(io.RawIOBase):
    """A stream that fails on `read()` to the end and notes where `readinto` wrote."""

    def __init__(self, data: bytes) -> None:
        self.source, self.buffers = io.BytesIO(data), []

    def readable(self) -> bool:
        return True

    def read(self, size: int | None = -1) -> bytes:
        assert size is not None and size >= 0, "read() to the end"
        return self.source.read(size)

    def readall(self) -> bytes:
        raise AssertionError("readall()")

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer)
        self.buffers.append((ctypes.addressof(ctypes.c_char.from_buffer(view)), view.nbytes))
        return self.source.readinto(view)


def test_a_result_is_read_straight_into_its_tensors(tmp_path):
    big = torch.randn(1024, 1024)  # 4 MB
    results.write_result(tmp_path / "r", {"big": big, "small": torch.arange(3)})
    stream = Strict((tmp_path / "r").read_bytes())
    tracemalloc.start()
    try:
        got = results.read_result(stream)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert torch.equal(got["big"], big)
    for t in got.values():  # each tensor's bytes were the buffer of a `readinto`
        assert (t.data_ptr(), t.nbytes) in stream.buffers
    assert peak < 1_000_000  # no Python-side copy of the 4 MB


def test_a_stream_without_readinto_is_read_in_bounded_reads(saved, tmp_path):
    results.write_result(tmp_path / "r", saved)
    source = io.BytesIO((tmp_path / "r").read_bytes())

    class ReadOnly:
        def read(self, size: int) -> bytes:
            assert size >= 0
            return source.read(min(size, 777))

    assert_same(results.read_result(ReadOnly()), saved)  # type: ignore[arg-type]


def _file(header: dict[str, Any], data: bytes, saved: dict[str, Any] | None = None) -> bytes:
    doc = {"version": WIRE_VERSION, "saved": saved or {}}
    header = {"__metadata__": {"nnsight_lab": json.dumps(doc)}, **header}
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def _f32(begin: int, end: int, shape: list[int]) -> dict[str, Any]:
    return {"dtype": "F32", "shape": shape, "data_offsets": [begin, end]}


def test_gaps_between_tensors_are_skipped():
    a, b = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0])
    data = a.numpy().tobytes() + b"\xee" * 8 + b.numpy().tobytes()
    saved = {"b": {"$tensor": "b"}, "a": {"$tensor": "a"}}
    got = results.read_result(
        io.BytesIO(_file({"b": _f32(16, 24, [2]), "a": _f32(0, 8, [2])}, data, saved))
    )
    assert_same(got, {"b": b, "a": a})


def _valid(tmp_path: Any) -> bytes:
    results.write_result(tmp_path / "r", {"x": torch.randn(10), "y": [1, torch.ones(2)]})
    return (tmp_path / "r").read_bytes()


def _bad_files(valid: bytes) -> dict[str, bytes]:
    n = struct.unpack("<Q", valid[:8])[0]
    f128 = {"dtype": "F128", "shape": [1], "data_offsets": [0, 16]}
    dtype_list = {"dtype": [1], "shape": [1], "data_offsets": [0, 4]}
    return {
        "empty": b"",
        "cut in the length": valid[:4],
        "cut in the header": valid[: 8 + n // 2],
        "cut in the data": valid[:-3],
        "header length past the end": struct.pack("<Q", 10**6) + valid[8:],
        "header length over the limit": struct.pack("<Q", 2**40) + valid[8:],
        "header length zero": struct.pack("<Q", 0) + valid[8:],
        "header not JSON": struct.pack("<Q", 4) + b"{{{{",
        "header not an object": _raw(b"[1, 2]"),
        "overlapping offsets": _file({"a": _f32(0, 16, [4]), "b": _f32(8, 24, [4])}, b"\0" * 24),
        "offsets past the end": _file({"a": _f32(0, 4000, [1000])}, b"\0" * 40),
        "offsets backwards": _file({"a": _f32(8, 0, [2])}, b"\0" * 8),
        "negative offset": _file({"a": _f32(-8, 0, [2])}, b"\0" * 8),
        "shape not matching bytes": _file({"a": _f32(0, 12, [2])}, b"\0" * 12),
        "shape too big to allocate": _file({"a": _f32(0, 2**42, [2**40])}, b""),
        "shape too big for torch": _file({"a": _f32(0, 2**72, [2**70])}, b""),
        "bool in shape": _file({"a": _f32(0, 4, [True])}, b"\0" * 4),
        "unknown dtype": _file({"a": f128}, b"\0" * 16),
        "dtype not a string": _file({"a": dtype_list}, b"\0" * 4),
        "entry not an object": _file({"a": 5}, b""),
        "no metadata": _raw(json.dumps({"a": _f32(0, 4, [1])}).encode()) + b"\0" * 4,
        "wrong version": _metadata(json.dumps({"version": "x/9", "saved": {}})),
        "no saved values": _metadata(json.dumps({"version": WIRE_VERSION})),
        "metadata not JSON": _metadata("{"),
        "metadata nested deep": _metadata("[" * 100_000),
        "unknown tag": _file({}, b"", {"x": {"$pickle": "gASV"}}),
        "missing tensor": _file({}, b"", {"x": {"$tensor": "t0"}}),
        "tree too deep": _file({}, b"", {"x": _nested(100)}),
        "dtype tag load": _file({}, b"", {"x": {"$dtype": "load"}}),
        "garbage": bytes(random.Random(1).randrange(256) for _ in range(300)),
    }


def _raw(header: bytes) -> bytes:
    return struct.pack("<Q", len(header)) + header


def _metadata(text: str) -> bytes:
    return _raw(json.dumps({"__metadata__": {"nnsight_lab": text}}).encode())


def test_malformed_result_files_raise_wire_error(tmp_path):
    for name, data in _bad_files(_valid(tmp_path)).items():
        with pytest.raises(WireError):
            results.read_result(io.BytesIO(data))
            pytest.fail(f"read a file with {name}")


def test_a_result_over_max_bytes_is_refused(tmp_path):
    valid = _valid(tmp_path)
    assert set(results.read_result(io.BytesIO(valid), max_bytes=len(valid))) == {"x", "y"}
    with pytest.raises(WireError, match="limit"):
        results.read_result(io.BytesIO(valid), max_bytes=len(valid) - 1)


def test_random_byte_flips_in_a_result_header_raise_only_wire_error(tmp_path):
    valid = _valid(tmp_path)
    rng = random.Random(0)
    n = struct.unpack("<Q", valid[:8])[0]
    for _ in range(300):
        data = bytearray(valid)
        for _ in range(rng.randrange(1, 4)):
            data[rng.randrange(8 + n)] = rng.randrange(256)
        try:
            results.read_result(io.BytesIO(bytes(data)), max_bytes=10**6)
        except WireError:
            pass
