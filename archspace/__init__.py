"""archspace: the DeepNets-1M architecture space, graphs of any network, and the million-graph dataset.

Public names are imported lazily so that ``import archspace`` stays fast.
"""

from __future__ import annotations

import importlib
import warnings

# torch_geometric's import calls torch.jit.script, which current torch deprecates with a FutureWarning on every
# start-up; it says nothing about our code, so it is silenced here, before any module imports torch_geometric.
warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.* is deprecated", category=FutureWarning)

_EXPORTS = {
    "PRIMITIVES": "archspace.primitives",
    "PRIMITIVE_ID": "archspace.primitives",
    "ArchGraph": "archspace.data",
    "to_graph": "archspace.graph",
    "adapt_small_input": "archspace.small_input",
    "Genotype": "archspace.genotype",
    "Network": "archspace.network",
    "SPLITS": "archspace.sampler",
    "get_genotype": "archspace.sampler",
    "get_net": "archspace.sampler",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'archspace' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
