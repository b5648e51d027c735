"""Seconds per GHN training step, its phases, its floating-point operations and the fraction of the machine's
measured peak it reaches, at the paper's setting and at the digits default of ``ghn-train``.

Settings (``--setting``):

- ``paper`` (default): meta-batch 8, 64 images of 32x32, DeepNets-1M training nets at the paper's widths (the
  ``ghn2`` width policy of :mod:`archspace.width_policy`: large nets at width 32, small ones up to 128), GHN hidden
  size 32. Reference (GHN-2 code, 2 CPU cores, torch 2.15, measured): 6.1 s per step (GHN forward 0.44 s,
  networks forward 1.5 s, backward 4.1 s), 11 GB peak memory.
- ``default``: the step of the README's first command, read from ``conf/`` (``ghn-train``'s defaults: digits at the
  configured image size, its training pool, widths, meta-batch, GHN size and node caps; ``--override`` changes any
  of them, e.g. ``--override data.image_size=32 archspace.width_range=[8,8]`` for the setting before the default
  moved to 16x16 images and widths 8..32). The timed steps' nets are built before timing, as they are cached after
  the first few hundred steps of a run.

A step's time includes building its meta-batch and the optimiser step; the phases are building the meta-batch, GHN
forward, networks forward, and backward with the update. The FLOPs of a step are counted by
``torch.utils.flop_counter.FlopCounterMode`` (matrix products, convolutions and attention, forward and backward;
element-wise ops are not counted) on every timed step run again (their mean is the FLOPs per step); each step's FLOPs
over its own time is its rate, and the median rate (earlier versions divided the first 5 steps' mean FLOPs by the
median time of all the timed steps, other nets at ``--setting default``'s 40 steps) is divided by the
machine's peak, measured in the same run as the best of several float32 2048x2048 matrix products with the same
number of threads. ``--compare`` also times the same steps in the other memory format; ``--compare-bn`` with
``torch.nn.BatchNorm2d``'s own backward instead of :class:`archspace.norm.BatchNorm2d`'s (ratios in one process).
``--compare-amp`` with the networks under CPU bfloat16 autocast (:func:`cpu_bfloat16_nets`).
``--profile N`` runs the first ``N`` timed steps again under ``torch.profiler`` and prints where the CPU time goes:
the networks' convolutions forward and backward (the backward of depthwise ones apart), matrix products (the
GHN's MLPs and the networks' linear layers), BatchNorm, and the operators with the most self time.

Usage::

    python benchmarks/bench_train.py                          # the paper's setting
    python benchmarks/bench_train.py --setting default        # the digits default of ghn-train
    python benchmarks/bench_train.py --setting default --compare-bn --steps 40
    python benchmarks/bench_train.py --compare                # and the same steps in NCHW format (ratio)
    python benchmarks/bench_train.py --width-policy uniform   # paper: every net at a uniform width of 32..128
    python benchmarks/bench_train.py --threads 1
    python benchmarks/bench_train.py --setting default --profile 10  # where a step's CPU time goes
    python benchmarks/bench_train.py --compare-amp --steps 8     # bfloat16 nets on the CPU (AMX, AVX512-BF16)

Peak memory is the process's peak resident set size (``ru_maxrss``), which includes the Python runtime and the
libraries (about 0.5 GB).
"""

from __future__ import annotations

import argparse
import contextlib
import resource
import statistics
import sys
import tempfile
import time

REF_STEP_S = 6.1
REF_PEAK_GB = 11.0
PEAK_MATMUL_N = 2048


def _timed(fn, totals: dict, key: str):
    """``fn`` that adds its wall time (seconds) to ``totals[key]``."""

    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            totals[key] += time.perf_counter() - t0

    return wrapper


