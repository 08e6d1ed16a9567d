"""`tracer.iter[...]` with a list of steps, its refusals, and the warning for a loop whose
steps the model does not all run (both runners: simple bodies stepped, and greenlets)."""

from __future__ import annotations

import linecache

import pytest
import torch
from torch import nn

import nnsight_lab as nnsight
from nnsight_lab import NNsight, NNsightWarning
from nnsight_lab.engine.mediator import BarrierError


class Loop(nn.Module):
    """Calls `block` five times, feeding each output back in."""

    def __init__(self) -> None:
        super().__init__()
        self.block = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = []
        for _ in range(5):
            x = self.block(x)
            outs.append(x)
        return torch.stack(outs)


@pytest.fixture()
def loop():
    torch.manual_seed(0)
    return Loop()


def test_a_list_of_steps_reads_those_calls(loop):
    x = torch.randn(2, 4)
    plain = loop(x)
    model = NNsight(loop)
    with model.trace(x) as tracer:
        got = nnsight.save([])
        for step in tracer.iter[[0, 2, 4]]:
            got.append((step, model.block.output))
    assert [step for step, _ in got] == [0, 2, 4]
    for step, value in got:
        assert torch.equal(value, plain[step])


def test_a_list_of_steps_edits_only_those_calls(loop):
    x = torch.randn(2, 4)
    model = NNsight(loop)
    with model.trace(x) as tracer:
        for _ in tracer.iter[[1, 3]]:
            model.block.output = torch.zeros(2, 4)
        result = nnsight.save(tracer.result)
    # by hand: the same loop with calls 1 and 3 zeroed
    h, expected = x, []
    for i in range(5):
        h = torch.zeros(2, 4) if i in (1, 3) else loop.block(h)
        expected.append(h)
    assert torch.equal(result, torch.stack(expected).detach())


@pytest.mark.parametrize(
    "steps", [[-1, 2], [2, 1], [1.5], []], ids=["negative", "decreasing", "float", "empty"]
)
def test_bad_steps_are_refused_as_value_errors(loop, steps):
    model = NNsight(loop)
    with pytest.raises(ValueError, match="tracer.iter"):
        with model.trace(torch.randn(2, 4)) as tracer:
            for _ in tracer.iter[steps]:
                model.block.output.save()


def test_a_negative_slice_is_a_value_error(loop):
    model = NNsight(loop)
    with pytest.raises(ValueError, match="negative"):
        with model.trace(torch.randn(2, 4)) as tracer:
            for _ in tracer.iter[-1:2]:
                model.block.output.save()


@pytest.mark.parametrize("steps", [slice(0, 8), [0, 2, 7]], ids=["slice", "list"])
def test_a_for_loop_past_the_last_call_warns_at_its_line(loop, steps):
    x = torch.randn(2, 4)
    plain = loop(x)
    model = NNsight(loop)
    tail = None
    with pytest.warns(NNsightWarning, match="was never reached") as caught:
        with model.trace(x) as tracer:
            got = nnsight.save([])
            for _ in tracer.iter[steps]:
                got.append(model.block.output)
            tail = nnsight.save("after")
    assert issubclass(caught[0].category, UserWarning)
    line = linecache.getline(caught[0].filename, caught[0].lineno)
    assert caught[0].filename == __file__ and "for _ in tracer.iter[steps]:" in line
    reached = [s for s in (range(8) if isinstance(steps, slice) else steps) if s < 5]
    assert len(got) == len(reached)
    for step, value in zip(reached, got, strict=True):
        assert torch.equal(value, plain[step])
    assert tail is None  # the line after the loop did not run


def test_a_loop_that_ends_with_the_model_does_not_warn(loop, recwarn):
    model = NNsight(loop)
    with model.trace(torch.randn(2, 4)) as tracer:
        got = nnsight.save([])
        for _ in tracer.iter[:5]:
            got.append(model.block.output)
    assert len(got) == 5
    assert not [w for w in recwarn if issubclass(w.category, NNsightWarning)]


def test_a_barrier_too_few_invokes_reach_is_a_value_error(llm):
    with pytest.raises(BarrierError, match="never reached by every block") as caught:
        with llm.trace() as tracer:
            barrier = tracer.barrier(3)
            with tracer.invoke("a b"):
                barrier()
            with tracer.invoke("c d"):
                barrier()
    assert isinstance(caught.value, ValueError)


def test_an_invoke_inside_an_invoke_says_the_trace_is_running(llm):
    with pytest.raises(ValueError, match="already running"):
        with llm.trace() as tracer:
            with tracer.invoke("a b"):
                with tracer.invoke("c d"):
                    pass
