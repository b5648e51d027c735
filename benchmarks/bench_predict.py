"""Time GHN-2 parameter prediction (graph construction included) and peak memory, per model.

Usage::

    python benchmarks/bench_predict.py                       # all cases, 1 thread (predict's default), 5 repeats
    python benchmarks/bench_predict.py --cases resnet50_c10 darts800 --repeats 10

Each case runs in its own subprocess so that its peak resident memory (``ru_maxrss``) is its own. The time is the
fastest of ``--repeats`` warm runs of ``model = ghn(model)`` (graph built from the model each time; the
median is printed too) and its CPU time (``process_time``; on a machine shared with other jobs the
wall time is inflated by waiting for a core, the CPU time much less so, and with ``--threads 1`` it approximates the
wall time on an idle machine). The reference figures are the ones measured with facebookresearch/ppuda on a machine of
this class (2 CPU cores, torch 2.15; see ``docs/GHN2_REFERENCE.md``). By default the GHN is the reference-format
checkpoint ``../shared/ghn2/ghn2_cifar10_randinit_seed0.pt`` (the released CIFAR-10 configuration), else a freshly
initialised GHN-2 of that configuration.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
import warnings

#: case -> (description, reference seconds or None)
CASES = {
    "resnet18_c10": ("torchvision resnet18, CIFAR recipe, 32x32", 0.070),
    "resnet50_c10": ("torchvision resnet50, CIFAR recipe, 32x32", 0.160),
    "resnet50_in": ("torchvision resnet50, 224x224", 0.200),
    "resnet152_c10": ("torchvision resnet152, CIFAR recipe, 32x32", 0.62),
    "darts800": ("DeepNets-1M predefined/2 (DARTS-V2, ~800 nodes), 32x32", 1.80),
}
DEFAULT_CKPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "ghn2",
                            "ghn2_cifar10_randinit_seed0.pt")


def _build(case: str):
    import torchvision

    import archspace

    if case == "darts800":
        return archspace.get_net("predefined", 2, num_classes=10), 32
    name = case.split("_")[0]
    if case.endswith("_in"):
        return torchvision.models.get_model(name, num_classes=1000), 224
    return archspace.adapt_small_input(torchvision.models.get_model(name, num_classes=10)), 32


def run_child(case: str, ckpt: str, repeats: int, threads: int) -> dict:
    """Time one case in this process; returns a JSON-able dict."""
    warnings.filterwarnings("ignore")
    import torch

    from ghn import GHN

    torch.set_num_threads(threads)
    ghn = GHN.load(ckpt) if os.path.exists(ckpt) else GHN().eval()
    model, size = _build(case)
    # A 1000-class model with a GHN of another class count (the digits GHNs have 10): its classifier stays at its
    # default initialisation, as `ghn predict --keep-classifier-init` does; everything else is predicted.
    keep = ghn.num_classes != 1000 and case.endswith("_in")
    kwargs = dict(input_size=size, return_report=True, threads=threads, keep_classifier_init=keep)
    _, report = ghn(model, **kwargs)  # warm-up
    times, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        _, report = ghn(model, **kwargs)
        times.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    import archspace

    graph = archspace.to_graph(model, size, ve_cutoff=50)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"case": case, "nodes": graph.num_nodes, "edges": graph.num_edges, "min_s": min(times), "cpu_s": min(cpu),
            "median_s": statistics.median(times), "peak_rss_mb": peak_mb, "predicted": len(report.predicted),
            "untouched": len(report.untouched)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cases", nargs="*", default=list(CASES), choices=list(CASES))
    p.add_argument("--ckpt", default=DEFAULT_CKPT)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads of the prediction (GHN.predict's own default is 1: before this flag reached "
                        "it, every run measured one thread whatever --threads said)")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(run_child(args.child, args.ckpt, args.repeats, args.threads)))
        return 0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"threads={args.threads} repeats={args.repeats} load average={load:.1f} on {os.cpu_count()} CPUs")
    print(f"{'case':15s} {'nodes':>6s} {'min ms':>8s} {'median ms':>10s} {'cpu ms':>7s} {'peak MB':>8s} "
          f"{'ref ms':>7s} {'speed-up':>8s}  description")
    for case in args.cases:
        out = subprocess.run([sys.executable, __file__, "--child", case, "--ckpt", args.ckpt, "--repeats",
                              str(args.repeats), "--threads", str(args.threads)], capture_output=True, text=True)
        if out.returncode != 0:
            print(f"{case:15s} FAILED: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else '?'}")
            continue
        r = json.loads(out.stdout.strip().splitlines()[-1])
        desc, ref = CASES[case]
        speed = f"{ref / r['min_s']:.1f}x" if ref else "-"
        print(f"{case:15s} {r['nodes']:6d} {r['min_s'] * 1000:8.1f} {r['median_s'] * 1000:10.1f} "
              f"{r['cpu_s'] * 1000:7.1f} "
              f"{r['peak_rss_mb']:8.0f} {ref * 1000 if ref else float('nan'):7.0f} {speed:>8s}  {desc}"
              + ("" if r["untouched"] == 0 else f" ({r['untouched']} params untouched)"), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
