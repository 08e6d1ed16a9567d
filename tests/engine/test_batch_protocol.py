"""A model that batches the way nnsight's docs say (`_batch_size`, `_batch(invokes, fn)`):
`prepare_input` and `batch_inputs` take it as they take ours."""

from __future__ import annotations

import torch
from torch import nn

from nnsight_lab import NNsight
from nnsight_lab.engine.inputs import batch_inputs, prepare_input


class Stacking(NNsight):
    def _batch_size(self, *inputs, **kwargs):
        return inputs[0].shape[0] if inputs else 0

    def _batch(self, invokes, fn):
        return (torch.cat([inputs[0] for inputs, _ in invokes]),), {}


def test_an_nnsight_style_model_is_sized_and_batched_by_its_own_methods():
    model = Stacking(nn.Linear(2, 2))
    a, b = torch.randn(2, 2), torch.randn(3, 2)
    prepared_a, rows_a = prepare_input(model, (a,), {}, None)
    prepared_b, rows_b = prepare_input(model, (b,), {}, None)
    assert (rows_a, rows_b) == (2, 3)
    args, kwargs = batch_inputs(model, [prepared_a, prepared_b], model._run)
    assert torch.equal(args[0], torch.cat([a, b])) and kwargs == {}


def test_our_models_keep_their_protocol():
    model = NNsight(nn.Linear(2, 2))
    a, b = torch.randn(2, 2), torch.randn(3, 2)
    prepared = [prepare_input(model, (x,), {}, None)[0] for x in (a, b)]
    args, _ = batch_inputs(model, prepared, model._run)
    assert torch.equal(args[0], torch.cat([a, b]))
