"""The multi-run report: methods side by side, seeds aggregated, as the lottery-ticket papers plot them.

    written = write_report(["bench/out/imp_reproduction", "bench/out/early_bird"], "report")

Reads every run folder (the summary.json of `imp.run`, of its one-pass mode, or of
`early_bird_flow.run`) in or below the given paths and groups the runs by (dataset,
model), never mixed, then by method ("magnitude IMP (ticket)", "one-pass sign_flip",
"early-bird magnitude", ...). Runs of one method whose configs differ in a field
other than `NOT_COMPARED` are not averaged together: the field and its value join
the label. Seeds are aggregated point by point: IMP rounds by round index (the
rounds every seed has), one-pass and early-bird runs by their `LEVEL_FIELD`.

Per group: PNG plots (test accuracy vs weights remaining, log x with 100% on the
left, ticked at the runs' own levels, mean and min-max band over seeds (none for a
single seed), the dense round 0 dashed; early-stop iteration vs weights remaining,
IMP only; test accuracy vs training iterations spent, each point marked with its
weights remaining), a section of report.md, and the same numbers in report.json. Theoretical
speedup = dense / nonzero multiply-adds of the layers with a kernel: per layer,
kernel size x output positions (1 for Dense) of the model `models.build` makes for
the dataset's input shape, times the layer's weights remaining.
"""

import collections
import dataclasses
import json
import os

import numpy as np

from keras_lottery import models
from keras_lottery.experiments import early_bird_flow
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import sparse_config
from keras_lottery.foundations import files
from keras_lottery.report import render as report_render
from keras_lottery.sparsity import flops

# Config fields that do not make another experiment: the seed (what the report
# averages over), where things are read and written, and how far an IMP run went.
NOT_COMPARED = ("seed", "output_dir", "data_dir", "verbose", "rounds", "backup_seconds")
# The field that places a one-point run on its method's curve rather than making a method of its own.
LEVEL_FIELD = {"one_pass": "rounds", "early_bird": "target_sparsity", "sparse": "sparsity"}
KINDS = ("imp", "one_pass", "early_bird", "sparse")  # the order methods are listed in
# (input shape, classes) of the datasets whose model can be built to count multiply-adds.
DATASET_INPUTS = {"mnist": ((28, 28, 1), 10), "fashion_mnist": ((28, 28, 1), 10), "cifar10": ((32, 32, 3), 10)}
PLOT_TITLES = report_render.PLOT_TITLES


class ReportError(ValueError):
    """Bad report input: a missing path, a path with no run, an unreadable summary, a run counted twice."""


@dataclasses.dataclass(frozen=True)
class Point:
    """One measured point of a run."""

    key: float  # what matches points across seeds: the IMP round, or the LEVEL_FIELD value
    weights_remaining: float
    layers: dict  # layer name -> weights remaining
    test_accuracy: float
    total_iterations: int  # training iterations spent up to and including this point
    early_stop_iteration: int | None  # IMP rounds only
    training_flops: float | None = None  # multiply-adds spent up to this point (sparse runs record theirs)


@dataclasses.dataclass(frozen=True)
class Run:
    """One run folder, read."""

    path: str
    kind: str  # one of KINDS
    config: dict  # as saved, plus the defaults of fields that older runs lack
    points: tuple

    @property
    def seed(self):
        return self.config["seed"]


def _read_run(folder):
    """The `Run` in `folder`; ReportError naming the file if it is unreadable or not a run's summary."""
    path = os.path.join(folder, run_folder.SUMMARY)
    try:
        with open(path) as file:
            summary = json.load(file)
    except (OSError, ValueError) as error:
        raise ReportError(
            f"cannot read {path} ({error}). Runs write it atomically, so it was damaged or written by something "
            "else: rerun that run, or leave its folder out of --runs."
        ) from error
    try:
        points, kind, config = _parse(summary)
        config["dataset"], config["model"], config["seed"]  # noqa: B018  (every run must have them)
    except (KeyError, TypeError, ValueError, AttributeError) as error:
        raise ReportError(f"{path} is not a summary written by keras_lottery.imp.run or early_bird_flow.run "
                          f"({type(error).__name__}: {error}): leave its folder out of --runs.") from error
    if not points:
        raise ReportError(f"{path} lists no finished round: let the run finish a round, or leave it out of --runs.")
    return Run(folder, kind, config, tuple(points))


