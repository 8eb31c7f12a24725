"""Drawing the report: the PNG figures and the Markdown table of `report.write_report`.

`figure(group, name, colors)` draws one of `PLOT_TITLES` for a (dataset, model) group
as `report.write_report` aggregates it; `markdown(groups)` renders every group's table.
"""

import collections
import io
import re

import numpy as np
from matplotlib import ticker
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_lottery.foundations import files

PLOT_TITLES = {"accuracy": "test accuracy vs weights remaining",
               "early_stop": "early-stop iteration vs weights remaining (IMP)",
               "iterations": "test accuracy vs training iterations spent",
               "flops": "test accuracy vs training FLOPs spent"}
MAX_LEVEL_TICKS = 14  # labelled levels on the weights-remaining axis: what fits its width without overlap


def file_stem(*parts):
    """A file name stem from `parts` joined by '-', every run of other characters than [A-Za-z0-9_.-] as '_'."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", "-".join(str(part) for part in parts))


def group_rows(rows, fields=("dataset", "model")):
    """dict (row[field] for field in `fields`) -> the rows with those values, in order."""
    groups = {}
    for row in rows:
        groups.setdefault(tuple(row[field] for field in fields), []).append(row)
    return groups


def save_figure(figure_to_save, path):
    """Writes a figure as PNG, atomically (an interrupted report leaves no half image)."""
    buffer = io.BytesIO()
    figure_to_save.savefig(buffer, format="png", dpi=120)
    files.write_bytes(path, buffer.getvalue())


def _draw(axes, x, statistics, color, label, scale, notes=None):
    """A mean line with a min-max band over seeds; a single point gets a marker and a min-max error bar.

    One seed has no spread, so it gets neither band nor error bar. `notes` (one text per
    point, in the order of `x`) are written next to the points.
    """
    order = np.argsort(x)
    x = np.asarray(x, dtype=float)[order]
    mean, low, high = (scale * np.asarray([s[key] for s in statistics])[order] for key in ("mean", "min", "max"))
    spread = min(s["n"] for s in statistics) > 1
    if len(x) > 1:
        axes.plot(x, mean, marker="o", markersize=3, color=color, label=label)
        if spread:
            axes.fill_between(x, low, high, color=color, alpha=0.2, linewidth=0)
    elif spread:
        axes.errorbar(x, mean, yerr=[mean - low, high - mean], color=color, capsize=4, marker="D", label=label)
    else:
        axes.plot(x, mean, color=color, marker="D", linestyle="none", label=label)
    if notes:
        for x_value, y_value, note in zip(x, mean, np.asarray(notes, dtype=object)[order]):
            axes.annotate(note, (x_value, y_value), textcoords="offset points", xytext=(0, 6), ha="center",
                          fontsize="x-small", color=color)


def _dodged(x_by_label):
    """Single points at the same x moved slightly apart (4% on the log axis), so that none hides another."""
    sharing = collections.defaultdict(list)
    for label, x in x_by_label.items():
        if len(x) == 1:
            sharing[f"{x[0]:.3g}"].append(label)
    dodged = dict(x_by_label)
    for labels in sharing.values():
        for index, label in enumerate(labels):
            dodged[label] = [dodged[label][0] * 1.04 ** (index - (len(labels) - 1) / 2)]
    return dodged


def level_ticks(percents, low, high, max_ticks=MAX_LEVEL_TICKS):
    """The levels of weights remaining to label: each distinct level, thinned where labels would collide.

    Args:
      percents: the levels (% of weights remaining) the plot draws.
      low, high: the axis limits (% of weights remaining).
      max_ticks: labels keep at least 1 / max_ticks of the log axis apart.

    Returns:
      The levels to label, rounded to 3 significant digits (as the table prints
      them), highest first: every level, except one too close (on the log axis) to
      the higher level labelled before it.
    """
    gap = np.log10(high / low) / max_ticks  # in decades
    ticks = []
    for level in sorted({float(f"{value:.3g}") for value in percents if value > 0}, reverse=True):
        if not ticks or np.log10(ticks[-1] / level) >= gap:
            ticks.append(level)
    return ticks


def _weights_axis(axes, percents):
    """Log x axis of weights remaining in %, inverted (100% on the left), as in the LTH papers.

    The ticks are the runs' own levels (a round's 51.3% is read off the axis, not guessed
    between round numbers); minor ticks stay unlabelled.
    """
    axes.set_xscale("log")
    high, low = max(percents) * 1.15, min(percents) / 1.15
    axes.set_xlim(high, low)
    axes.xaxis.set_major_locator(ticker.FixedLocator(level_ticks(percents, low, high)))
    axes.xaxis.set_major_formatter(ticker.FuncFormatter(lambda value, _: f"{value:g}"))
    axes.xaxis.set_minor_formatter(ticker.NullFormatter())
    axes.set_xlabel("weights remaining (%, log scale)")


def figure(group, name, colors):
    """The Figure of plot `name` of `group`: an Agg canvas of its own, so no global pyplot state is touched."""
    figure = Figure(figsize=(10, 5))
    FigureCanvasAgg(figure)
    axes = figure.subplots()
    methods = [m for m in group["methods"] if (name != "early_stop" or m["kind"] == "imp") and (
        name != "flops" or all(level["training_flops"] for level in m["levels"]))]

    def x_of(level):
        if name == "iterations":
            return level["total_iterations"]["mean"]
        return level["training_flops"]["mean"] if name == "flops" else 100 * level["weights_remaining"]

    x = {m["label"]: [x_of(level) for level in m["levels"]] for m in methods}
    y_key, scale = ("early_stop_iteration", 1.0) if name == "early_stop" else ("test_accuracy", 100.0)
    for method, dodged in zip(methods, _dodged(x).values()):
        # Against iterations, the x axis no longer says how sparse a point is: each point says it.
        notes = [f"{100 * level['weights_remaining']:.3g}%" for level in method["levels"]] \
            if name in ("iterations", "flops") else None
        _draw(axes, dodged, [level[y_key] for level in method["levels"]], colors[method["label"]],
              f"{method['label']} (n={len(method['seeds'])})", scale, notes)
    if name in ("iterations", "flops"):
        axes.set_xscale("log")
        spent = "iterations" if name == "iterations" else "multiply-adds (RigL's counting)"
        axes.set_xlabel(f"training {spent} spent (log scale); at each point: weights remaining")
    else:
        _weights_axis(axes, [value for values in x.values() for value in values])
    dense = {round(level["test_accuracy"]["mean"], 6) for m in methods if m["kind"] == "imp"
             for level in m["levels"] if level["key"] == 0 and level["weights_remaining"] == 1.0}
    for value in sorted(dense) if name != "early_stop" else []:  # one line when the methods share their seeds
        axes.axhline(100 * value, color="gray", linestyle="--", linewidth=1,
                     label=f"dense (round 0): {100 * value:.2f}%")
    axes.set_ylabel("early-stop iteration" if name == "early_stop" else "test accuracy (%)")
    axes.set_title(f"{group['dataset']} / {group['model']}: {PLOT_TITLES[name]}")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    figure.tight_layout()
    return figure


def _format(value, pattern):
    return "—" if value is None else pattern.format(value)


def _row(label, level):
    accuracy, early_stop = level["test_accuracy"], level["early_stop_iteration"]
    spread = "" if accuracy["std"] is None else f" ± {100 * accuracy['std']:.2f}"  # one seed: no spread
    return (f"| {label} | {100 * level['weights_remaining']:.3g} | {_format(level['compression'], '{:.1f}x')} "
            f"| {_format(level['speedup'], '{:.1f}x')} | {100 * accuracy['mean']:.2f}{spread} | {accuracy['n']} "
            f"| {_format(early_stop and early_stop['mean'], '{:,.0f}')} | {level['total_iterations']['mean']:,.0f} |")


def markdown(groups):
    """Per (dataset, model) group: its plots, one table of every method's levels, its runs."""
    lines = [
        "# Lottery-ticket report", "",
        ("Compression = 1 / weights remaining. Theoretical speedup = dense / nonzero multiply-adds of the prunable "
         "layers (each layer's multiply-adds x its weights remaining). Test accuracy: mean ± sample standard "
         "deviation over seeds. IMP rounds are matched across seeds by round index; only the points every seed of "
         "a method reached are shown."),
    ]
    for group in groups:
        lines += ["", f"## {group['dataset']} / {group['model']}", ""]
        lines += [f"![{PLOT_TITLES[name]}]({file})" for name, file in group["plots"].items()]
        if group["layer_flops"] is None:
            lines += ["", (f"Theoretical speedup not computed: no input shape for {group['dataset']!r} in "
                           "keras_lottery.report.DATASET_INPUTS, or the model is not in keras_lottery.models.")]
        lines += ["", ("| method | weights remaining (%) | compression | theoretical speedup | test accuracy (%) "
                       "| seeds | early-stop iteration | iterations spent |"), "|---|" + "---:|" * 7]
        lines += [_row(method["label"], level) for method in group["methods"] for level in method["levels"]]
        lines += ["", "Runs:", ""]
        for method in group["methods"]:
            count = method["left_out"]
            left_out = f"; left out: {count} point{'s' * (count != 1)} that not every seed reached" if count else ""
            lines.append(f"- {method['label']}: seeds {', '.join(map(str, method['seeds']))}{left_out} "
                         f"({', '.join(method['runs'])})")
    return "\n".join(lines) + "\n"
