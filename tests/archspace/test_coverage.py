"""The coverage report: bound parameters per node, unbound ones with their module type."""

import json
import warnings

import torch.nn as nn
import torchvision

from archspace import to_graph
from archspace.coverage import coverage_report, unbound_parameters


class Partial(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.act = nn.PReLU()

    def forward(self, x):
        return self.act(self.conv(x)).mean((2, 3))


def test_resnet_is_fully_covered():
    model = torchvision.models.resnet18()
    report = coverage_report(model, to_graph(model, 32))
    assert report.complete and not report.unbound
    assert report.num_bound_params == sum(p.numel() for p in model.parameters())
    bn = next(b for b in report.bound if b.label == "bn1.weight")
    assert bn.primitive == "bn" and bn.params == ("bn1.weight", "bn1.bias") and bn.numel == 128


def test_unbound_parameter_listed_with_module_type():
    model = Partial()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        graph = to_graph(model, 8)
    report = coverage_report(model, graph)
    assert not report.complete
    assert [(u.name, u.module_type, u.shape) for u in report.unbound] == [("act.weight", "PReLU", (1,))]
    assert unbound_parameters(model, graph) == report.unbound
    summary = json.loads(json.dumps(report.as_dict()))
    assert summary["unbound_params"] == [{"name": "act.weight", "module_type": "PReLU", "shape": [1]}]
    text = report.format(per_node=True)
    assert "act.weight [1] (PReLU)" in text and "conv.weight" in text


def test_graph_of_another_model_shows_unknown_names():
    graph = to_graph(torchvision.models.resnet18(), 32)
    report = coverage_report(Partial(), graph)
    assert "fc.weight" in report.unknown and not report.complete
