"""`model.session()`: traces share unsaved values; only saved values leave the session.
Compared with the same patch done by plain torch hooks."""

from __future__ import annotations

import torch

from nnsight_lab import NNsight


def test_a_later_trace_uses_an_unsaved_value_and_only_saved_values_leave(toy_net):
    model = NNsight(toy_net)
    a, b = torch.rand(1, 5), torch.rand(1, 5)
    with model.session():
        with model.trace(a):
            hidden = model.layer1.output
        with model.trace(b):
            model.layer1.output[:] = hidden
            patched = model.output.save()
    assert "hidden" not in locals()
    plain_hidden = toy_net.layer1(a)
    hook = toy_net.layer1.register_forward_hook(lambda m, i, o: plain_hidden)
    try:
        expected = toy_net(b)
    finally:
        hook.remove()
    assert torch.equal(patched, expected)


def test_outside_a_session_an_unsaved_value_stays_in_its_trace(toy_net):
    model = NNsight(toy_net)
    with model.trace(torch.rand(1, 5)):
        hidden = model.layer1.output  # noqa: F841
    assert "hidden" not in locals()
