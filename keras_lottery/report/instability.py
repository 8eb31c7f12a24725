"""The instability report: tables and plots of `experiments.instability.run`'s results.

    results = instability.run(config)
    written = write_report(results, "instability")   # instability_report.md and three PNGs per dataset/model

Per (dataset, model): a Markdown table of the error barrier (rows: IMP level and weights
remaining; columns: the rewind iteration k; cells: mean ± sample std over source seeds
(their number), in %, and whether that mean is below the paper's 2% "stable" threshold),
the loss barrier likewise, and the ticket-to-dense path's barriers. Three plots:
(1) error barrier vs k (x: k + 1 on a log axis, ticks labelled with k; a line per level,
error bars: the std over seeds), (2) test error along the path vs alpha, one panel per
level, a line per k (mean over seeds), (3) the ticket-to-dense path's error vs alpha, a
line per level. Drawn on Agg canvases of their own, as `report.render` does.
"""

import os

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_lottery.experiments import instability
from keras_lottery.foundations import files
from keras_lottery.report import render

REPORT_FILE = "instability_report.md"


def level_label(row):
    """'level <L> (<weights remaining>% weights)', with ', random masks' for the random-pruning control."""
    kind = ", random masks" if row.get("masks", "imp") == "random" else ""
    return f"level {row['level']} ({100 * row['weights_remaining']:.3g}% weights{kind})"


def _group(row):
    """What a table row, a plotted line or a panel stands for: (level, weights remaining, masks)."""
    return row["level"], round(row["weights_remaining"], 6), row.get("masks", "imp")


def cell(statistics, stable=None, percent=True):
    """'mean ± std (n)', in % (errors) or as is (losses, in nats), with 'stable' / 'unstable' when `stable` is given."""
    scale, digits = (100, 2) if percent else (1, 3)
    spread = "" if statistics["std"] is None else f" ± {scale * statistics['std']:.{digits}f}"
    flag = "" if stable is None else (" stable" if stable else " unstable")
    return f"{scale * statistics['mean']:.{digits}f}{spread} ({statistics['n']}){flag}"


def _levels(rows):
    """{group: its rows sorted by k}, the groups in the order of `rows`."""
    groups = {}
    for row in rows:
        groups.setdefault(_group(row), []).append(row)
    return {group: sorted(members, key=lambda row: row.get("k", 0)) for group, members in groups.items()}


def _table(rows, key, stable):
    ks = sorted({row["k"] for row in rows})
    lines = ["| level (weights remaining) | " + " | ".join(f"k = {k}" for k in ks) + " |",
             "|---|" + "---:|" * len(ks)]
    for members in _levels(rows).values():
        first, by_k = members[0], {row["k"]: row for row in members}
        cells = [by_k.get(k) for k in ks]
        lines.append(f"| {level_label(first)} | " + " | ".join(
            "—" if row is None else cell(row[key], row["stable"] if stable else None, percent=key == "error_barrier")
            for row in cells) + " |")
    return lines


def markdown(results, summary, plots):
    """The report's Markdown: per dataset/model the barrier tables, the ticket-to-dense table and the plots."""
    settings = results["settings"]
    lines = ["# Instability report", "",
             ("Linear mode connectivity (Frankle et al. 2020): two copies of the state at iteration k (the dense "
              "round 0 replayed to k, masked by the level's IMP mask; rows marked 'random masks': the random-pruning "
              "control, as many weights kept per layer as that mask, at random positions) trained to the end with "
              "different data orders"
              + (" (here: the same data order, a check)" if settings["same_data_order"] else "") +
              f"; test error at {settings['interpolation_points']} points on the line between them. Barrier = max "
              "error on the line minus the mean of the endpoints' errors, in %: mean ± sample std over source seeds "
              f"(their number); stable: mean error barrier below {100 * settings['stable_threshold']:g}%.")]
    mismatches = [source for source in results["sources"].values()
                  if source.get("replay_check") and not source["replay_check"]["matches"]]
    for source in mismatches:
        lines += ["", f"Note: {source['run']}'s replay to iteration {source['replay_check']['k']} differs from its "
                      f"rewind snapshot by up to {source['replay_check']['max_abs_difference']:g}."]
    paths = render.group_rows(summary["ticket_to_dense"])
    for key, rows in render.group_rows(summary["cells"]).items():
        lines += ["", f"## {key[0]} / {key[1]}", ""]
        lines += [f"![{name}]({plots[key, name]})" for name in ("barrier", "paths", "ticket_to_dense")
                  if (key, name) in plots]
        lines += ["", "### Error barrier (%)", "", *_table(rows, "error_barrier", True),
                  "", "### Loss barrier (cross-entropy, nats)", "", *_table(rows, "loss_barrier", False)]
        if key in paths:
            lines += ["", "### Ticket to dense network (trained ticket to trained round 0)", "",
                      "| level (weights remaining) | error barrier (%) | loss barrier (nats) |", "|---|---:|---:|"]
            lines += [f"| {level_label(row)} | {cell(row['error_barrier'])} | {cell(row['loss_barrier'], percent=False)} |"
                      for row in paths[key]]
    return "\n".join(lines) + "\n"


