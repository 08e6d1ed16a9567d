"""Which variables of a body hold saved values (`tracing.saved`), checked on plain
objects against what the body's source and `save` calls say."""

from __future__ import annotations

from nnsight_lab.tracing.saved import holds_saved, saved_names, shared


def test_saved_names_are_the_names_bound_from_a_save_or_saved_by_name():
    source = (
        "x = model.layer.output.save()\n"
        "n = nnsight.save(5)\n"
        "nnsight.save(width)\n"
        "flag.save()\n"
        "a, (b, c) = tracer.save(t)\n"
        "other = True\n"
    )
    assert saved_names(source) == {"x", "n", "width", "flag", "a", "b", "c", "t"}
    assert saved_names("x = (") is None


def test_a_container_leaves_when_made_of_saved_values_and_constants_only():
    saved, unsaved = object(), object()
    ids = {id(saved)}
    inner = [saved]
    assert holds_saved([saved, 1, "a", (inner, inner)], ids) is True
    assert holds_saved({"k": saved}, ids) is True
    assert holds_saved([saved, unsaved], ids) is False
    assert holds_saved([1, 2, "three"], ids) is None
    cycle: list = [saved]
    cycle.append(cycle)
    assert holds_saved(cycle, ids) is True
    assert holds_saved(saved, ids) is None


def test_shared_objects_are_the_immutable_constants():
    assert all(shared(v) for v in (None, True, 5, "x", 1.5, (1, "a"), b""))
    assert not any(shared(v) for v in ([], {}, object(), (1, [])))
