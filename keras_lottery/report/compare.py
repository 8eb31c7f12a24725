"""The grid's report: every method at every sparsity, seeds aggregated, at equal iterations or FLOPs.

    written = compare.write(config)   # a `experiments.compare.CompareConfig`; the cells finished so far

Per (method, sparsity): test accuracy mean ± sample std and n over the seeds that finished,
weights remaining, the final training's iterations, total training iterations and training
FLOPs (IMP's earlier rounds included; relative to the dense network's training of the same
iterations), inference FLOPs relative to dense. Two plots: test accuracy vs weights
remaining and test accuracy vs training FLOPs. Then the exact command of every cell.

FLOPs are dense-equivalent multiply-adds per example (`sparsity.flops`): the sparse runs
record theirs; for IMP and gradual-magnitude cells they are computed here from each
round's per-layer weights remaining and the layers' dense multiply-adds. IMP pays
`3 f_S(round)` per example and step in every round; gradual magnitude pruning is counted
with its sparsity rising on the run's schedule from the dense network to the final mask's
per-layer fractions (the layers' fractions in between are not recorded: an approximation,
exact when every layer is pruned at the same rate).
"""

import dataclasses
import json
import os

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keras_lottery.experiments import compare
from keras_lottery.experiments import run_folder
from keras_lottery.foundations import files
from keras_lottery.report.aggregate import _statistics as statistics  # noqa: PLC2701  (one statistic)
from keras_lottery.report.aggregate import layer_flops as dense_layer_flops
from keras_lottery.report import render
from keras_lottery.sparsity import schedules

REPORT = "report.md"
NUMBERS = "report.json"
PLOTS = {"accuracy": "accuracy_vs_sparsity.png", "flops": "accuracy_vs_training_flops.png"}


def _imp_flops(summary, layer_flops):
    """(training FLOPs of every round, inference FLOPs of the last) of an IMP or one-pass run."""
    config = summary["config"]
    batch = config["batch_size"]

    def per_example(layers):
        return sum(layer_flops[name] * layers.get(name, 1.0) for name in layer_flops)

    records = summary["rounds"]
    if summary.get("mode") == "one_pass":
        record = records[-1]
        steps = record["iterations"]
        final = per_example(record["layers"])
        dense = sum(layer_flops.values())
        prune_steps = summary["prune_steps"]
        if len(prune_steps) > 1:
            # The share of the final pruning done after each step, on the run's own cubic schedule.
            schedule = schedules.Gradual(0.5, prune_steps[0], prune_steps[1] - prune_steps[0], len(prune_steps) - 1)
            done = np.array([schedule.exact_sparsity(step) / 0.5 for step in range(steps)])
        else:
            done = (np.arange(steps) >= prune_steps[0]).astype(float)
        mean = float(np.mean(dense - done * (dense - final)))
        return 3.0 * mean * steps * batch, final
    if all("training_flops" in record for record in records):  # IMP records its own (`imp.round_flops`)
        return float(sum(record["training_flops"] for record in records)), float(records[-1]["inference_flops"])
    # Runs saved before the records held FLOPs: the same count from each round's per-layer weights remaining.
    total = sum(3.0 * per_example(record["layers"]) * record["iterations"] * batch for record in records)
    return total, per_example(records[-1]["layers"])


def cell_result(config, cell, layer_flops):
    """The cell's numbers from its summary, or None if it has not finished."""
    folder = run_folder.RunFolder(cell.folder(config.output_dir))
    try:
        summary = folder.load_summary()
    except run_folder.CorruptRecordError:
        return None
    if summary is None or not summary["rounds"]:
        return None
    settings = compare.cell_config(config, cell)
    name = compare.parse_method(cell.method)[0]
    if name == "imp" and cell.method == "imp" and len(summary["rounds"]) < settings.rounds + 1:
        return None  # IMP stops at the cell's sparsity only after its last round
    record = summary["rounds"][-1]
    if summary.get("mode") == "sparse":
        training, inference = record["training_flops"], record["inference_flops"]
    else:
        training, inference = _imp_flops(summary, layer_flops)
    iterations = sum(r["iterations"] for r in summary["rounds"])
    return {"method": cell.method, "sparsity": cell.sparsity, "seed": cell.seed,
            "test_accuracy": float(record["test_accuracy"]), "weights_remaining": float(record["weights_remaining"]),
            "iterations": int(record["iterations"]), "total_iterations": int(iterations),
            "training_flops": float(training), "inference_flops": float(inference),
            "learned_density": record.get("learned_density"), "folder": folder.path,
            "command": compare.command(config, cell)}


def _statistics(values):
    values = [value for value in values if value is not None]
    return statistics(values) if values else None


