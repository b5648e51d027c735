"""Figures for ``ghn rank --validate``, ``ghn finetune --compare``, ``ghn prune`` and ``ghn tune`` (matplotlib, Agg
backend, no display).

- :func:`plot_rank_scatter`: accuracy with GHN-predicted parameters against accuracy after SGD, one point per
  candidate, with Kendall's tau and Spearman's rho in the title (Knyazev et al., NeurIPS 2021, Sec. 5.3).
- :func:`plot_finetune_curves`: training loss and held-out accuracy against SGD steps for a warm-started run
  (predicted parameters) and a run from the default initialisation (paper Sec. 5.4, Fig. 6).
- :func:`plot_sparsity`: accuracy and steps to a target accuracy against the weights remaining, for lottery-ticket
  runs (Frankle & Carbin, ICLR 2019, Fig. 3).
- :func:`plot_coord_checks`: muP's coordinate check, each layer's activation size against width (Yang, Hu et al.,
  2022, "Tensor Programs V", Fig. 5).
- :func:`plot_lr_sweep`: training loss against log2 learning rate, one curve per width, SP and muP side by side
  (Tensor Programs V, Fig. 1).

Figures are written atomically by :func:`archspace.plot.save_figure` (a reader never sees half an image).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

from archspace.plot import save_figure

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot_rank_scatter(predicted: Sequence[float], trained: Sequence[float], path: str, *,
                      labels: Sequence[str] | None = None, tau: float | None = None, rho: float | None = None,
                      x_label: str = "accuracy with predicted parameters (%)",
                      trained_label: str = "accuracy after SGD (%)",
                      baselines: dict[str, float] | None = None) -> str:
    """Scatter plot of a ranking score (x, e.g. predicted-parameter accuracy) against trained accuracy (y), one point
    per candidate, with the Kendall tau of other rankers (the baselines) in the legend.

    Args:
        predicted: accuracy (%) of each candidate with GHN-predicted parameters.
        trained: accuracy (%) of the same candidates after SGD from their default initialisation.
        path: PNG file to write.
        labels: optional candidate names; printed next to the points when there are at most 30.
        tau, rho: Kendall's tau and Spearman's rho to show in the title.
        x_label, trained_label: axis labels.
        baselines: ranker name -> its Kendall tau against the same trained accuracy, listed in the legend.

    Returns:
        ``path``.

    Shapes:
        ``predicted``, ``trained``: ``(C,)``.
    """
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    ax.scatter(predicted, trained, s=18, alpha=0.8, label=x_label.split(" (")[0] + (f": tau {tau:.2f}" if tau is
                                                                                    not None else ""))
    for name, t in (baselines or {}).items():
        ax.plot([], [], " ", label=f"{name}: tau {t:.2f}")  # legend entry only
    if labels is not None and len(labels) <= 30:
        for x, y, name in zip(predicted, trained, labels):
            ax.annotate(name, (x, y), fontsize=6, xytext=(2, 2), textcoords="offset points")
    ax.set_xlabel(x_label)
    ax.set_ylabel(trained_label)
    stats = []
    if tau is not None:
        stats.append(f"Kendall tau = {tau:.3f}")
    if rho is not None:
        stats.append(f"Spearman rho = {rho:.3f}")
    ax.set_title(f"{len(predicted)} candidates" + (": " + ", ".join(stats) if stats else ""))
    if baselines:
        ax.legend(fontsize=7, loc="best", title="Kendall tau vs trained", title_fontsize=7)
    ax.grid(alpha=0.3)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_finetune_curves(runs: dict[str, dict[str, Sequence[float]]], path: str, *, title: str = "") -> str:
    """Training loss and held-out accuracy against steps, for one or more runs, in one PNG with two panels.

    Args:
        runs: run label -> ``{"loss_steps", "loss", "eval_steps", "accuracy"}`` lists (loss per step, accuracy
            in % at the evaluation steps).
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path``.
    """
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for label, run in runs.items():
        ax_loss.plot(run["loss_steps"], run["loss"], label=label, lw=1)
        ax_acc.plot(run["eval_steps"], run["accuracy"], label=label, marker="o", ms=3)
    ax_loss.set_xlabel("SGD step")
    ax_loss.set_ylabel("training loss")
    ax_acc.set_xlabel("SGD step")
    ax_acc.set_ylabel("held-out accuracy (%)")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_sparsity(summary: Sequence[dict], path: str, *, title: str = "", dense: tuple[float, float] | None = None
                  ) -> str:
    """Lottery-ticket figure (Frankle & Carbin, ICLR 2019, Fig. 3/4): held-out accuracy and steps to the target
    accuracy against the percentage of weights remaining (log axis, dense on the left), one line per curve (IMP
    per rewind target, controls, one-shot), the band the standard deviation over seeds.

    Args:
        summary: rows of :meth:`train.prune.PruneRun.summary` (``curve``, ``label``, ``fraction``,
            ``accuracy_mean``, ``accuracy_std``, ``steps_to_target_median``).
        path: PNG file to write.
        title: figure title.
        dense: ``(mean, std)`` of the dense accuracy (%), drawn as a horizontal band.

    Returns:
        ``path``.
    """
    fig, (ax_acc, ax_steps) = plt.subplots(1, 2, figsize=(12, 4.5))
    curves = list(dict.fromkeys(r["curve"] for r in summary))
    for key in curves:
        rs = sorted((r for r in summary if r["curve"] == key and r["accuracy_mean"] is not None),
                    key=lambda r: -r["fraction"])
        if not rs:
            continue
        x = [100 * r["fraction"] for r in rs]
        mean = [r["accuracy_mean"] for r in rs]
        std = [r["accuracy_std"] or 0.0 for r in rs]
        style = "-" if key.startswith("imp") else "--" if key.startswith("oneshot") else ":"
        line, = ax_acc.plot(x, mean, style, marker="o", ms=3, label=rs[0]["label"])
        ax_acc.fill_between(x, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.15)
        reach = [(xi, r["steps_to_target_median"]) for xi, r in zip(x, rs) if r["steps_to_target_median"] is not None]
        if reach:
            ax_steps.plot(*zip(*reach), style, marker="o", ms=3, color=line.get_color(), label=rs[0]["label"])
    if dense is not None:
        ax_acc.axhspan(dense[0] - dense[1], dense[0] + dense[1], color="gray", alpha=0.2, label="dense (+- std)")
    # The y axis shows the IMP curves and the controls in full; a one-shot curve that collapses (a layer pruned
    # away) leaves through the bottom rather than squashing the rest.
    main = [r["accuracy_mean"] - (r["accuracy_std"] or 0.0) for r in summary
            if r["accuracy_mean"] is not None and not r["curve"].startswith("oneshot")]
    if main:
        top = max(r["accuracy_mean"] + (r["accuracy_std"] or 0.0) for r in summary if r["accuracy_mean"] is not None)
        ax_acc.set_ylim(max(0.0, min(main) - 5.0), min(100.5, top + 1.0))
    for ax in (ax_acc, ax_steps):
        ax.set_xscale("log")
        ax.invert_xaxis()
        ax.set_xlabel("weights remaining (%)")
        ax.grid(alpha=0.3, which="both")
    ax_acc.set_ylabel("held-out accuracy (%)")
    ax_steps.set_ylabel("SGD steps to the target accuracy (median)")
    ax_acc.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_coord_checks(checks: Sequence, path: str, title: str = "") -> str:
    """muP's coordinate check (:mod:`train.coord_check`): one panel per :class:`~train.coord_check.CoordCheck`,
    SP and muP in columns, default and predicted initialisation in rows; each line is one layer's mean absolute
    output at the last step against width (log-log); a panel's title gives its worst layer's max/min ratio.

    Args:
        checks: the checks, one per parametrisation and initialisation.
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path``.

    Raises:
        ValueError: no checks.
    """
    if not checks:
        raise ValueError("no coordinate checks to plot")
    from ghn.warm_start import INITS

    inits = sorted({c.init for c in checks}, key=(["default"] + list(INITS)).index)
    params = sorted({c.param for c in checks}, key=["sp", "mup"].index)
    fig, axes = plt.subplots(len(inits), len(params), figsize=(5.5 * len(params), 4 * len(inits)), squeeze=False)
    for c in checks:
        ax = axes[inits.index(c.init)][params.index(c.param)]
        for layer in c.sizes:
            ax.plot(c.widths, c.last(layer), marker="o", ms=3, lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_title(f"{'muP' if c.param == 'mup' else 'SP'}, {c.init} init: worst layer ratio "
                     f"{max(c.ratios().values()):.2g}", fontsize=10)
        ax.set_xlabel("width")
        ax.set_ylabel("mean |activation| at the last step")
        ax.grid(alpha=0.3)
    if len(checks[0].sizes) <= 12:  # a legend of layer names while it stays readable
        axes[0][0].legend(list(checks[0].sizes), fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120, bbox_inches="tight")


def plot_lr_sweep(losses: dict[str, dict[int, dict[float, float]]], path: str, title: str = "") -> str:
    """Tensor Programs V's Figure 1: final training loss against log2 learning rate, one line per width, one panel
    per parametrisation; diverged runs (``inf``/``nan``) are left out, the y axis is logarithmic and ends at 3
    (above the chance loss of 10 classes, 2.3, nothing trained).

    Args:
        losses: ``"sp"``/``"mup"`` -> width -> learning rate -> loss.
        path: PNG file to write.
        title: figure title.

    Returns:
        ``path``.
    """
    import math

    params = [p for p in ("sp", "mup") if p in losses]
    fig, axes = plt.subplots(1, len(params), figsize=(5.5 * len(params), 4), squeeze=False, sharey=True)
    finite = [v for p in params for w in losses[p].values() for v in w.values() if math.isfinite(v)]
    cmap = plt.get_cmap("viridis")
    for ax, p in zip(axes[0], params):
        widths = sorted(losses[p])
        for k, w in enumerate(widths):
            pts = sorted((math.log2(lr), v) for lr, v in losses[p][w].items() if math.isfinite(v))
            if pts:
                ax.plot(*zip(*pts), marker="o", ms=3, lw=1.2, color=cmap(k / max(1, len(widths) - 1)),
                        label=f"width {w}")
        ax.set_title("muP" if p == "mup" else "SP (standard parametrisation)", fontsize=10)
        ax.set_xlabel("log2 learning rate")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("training loss")
    if finite:  # log scale up to about chance level (ln 10 = 2.3 for 10 classes): above it nothing trained
        axes[0][0].set_yscale("log")
        low = min(finite) * 0.9
        axes[0][0].set_ylim(low, max(low * 2, min(3.0, max(finite) * 1.05)))
    axes[0][-1].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120, bbox_inches="tight")
