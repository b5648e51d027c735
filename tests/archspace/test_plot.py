"""The graph drawing: a PNG with a layered top-to-bottom layout."""

import os

import pytest
import torchvision

from archspace import adapt_small_input, to_graph
from archspace.errors import UsageError
from archspace.plot import check_plot_path, layered_layout, plot_graph


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


def test_plot_replaces_the_file_atomically_and_checks_the_path_first(tmp_path):
    graph = to_graph(adapt_small_input(torchvision.models.resnet18()), ve_cutoff=1)
    path = tmp_path / "g.svg"
    path.write_text("old")
    plot_graph(graph, path)
    assert path.read_text().lstrip().startswith("<?xml") and os.listdir(tmp_path) == ["g.svg"]  # no temp file
    with pytest.raises(UsageError, match="cannot tell the image format from '.txt'"):
        plot_graph(graph, tmp_path / "g.txt")
    with pytest.raises(UsageError, match="is a directory"):
        check_plot_path(tmp_path)
    assert check_plot_path(tmp_path / "new" / "G.PNG") == str(tmp_path / "new" / "G.PNG")
    assert os.listdir(tmp_path) == ["g.svg"]  # checking writes nothing
