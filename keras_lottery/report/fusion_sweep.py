"""The neuron-fusion sweep's report: tables and plots of `experiments.fusion_sweep.run`'s results.

    results = fusion_sweep.run(FusionSweepConfig(runs=["runs"], output_dir="fusion"))
    written = write_report(results, "fusion")   # fusion/fusion_sweep_report.md and two PNGs per run method

Per (dataset, model, run method), from `fusion_sweep.summarize` (mean ± sample std over
seeds, their number in parentheses):

* a PNG "accuracy vs units removed": one panel per weights-remaining level (at most
  MAX_PANELS, spread over the levels; the table has all), test accuracy against the
  fraction of units removed from each layer fusion narrows, one colour per method (solid:
  right after fusion, dashed: after the fine-tune), the masked ticket's accuracy dotted;
  each method's line starts at the exact pass (fraction 0); error bars: the std over seeds;
* a PNG "accuracy vs multiply-adds": one panel per merge method, test accuracy against
  inference multiply-adds per example (log), over the levels: the masked ticket counted on
  its nonzero weights (a grey line), the dense network (IMP round 0, a star), and the fused
  model at each fraction, run dense, a point per level (filled: after fusion, labelled with
  its weights remaining when there are at most MAX_PANELS levels; hollow triangle: after
  the fine-tune);
* a Markdown table: per level and fusion, accuracies (ticket, fused, fine-tuned), the
  fused model's multiply-adds and parameters against the masked ticket's nonzero ones and
  the dense network's, the layers it narrowed (width before → after), and the seconds
  spent; the messages of fusions that failed.

Drawn on Agg canvases of their own (`Figure` + `FigureCanvasAgg`) and written with
`report.render.save_figure`, as the other reports are: no pyplot state.
"""

import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_lottery.experiments import fusion_sweep
from keras_lottery.foundations import files
from keras_lottery.report import render

REPORT_FILE = "fusion_sweep_report.md"
MAX_PANELS = 6  # weights-remaining levels drawn in "accuracy vs units removed" (a row of panels that stays legible)


def _levels(group):
    """The group's levels as (weights remaining, rows of that level), most weights first."""
    levels = {}
    for row in group:
        levels.setdefault(round(row["weights_remaining"], 6), []).append(row)
    return sorted(levels.items(), key=lambda item: -item[0])


def _spread(items, count):
    """At most `count` of `items`, evenly spaced, first and last kept."""
    if len(items) <= count:
        return items
    return [items[int(index)] for index in np.unique(np.round(np.linspace(0, len(items) - 1, count)))]


def _mean(statistics, scale=1.0):
    return None if statistics is None else scale * statistics["mean"]


def _std(statistics, scale=1.0):
    return 0.0 if statistics is None or statistics["std"] is None else scale * statistics["std"]


def _methods(group):
    """The merge methods of a group, in order (the exact pass alone when there is none)."""
    merges = list(dict.fromkeys(row["fusion"] for row in group if row["fusion"] != "exact"))
    return merges or ["exact"]


def _series(axes, points, color, label, linestyle="-", marker="o", filled=True):
    """A line (linestyle None: points only) with error bars; points are (x, statistics of accuracy, x error or 0)."""
    points = [(x, y, xerr) for x, y, xerr in points if x is not None and y is not None]
    if not points:
        return
    x, y, xerr = zip(*sorted(points, key=lambda point: point[0]))
    axes.errorbar(x, [_mean(s, 100) for s in y], yerr=[_std(s, 100) for s in y], xerr=list(xerr) if any(xerr) else None,
                  color=color, linestyle=linestyle or "none", marker=marker, markersize=3 if linestyle else 5,
                  markerfacecolor=color if filled else "none", capsize=3, label=label)


def _failed_note(axes, rows, methods):
    """Names, inside the panel, the methods that failed on every run there (nothing of theirs is drawn)."""
    failed = [method for method in methods if method != "exact" and all(
        row["fused_accuracy"] is None for row in rows if row["fusion"] == method)
        and any(row["fusion"] == method for row in rows)]
    if failed:
        axes.text(0.02, 0.02, f"failed (see the table): {', '.join(failed)}", transform=axes.transAxes,
                  fontsize="x-small", color="firebrick")