def _parse(summary):
    """(points, kind, config with defaults) of a summary dict."""
    config = summary["config"]
    if summary.get("mode") == "sparse":  # `sparse_training.run`: one training at the method's sparsity
        config = {**sparse_config.config_defaults(), **config}
        record = summary["rounds"][-1]
        point = Point(key=config["sparsity"], weights_remaining=float(record["weights_remaining"]),
                      layers=dict(record.get("layers") or {}), test_accuracy=float(record["test_accuracy"]),
                      total_iterations=int(record["iterations"]), early_stop_iteration=None,
                      training_flops=float(record["training_flops"]))
        return [point], "sparse", config
    if "rounds" in summary:
        kind = "one_pass" if summary.get("mode", config.get("mode")) == "one_pass" else "imp"
        config = imp.with_defaults(config)
        points, spent = [], 0
        for record in summary["rounds"]:
            spent += record["iterations"]  # older runs have no total_iterations: it is this running sum
            early_stop = record.get("early_stop_iteration") if kind == "imp" else None
            points.append(Point(
                key=record["round"] if kind == "imp" else config["rounds"],
                weights_remaining=float(record["weights_remaining"]), layers=dict(record.get("layers") or {}),
                test_accuracy=float(record["test_accuracy"]),
                total_iterations=int(record.get("total_iterations", spent)),
                early_stop_iteration=None if early_stop is None else int(early_stop)))
        return points, kind, config
    if "retrain" in summary:
        defaults = {field.name: field.default for field in dataclasses.fields(early_bird_flow.EarlyBirdConfig)}
        config = {**defaults, **config}
        point = Point(key=config["target_sparsity"], weights_remaining=float(summary["weights_remaining"]),
                      layers=dict(summary.get("layers") or {}),
                      test_accuracy=float(summary["retrain"]["test_accuracy"]),
                      total_iterations=int(summary["total_iterations"]), early_stop_iteration=None)
        return [point], "early_bird", config
    raise KeyError("neither 'rounds' (IMP, one pass) nor 'retrain' (early bird)")


def find_runs(paths):
    """Reads every run in or below `paths`, each once.

    Args:
      paths: a path or list of paths: run folders, folders that hold run folders at
        any depth, or summary.json files.

    Returns:
      A list of `Run`, in the order of `paths`, sorted by folder within each.

    Raises:
      ReportError: no path, a missing path, no summary.json in or below a path, or
        an unreadable summary; the message names the path and the fix.
    """
    paths = [os.fspath(path) for path in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise ReportError("no run folders given: pass the --output_dir of apps.imp_main or apps.early_bird_main runs, "
                          "or folders that hold them.")
    folders = {}  # real path -> the path as found, so that a run passed twice is read once
    for path in paths:
        if os.path.basename(path) == run_folder.SUMMARY and os.path.isfile(path):
            path = os.path.dirname(path) or "."
        if not os.path.isdir(path):
            raise ReportError(f"{path} does not exist or is not a folder: check the path given to --runs.")
        found = list(_run_folders(path))
        if not found:
            raise ReportError(f"no {run_folder.SUMMARY} in {path} or in any folder below it: pass run folders (the "
                              "--output_dir of apps.imp_main or apps.early_bird_main) or folders that hold them.")
        for folder in found:
            folders.setdefault(os.path.realpath(folder), folder)
    return [_read_run(folder) for folder in folders.values()]


def _run_folders(root):
    for folder, subfolders, file_names in os.walk(root):
        if run_folder.SUMMARY in file_names:
            subfolders.clear()  # a run's own folders (round_<r>, tensorboard) hold no runs
            yield folder
        else:
            subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))


def _method_name(run):
    """The method of a run, before any split by config: e.g. 'magnitude IMP (ticket)'."""
    config = run.config
    if run.kind == "sparse":
        return config["method"] + ("" if config["control"] == "none" else f" ({config['control']})")
    if run.kind != "imp":
        return f"{'one-pass' if run.kind == 'one_pass' else 'early-bird'} {config['criterion']}"
    details = [config["control"]] + ([f"rewind to iteration {config['rewind_step']}"] if config["rewind_step"] else [])
    return f"{config['criterion']} IMP ({', '.join(details)})"