def peak_flops(repeats: int = 5) -> float:
    """The machine's measured peak in FLOP/s: the best of ``repeats`` float32 ``2048 x 2048`` matrix products with
    the current number of torch threads."""
    import torch

    a, b = torch.randn(PEAK_MATMUL_N, PEAK_MATMUL_N), torch.randn(PEAK_MATMUL_N, PEAK_MATMUL_N)
    a @ b  # warm-up
    best = min(_seconds(lambda: a @ b) for _ in range(repeats))
    return 2 * PEAK_MATMUL_N**3 / best


def _seconds(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@contextlib.contextmanager
def plain_batchnorm():
    """Within the block, :class:`archspace.norm.BatchNorm2d` runs as ``torch.nn.BatchNorm2d`` (the baseline of
    ``--compare-bn``)."""
    import torch.nn as nn

    from archspace.norm import BatchNorm2d

    fast = BatchNorm2d.forward
    BatchNorm2d.forward = nn.BatchNorm2d.forward
    try:
        yield
    finally:
        BatchNorm2d.forward = fast


@contextlib.contextmanager
def cpu_bfloat16_nets():
    """Within the block, the networks' forward pass (and with it their backward) runs under CPU bfloat16 autocast,
    each BatchNorm in float32 on a float32 copy of its input (as the README's earlier CPU autocast measurement ran
    it); the GHN stays in float32. ``--compare-amp`` times this against float32: what ``train.amp`` (CUDA only)
    would give on a CPU."""
    import torch
    import torch.nn as nn

    import train.meta_loss as meta_loss

    logits, batchnorm = meta_loss.net_logits, nn.BatchNorm2d.forward

    def net_logits(model, params, x):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return logits(model, params, x)

    def batchnorm_float32(self, input):  # noqa: A002 (the name nn.BatchNorm2d uses)
        with torch.autocast("cpu", enabled=False):
            return batchnorm(self, input.float())

    meta_loss.net_logits, nn.BatchNorm2d.forward = net_logits, batchnorm_float32
    try:
        yield
    finally:
        meta_loss.net_logits, nn.BatchNorm2d.forward = logits, batchnorm


def default_setting(overrides) -> dict:
    """The objects and trainer arguments of ``ghn-train``'s default step, composed from ``conf/`` with
    ``overrides`` (Hydra syntax)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from train.cli import build_arch_dataset, build_ghn, load_data
    from train.config import find_conf_dir

    with initialize_config_dir(config_dir=find_conf_dir("train"), version_base="1.3"):
        c = OmegaConf.to_container(compose("train", overrides=list(overrides)), resolve=True)
    seed = int(c["seed"])
    data = load_data(c["data"])
    t, o = c["train"], c["optim"]
    return {"data": data, "batch": c["data"]["batch_size"],
            "archs": lambda: build_arch_dataset(c["archspace"], data.num_classes, data.image_size, seed),
            "ghn": lambda: build_ghn(c["ghn"], data.num_classes, data.image_size), "seed": seed,
            "trainer": dict(meta_batch_size=t["meta_batch_size"], max_nodes=t["max_nodes"],
                            max_net_nodes=t.get("max_net_nodes", 0), optimizer=o["name"], lr=o["lr"],
                            weight_decay=o["weight_decay"], lr_schedule=o.get("schedule", "step"), clip=t["clip"],
                            channels_last=bool(t.get("channels_last", True))),
            "describe": (f"digits default: meta-batch {t['meta_batch_size']}, {c['data']['batch_size']} images "
                         f"{data.image_size}x{data.image_size}, nets of width {c['archspace']['width_range']} "
                         f"({c['archspace']['width_policy']}, a share {c['archspace']['min_width_share']} at "
                         f"the narrowest), at most {t.get('max_net_nodes')} nodes, GHN hidden "
                         f"{c['ghn'].get('hidden_dim')}")}


def paper_setting(args) -> dict:
    """The objects and trainer arguments of the paper's step (module docstring)."""
    from archspace.dataset import ArchDataset
    from ghn import GHN
    from train.data import load_digits

    return {"data": load_digits(), "batch": args.batch, "seed": args.seed,
            "archs": lambda: ArchDataset(split="train", width_range=tuple(args.width),
                                         width_policy=args.width_policy, seed=args.seed),
            "ghn": lambda: GHN(max_shape=(64, 64, 11, 11), num_classes=10, hidden_dim=args.hidden),
            "trainer": dict(meta_batch_size=args.meta_batch, max_nodes=args.max_nodes, channels_last=not args.nchw),
            "describe": (f"paper setting: meta-batch {args.meta_batch}, {args.batch} images 32x32, nets of width "
                         f"{args.width[0]}..{args.width[1]} ({args.width_policy} policy), GHN hidden {args.hidden}")}


def _print_profile(events, seconds_per_step: float, steps: int) -> dict:
    """Print and return the shares of the profiled CPU time (self time of each operator, summed over ``steps``)."""
    total = sum(e.self_cpu_time_total for e in events) or 1.0

    def share(pred) -> float:
        return sum(e.self_cpu_time_total for e in events if pred(e)) / total

    def depthwise(e) -> bool:  # weight (C, 1, kh, kw) with C > 1: the third input of convolution_backward
        shapes = e.input_shapes
        return len(shapes) > 2 and len(shapes[2]) == 4 and shapes[2][1] == 1 and shapes[2][0] > 1

    shares = {
        "convolution backward": share(lambda e: e.key == "aten::convolution_backward"),
        "  of which depthwise": share(lambda e: e.key == "aten::convolution_backward" and depthwise(e)),
        "convolution forward": share(lambda e: e.key in ("aten::mkldnn_convolution", "aten::_convolution",
                                                          "aten::_slow_conv2d_forward", "aten::conv_depthwise2d")),
        "matrix products (mm, addmm, bmm)": share(lambda e: e.key in ("aten::mm", "aten::addmm", "aten::bmm")),
        "BatchNorm forward and backward": share(lambda e: "batch_norm" in e.key),
    }
    print(f"  profile of {steps} steps ({total / 1e6 / steps:.3f} s of operator self time a step against "
          f"{seconds_per_step:.3f} s of wall time): " + ", ".join(f"{k.strip()} {100 * v:.1f}%"
                                                                 for k, v in shares.items()), flush=True)
    by_key: dict[str, float] = {}
    for e in events:
        by_key[e.key] = by_key.get(e.key, 0.0) + e.self_cpu_time_total
    top = sorted(by_key.items(), key=lambda kv: -kv[1])[:12]
    print("  top operators by self time: " + ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in top), flush=True)
    return {"shares": shares, "top": {k: v / total for k, v in top}}


