"""`LazyLogits` gives every metric the answer the full logits give, projecting less."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from nnsight_lab.patching.lazy_logits import LazyLogits

METRICS = {
    "logit diff": lambda logits: logits[0, -1, 7] - logits[0, -1, 3],
    "log prob": lambda logits: logits[0, -1].log_softmax(-1)[5],
    "slice then index": lambda logits: logits[:, -1, :].softmax(-1)[0, 2],
    "position range": lambda logits: logits[0, 2:5, 1].sum(),
    "sum": lambda logits: logits.sum(),
    "arithmetic": lambda logits: (logits * 2)[0, 0, 0],
    "cross entropy": lambda logits: torch.nn.functional.cross_entropy(logits[0], torch.arange(7)),
    "argmax": lambda logits: logits.argmax(-1)[0, -1].float(),
    "batch first": lambda logits: logits[0][-1, 3],
    "ellipsis": lambda logits: logits[..., -1, 0][0],
    "float": lambda logits: float(logits[0, -1, 0]),
    "numpy": lambda logits: logits.numpy()[0, -1, 0],
    "shape": lambda logits: float(logits.shape[1] * logits.size(-1)),
}


@pytest.fixture()
def setup():
    torch.manual_seed(0)
    project = torch.nn.Linear(8, 50, bias=False)
    hidden = torch.randn(1, 7, 8)
    with torch.no_grad():
        yield hidden, project, project(hidden)


@pytest.mark.parametrize("name", list(METRICS))
def test_metric_equals_the_full_logits(setup, name):
    hidden, project, full = setup
    metric = METRICS[name]
    with torch.no_grad():
        got, expected = metric(LazyLogits(hidden, project)), metric(full)
    assert not isinstance(got, LazyLogits)
    np.testing.assert_allclose(np.asarray(got), np.asarray(expected), rtol=1e-6, atol=1e-6)


def test_reading_one_position_projects_only_that_one(setup):
    hidden, project, full = setup
    calls = []
    project.register_forward_hook(lambda m, i, o: calls.append(tuple(i[0].shape)))
    logits = LazyLogits(hidden, project)
    assert logits.shape == (1, 7, 50) and logits.dtype == torch.float32 and not calls
    with torch.no_grad():
        value = logits[0, -1, 7] - logits[0, -1, 3]
    assert calls == [(1, 8)] and logits.read == [6]
    torch.testing.assert_close(value, full[0, -1, 7] - full[0, -1, 3])


def test_known_positions_are_not_projected_again(setup):
    hidden, project, full = setup
    calls = []
    project.register_forward_hook(lambda m, i, o: calls.append(1))
    logits = LazyLogits(hidden, project, {6: full[:, 6]})
    assert torch.equal(logits[0, -1], full[0, -1]) and not calls


def test_out_of_range_positions_raise_like_a_tensor(setup):
    hidden, project, _ = setup
    with pytest.raises(IndexError):
        LazyLogits(hidden, project)[0, 9, 0]