def _figure(width=7, height=4.5, panels=1):
    plot = Figure(figsize=(width * panels if panels > 1 else width, height))
    FigureCanvasAgg(plot)
    return plot, plot.subplots(1, panels, squeeze=False)[0]


def barrier_figure(rows):
    """Error barrier (%) vs k + 1 (log axis), a line per level, error bars over seeds."""
    plot, (axes,) = _figure()
    ks = sorted({row["k"] for row in rows})
    for index, line in enumerate(_levels(rows).values()):
        random = line[0].get("masks", "imp") == "random"
        axes.errorbar([row["k"] + 1 for row in line], [100 * row["error_barrier"]["mean"] for row in line],
                      yerr=[100 * (row["error_barrier"]["std"] or 0.0) for row in line], marker="s" if random else "o",
                      markersize=3, capsize=3, linestyle="--" if random else "-", color=f"C{index % 10}",
                      label=level_label(line[0]))
    axes.set_xscale("log")
    axes.set_xticks([k + 1 for k in ks])
    axes.set_xticklabels([str(k) for k in ks])
    axes.axhline(100 * instability.STABLE_THRESHOLD, color="grey", linestyle=":", linewidth=1, label="stable below")
    axes.set_xlabel("rewind iteration k (log scale of k + 1)")
    axes.set_ylabel("error barrier (%)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="x-small")
    plot.suptitle(f"{rows[0]['dataset']} / {rows[0]['model']}: instability vs k")
    plot.tight_layout()
    return plot


def paths_figure(rows):
    """Test error (%) along the line between the copies vs alpha: a panel per level, a line per k."""
    levels = _levels(rows)
    plot, panels = _figure(4.5, 4, len(levels))
    for axes, line in zip(panels, levels.values()):
        for index, row in enumerate(line):
            axes.plot(row["alphas"], [100 * error for error in row["errors"]], marker="o", markersize=2,
                      color=f"C{index % 10}", label=f"k = {row['k']}")
        axes.set_title(level_label(line[0]), fontsize="small")
        axes.set_xlabel("alpha")
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize="x-small")
    panels[0].set_ylabel("test error (%)")
    # Two lines: one panel (a single level) is too narrow for the title on one.
    plot.suptitle(f"{rows[0]['dataset']} / {rows[0]['model']}:\nerror on the path between the two copies")
    plot.tight_layout()
    return plot


def ticket_to_dense_figure(rows):
    """Test error (%) on the line from the trained ticket (alpha 0) to the trained dense network (alpha 1)."""
    plot, (axes,) = _figure()
    for index, row in enumerate(rows):
        axes.plot(row["alphas"], [100 * error for error in row["errors"]], marker="o", markersize=2,
                  color=f"C{index % 10}", label=level_label(row))
    axes.set_xlabel("alpha (0: trained ticket, 1: trained dense network)")
    axes.set_ylabel("test error (%)")
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize="x-small")
    plot.suptitle(f"{rows[0]['dataset']} / {rows[0]['model']}: ticket to dense network")
    plot.tight_layout()
    return plot


def write_report(results, output_dir):
    """Writes instability_report.md and the PNGs of each (dataset, model) into `output_dir`.

    Args:
      results: what `experiments.instability.run` returns (or instability.json holds).
      output_dir: the folder to write to (created if needed).

    Returns:
      dict: "markdown" (the report's path) and "plots" (list of PNG paths).
    """
    summary = instability.summarize(results)
    plots = {}
    drawn = ((summary["cells"], "barrier", barrier_figure), (summary["cells"], "paths", paths_figure),
             (summary["ticket_to_dense"], "ticket_to_dense", ticket_to_dense_figure))
    for rows, name, draw in drawn:
        for key, group in render.group_rows(rows).items():
            plots[key, name] = render.file_stem("instability", name, *key) + ".png"
            render.save_figure(draw(group), os.path.join(output_dir, plots[key, name]))
    path = os.path.join(output_dir, REPORT_FILE)
    files.write_text(path, markdown(results, summary, plots))
    return {"markdown": path, "plots": [os.path.join(output_dir, name) for name in plots.values()]}
