"""Pictures of an evaluation: reliability diagrams, per-class accuracy, test distributions, priors.

Every function draws on a `matplotlib.figure.Figure` (no pyplot, so no display and no global
backend state; a notebook's inline backend is left alone), writes a PNG to `path` and returns the
figure. Accuracies are in percent.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from ltx import files, metrics

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_DPI = 120


def _figure(**kwargs) -> Figure:
    # matplotlib is imported on the first picture: a training run that draws none (or only at
    # its end) does not pay its 0.8 s import at launch.
    from matplotlib.figure import Figure
    return Figure(**kwargs)


def _save(fig: Figure, path: str) -> Figure:
    """Writes `fig` as a PNG to `path` through the path layer (a URL too), whole or not at
    all: rendered in memory first."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=_DPI, bbox_inches="tight")
    files.write_text(path, buffer.getvalue())
    return fig


def reliability_diagrams(path: str, panels: Mapping[str, np.ndarray], labels: np.ndarray, *,
                         num_bins: int = metrics.DEFAULT_NUM_BINS) -> Figure:
    """One reliability diagram per entry of `panels` (title -> logits [N, C]), side by side.

    Bars: accuracy of the samples in each (l, u] confidence bin; red: the gap to the bin's mean
    confidence; the diagonal is perfect calibration. The bottom strip shows how many samples each
    bin holds (log scale), since a bin of one or two samples makes a large but meaningless gap.
    """
    names = list(panels)
    fig = _figure(figsize=(3.2 * len(names), 4.2))
    grid = fig.add_gridspec(2, len(names), height_ratios=(3, 1), hspace=0.08, wspace=0.25)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    centers, width = (edges[:-1] + edges[1:]) / 2, 1.0 / num_bins
    for i, name in enumerate(names):
        logits = np.asarray(panels[name])
        bins = metrics.calibration_bins(logits, labels, num_bins=num_bins)
        count, conf, acc = (np.asarray(x) for x in bins)
        ece = 100 * float(metrics.expected_calibration_error(logits, labels, num_bins=num_bins))
        top = fig.add_subplot(grid[0, i])
        filled = count > 0
        top.bar(centers[filled], acc[filled], width=width, color="tab:blue", edgecolor="black",
                linewidth=0.5, label="accuracy")
        gap_bottom = np.minimum(acc, conf)[filled]
        top.bar(centers[filled], np.abs(acc - conf)[filled], bottom=gap_bottom, width=width,
                facecolor="none", edgecolor="tab:red", hatch="///", linewidth=0.8,
                label="gap to confidence")
        top.plot([0, 1], [0, 1], "k--", linewidth=1, label="perfect")
        top.set(xlim=(0, 1), ylim=(0, 1), title=f"{name}\nECE {ece:.2f}%")
        top.tick_params(labelbottom=False)
        if i == 0:
            top.set_ylabel("accuracy in bin")
            top.legend(loc="upper left", fontsize=8)
        bottom = fig.add_subplot(grid[1, i], sharex=top)
        bottom.bar(centers, np.maximum(count, 0), width=width, color="gray", edgecolor="black",
                   linewidth=0.5)
        bottom.set_yscale("symlog", linthresh=1)
        bottom.set_xlabel("confidence (max softmax)")
        if i == 0:
            bottom.set_ylabel("samples")
    return _save(fig, path)


def per_class_accuracy(path: str, class_counts: np.ndarray, accuracies: Mapping[str, np.ndarray],
                       *, many_threshold: int = 100, few_threshold: int = 20) -> Figure:
    """Per-class test accuracy (y, %) against the class's training images (x, log scale).

    `accuracies` maps a series name (ensemble, expert k) to float [C] fractions. Each ensemble
    point is labelled with its class id; dotted lines mark the shot-group thresholds.
    """
    counts = np.asarray(class_counts, np.float64)
    fig = _figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    markers = "os^vDP*X"
    for i, (name, acc) in enumerate(accuracies.items()):
        acc = 100 * np.asarray(acc, np.float64)
        main = i == 0
        ax.plot(counts, acc, marker=markers[i % len(markers)], linestyle="-" if main else ":",
                linewidth=2 if main else 1, markersize=7 if main else 5, alpha=1 if main else 0.8,
                label=name, zorder=3 if main else 2)
        if main:
            for c, (x, y) in enumerate(zip(counts, acc)):
                ax.annotate(str(c), (x, y), textcoords="offset points", xytext=(0, 7),
                            ha="center", fontsize=8)
    for threshold in (few_threshold, many_threshold):
        if counts.min() <= threshold * 1.5 and counts.max() >= threshold / 1.5:
            ax.axvline(threshold, color="gray", linestyle=":", linewidth=1)
            ax.text(threshold, 1.0, f" {threshold}", transform=ax.get_xaxis_transform(),
                    va="top", fontsize=8, color="gray")
    ax.set_xscale("log")
    ticks = np.unique(counts[counts > 0])
    if ticks.size > 12:  # Many classes: a dozen of their counts, spread over the range.
        ticks = np.unique(ticks[np.linspace(0, ticks.size - 1, 12).round().astype(int)])
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.set_xticks([], minor=True)
    ax.set(xlabel="training images of the class (log scale)", ylabel="test accuracy (%)",
           title="Per-class accuracy vs training count (labels: class id)")
    low = np.nanmin([np.nanmin(100 * np.asarray(a)) for a in accuracies.values()])
    ax.set_ylim(max(0.0, min(low - 5, 90.0)), 102)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    return _save(fig, path)


