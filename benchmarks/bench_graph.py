"""Time graph construction (:func:`archspace.to_graph`) per model: the forward capture and the graph build.

Reference figures to compare with (GHN-2 prediction time including graph construction, 2 CPU cores):
resnet50 0.16 s, resnet152 0.62 s, an 800-node DARTS net 1.8 s (``../shared/docs/GHN2_REFERENCE.md``).

Usage::

    python benchmarks/bench_graph.py [--repeats 15] [--threads 2]

Prints the best and median milliseconds over the repeats (the first call, which warms caches, is not counted):
the whole ``to_graph``, the forward capture, the graph build and, within the build, the virtual edges. On a shared
machine the best is the figure to compare; the median shows the noise.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch
import torchvision

from archspace import adapt_small_input, to_graph
from archspace.capture import capture
from archspace.graph import _edges_with_virtual, build_graph, input_shape


def _models():
    yield "resnet18 (CIFAR, 32)", adapt_small_input(torchvision.models.resnet18(num_classes=10)), 32
    yield "resnet50 (CIFAR, 32)", adapt_small_input(torchvision.models.resnet50(num_classes=10)), 32
    yield "resnet50 (224)", torchvision.models.resnet50(), 224
    yield "resnet152 (224)", torchvision.models.resnet152(), 224
    with torch.device("meta"):  # weights are never read: skip their initialisation
        vit, swin = torchvision.models.vit_b_16(), torchvision.models.swin_t()
    yield "vit_b_16 (224)", vit, 224
    yield "swin_t (224)", swin, 224
    try:
        from archspace.sampler import get_net
    except ImportError:
        with torch.device("meta"):
            densenet = torchvision.models.densenet161()
        yield "densenet161 (224, big net)", densenet, 224
        return
    # the largest predefined DeepNets-1M net (~800 nodes), the reference's "800-node DARTS net"
    yield "deepnets predefined/2 (32)", get_net("predefined", 2), 32


def _time(fn, repeats: int) -> list[float]:
    fn()  # warm-up
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(1000 * (time.perf_counter() - start))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")
    print(f"{'model':30s} {'nodes':>6s} {'edges':>7s} {'to_graph ms':>18s} {'capture ms':>11s} {'build ms':>9s} "
          f"{'virtual ms':>10s}")
    for name, model, size in _models():
        shape = input_shape(size)
        graph = to_graph(model, size)
        total = _time(lambda m=model, s=size: to_graph(m, s), args.repeats)
        cap = capture(model, shape)
        cap_ms = _time(lambda m=model, s=shape: capture(m, s), args.repeats)
        build_ms = _time(lambda c=cap: build_graph(c, 50), args.repeats)
        real = graph.edge_index[:, graph.edge_dist == 1].numpy()
        ve_ms = _time(lambda r=real, n=graph.num_nodes: _edges_with_virtual(n, r[0], r[1], 50), args.repeats)
        print(f"{name:30s} {graph.num_nodes:6d} {graph.edge_index.shape[1]:7d} "
              f"{min(total):8.1f} (med {statistics.median(total):5.1f}) {min(cap_ms):11.1f} {min(build_ms):9.1f} "
              f"{min(ve_ms):10.1f}", flush=True)


if __name__ == "__main__":
    main()
