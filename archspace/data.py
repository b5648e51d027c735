"""``ArchGraph``: the computational graph of one network as a PyG ``Data`` object.

Field contract (``N`` nodes, ``E`` edges, real and virtual together):

==================  ======================  =================================================================
field               type / shape            meaning
==================  ======================  =================================================================
``op_type``         LongTensor ``(N,)``     primitive id (:data:`archspace.primitives.PRIMITIVES`)
``edge_index``      LongTensor ``(2, E)``   directed edges ``u -> v`` with ``u`` before ``v`` in topological
                                            order; offset by the node count when batched
``edge_dist``       LongTensor ``(E,)``     shortest-path length of the edge: 1 for real edges, 2..``ve_cutoff``
                                            for virtual edges (Knyazev et al., 2021, Sec. 4.1)
``param_shape``     LongTensor ``(N, 4)``   shape of the node's main parameter, right-padded with 0
``param_ndim``      LongTensor ``(N,)``     number of dims of that parameter, 0 for parameter-free nodes
``cls_role``        LongTensor ``(N,)``     0, or 1 for the classifier weight, 2 for the classifier bias
``param_names``     list[tuple[str, ...]]   names (as in ``model.named_parameters()``) bound to each node;
                                            a norm node owns ``(weight, bias)``; ``()`` when parameter-free
``node_names``      list[str]               a readable label (module path or operation) for each node
``net_index``       LongTensor ``(1,)``     optional: the net's index in its split (dataset graphs only); not
                                            offset when batched
==================  ======================  =================================================================

Nodes are in topological order: every edge goes from a lower to a higher index. Non-tensor fields are collated
by PyG's ``Batch`` into one list per graph. The names avoid ``index``/``batch`` except ``edge_index``, so PyG
offsets only what must be offset.
"""

from __future__ import annotations

import torch
from torch_geometric.data import Data

from .primitives import PRIMITIVES


class ArchGraph(Data):
    """The graph of a neural network for a GHN (Knyazev et al., NeurIPS 2021, Sec. 4.1): one node per parameter
    tensor owner and per parameter-free operation, real edges plus shortest-path virtual edges.

    See the module docstring for the field contract. Build one with :func:`archspace.to_graph`.
    """

    def __inc__(self, key: str, value, *args, **kwargs):
        # ``net_index`` names a net, not a node: PyG would otherwise offset it by the node count.
        if key == "net_index":
            return 0
        return super().__inc__(key, value, *args, **kwargs)

    @property
    def num_real_edges(self) -> int:
        """Number of real edges (``edge_dist == 1``)."""
        return int((self.edge_dist == 1).sum())

    @property
    def num_virtual_edges(self) -> int:
        """Number of virtual edges (``edge_dist > 1``)."""
        return int((self.edge_dist > 1).sum())

    def op_counts(self) -> dict[str, int]:
        """Nodes per primitive name, only for primitives that occur."""
        counts = torch.bincount(self.op_type, minlength=len(PRIMITIVES)).tolist()
        return {PRIMITIVES[i]: c for i, c in enumerate(counts) if c}