def run(setting: dict, steps: int, channels_last: bool, peak: float, label: str, profile: int = 0) -> dict:
    """Time ``steps`` training steps (after a warm-up step) of ``setting``; print and return the figures."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from train.data import TrainBatches
    from train.loop import Trainer

    torch.manual_seed(setting["seed"])
    archs, ghn = setting["archs"](), setting["ghn"]()
    images = TrainBatches(setting["data"], setting["batch"], seed=setting["seed"])
    kwargs = dict(setting["trainer"], channels_last=channels_last)
    meta_batch = kwargs["meta_batch_size"]
    with tempfile.TemporaryDirectory() as tmp:
        # arch_cache: the timed steps' modules stay cached (built before timing; their parameters counted after).
        trainer = Trainer(ghn, archs, images, tmp, steps=10**6, ckpt_every=0, progress=False, device="cpu",
                          seed=setting["seed"], arch_cache=meta_batch * (4 * steps + 8), **kwargs)
        for s in range(steps + steps // 4 + 2):  # build the nets of the steps to be timed (a few may be skipped;
            # the nets of any later step are built while timed, in the build phase)
            for i in trainer.sampler.draw(s):
                trainer.pairs[i]
        phase = {"build": 0.0, "ghn": 0.0, "objective": 0.0}
        trainer._meta_batch = _timed(trainer._meta_batch, phase, "build")
        ghn.predict_parameters = _timed(ghn.predict_parameters, phase, "ghn")
        trainer.objective.forward = _timed(trainer.objective.forward, phase, "objective")
        times, nodes, params, phases, timed_steps, skipped = [], [], [], [], [], 0
        batches = images.iterate(0, None)
        for step in range(4 * steps + 4):
            x, y = next(batches)
            phase.update(build=0.0, ghn=0.0, objective=0.0)
            t0 = time.perf_counter()
            row = trainer.train_step(step, x, y)
            dt = time.perf_counter() - t0
            if row["loss"] != row["loss"]:  # skipped (over the node cap)
                skipped += 1
                continue
            if step == 0:  # the first step warms up allocators and kernels
                continue
            times.append(dt)
            timed_steps.append((step, x, y))
            phases.append({"build": phase["build"], "ghn_forward": phase["ghn"],
                           "nets_forward": phase["objective"] - phase["ghn"],
                           "backward_and_update": dt - phase["build"] - phase["objective"]})
            nodes.append(row["nodes"])
            idx = trainer.sampler.draw(step)
            params.append(sum(p.numel() for i in idx for p in trainer.pairs[i][1].parameters()))
            if len(times) >= steps:
                break
        # FLOPs of every timed step (each step draws other nets), each against that step's own time; the median of
        # those rates is robust to a step slowed by another job
        step_flops = []
        for step, x, y in timed_steps:
            with FlopCounterMode(display=False) as counter:
                trainer.train_step(step, x, y)
            step_flops.append(counter.get_total_flops())
        flops = statistics.mean(step_flops)  # per step
        rate = statistics.median(f / t for f, t in zip(step_flops, times))  # FLOP/s
        events = None
        if profile:
            from torch.profiler import ProfilerActivity
            from torch.profiler import profile as torch_profile

            with torch_profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
                for step, x, y in timed_steps[:profile]:
                    trainer.train_step(step, x, y)
            events = prof.key_averages(group_by_input_shape=True)
    med = statistics.median(times)
    out = {"label": label, "sec_per_step": med, "mean": statistics.mean(times), "min": min(times),
           "max": max(times), "steps": len(times), "skipped_over_cap": skipped,
           "nodes_per_meta_batch": statistics.mean(nodes),
           "params_per_net_m": statistics.mean(params) / meta_batch / 1e6,
           "format": "channels_last" if channels_last else "nchw",
           "phases_s": {k: statistics.median(p[k] for p in phases) for k in phases[0]},
           "gflop_per_step": flops / 1e9, "gflops_achieved": rate / 1e9,
           "fraction_of_peak": rate / peak}
    print(f"  {label:>22}: {med:.3f} s/step median (mean {out['mean']:.3f}, min {out['min']:.3f}, max "
          f"{out['max']:.3f}; {len(times)} steps, {out['nodes_per_meta_batch']:.0f} nodes and "
          f"{out['params_per_net_m']:.3f}M parameters per net on average)", flush=True)
    print("  " + " " * 22 + "  phases (median s): " + ", ".join(
        f"{k.replace('_', ' ')} {v:.3f}" for k, v in out["phases_s"].items()), flush=True)
    print("  " + " " * 22 + f"  {out['gflop_per_step']:.2f} GFLOP per step -> {out['gflops_achieved']:.2f} GFLOP/s, "
          f"{100 * out['fraction_of_peak']:.1f}% of the measured peak", flush=True)
    if events is not None:
        out["profile"] = _print_profile(events, med, min(profile, len(timed_steps)))
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--setting", default="paper", choices=("paper", "default"),
                   help="the paper's step or the digits default of ghn-train (module docstring)")
    p.add_argument("--override", nargs="*", default=[], metavar="KEY=VALUE",
                   help="--setting default: Hydra overrides of ghn-train's configuration")
    p.add_argument("--steps", type=int, default=None,
                   help="timed steps after one warm-up step (default: 5 paper, 40 default)")
    p.add_argument("--meta-batch", type=int, default=8, help="paper setting: nets per step")
    p.add_argument("--batch", type=int, default=64, help="paper setting: images per step")
    p.add_argument("--width", type=int, nargs=2, default=(32, 128), metavar=("LO", "HI"),
                   help="paper setting: channel width range of the nets (paper: 32 128)")
    p.add_argument("--width-policy", default="ghn2", choices=("ghn2", "uniform", "loguniform"),
                   help="paper setting: how widths are drawn (archspace.width_policy; paper: ghn2)")
    p.add_argument("--nchw", action="store_true", help="run the nets in NCHW instead of channels-last format")
    p.add_argument("--compare", action="store_true", help="also time the same steps in the other memory format")
    p.add_argument("--compare-bn", action="store_true",
                   help="also time the same steps with torch.nn.BatchNorm2d's multi-threaded backward")
    p.add_argument("--compare-amp", action="store_true",
                   help="also time the same steps with the networks under CPU bfloat16 autocast")
    p.add_argument("--max-nodes", type=int, default=2200, help="paper setting: node cap per meta-batch (2200)")
    p.add_argument("--hidden", type=int, default=32, help="paper setting: GHN hidden size (released GHN-2: 32)")
    p.add_argument("--profile", type=int, default=0, metavar="N",
                   help="also profile the first N timed steps with torch.profiler and print the CPU time's shares")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    import torch

    from ghn.threads import set_threads

    set_threads(args.threads)  # as ghn-train: also flushes denormals, which must precede any parallel op
    steps = args.steps or (5 if args.setting == "paper" else 40)
    setting = paper_setting(args) if args.setting == "paper" else default_setting(args.override)
    channels_last = setting["trainer"].get("channels_last", True) and not args.nchw
    peak = peak_flops()
    print(f"{setting['describe']}; {torch.get_num_threads()} threads; measured peak {peak / 1e9:.1f} GFLOP/s "
          f"(float32 {PEAK_MATMUL_N}x{PEAK_MATMUL_N} matrix product)", flush=True)
    out = run(setting, steps, channels_last, peak, "this code", profile=args.profile)
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB -> GiB (Linux)
    out.update(peak_gb=peak_gb, threads=torch.get_num_threads(), peak_gflops=peak / 1e9)
    print(f"  peak memory {peak_gb:.2f} GB" + (" (with the profiler's records)"
                                            if args.profile else ""), end="")
    if args.setting == "paper":
        memory = "" if args.profile else f"reference {REF_PEAK_GB} GB -> {REF_PEAK_GB / peak_gb:.1f}x less; "
        print(f"; {memory}reference step {REF_STEP_S} s -> {REF_STEP_S / out['sec_per_step']:.2f}x faster", end="")
    print(flush=True)
    if args.compare_bn:
        with plain_batchnorm():
            other = run(setting, steps, channels_last, peak, "nn.BatchNorm2d backward")
        out["compare_bn"] = other
        print(f"  archspace.norm.BatchNorm2d vs nn.BatchNorm2d on the same steps: "
              f"{other['sec_per_step'] / out['sec_per_step']:.2f}x faster", flush=True)
    if args.compare_amp:
        with cpu_bfloat16_nets():
            other = run(setting, steps, channels_last, peak, "bfloat16 nets (CPU)")
        out["compare_amp"] = other
        print(f"  float32 vs bfloat16 nets on the same steps: {other['sec_per_step'] / out['sec_per_step']:.2f}x "
              "faster", flush=True)
    if args.compare:
        other = run(setting, steps, not channels_last, peak, "nchw" if channels_last else "channels_last")
        out["compare"] = other
        print(f"  {out['format']} vs {other['format']} on the same steps: "
              f"{other['sec_per_step'] / out['sec_per_step']:.2f}x faster", flush=True)
    return out


if __name__ == "__main__":
    main(sys.argv[1:])