def summarize(config, results):
    """Rows per (method, sparsity) with the statistics over seeds of the finished cells, in the grid's order."""
    rows = []
    for method in config.methods:
        levels = (0.0,) if compare.parse_method(method)[0] == "dense" else config.sparsities
        for sparsity in levels:
            found = [r for r in results if r["method"] == method and r["sparsity"] == sparsity]
            rows.append({"method": method, "sparsity": sparsity, "seeds": sorted(r["seed"] for r in found),
                         **{key: _statistics([r[key] for r in found]) for key in
                            ("test_accuracy", "weights_remaining", "iterations", "total_iterations",
                             "training_flops", "inference_flops")}})
    return rows


# The papers' claims the grid can check, each as (what is compared, the claim): "a >= b" means a is not
# worse than b beyond noise, "a == b" about unchanged, "a < b" worse beyond noise. Noise: twice the
# standard error of the difference of the two means over seeds (Welch's, sample stds).
CLAIMS = (
    ("rigl", ">=", "set", "RigL >= SET at equal sparsity (Evci et al. 2020)"),
    ("set", ">=", "random", "SET >= static random (Evci et al. 2020, Mocanu et al. 2018)"),
    ("snip/layer_shuffle", "==", "snip", "shuffling SNIP's mask per layer leaves it about unchanged (Frankle et al. 2021)"),
    ("grasp/layer_shuffle", "==", "grasp", "the same for GraSP (Frankle et al. 2021)"),
    ("synflow/layer_shuffle", "==", "synflow", "the same for SynFlow (Frankle et al. 2021)"),
    ("imp/layer_shuffle", "<", "imp", "shuffling an IMP ticket's mask per layer hurts it (Frankle et al. 2021)"),
    ("scratch_b", "==", "imp", "the pruned architecture from scratch at the FLOPs budget matches it (Liu et al. 2019)"),
    ("scratch_e", "<", "imp", "the ticket's init beats a reinit (Frankle & Carbin 2019)"),
    ("magnitude", ">=", "l0", "magnitude pruning >= L0 (Gale et al. 2019)"),
    ("magnitude", ">=", "variational_dropout", "magnitude pruning >= variational dropout (Gale et al. 2019)"),
)


def _difference(row, other):
    a, b = row["test_accuracy"], other["test_accuracy"]
    if a is None or b is None:
        return None
    variance = sum((s["std"] or 0.0) ** 2 / s["n"] for s in (a, b))
    return a["mean"] - b["mean"], variance ** 0.5, min(a["n"], b["n"])


def claim_checks(config, rows):
    """Per claim of `CLAIMS` whose methods are in the grid, per sparsity: the difference and whether it holds."""
    by_key = {(row["method"], row["sparsity"]): row for row in rows}
    checks = []
    for first, comparison, second, text in CLAIMS:
        if first not in config.methods or second not in config.methods:
            continue
        for sparsity in config.sparsities:
            rows_found = by_key.get((first, sparsity)), by_key.get((second, sparsity))
            found = _difference(*rows_found) if all(rows_found) else None
            if found is None:
                continue
            delta, error, n = found
            noise = 2 * error
            holds = {">=": delta >= -noise, "==": abs(delta) <= noise, "<": delta < -noise}[comparison]
            checks.append({"claim": text, "first": first, "second": second, "comparison": comparison,
                           "sparsity": sparsity, "difference": delta, "noise": noise, "n": n, "holds": bool(holds)})
    return checks


def _relative(row, key, dense):
    if row[key] is None or dense is None:
        return None
    return row[key]["mean"] / dense


def write(config):
    """Writes report.md, report.json and the two plots into `<output_dir>/report` for the finished cells.

    Returns:
      dict "markdown", "json", "plots" (paths), "cells" (finished / all).
    """
    config = config.resolved()
    layer_flops = dense_layer_flops(config.settings.get("model", "lenet_300_100"),
                                        config.settings.get("dataset", "fashion_mnist"))
    all_cells = compare.cells(config)
    results = [result for cell in all_cells if (result := cell_result(config, cell, layer_flops)) is not None]
    rows = summarize(config, results)
    dense_rows = [row for row in rows if row["method"] == "dense" and row["training_flops"]]
    dense_training = dense_rows[0]["training_flops"]["mean"] if dense_rows else None
    dense_inference = dense_rows[0]["inference_flops"]["mean"] if dense_rows else (
        sum(layer_flops.values()) if layer_flops else None)
    folder = os.path.join(config.output_dir, "report")
    os.makedirs(folder, exist_ok=True)
    plots = {name: os.path.join(folder, file) for name, file in PLOTS.items()}
    for name, path in plots.items():
        render.save_figure(_figure(config, rows, name, dense_training), path)
    numbers = {"grid": {**dataclasses.asdict(config), "methods": list(config.methods)}, "rows": rows,
               "claims": claim_checks(config, rows),
               "cells": results, "dense_training_flops": dense_training, "dense_inference_flops": dense_inference}
    files.write_json(os.path.join(folder, NUMBERS), json.loads(json.dumps(numbers, default=float)))
    files.write_text(os.path.join(folder, REPORT), _markdown(config, rows, results, dense_training, dense_inference,
                                                             len(all_cells)))
    return {"markdown": os.path.join(folder, REPORT), "json": os.path.join(folder, NUMBERS),
            "plots": list(plots.values()), "cells": (len(results), len(all_cells))}