def test_distribution_accuracy(path: str, names: Sequence[str], plain: Sequence[float],
                               corrected: Sequence[float] | None,
                               experts: Mapping[str, Sequence[float]] | None = None) -> Figure:
    """Top-1 accuracy (%) on each test distribution, without and with the prior correction.

    `names` run from forward-50 (head-heavy) through uniform to backward-50 (tail-heavy);
    `experts` optionally adds each expert's uncorrected accuracy as thin lines; `corrected` is
    None for a method without a test-prior correction.
    """
    x = np.arange(len(names))
    fig = _figure(figsize=(max(7.5, 0.75 * len(names)), 4.5))
    ax = fig.add_subplot()
    for label, values in (experts or {}).items():
        ax.plot(x, values, linestyle=":", marker=".", linewidth=1, alpha=0.8, label=label)
    ax.plot(x, plain, marker="o", linewidth=2, color="black", label="ensemble")
    if corrected is not None:
        ax.plot(x, corrected, marker="s", linewidth=2, color="tab:red",
                label="ensemble + log test prior")
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set(xlabel="test class distribution (forward: head-heavy, backward: tail-heavy)",
           ylabel="top-1 accuracy (%)", title="Accuracy under shifted test priors")
    values = np.concatenate([np.asarray(plain, float)]
                            + ([] if corrected is None else [np.asarray(corrected, float)])
                            + [np.asarray(v, float) for v in (experts or {}).values()])
    ax.set_ylim(max(0.0, np.nanmin(values) - 5), min(100.0, np.nanmax(values) + 3))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    return _save(fig, path)


def expert_priors(path: str, train_prior: np.ndarray, lambdas: Sequence[float],
                  estimated: np.ndarray) -> Figure:
    """Each expert's estimated prior (markers) against its expected prior (lines), log y.

    Args:
      train_prior: float [C] training class frequencies pi.
      lambdas: lambda_k of each expert; expert k is expected to carry the prior pi^lambda_k
        (normalised): the training prior for lambda 1, uniform for 0, inverse for -1.
      estimated: float [E, C] each expert's estimated prior (`ltx.methods.balpoe.implied_priors`).
    """
    prior = np.asarray(train_prior, np.float64)
    x = np.arange(prior.shape[0])
    fig = _figure(figsize=(7.5, 4.5))
    ax = fig.add_subplot()
    colors = [f"C{k}" for k in range(len(lambdas))]
    for k, lam in enumerate(lambdas):
        expected = prior ** lam / np.sum(prior ** lam)
        ax.plot(x, expected, linestyle="--", color=colors[k], linewidth=1.5,
                label=f"expert {k} expected (pi^{lam:g})")
        ax.plot(x, estimated[k], linestyle="none", marker="o", color=colors[k],
                label=f"expert {k} estimated")
    ax.set_yscale("log")
    from matplotlib.ticker import FuncFormatter
    plain = FuncFormatter(lambda value, _: f"{value:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(plain)
    ax.tick_params(axis="y", which="minor", labelsize=7)
    ax.set_xticks(x)
    ax.set(xlabel="class (sorted by training count, head first)", ylabel="prior (log scale)",
           title="Learned vs expected prior of each expert")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    return _save(fig, path)


def sweep_group_accuracy(path: str, cells: Sequence[str],
                         values: Mapping[str, Sequence[tuple[float, float] | None]]) -> Figure:
    """Grouped bars: for every cell of a sweep, top-1 of each group in `values` (group name ->
    one (mean, std) per cell, None where missing), with the std as error bars."""
    groups = list(values)
    fig = _figure(figsize=(max(4.0, 1.1 * len(cells) * len(groups) / 2 + 2), 3.8))
    ax = fig.add_subplot()
    width = 0.8 / max(len(groups), 1)
    x = np.arange(len(cells))
    for g, group in enumerate(groups):
        mean = [np.nan if v is None else v[0] for v in values[group]]
        std = [0.0 if v is None else v[1] for v in values[group]]
        ax.bar(x + (g - (len(groups) - 1) / 2) * width, mean, width, yerr=std, capsize=2,
               label=group)
    ax.set_xticks(x, cells, rotation=30, ha="right", fontsize=7)
    ax.set_ylabel("test top-1 (%)")
    ax.set_ylim(0, 100)
    ax.legend(fontsize=7, ncol=len(groups))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def sweep_lines(path: str, xs: Sequence, lines: Mapping[str, Sequence[tuple[float, float] | None]],
                *, xlabel: str, ylabel: str = "test top-1 (%)", log_x: bool = False) -> Figure:
    """One line per entry of `lines` (name -> one (mean, std) or None per x), with error bars:
    accuracy against an axis of a sweep (the imbalance ratio, the test distribution)."""
    fig = _figure(figsize=(max(4.5, 0.55 * len(xs) + 2), 3.6))
    ax = fig.add_subplot()
    positions = np.asarray(xs, float) if log_x else np.arange(len(xs))
    for name, points in lines.items():
        keep = [i for i, p in enumerate(points) if p is not None]
        ax.errorbar(positions[keep], [points[i][0] for i in keep],
                    yerr=[points[i][1] for i in keep], marker="o", ms=3, capsize=2, label=name)
    labels = [f"{x:g}" if isinstance(x, (int, float)) else str(x) for x in xs]
    if log_x:
        ax.set_xscale("log")
        ax.set_xticks(positions, labels)
        ax.minorticks_off()
    else:
        ax.set_xticks(positions, labels, rotation=30, ha="right", fontsize=7)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)
