"""Demo models, and a short tour: `python -m nnsight_lab.models.demo` (what `make lab` runs).

`tiny_net()` is the walkthrough's two-layer network; the tour traces it, reads
and edits its activations, and checks each result against plain torch.
"""

from __future__ import annotations

from collections import OrderedDict

import torch

from .nnsight import NNsight


def tiny_net(input_size: int = 5, hidden: int = 10, output_size: int = 2) -> torch.nn.Sequential:
    """The walkthrough's network: `layer1` (Linear) then `layer2` (Linear)."""
    return torch.nn.Sequential(
        OrderedDict(
            [
                ("layer1", torch.nn.Linear(input_size, hidden)),
                ("layer2", torch.nn.Linear(hidden, output_size)),
            ]
        )
    ).requires_grad_(False)


def tour() -> None:
    torch.manual_seed(0)
    net = tiny_net()
    model = NNsight(net)
    x = torch.rand(1, 5)
    print(model)

    with model.trace(x):
        hidden = model.layer1.output.save()
        output = model.output.save()
    print("layer1 output:", hidden)
    print("model output: ", output, "(plain torch agrees:", torch.allclose(output, net(x)), ")")

    with model.trace(x):
        model.layer1.output[:, 0] = 0
        edited = model.output.save()
    patched = net[0](x)
    patched[:, 0] = 0
    print("with layer1[:, 0] zeroed:", edited, torch.allclose(edited, net[1](patched)))


if __name__ == "__main__":
    tour()