# The panels of the plots: each family of methods with IMP (black) and the dense network (gray) as
# references, so that no panel holds more lines than colors can tell apart.
FAMILIES = (
    ("pruning at initialization", ("random", "snip", "grasp", "synflow")),
    ("dynamic sparse training", ("random", "set", "snfs", "rigl")),
    ("learned sparsity", ("magnitude", "l0", "variational_dropout", "supermask", "edge_popup")),
    ("baselines and controls", ("small_dense", "scratch_e", "scratch_b", "imp/layer_shuffle", "snip/layer_shuffle",
                                "grasp/layer_shuffle", "synflow/layer_shuffle")),
)


def _panels(config):
    """(title, methods) of each panel with a method of the grid; methods of no family go to the last."""
    placed = {method for _, methods in FAMILIES for method in methods} | {"imp", "dense"}
    panels = [(title, [m for m in methods if m in config.methods]) for title, methods in FAMILIES]
    others = [m for m in config.methods if m not in placed]
    if others:
        panels.append(("other methods", others))
    return [(title, methods) for title, methods in panels if methods]


def _x(row, name, dense_training):
    if name == "accuracy":
        return 100 * row["weights_remaining"]["mean"]
    return row["training_flops"]["mean"] / dense_training if dense_training else row["training_flops"]["mean"]


def _draw_method(axes, rows, method, name, dense_training, color, style):
    points = [row for row in rows if row["method"] == method and row["test_accuracy"] is not None]
    if not points:
        return
    n = min(row["test_accuracy"]["n"] for row in points)
    order = np.argsort([_x(row, name, dense_training) for row in points])
    points = [points[i] for i in order]
    x = np.array([_x(row, name, dense_training) for row in points])
    mean = np.array([100 * row["test_accuracy"]["mean"] for row in points])
    std = np.array([100 * (row["test_accuracy"]["std"] or 0.0) for row in points])
    axes.plot(x, mean, color=color, linestyle=style, marker="o", markersize=3, label=f"{method} (n={n})")
    if n > 1:
        axes.fill_between(x, mean - std, mean + std, color=color, alpha=0.12, linewidth=0)


