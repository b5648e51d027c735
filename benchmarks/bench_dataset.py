"""Benchmark of the DeepNets-1M storage: build time and size of N train nets (extrapolated to a million), and the
time to load a meta-batch of 8 graphs with their models.

Usage::

    python benchmarks/bench_dataset.py --num 2000 --workers 2

The reference generator (``ppuda``'s ``experiments/net_generator.py``, measured on 2 CPU cores, see
``GHN2_REFERENCE.md``) takes 93.7 s per 1,000 nets and stores 42.8 MB per 1,000 nets (about 43 GB per million).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from archspace.dataset import ArchDataset
from archspace.meta_batch import meta_batches
from archspace.sampler import get_genotype
from archspace.shards import build_split

REF_SECONDS_PER_1000 = 93.7
REF_MB_PER_1000 = 42.8


def folder_bytes(path: str) -> int:
    """Total size of the files in ``path``."""
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num", type=int, default=2000, help="train nets to build")
    parser.add_argument("--workers", type=int, default=2, help="build processes")
    parser.add_argument("--shard-size", type=int, default=500, help="nets per shard file")
    parser.add_argument("--meta-batches", type=int, default=5, help="meta-batches of 8 to load")
    parser.add_argument("--loader-workers", type=int, default=2, help="DataLoader workers (also timed: 0)")
    args = parser.parse_args()

    start = time.perf_counter()
    for i in range(500):
        get_genotype("train", i)
    sample_ms = (time.perf_counter() - start) / 500 * 1e3

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        build_split("train", root, num=args.num, workers=args.workers, shard_size=args.shard_size)
        build_s = time.perf_counter() - start
        size = folder_bytes(root)

        ds = ArchDataset(root, "train", num=args.num, width_range=(32, 128))
        loads = {}
        for workers in sorted({0, args.loader_workers}):
            loader = meta_batches(ds, num_steps=None, meta_batch_size=8, max_nodes=2200, num_workers=workers)
            it = iter(loader)
            if workers:
                next(it)  # worker start-up
            times, nodes = [], []
            for _ in range(args.meta_batches):
                t = time.perf_counter()
                batch, models = next(it)
                times.append(time.perf_counter() - t)
                nodes.append(batch.num_nodes)
            loads[workers] = (times, nodes)
            del it, loader

    per_1000 = build_s / args.num * 1000
    print(f"sampling one train genotype (incl. parameter check): {sample_ms:.2f} ms")
    print(f"build {args.num} train nets with {args.workers} workers: {build_s:.2f} s "
          f"= {per_1000:.2f} s per 1,000 nets (reference: {REF_SECONDS_PER_1000} s, "
          f"{REF_SECONDS_PER_1000 / per_1000:.0f}x faster)")
    print(f"  extrapolated to 1,000,000 nets: {per_1000 * 1000 / 60:.1f} min "
          f"(reference: {REF_SECONDS_PER_1000 * 1000 / 3600:.1f} h)")
    print(f"size: {size / 1e3:.1f} kB = {size / args.num:.1f} bytes per net; extrapolated to 1,000,000 nets: "
          f"{size / args.num * 1e6 / 1e6:.1f} MB (reference: {REF_MB_PER_1000 * 1000 / 1e3:.1f} GB)")
    for workers, (times, nodes) in loads.items():
        print(f"meta-batch of 8 (graphs + models, widths 32..128, DataLoader workers={workers}): "
              f"mean {sum(times) / len(times):.2f} s, min {min(times):.2f} s over {len(times)} meta-batches "
              f"(mean {sum(nodes) / len(nodes):.0f} nodes)")


if __name__ == "__main__":
    main()