def _settings(run):
    """The config fields that must agree for two runs to be seeds of one method."""
    ignored = {*NOT_COMPARED, LEVEL_FIELD.get(run.kind)}
    settings = {key: value for key, value in run.config.items() if key not in ignored}
    if settings.get("masks_from") is not None:
        # Each seed's branch reads its own seed's ticket: what must agree is that the masks came from a run.
        settings["masks_from"] = "a run"
    return settings


def group_runs(runs):
    """Groups runs by (dataset, model), then by method label.

    Args:
      runs: `Run`s, e.g. from `find_runs`.

    Returns:
      dict (dataset, model) -> dict label -> list of `Run` (the method's seeds);
      groups sorted, methods in `KINDS` order, then by label. Runs of one
      `_method_name` whose settings differ get labels that name the differing fields.
    """
    by_group = collections.defaultdict(lambda: collections.defaultdict(list))
    for run in runs:
        by_group[(run.config["dataset"], run.config["model"])][(KINDS.index(run.kind), _method_name(run))].append(run)
    grouped = {}
    for group in sorted(by_group):
        grouped[group] = {}
        for (_, name), members in sorted(by_group[group].items()):
            settings = [_settings(run) for run in members]
            differing = [field for field in sorted(set().union(*settings))
                         if len({json.dumps(setting.get(field), sort_keys=True) for setting in settings}) > 1]
            split = collections.defaultdict(list)
            for run, setting in zip(members, settings):
                suffix = ", ".join(f"{field}={setting.get(field)}" for field in differing)
                split[f"{name} [{suffix}]" if differing else name].append(run)
            grouped[group].update(sorted(split.items()))
    return grouped


def layer_flops(model_name, dataset):
    """Multiply-adds per example of each layer with a kernel (Dense, Conv2D) of the dense model.

    One multiply-add per kernel weight per output position: kernel size x the
    product of the output's spatial dimensions (1 for Dense). Builds the model with
    `models.build` (seed 0: only shapes matter; it sets Keras's global seed).

    Args:
      model_name: a name registered in `models.MODELS`.
      dataset: a dataset name; its input shape must be in `DATASET_INPUTS`.

    Returns:
      dict layer name -> multiply-adds, or None for an unknown model or dataset.
    """
    if dataset not in DATASET_INPUTS or model_name not in models.MODELS:
        return None
    input_shape, classes = DATASET_INPUTS[dataset]
    return {name: int(value) for name, value in
            flops.layer_flops(models.build(model_name, input_shape, classes, seed=0), dense=True).items()}


def theoretical_speedup(layers, flops):
    """Dense multiply-adds / nonzero multiply-adds (each layer's, times its weights remaining).

    Args:
      layers: layer name -> weights remaining.
      flops: layer name -> dense multiply-adds (`layer_flops`).

    Returns:
      The ratio, or None when `layers` does not name exactly the layers of `flops`.
    """
    if not flops or set(layers) != set(flops):
        return None
    nonzero = sum(flops[name] * layers[name] for name in flops)
    return sum(flops.values()) / nonzero if nonzero > 0 else None


def imp_training_flops(run, flops):
    """The points of an IMP run with the multiply-adds spent up to each (RigL's 3 per weight, example, step).

    Each round trains `3 x sum(layer multiply-adds x its weights remaining)` per example and
    step, for its iterations (the difference of the points' `total_iterations`) at the run's
    batch size. Other kinds, and runs whose layers do not match `flops`, are returned as they are.
    """
    if run.kind != "imp" or not flops or not run.config.get("batch_size"):
        return run.points
    points, spent, previous = [], 0.0, 0
    for point in run.points:
        if set(point.layers) != set(flops):
            return run.points
        per_example = sum(flops[name] * point.layers[name] for name in flops)
        spent += 3.0 * per_example * (point.total_iterations - previous) * run.config["batch_size"]
        previous = point.total_iterations
        points.append(dataclasses.replace(point, training_flops=spent))
    return tuple(points)


def _statistics(values):
    values = np.asarray(values, dtype=float)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "min": float(values.min()), "max": float(values.max()), "n": len(values)}


