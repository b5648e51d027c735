"""Seconds per GHN training step and peak memory, at the paper's setting: meta-batch 8, 64 images of 32x32.

Reference (GHN-2 code, 2 CPU cores, torch 2.15, measured): 6.1 s per step (GHN forward 0.44 s, networks forward
1.5 s, backward 4.1 s), 11 GB peak memory.

The nets are DeepNets-1M training nets at the paper's widths: the ``ghn2`` width policy
(:mod:`archspace.width_policy`: large nets at width 32, small ones up to 128), run in channels-last memory format
as ``ghn-train`` does. A step's time includes building its meta-batch (graphs and modules) and the optimiser
step. ``--compare`` also times the same steps in the other memory format, in the same process.

Usage::

    python benchmarks/bench_train.py                       # released GHN-2 size, the paper's nets
    python benchmarks/bench_train.py --compare             # and the same steps in NCHW format (ratio)
    python benchmarks/bench_train.py --width-policy uniform  # every net at a uniform width of 32..128 (heavier)
    python benchmarks/bench_train.py --threads 1

Peak memory is the process's peak resident set size (``ru_maxrss``), which includes the Python runtime and the
libraries (about 0.5 GB).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time

REF_STEP_S = 6.1
REF_PEAK_GB = 11.0


def _timed(fn, totals: dict, key: str):
    """``fn`` that adds its wall time (seconds) to ``totals[key]``."""

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    return wrapper


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=5, help="timed steps (after one warm-up step)")
    p.add_argument("--meta-batch", type=int, default=8)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--width", type=int, nargs=2, default=(32, 128), metavar=("LO", "HI"),
                   help="channel width range of the nets (paper: 32 128)")
    p.add_argument("--width-policy", default="ghn2", choices=("ghn2", "uniform"),
                   help="how widths are drawn (archspace.width_policy; paper: ghn2)")
    p.add_argument("--nchw", action="store_true", help="run the nets in NCHW instead of channels-last format")
    p.add_argument("--compare", action="store_true", help="also time the same steps in the other memory format")
    p.add_argument("--max-nodes", type=int, default=2200, help="node cap per meta-batch (paper: 2200)")
    p.add_argument("--hidden", type=int, default=32)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from archspace.dataset import ArchDataset
    from ghn import GHN
    from train.data import TrainBatches, load_digits
    from train.loop import Trainer

    def run(channels_last: bool) -> dict:
        torch.manual_seed(args.seed)
        archs = ArchDataset(split="train", width_range=tuple(args.width), width_policy=args.width_policy,
                            seed=args.seed)
        images = TrainBatches(load_digits(), args.batch, seed=args.seed)
        ghn = GHN(max_shape=(64, 64, 11, 11), num_classes=10, hidden_dim=args.hidden)
        with tempfile.TemporaryDirectory() as tmp:
            # arch_cache: the step's modules stay cached, so counting their parameters afterwards rebuilds nothing.
            trainer = Trainer(ghn, archs, images, tmp, steps=args.steps + 1, meta_batch_size=args.meta_batch,
                              max_nodes=args.max_nodes, ckpt_every=0, progress=False, device="cpu", seed=args.seed,
                              channels_last=channels_last, arch_cache=args.meta_batch)
            phase = {"build": 0.0, "ghn": 0.0, "objective": 0.0}
            archs.get_pair = _timed(archs.get_pair, phase, "build")  # called by trainer.pairs on a cache miss
            ghn.predict_parameters = _timed(ghn.predict_parameters, phase, "ghn")
            trainer.objective.forward = _timed(trainer.objective.forward, phase, "objective")
            times, nodes, params, skipped, phases = [], [], [], 0, []
            step = 0
            for x, y in images.iterate(0, None):
                idx = trainer.sampler.draw(step)
                phase.update(build=0.0, ghn=0.0, objective=0.0)
                t0 = time.perf_counter()
                row = trainer.train_step(step, x, y)
                dt = time.perf_counter() - t0
                split = {"build": phase["build"], "ghn_forward": phase["ghn"],
                         "nets_forward": phase["objective"] - phase["ghn"],
                         "backward_and_update": dt - phase["build"] - phase["objective"]}
                step += 1
                if row["loss"] != row["loss"]:  # skipped (over the node cap)
                    skipped += 1
                    continue
                if step > 1 or skipped:  # the first timed step warms up allocators and kernels
                    times.append(dt)
                    phases.append(split)
                    nodes.append(row["nodes"])
                    params.append(sum(p.numel() for i in idx for p in trainer.pairs[i][1].parameters()))
                if len(times) >= args.steps:
                    break
        mean = sum(times) / len(times)
        out = {"sec_per_step": mean, "min": min(times), "max": max(times),
               "nodes_per_meta_batch": sum(nodes) / len(nodes), "params_per_net_m": sum(params) / len(params)
               / args.meta_batch / 1e6, "steps": len(times), "skipped_over_cap": skipped,
               "format": "channels_last" if channels_last else "nchw",
               "phases_s": {k: sum(p[k] for p in phases) / len(phases) for k in phases[0]}}
        print(f"  {out['format']:>13}: {mean:.2f} s/step (min {out['min']:.2f}, max {out['max']:.2f}, "
              f"{len(times)} steps, {out['nodes_per_meta_batch']:.0f} nodes and "
              f"{out['params_per_net_m']:.2f}M parameters per net on average); "
              f"reference {REF_STEP_S} s -> {REF_STEP_S / mean:.2f}x faster", flush=True)
        print("                 " + ", ".join(f"{k.replace('_', ' ')} {v:.2f} s" for k, v in out["phases_s"].items())
              + " (reference: GHN forward 0.44 s, networks forward 1.5 s, backward 4.1 s)", flush=True)
        return out

    print(f"meta-batch {args.meta_batch}, {args.batch} images 32x32, nets of width {args.width[0]}..{args.width[1]} "
          f"({args.width_policy} policy), GHN hidden {args.hidden}, {torch.get_num_threads()} threads")
    out = run(not args.nchw)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    out.update(peak_gb=peak_gb, threads=torch.get_num_threads())
    print(f"  peak memory {peak_gb:.2f} GB; reference 11 GB -> {REF_PEAK_GB / peak_gb:.1f}x less")
    if args.compare:
        other = run(args.nchw)
        out["compare"] = other
        print(f"  {out['format']} vs {other['format']} on the same steps: "
              f"{other['sec_per_step'] / out['sec_per_step']:.2f}x faster")
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
