"""The distribution-shift report: tables and plots of `experiments.shift.evaluate`'s results.

    results = shift.evaluate(["runs"], "shift")
    written = write_report(results, "shift")   # shift/shift_report.md and one PNG per dataset/model

Per (dataset, model): a Markdown table per corruption (rows: method and weights
remaining, the dense IMP round 0 marked; columns: severities; cells: test accuracy
mean ± sample std (runs) in %), and a PNG with one panel per corruption: relative accuracy
acc(severity) / acc(0) against severity, a line per (method, weights remaining), the dense
round 0 dashed. Without severity 0 the panels show accuracy instead. Drawn on an Agg
canvas of its own (`Figure` + `FigureCanvasAgg`), as `report.render` does: no pyplot state.
"""

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_lottery.experiments import shift
from keras_lottery.foundations import files
from keras_lottery.report import render

REPORT_FILE = "shift_report.md"


def row_label(row):
    """'<method>, <weights remaining>% weights' (and ', dense' for IMP round 0)."""
    return f"{row['method']}, {100 * row['weights_remaining']:.3g}% weights" + (" (dense)" if row["dense"] else "")


def _cell(statistics):
    if statistics is None:
        return "—"
    spread = "" if statistics["std"] is None else f" ± {100 * statistics['std']:.2f}"
    return f"{100 * statistics['mean']:.2f}{spread} ({statistics['n']})"


def markdown(results, rows, plots):
    """The report's Markdown: per dataset/model its plot and a table per corruption."""
    settings = results["settings"]
    severities = [str(severity) for severity in settings["severities"]]
    lines = ["# Distribution-shift report", "",
             ("Test accuracy (%) on the runs' own test sets corrupted by keras_lottery.data.corruptions "
              f"(seed {settings['seed']}; severity 0 = clean): mean ± sample standard deviation over runs (their "
              "number). The plots show relative accuracy, acc(severity) / acc(0), averaged over runs.")]
    for (dataset, model), group in render.group_rows(rows).items():
        lines += ["", f"## {dataset} / {model}", ""]
        if (dataset, model) in plots:
            lines += [f"![relative accuracy vs severity]({plots[dataset, model]})"]
        for corruption in settings["corruptions"]:
            lines += ["", f"### {corruption}", "", "| method, weights remaining | " +
                      " | ".join(f"severity {severity}" for severity in severities) + " |",
                      "|---|" + "---:|" * len(severities)]
            lines += [f"| {row_label(row)} | " + " | ".join(_cell(row["accuracy"][corruption].get(severity))
                                                          for severity in severities) + " |" for row in group]
    return "\n".join(lines) + "\n"


def figure(results, rows):
    """One panel per corruption: relative accuracy (or accuracy, without severity 0) vs severity."""
    settings = results["settings"]
    relative = 0 in settings["severities"]
    corruptions = settings["corruptions"]
    plot = Figure(figsize=(4 * len(corruptions) + 3, 4))
    FigureCanvasAgg(plot)
    panels = plot.subplots(1, len(corruptions), squeeze=False)[0]
    severities = settings["severities"]
    for axes, corruption in zip(panels, corruptions):
        for index, row in enumerate(rows):
            values = row["relative" if relative else "accuracy"][corruption]
            points = [(severity, values[str(severity)]["mean"]) for severity in severities if str(severity) in values]
            if points:
                x, y = zip(*points)
                axes.plot(x, y, marker="o", markersize=3, color=f"C{index % 10}",
                          linestyle="--" if row["dense"] else "-", label=row_label(row))
        axes.set_title(corruption)
        axes.set_xlabel("severity")
        axes.set_xticks(severities)
        axes.grid(True, alpha=0.3)
    panels[0].set_ylabel("relative accuracy, acc(s) / acc(0)" if relative else "test accuracy")
    panels[-1].legend(fontsize="x-small", loc="upper left", bbox_to_anchor=(1.02, 1.0))
    plot.suptitle(f"{rows[0]['dataset']} / {rows[0]['model']}: accuracy under distribution shift")
    plot.tight_layout()
    return plot


def write_report(results, output_dir):
    """Writes shift_report.md and one PNG per (dataset, model) into `output_dir`.

    Args:
      results: what `experiments.shift.evaluate` returns (or shift.json holds).
      output_dir: the folder to write to (created if needed).

    Returns:
      dict: "markdown" (the report's path) and "plots" (list of PNG paths).
    """
    rows = shift.summarize(results)
    plots = {}
    for key, group in render.group_rows(rows).items():
        plots[key] = render.file_stem("shift", *key) + ".png"
        render.save_figure(figure(results, group), os.path.join(output_dir, plots[key]))
    path = os.path.join(output_dir, REPORT_FILE)
    files.write_text(path, markdown(results, rows, plots))
    return {"markdown": path, "plots": [os.path.join(output_dir, name) for name in plots.values()]}
