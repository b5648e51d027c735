"""Coverage of a model's parameters by the nodes of its graph: which parameters a GHN predicts, and which not.

A GHN (Knyazev et al., NeurIPS 2021) predicts exactly the parameters bound to graph nodes (``param_names``);
anything unbound keeps its initial value. The report lists both, so a user sees at a glance whether a model is
fully covered; the GHN's prediction report reuses :func:`coverage_report`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

from .data import ArchGraph
from .primitives import PRIMITIVES


@dataclass(frozen=True)
class BoundNode:
    """One graph node with the parameters bound to it.

    Attributes:
        index: node index in the graph.
        primitive: its primitive name.
        label: its ``node_names`` entry.
        params: the bound parameter names.
        numel: number of scalars in those parameters.
    """

    index: int
    primitive: str
    label: str
    params: tuple[str, ...]
    numel: int


@dataclass(frozen=True)
class UnboundParam:
    """A parameter not bound to any node.

    Attributes:
        name: its name in ``model.named_parameters()``.
        module_type: class name of the module that owns it.
        shape: its shape.
        numel: number of scalars.
    """

    name: str
    module_type: str
    shape: tuple[int, ...]
    numel: int


@dataclass(frozen=True)
class CoverageReport:
    """Bound and unbound parameters of one model given its graph.

    Attributes:
        bound: nodes that own parameters, in graph order.
        unbound: parameters of the model bound to no node, in ``named_parameters()`` order.
        unknown: names in the graph that are not parameters of the model (a graph built for another model).
    """

    bound: tuple[BoundNode, ...]
    unbound: tuple[UnboundParam, ...]
    unknown: tuple[str, ...] = ()

    @property
    def num_bound_params(self) -> int:
        """Scalars in bound parameters."""
        return sum(b.numel for b in self.bound)

    @property
    def num_unbound_params(self) -> int:
        """Scalars in unbound parameters."""
        return sum(u.numel for u in self.unbound)

    @property
    def complete(self) -> bool:
        """Whether every parameter is bound and every bound name exists."""
        return not self.unbound and not self.unknown

    def as_dict(self) -> dict:
        """A JSON-safe summary: counts plus the unbound parameters with their module types."""
        return {
            "bound_tensors": sum(len(b.params) for b in self.bound),
            "bound_params": self.num_bound_params,
            "unbound_params": [{"name": u.name, "module_type": u.module_type, "shape": list(u.shape)}
                               for u in self.unbound],
            "unknown_names": list(self.unknown),
        }

    def format(self, per_node: bool = False) -> str:
        """A readable report; ``per_node`` lists every bound node."""
        total = self.num_bound_params + self.num_unbound_params
        share = 100.0 * self.num_bound_params / total if total else 100.0
        lines = [f"parameters bound to nodes: {self.num_bound_params:,} of {total:,} ({share:.1f}%) in "
                 f"{len(self.bound)} nodes"]
        if per_node:
            lines += [f"  [{b.index:4d}] {b.primitive:9s} {', '.join(b.params)}" for b in self.bound]
        if self.unbound:
            lines.append(f"unbound parameter tensors ({len(self.unbound)}):")
            lines += [f"  {u.name} {list(u.shape)} ({u.module_type})" for u in self.unbound]
        if self.unknown:
            lines.append(f"names in the graph that the model lacks: {', '.join(self.unknown)}")
        return "\n".join(lines)


def coverage_report(model: nn.Module, graph: ArchGraph) -> CoverageReport:
    """Match ``graph.param_names`` against ``model.named_parameters()``.

    Args:
        model: the network the graph was built from.
        graph: its :class:`~archspace.data.ArchGraph` (from :func:`archspace.to_graph`).

    Returns:
        The :class:`CoverageReport`.
    """
    params = dict(model.named_parameters())
    owner = _owners(model)
    bound, seen = [], set()
    for i, names in enumerate(graph.param_names):
        if names:
            present = tuple(n for n in names if n in params)
            seen.update(names)
            bound.append(BoundNode(i, PRIMITIVES[int(graph.op_type[i])], graph.node_names[i], tuple(names),
                                   sum(params[n].numel() for n in present)))
    unbound = tuple(UnboundParam(n, owner.get(n, "?"), tuple(p.shape), p.numel())
                    for n, p in params.items() if n not in seen)
    unknown = tuple(sorted(seen - params.keys()))
    return CoverageReport(tuple(bound), unbound, unknown)


def unbound_parameters(model: nn.Module, graph: ArchGraph) -> tuple[UnboundParam, ...]:
    """Parameters of ``model`` bound to no node of ``graph`` (see :func:`coverage_report`)."""
    bound = {n for names in graph.param_names for n in names}
    owner = _owners(model)
    return tuple(UnboundParam(n, owner.get(n, "?"), tuple(p.shape), p.numel())
                 for n, p in model.named_parameters() if n not in bound)


def _owners(model: nn.Module) -> dict[str, str]:
    """Parameter name -> class name of the module that owns it."""
    out = {}
    for mod_name, module in model.named_modules():
        for local, _ in module.named_parameters(recurse=False):
            out.setdefault(f"{mod_name}.{local}" if mod_name else local, type(module).__name__)
    return out
