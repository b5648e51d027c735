"""The graph drawing: a PNG with a layered top-to-bottom layout."""

import torchvision

from archspace import adapt_small_input, to_graph
from archspace.plot import layered_layout, plot_graph


def test_layout_puts_input_on_top_and_edges_downwards():
    graph = to_graph(adapt_small_input(torchvision.models.resnet18()), ve_cutoff=1)
    pos = layered_layout(graph)
    assert pos.shape == (graph.num_nodes, 2) and pos[0, 1] == 0
    u, v = graph.edge_index
    assert (pos[u.numpy(), 1] > pos[v.numpy(), 1]).all()


def test_plot_writes_png(tmp_path):
    graph = to_graph(adapt_small_input(torchvision.models.resnet18()))
    path = tmp_path / "g.png"
    plot_graph(graph, path, title="resnet18")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