def aggregate(runs, flops=None):
    """Statistics over the seeds of one method, point by point.

    Args:
      runs: the runs of one method (one label of `group_runs`), at least one.
      flops: optional layer name -> dense multiply-adds, for the theoretical speedup.

    Returns:
      dict: "seeds", "left_out" (points that not every seed has) and "levels",
      highest weights remaining first, each with "key", "weights_remaining",
      "layers", "compression", "speedup" (None without `flops`) and, as dicts of
      mean, std (sample std; None for one seed), min, max, n: "test_accuracy",
      "total_iterations", "early_stop_iteration" (None unless IMP), "training_flops" (multiply-adds
      spent: sparse runs record them, IMP runs' are counted from their layers with `flops`; None else).

    Raises:
      ReportError: no runs, or two runs give one seed the same point (it would count twice).
    """
    if not runs:
        raise ReportError("aggregate needs the runs of one method; got none.")
    by_seed = {}
    for run in runs:
        points = by_seed.setdefault(run.seed, {})
        for point in imp_training_flops(run, flops):
            if point.key in points:
                raise ReportError(f"{points[point.key][1]} and {run.path} are both seed {run.seed} of "
                                  f"{_method_name(run)} at the same point, which would count twice in the mean: "
                                  "leave one of them out of --runs.")
            points[point.key] = (point, run.path)
    common = set.intersection(*(set(points) for points in by_seed.values()))
    levels = []
    for key in common:
        points = [by_seed[seed][key][0] for seed in sorted(by_seed)]
        weights_remaining = float(np.mean([point.weights_remaining for point in points]))
        names = sorted(set.intersection(*(set(point.layers) for point in points)))
        layers = {name: float(np.mean([point.layers[name] for point in points])) for name in names}
        early_stops = [point.early_stop_iteration for point in points]
        spent = [point.training_flops for point in points]
        levels.append({
            "key": key, "weights_remaining": weights_remaining, "layers": layers,
            "compression": 1 / weights_remaining if weights_remaining > 0 else None,
            "speedup": theoretical_speedup(layers, flops),
            "test_accuracy": _statistics([point.test_accuracy for point in points]),
            "total_iterations": _statistics([point.total_iterations for point in points]),
            "early_stop_iteration": None if None in early_stops else _statistics(early_stops),
            "training_flops": None if None in spent else _statistics(spent),
        })
    levels.sort(key=lambda level: (-level["weights_remaining"], level["key"]))
    left_out = sum(len(points) for points in by_seed.values()) - len(common) * len(by_seed)
    return {"seeds": sorted(by_seed), "left_out": left_out, "levels": levels}


def write_report(paths, output_dir):
    """Writes report.md, report.json and the plots; everything is read and checked first.

    Args:
      paths: as for `find_runs`.
      output_dir: the folder to write to (created if needed).

    Returns:
      dict: "markdown", "json" (the files' paths) and "plots" (list of PNG paths).
      report.json holds {"groups": [{"dataset", "model", "layer_flops", "plots"
      (name -> PNG file), "methods": [{"label", "kind", "runs", **aggregate}]}]}.

    Raises:
      ReportError: see `find_runs` and `aggregate`.
    """
    groups = []
    for (dataset, model), methods in group_runs(find_runs(paths)).items():
        flops = layer_flops(model, dataset)
        entries = [{"label": label, "kind": runs[0].kind, "runs": [run.path for run in runs], **aggregate(runs, flops)}
                   for label, runs in methods.items()]
        shown = {"early_stop": any(m["kind"] == "imp" for m in entries),
                 "flops": any(level["training_flops"] for m in entries for level in m["levels"])}
        plots = [name for name in PLOT_TITLES if shown.get(name, True)]
        slug = report_render.file_stem(dataset, model)
        groups.append({"dataset": dataset, "model": model, "layer_flops": flops,
                       "plots": {name: f"{slug}-{name}.png" for name in plots}, "methods": entries})
    os.makedirs(output_dir, exist_ok=True)  # only now: bad input has raised before anything is written
    plots = []
    for group in groups:
        colors = {method["label"]: f"C{index % 10}" for index, method in enumerate(group["methods"])}
        for name, file_name in group["plots"].items():
            plots.append(os.path.join(output_dir, file_name))
            report_render.save_figure(report_render.figure(group, name, colors), plots[-1])
    markdown = os.path.join(output_dir, "report.md")
    files.write_text(markdown, report_render.markdown(groups))
    json_path = os.path.join(output_dir, "report.json")
    files.write_json(json_path, {"groups": groups})
    return {"markdown": markdown, "json": json_path, "plots": plots}