def units_figure(group):
    """Accuracy vs fraction of units removed, one panel per level (see the module docstring)."""
    levels = _spread(_levels(group), MAX_PANELS)
    methods = _methods(group)
    plot = Figure(figsize=(3.6 * len(levels) + 2.5, 4))
    FigureCanvasAgg(plot)
    panels = plot.subplots(1, len(levels), squeeze=False, sharey=True)[0]
    for axes, (weights, rows) in zip(panels, levels):
        exact = [row for row in rows if row["fusion"] == "exact"]
        _failed_note(axes, rows, methods)
        for index, method in enumerate(methods):
            mine = [row for row in rows if row["fusion"] == method and method != "exact"]
            if mine and all(row["fused_accuracy"] is None for row in mine):
                continue
            mine = exact + mine
            color = f"C{index % 10}"
            _series(axes, [(100 * row["fraction"], row["fused_accuracy"], 0) for row in mine], color, method)
            _series(axes, [(100 * row["fraction"], row["fine_tuned_accuracy"], 0) for row in mine], color,
                    f"{method}, fine-tuned", "--")
        ticket = rows[0]["ticket_accuracy"]
        axes.axhline(_mean(ticket, 100), color="gray", linestyle=":", linewidth=1, label="masked ticket")
        axes.set_title(f"{100 * weights:.3g}% weights" + (" (dense)" if rows[0]["dense"] else ""))
        axes.set_xlabel("units removed per layer (%)")
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("test accuracy (%)")
    panels[-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    dataset, model, method = group[0]["dataset"], group[0]["model"], group[0]["method"]
    plot.suptitle(f"{dataset} / {model}, {method}: accuracy vs units removed")
    plot.tight_layout()
    return plot


def multiply_adds_figure(group):
    """Accuracy vs inference multiply-adds per example, one panel per merge method (see the module docstring)."""
    methods = _methods(group)
    levels = _levels(group)
    fractions = sorted({row["fraction"] for row in group})
    plot = Figure(figsize=(5 * len(methods) + 2.5, 4.5))
    FigureCanvasAgg(plot)
    panels = plot.subplots(1, len(methods), squeeze=False, sharey=True)[0]
    for axes, method in zip(panels, methods):
        tickets = [rows[0] for _, rows in levels]
        _series(axes, [(_mean(row["ticket_multiply_adds"]), row["ticket_accuracy"], _std(row["ticket_multiply_adds"]))
                       for row in tickets], "gray", "masked ticket (nonzero multiply-adds)")
        dense = [row for row in tickets if row["dense"]]
        if dense:
            axes.errorbar([_mean(dense[0]["dense_multiply_adds"])], [_mean(dense[0]["ticket_accuracy"], 100)],
                          yerr=[_std(dense[0]["ticket_accuracy"], 100)], color="black", marker="*", markersize=10,
                          linestyle="none", capsize=3, label="dense network")
        for index, fraction in enumerate(fractions):
            rows = [row for row in group if row["fraction"] == fraction
                    and row["fusion"] == ("exact" if fraction == 0 else method)]
            if not rows:
                continue
            # A fused model runs dense: its multiply-adds hardly change from level to level, so its points
            # (one per level) are left unconnected; a line would run up and down across the levels.
            label = "exact pass" if fraction == 0 else f"{100 * fraction:g}% units removed"
            color = f"C{index % 10}"
            _series(axes, [(_mean(row["multiply_adds"]), row["fused_accuracy"], _std(row["multiply_adds"]))
                           for row in rows], color, label, None)
            if len(levels) <= MAX_PANELS:  # few levels: each fused point says which ticket it came from
                for row in rows:
                    if row["fused_accuracy"] is not None:
                        axes.annotate(f"{100 * row['weights_remaining']:.3g}%", (_mean(row["multiply_adds"]),
                                      _mean(row["fused_accuracy"], 100)), textcoords="offset points", xytext=(4, 2),
                                      fontsize="xx-small", color=color)
            _series(axes, [(_mean(row["multiply_adds"]), row["fine_tuned_accuracy"], _std(row["multiply_adds"]))
                           for row in rows], color, f"{label}, fine-tuned", None, "^", filled=False)
        _failed_note(axes, group, [method])
        axes.set_xscale("log")
        axes.set_title(f"fused by {method}")
        axes.set_xlabel("inference multiply-adds per example (log)")
        axes.grid(True, which="major", alpha=0.3)
    panels[0].set_ylabel("test accuracy (%)")
    panels[-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    dataset, model, method = group[0]["dataset"], group[0]["model"], group[0]["method"]
    plot.suptitle(f"{dataset} / {model}, {method}: accuracy vs multiply-adds (fused: run dense)")
    plot.tight_layout()
    return plot


def cell(statistics, scale=100.0, pattern="{:.2f}"):
    """'mean ± std (n)' of a statistic, scaled (accuracy in %); '—' where there is none."""
    if statistics is None:
        return "—"
    spread = "" if statistics["std"] is None else f" ± {pattern.format(scale * statistics['std'])}"
    return f"{pattern.format(scale * statistics['mean'])}{spread} ({statistics['n']})"


def _count(statistics):
    return "—" if statistics is None else f"{statistics['mean']:,.0f}"


def _ratio(numerator, denominator):
    if numerator is None or denominator is None or not denominator["mean"]:
        return ""
    return f" ({numerator['mean'] / denominator['mean']:.3f}x)"


def _widths(row):
    """The layers the fusion narrowed, 'name before→after' (mean over seeds), in model order."""
    changed = [f"{layer} {row['ticket_widths'].get(layer)}→{width:.3g}" for layer, width in row["widths"].items()
               if width != row["ticket_widths"].get(layer)]
    return ", ".join(changed) or "none narrower"


def _seconds(row):
    fuse, tune = row["fuse_seconds"], row["fine_tune_seconds"]
    text = "—" if fuse is None else f"{fuse['mean']:.1f}"
    return text + ("" if tune is None else f" + {tune['mean']:.1f}")


def table_row(row):
    """One Markdown table row of a summarized row."""
    fusion = row["fusion"] + ("" if row["fusion"] == "exact" else f" {100 * row['fraction']:g}%")
    start = (f"| {100 * row['weights_remaining']:.3g}{' (dense)' if row['dense'] else ''} | {fusion} "
             f"| {cell(row['ticket_accuracy'])} ")
    if row["fused_accuracy"] is None:
        return start + "| failed: see below | | | | | | |"
    iterations = row["fine_tune_iterations"]
    tuned = cell(row["fine_tuned_accuracy"]) + ("" if iterations is None else f" [{iterations['mean']:g} it]")
    return (start + f"| {cell(row['fused_accuracy'])} | {tuned} "
            f"| {_count(row['multiply_adds'])}{_ratio(row['multiply_adds'], row['dense_multiply_adds'])} "
            f"| {_count(row['ticket_multiply_adds'])}{_ratio(row['ticket_multiply_adds'], row['dense_multiply_adds'])} "
            f"| {_count(row['params'])} / {_count(row['ticket_params'])} / {_count(row['dense_params'])} "
            f"| {_widths(row)} | {_seconds(row)} |")


def markdown(results, rows, plots):
    """The report's Markdown: per (dataset, model, method) its plots and one table."""
    settings = results["settings"]
    rate = settings["fine_tune_learning_rate"]
    tune = (f"{settings['fine_tune_iterations']} iterations of the run's optimizer at "
            f"{'the rate its schedule ended at' if rate is None else f'learning rate {rate:g}'}"
            if settings["fine_tune_iterations"] else "none")
    lines = ["# Neuron-fusion sweep", "",
             ("Each finished ticket fused by each method at each fraction of units removed from every layer fusion "
              "may narrow (the exact pass is fraction 0; units feeding Add skips and the output layer are kept). "
              "Test accuracy (%): mean ± sample standard deviation over seeds (their number). Multiply-adds per "
              "example (× the dense network's): the fused model run dense, and the masked ticket counted on its "
              "nonzero weights. Params: fused / ticket nonzero / dense network. Layers narrowed: units before → "
              "after (mean over seeds). Seconds: fusing + fine-tuning. "
              f"Calibration: the first {settings['calibration_examples']} training examples; fine-tune: {tune}; "
              f"test examples: {settings['test_examples'] or 'all'}.")]
    for key, group in render.group_rows(rows, ("dataset", "model", "method")).items():
        lines += ["", f"## {key[0]} / {key[1]}: {key[2]}", ""]
        lines += [f"![{name}]({path})" for name, path in plots.get(key, {}).items()]
        lines += ["", ("| weights remaining (%) | fusion | ticket acc. | fused acc. | fine-tuned acc. | fused "
                       "multiply-adds | ticket nonzero multiply-adds | params | layers narrowed | seconds |"),
                  "|---:|---|---:|---:|---:|---:|---:|---:|---|---:|"]
        lines += [table_row(row) for row in group]
        failures = sorted({(row["fusion"], error) for row in group for error in row["errors"]})
        if failures:
            lines += ["", "Failed fusions:", ""] + [f"- {fusion}: {error}" for fusion, error in failures]
        lines += ["", "Runs: " + ", ".join(sorted({run for row in group for run in row["runs"]}))]
    return "\n".join(lines) + "\n"


def write_report(results, output_dir):
    """Writes fusion_sweep_report.md and two PNGs per (dataset, model, run method) into `output_dir`.

    Args:
      results: what `experiments.fusion_sweep.run` returns (or fusion_sweep.json holds).
      output_dir: the folder to write to (created if needed).

    Returns:
      dict: "markdown" (the report's path) and "plots" (list of PNG paths).
    """
    rows = fusion_sweep.summarize(results)
    plots, written = {}, []
    for key, group in render.group_rows(rows, ("dataset", "model", "method")).items():
        stem = render.file_stem("fusion", *key)
        plots[key] = {"accuracy vs units removed": f"{stem}-units.png",
                      "accuracy vs multiply-adds": f"{stem}-multiply_adds.png"}
        for draw, name in ((units_figure, "accuracy vs units removed"),
                           (multiply_adds_figure, "accuracy vs multiply-adds")):
            written.append(os.path.join(output_dir, plots[key][name]))
            render.save_figure(draw(group), written[-1])
    path = os.path.join(output_dir, REPORT_FILE)
    files.write_text(path, markdown(results, rows, plots))
    return {"markdown": path, "plots": written}
