"""Draw an architecture graph: nodes coloured by primitive, real edges, input at the top.

Like the figures of GHN-2 (Knyazev et al., NeurIPS 2021, Fig. 1 and Appendix), with a layered layout instead of
graphviz (not a dependency here): a node's row is its longest path from a source, nodes in a row are ordered by the
mean position of their predecessors, and edges that skip rows bend sideways so that residual connections stay
visible. Virtual edges are not drawn.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.backend_bases import FigureCanvasBase  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.patches import FancyArrowPatch  # noqa: E402

from .dag import longest_path_levels  # noqa: E402
from .data import ArchGraph  # noqa: E402
from .errors import UsageError  # noqa: E402
from .files import atomic_path, check_writable  # noqa: E402
from .primitives import PRIMITIVES  # noqa: E402

#: Colour per primitive: convolution family in blues, norms in yellows, parameter-free ops in greys/greens.
PRIMITIVE_COLORS: dict[str, str] = {
    "conv": "#1f77b4",
    "sep_conv": "#17becf",
    "dil_conv": "#9edae5",
    "bias": "#e377c2",
    "bn": "#ffbb00",
    "ln": "#f0e442",
    "msa": "#111111",
    "cse": "#8c564b",
    "pos_enc": "#bcbd22",
    "max_pool": "#d62728",
    "avg_pool": "#ff9896",
    "glob_avg": "#9467bd",
    "sum": "#2ca02c",
    "concat": "#98df8a",
    "input": "#ffffff",
}

_MARKERS = {"input": "s", "bn": "s", "ln": "s", "bias": "D", "pos_enc": "s", "concat": "^", "msa": "h", "cse": "p"}


def layered_layout(graph: ArchGraph, spacing: float = 1.0) -> np.ndarray:
    """Positions for a top-to-bottom drawing: row = longest path from a source, column by predecessor barycentre.

    Args:
        graph: the graph (only real edges are used).
        spacing: horizontal distance between nodes of one row.

    Returns:
        ``(N, 2)`` array of ``(x, y)``; ``y`` is minus the row, so the input is at the top.
    """
    n = graph.num_nodes
    real = graph.edge_index[:, graph.edge_dist == 1].numpy()  # (2, E_real)
    preds: list[list[int]] = [[] for _ in range(n)]
    for u, v in real.T:
        preds[v].append(int(u))
    row = longest_path_levels(real[0], real[1], n)  # (N,)
    x = np.zeros(n)
    for r in range(int(row.max()) + 1 if n else 0):
        members = np.flatnonzero(row == r)
        centre = [np.mean([x[u] for u in preds[v]]) if preds[v] else 0.0 for v in members]
        order = members[np.argsort(centre, kind="stable")]
        width = len(order)
        slots = (np.arange(width) - (width - 1) / 2) * spacing
        # start from the predecessors' barycentre so that chains stay straight, spread members apart
        base = float(np.mean(centre)) if width else 0.0
        x[order] = base + slots
    return np.stack([x, -row.astype(float)], axis=1)


def check_plot_path(path: str | Path, what: str = "--plot") -> str:
    """Check, before any work, that a plot can be saved at ``path``: a writable file with an image extension.

    Args:
        path: the image file; its extension picks the format (``.png``, ``.svg``, ``.pdf``, ...).
        what: how the user named it, for the message.

    Returns:
        ``path`` as a string.

    Raises:
        UsageError: ``path`` is a directory, not writable, or has no extension matplotlib can write.
    """
    path = check_writable(path, what)
    formats = sorted(FigureCanvasBase.get_supported_filetypes())
    ext = Path(path).suffix.lower().lstrip(".")
    if ext not in formats:
        raise UsageError(f"{what} {path}: cannot tell the image format from {Path(path).suffix or 'no extension'!r}; "
                         f"end the name in one of .{', .'.join(formats)}")
    return path


def plot_graph(graph: ArchGraph, path: str | Path | None = None, title: str | None = None,
               with_labels: bool | None = None, dpi: int = 100) -> plt.Figure:
    """Draw ``graph`` coloured by primitive with a legend and save it (PNG, or any format matplotlib knows).

    Args:
        graph: an :class:`~archspace.data.ArchGraph`.
        path: where to save, atomically; the extension picks the format; ``None`` only returns the figure.
        title: figure title (default: node and edge counts).
        with_labels: write node names next to nodes (default: for graphs of at most 60 nodes).
        dpi: resolution; lowered automatically for very tall graphs so that images stay under ~16k pixels.

    Returns:
        The matplotlib figure (closed after saving when ``path`` is given).

    Raises:
        ValueError: the graph has no nodes.
        UsageError: ``path`` cannot be written or has no image extension (see :func:`check_plot_path`).
    """
    if path is not None:
        check_plot_path(path, "path")
    n = graph.num_nodes
    if not n:
        raise ValueError("cannot plot an empty graph")
    labels = n <= 60 if with_labels is None else with_labels
    pos = layered_layout(graph, spacing=4.0 if labels else 1.0)
    rows = int(-pos[:, 1].min()) + 1
    span = float(pos[:, 0].max() - pos[:, 0].min()) + 1
    fig_h = min(max(4.0, 0.28 * rows), 160.0)
    fig_w = min(max(4.0, (0.45 if labels else 0.6) * span + (5.0 if labels else 2.5)), 40.0)
    dpi = int(min(dpi, 16000 / fig_h))
    fig, ax = plt.subplots(figsize=(fig_w, fig_h), dpi=dpi)

    real = graph.edge_index[:, graph.edge_dist == 1].numpy()  # (2, E_real)
    for u, v in real.T:
        (x0, y0), (x1, y1) = pos[u], pos[v]
        skip = y0 - y1 > 1.5
        bend = 0.0 if not skip else (0.35 if x1 >= x0 else -0.35) * min(1.0 + (y0 - y1) / 12, 2.0)
        ax.add_patch(FancyArrowPatch((x0, y0), (x1, y1), connectionstyle=f"arc3,rad={bend}", arrowstyle="-|>",
                                     mutation_scale=6, lw=0.6, color="#555555", alpha=0.8, shrinkA=4, shrinkB=4,
                                     zorder=1))
    names = [PRIMITIVES[int(t)] for t in graph.op_type]
    present = [p for p in PRIMITIVES if p in set(names)]
    for prim in present:
        idx = [i for i, p in enumerate(names) if p == prim]
        ax.scatter(pos[idx, 0], pos[idx, 1], s=60 if prim != "input" else 90, c=PRIMITIVE_COLORS[prim],
                   marker=_MARKERS.get(prim, "o"), edgecolors="black", linewidths=0.6, zorder=2)
    if labels:
        centre = {}
        for y in np.unique(pos[:, 1]):
            centre[y] = float(pos[pos[:, 1] == y, 0].mean())
        for i in range(n):
            left = pos[i, 0] < centre[pos[i, 1]] - 1e-6  # left of its row's centre: label on the left
            ax.annotate(_short(graph.node_names[i]), pos[i], xytext=(-6 if left else 6, 0),
                        textcoords="offset points", fontsize=6, va="center", ha="right" if left else "left",
                        zorder=3)
    handles = [Line2D([], [], marker=_MARKERS.get(p, "o"), ls="", markerfacecolor=PRIMITIVE_COLORS[p],
                      markeredgecolor="black", markersize=7, label=f"{p} ({names.count(p)})") for p in present]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False,
              title="primitive (nodes)", title_fontsize=8)
    ax.set_title(title or f"{n} nodes, {graph.num_real_edges} edges (+{graph.num_virtual_edges} virtual)",
                 fontsize=9)
    pad = 6.0 if labels else 1.0
    ax.set_xlim(pos[:, 0].min() - pad, pos[:, 0].max() + pad)
    ax.set_ylim(pos[:, 1].min() - 0.8, 0.8)
    ax.axis("off")
    fig.tight_layout()
    if path is not None:
        save_figure(fig, path, dpi=dpi, facecolor="white")
    return fig


def save_figure(fig: plt.Figure, path: str | Path, **savefig_kwargs) -> str:
    """Save a matplotlib figure atomically (a reader never sees half an image) and close it; the extension picks
    the format (check it first with :func:`check_plot_path`). The one figure saver of the project.

    Args:
        fig: the figure.
        path: destination; its folder is created if missing.
        savefig_kwargs: passed to ``Figure.savefig`` (``dpi``, ``bbox_inches``, ...).

    Returns:
        ``path`` as a string.
    """
    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format=Path(path).suffix.lower().lstrip(".") or "png", **savefig_kwargs)
    finally:
        plt.close(fig)
    return str(path)


def _short(name: str, width: int = 32) -> str:
    return name if len(name) <= width else "..." + name[-(width - 3):]