def _figure(config, rows, name, dense_training):
    panels = _panels(config)
    columns = 2 if len(panels) > 1 else 1
    lines = -(-len(panels) // columns)
    figure = Figure(figsize=(13, 4.2 * lines))
    FigureCanvasAgg(figure)
    grid = figure.subplots(lines, columns, squeeze=False)
    dense = [row for row in rows if row["method"] == "dense" and row["test_accuracy"] is not None]
    for axes, (title, methods) in zip(grid.ravel(), panels):
        if "imp" in config.methods:
            _draw_method(axes, rows, "imp", name, dense_training, "black", "-")
        for index, method in enumerate(methods):
            _draw_method(axes, rows, method, name, dense_training, f"C{index % 10}", "--" if "/" in method else "-")
        if dense:
            accuracy = dense[0]["test_accuracy"]
            if name == "flops":
                axes.errorbar([_x(dense[0], name, dense_training)], [100 * accuracy["mean"]],
                              yerr=[100 * (accuracy["std"] or 0.0)], color="gray", marker="D", capsize=3,
                              label=f"dense (n={accuracy['n']})")
            else:
                axes.axhline(100 * accuracy["mean"], color="gray", linestyle=":", linewidth=1.2,
                             label=f"dense: {100 * accuracy['mean']:.2f}% (n={accuracy['n']})")
        axes.set_xscale("log")
        if name == "accuracy":
            levels = sorted({100 * (1 - s) for s in config.sparsities}, reverse=True)
            axes.set_xticks(levels)
            axes.set_xticklabels([f"{level:g}" for level in levels])
            axes.minorticks_off()
            axes.invert_xaxis()
            axes.set_xlabel("weights remaining (%, log scale)")
        else:
            axes.set_xlabel("training FLOPs / dense training's (log scale)" if dense_training
                            else "training multiply-adds (log scale)")
        axes.set_ylabel("test accuracy (%)")
        axes.set_title(title, fontsize="medium")
        axes.grid(True, which="major", alpha=0.3)
        axes.legend(fontsize="x-small", loc="lower left")
    for axes in grid.ravel()[len(panels):]:
        axes.set_visible(False)
    model, dataset = config.settings.get("model", "lenet_300_100"), config.settings.get("dataset", "fashion_mnist")
    figure.suptitle(f"{dataset} / {model}: " + ("accuracy vs sparsity" if name == "accuracy" else
                                                "accuracy vs training FLOPs") +
                    f" (budget: {config.budget}; mean ± std over seeds; IMP in black)")
    figure.tight_layout()
    return figure


def _cell_text(row):
    accuracy = row["test_accuracy"]
    if accuracy is None:
        return "—"
    spread = "" if accuracy["std"] is None else f" ± {100 * accuracy['std']:.2f}"
    return f"{100 * accuracy['mean']:.2f}{spread} (n={accuracy['n']})"


def _markdown(config, rows, results, dense_training, dense_inference, cell_count):
    model, dataset = config.settings.get("model", "lenet_300_100"), config.settings.get("dataset", "fashion_mnist")
    lines = [f"# Method comparison: {dataset} / {model}", "",
             f"{len(results)} of {cell_count} cells finished. Budget: **{config.budget}** "
             f"({'every final training runs the same iterations' if config.budget == 'iterations' else 'every sparse cell trains up to the dense training FLOPs'}). "
             "Test accuracy (%): mean ± sample std over seeds, n seeds.", "",
             f"![accuracy vs sparsity]({PLOTS['accuracy']})", f"![accuracy vs training FLOPs]({PLOTS['flops']})", "",
             "| method | " + " | ".join(f"{100 * s:g}% sparse" for s in config.sparsities) + " |",
             "|---|" + "---:|" * len(config.sparsities)]
    for method in config.methods:
        method_rows = {row["sparsity"]: row for row in rows if row["method"] == method}
        if 0.0 in method_rows:
            lines.append(f"| {method} (0% sparse) | {_cell_text(method_rows[0.0])} |" + " |" * (len(config.sparsities) - 1))
        else:
            lines.append(f"| {method} | " + " | ".join(_cell_text(method_rows[s]) for s in config.sparsities) + " |")
    lines += ["", "Budgets per cell (means over seeds): weights remaining, final-training iterations, total "
              "iterations, training FLOPs and inference FLOPs relative to the dense network "
              "(dense training: the 'dense' cells' own count).", "",
              "| method | sparsity | weights remaining (%) | iterations | total iterations | training FLOPs (x dense) "
              "| inference FLOPs (x dense) |", "|---|---:|---:|---:|---:|---:|---:|"]
    for row in rows:
        if row["test_accuracy"] is None:
            continue
        training = _relative(row, "training_flops", dense_training)
        inference = _relative(row, "inference_flops", dense_inference)
        lines.append(f"| {row['method']} | {100 * row['sparsity']:g}% | {100 * row['weights_remaining']['mean']:.3g} "
                     f"| {row['iterations']['mean']:,.0f} | {row['total_iterations']['mean']:,.0f} "
                     f"| {'—' if training is None else f'{training:.3g}'} "
                     f"| {'—' if inference is None else f'{inference:.3g}'} |")
    learned = {}
    for result in results:
        if result.get("learned_density"):
            learned.setdefault((result["method"], result["sparsity"]), []).append(result["learned_density"])
    if learned:
        lines += ["", "Learned methods: the density each reached on its own rule (L0: P(gate open); VD: log alpha < 3; "
                  "supermask: mean sigmoid(score); edge-popup: its top-k) just before its mask was fixed at the cell's "
                  "sparsity; per layer, mean over seeds.", "",
                  "| method | sparsity | density on its own rule, per layer |", "|---|---:|---|"]
        for (method, sparsity), densities in learned.items():
            layers = ", ".join(f"{name} {100 * np.mean([d[name] for d in densities]):.1f}%" for name in densities[0])
            lines.append(f"| {method} | {100 * sparsity:g}% | {layers} (n={len(densities)}) |")
    checks = claim_checks(config, rows)
    if checks:
        lines += ["", "Claims of the papers, checked on these cells: the difference of mean test accuracy "
                  "(first - second, points) against twice its standard error over seeds (Welch; with n = 3 "
                  "this noise figure is itself rough).", "",
                  "| claim | sparsity | difference (pts) | 2 x s.e. | n | holds here |", "|---|---:|---:|---:|---:|---|"]
        for check in checks:
            lines.append(f"| {check['claim']} | {100 * check['sparsity']:g}% | {100 * check['difference']:+.2f} "
                         f"| {100 * check['noise']:.2f} | {check['n']} | {'yes' if check['holds'] else '**no**'} |")
    lines += ["", "Commands, one per cell (each resumes if rerun):", "", "```"]
    lines += [result["command"] for result in results]
    lines += ["```"]
    return "\n".join(lines) + "\n"
