"""Finished runs evaluated under distribution shift: test accuracy on corrupted test sets.

    results = evaluate(["runs/imp", "runs/reinit"], "shift")     # writes shift/shift.json
    rows = summarize(results)                                    # seeds aggregated

Desai, Zhan & Aly, "Evaluating Lottery Tickets Under Distributional Shifts" (2019), ask
whether a winning ticket keeps its accuracy when the inputs shift, compared with the dense
network it came from and with a random reinitialization of it; their finding is that
tickets stay about as robust as the dense network. Here every finished round of every
run folder in or below the given paths is rebuilt (`run_models.load_run_model`: IMP
runs, every round, round 0 being the dense network; one-pass and sparse runs, their one
round; early-bird runs, their ticket) and scored on the run's own test set corrupted by
`keras_lottery.data.corruptions` (Gaussian noise, blur, rotation, contrast; severity 0 =
clean). Relative accuracy acc(severity) / acc(0) says how much of its clean accuracy a
network keeps: the papers compare that, not the raw accuracies, across sparsity levels.

Choices of ours:
* Runs of datasets that the flows normalize (every dataset but MNIST and Fashion-MNIST:
  `data.load_for_training` streams them normalized per channel) are corrupted in [0, 1],
  then normalized as their training was (CHANNEL_STATISTICS, else the kept training
  images' per-channel mean and std): a corruption shifts the images, not the
  normalization.
* A corrupted test set of (dataset, corruption, severity, seed) is computed once and
  reused for every model; the runs are visited grouped by dataset so that only one
  dataset's corrupted sets are held at a time.
* `<output_dir>/shift.json` is rewritten (atomically) after each round evaluated, so an
  interrupted evaluation resumes where it stopped: a (run folder, round) already there is
  not recomputed, and new runs or rounds found later are added. It holds its settings
  (corruptions, severities, seed, test_examples); a call with other settings for the same output_dir
  raises ShiftError naming the difference (its numbers would not be comparable): use
  another output_dir.
* `summarize` averages over every run of one method label, dataset and model at one level
  (IMP: the round; one pass: its rounds; early bird: target_sparsity; sparse runs: the
  sparsity), whatever their other settings: pass comparable runs.
"""

import collections
import logging
import os

import numpy as np

from keras_lottery import training
from keras_lottery.data import corruptions as corruption_lib
from keras_lottery.data import streaming
from keras_lottery.experiments import analysis_results
from keras_lottery.experiments import early_bird_flow
from keras_lottery.experiments import imp_config
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import run_models
from keras_lottery.experiments import sparse_config
from keras_lottery.foundations import files
from keras_lottery.foundations.validation import check_int

SHIFT_FILE = "shift.json"
DEFAULT_SEVERITIES = (0, 1, 3, 5)
# The config field that places a one-point run on its method's curve (as report.aggregate places it).
LEVEL_FIELD = {"one_pass": "rounds", "early_bird": "target_sparsity", "sparse": "sparsity"}
# The config fields an entry records: what identifies the run's method, seed and data.
RECORDED_FIELDS = ("dataset", "model", "seed", "method", "control", "criterion", "rewind_step", "sparsity",
                   "target_sparsity", "rounds", "mode")

_LOG = logging.getLogger(__name__)


class ShiftError(ValueError):
    """Bad shift-evaluation input: no runs, a bad setting, or a shift.json made with other settings."""


def check_settings(corruptions=corruption_lib.CORRUPTIONS, severities=DEFAULT_SEVERITIES, seed=0, test_examples=None):
    """The evaluation's settings, checked: {"corruptions": [...], "severities": [...], "seed": int,
    "test_examples": int or None (every test example)}.

    Raises:
      ShiftError: an empty list, a repeated entry, an unknown corruption, a severity outside
        0..5, a negative seed or test_examples below 1; the message names the choices.
    """
    if isinstance(corruptions, str):
        corruptions = [corruptions]
    corruptions, severities = list(corruptions), [severities] if isinstance(severities, int) else list(severities)
    for name, values in (("corruptions", corruptions), ("severities", severities)):
        if not values or len(set(values)) != len(values):
            raise ShiftError(f"{name} must be a non-empty list without repeats, got {values!r}.")
    try:
        corruptions = [corruption_lib.check_corruption(name) for name in corruptions]
        severities = sorted(corruption_lib.check_severity(severity) for severity in severities)
        corruption_lib.rng(corruptions[0], 0, seed)  # checks the seed
        if test_examples is not None:
            check_int(test_examples, "test_examples (None: every test example)", 1)
    except ValueError as error:
        raise ShiftError(str(error)) from error
    return {"corruptions": corruptions, "severities": severities, "seed": int(seed), "test_examples": test_examples}


def find_run_folders(paths):
    """Every folder with a summary.json in or below `paths`, each once, in the order found.

    Raises:
      ShiftError: no path, a missing path, or no summary.json in or below one.
    """
    paths = [os.fspath(path) for path in ([paths] if isinstance(paths, (str, os.PathLike)) else paths)]
    if not paths:
        raise ShiftError("no run folders given: pass the --output_dir of finished runs, or folders that hold them.")
    found = {}  # real path -> the path as found, so that a run passed twice is evaluated once
    for path in paths:
        if not os.path.isdir(path):
            raise ShiftError(f"{path} does not exist or is not a folder: check the path given to --runs.")
        folders = []
        for folder, subfolders, file_names in os.walk(path):
            if run_folder.SUMMARY in file_names:
                subfolders.clear()  # a run's own folders (round_<r>, tensorboard) hold no runs
                folders.append(folder)
            else:
                subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        if not folders:
            raise ShiftError(f"no {run_folder.SUMMARY} in {path} or in any folder below it: pass run folders (the "
                             "--output_dir of a finished run) or folders that hold them.")
        for folder in folders:
            found.setdefault(os.path.realpath(folder), folder)
    return list(found.values())


def run_kind(summary):
    """'imp', 'one_pass', 'early_bird' or 'sparse' (as `run_models.load_run_model` tells them apart)."""
    if summary.get("mode") == "sparse":
        return "sparse"
    if "rounds" in summary:
        return "one_pass" if summary["config"].get("mode") == "one_pass" else "imp"
    return "early_bird"


def config_with_defaults(kind, config):
    """A saved config dict with the defaults of the fields older runs lack."""
    if kind == "sparse":
        return {**sparse_config.config_defaults(), **config}
    if kind == "early_bird":
        return {**{field: getattr(early_bird_flow.EarlyBirdConfig, field, None)
                   for field in ("criterion", "target_sparsity")}, **config}
    return imp_config.with_defaults(config)


def method_label(kind, config):
    """The method of a run, as report_main names it: e.g. 'magnitude IMP (reinit)', 'snip (layer_shuffle)'."""
    if kind == "sparse":
        return config["method"] + ("" if config.get("control", "none") == "none" else f" ({config['control']})")
    if kind != "imp":
        return f"{'one-pass' if kind == 'one_pass' else 'early-bird'} {config.get('criterion')}"
    details = [config["control"]] + ([f"rewind to iteration {config['rewind_step']}"] if config["rewind_step"] else [])
    return f"{config['criterion']} IMP ({', '.join(details)})"


def rounds_to_evaluate(kind, summary):
    """The rounds of a run to evaluate: every finished IMP round, the last (only) one of a one-pass or
    sparse run, [None] (its one ticket) for an early-bird run."""
    if kind == "early_bird":
        return [None]
    finished = [record["round"] for record in summary["rounds"]]
    return finished if kind == "imp" else finished[-1:]


class TestSets:
    """The corrupted test sets of one dataset, each computed once, as the `training.Evaluator` that scores it.

    Args:
      settings: the checked settings (`check_settings`).
    """

    def __init__(self, settings):
        self.settings = settings
        self.key = None
        self.evaluators = {}
        self.computed = 0  # corrupted sets made so far (a test counts them)

    def for_run(self, loaded):
        """dict (corruption, severity) -> Evaluator on `loaded`'s test set shifted so (made on first use).

        Raises:
          ShiftError: the settings' test_examples are more than the run's test set holds.
        """
        splits, dataset = loaded.splits, loaded.config["dataset"]
        key = (dataset, repr(getattr(splits, "file_hashes", None)), splits.test_x.shape)
        if key != self.key:  # the runs come grouped by dataset: one dataset's sets are held at a time
            self.key, self.evaluators = key, {}
        examples = self.settings["test_examples"] or len(splits.test_y)
        if examples > len(splits.test_y):
            raise ShiftError(f"test_examples={examples}, but {dataset}'s test set has {len(splits.test_y)}: pass at "
                             "most that many, or None for all.")
        test_x, test_y = splits.test_x[:examples], splits.test_y[:examples]
        normalize = run_models.input_normalization(loaded)
        evaluators = {}
        for corruption in self.settings["corruptions"]:
            for severity in self.settings["severities"]:
                shared = (corruption if severity else None, severity)  # severity 0 is the clean set of all
                if shared not in self.evaluators:
                    images = corruption_lib.corrupt(test_x, corruption, severity, self.settings["seed"])
                    if normalize is not None:
                        images = streaming.normalized(images, *normalize)
                    self.evaluators[shared] = training.Evaluator(images, test_y)
                    self.computed += 1
                evaluators[corruption, severity] = self.evaluators[shared]
        return evaluators


def _entry(folder, kind, config, loaded, evaluators, settings):
    accuracy = {corruption: {} for corruption in settings["corruptions"]}
    loss = {corruption: {} for corruption in settings["corruptions"]}
    for (corruption, severity), evaluator in evaluators.items():
        loss[corruption][str(severity)], accuracy[corruption][str(severity)] = map(float, evaluator(loaded.model))
    return {"run": folder, "kind": kind, "method": method_label(kind, config),
            "config": {key: config[key] for key in RECORDED_FIELDS if key in config},
            "round": loaded.round_index, "level": _level(kind, config, loaded.round_index),
            "weights_remaining": float(loaded.record["weights_remaining"]),
            "recorded_test_accuracy": float(loaded.record["test_accuracy"]),
            "recorded_test_loss": loaded.record.get("test_loss"), "accuracy": accuracy, "loss": loss}


def _level(kind, config, round_index):
    return round_index if kind == "imp" else config.get(LEVEL_FIELD[kind])


def evaluate(run_dirs, output_dir, corruptions=corruption_lib.CORRUPTIONS, severities=DEFAULT_SEVERITIES, seed=0,
             data_dir=None, test_examples=None, levels="all"):
    """Test accuracy of every finished round of every run under every (corruption, severity).

    Args:
      run_dirs: a path or paths: run folders, or folders holding them at any depth.
      output_dir: where shift.json goes (created if needed); one there already is resumed.
      corruptions: names from `keras_lottery.data.corruptions.CORRUPTIONS`.
      severities: ints 0..5 (0 = the clean test set; needed for relative accuracy).
      seed: seeds the corruptions' random draws (the same for every model).
      data_dir: where the runs' datasets are, if not where the runs read them.
      test_examples: score on the first this many test examples (a setting: kept in shift.json);
        None: all of them.
      levels: 'all', or the IMP rounds to evaluate ("0,4,8" or a list): the other rounds of IMP runs
        are left out (a run may lack some of them, but each must be finished by one of the runs); runs of
        one round are evaluated whatever it.

    Returns:
      The results, as written to shift.json: {"settings": {...}, "entries": [{"run", "kind",
      "method", "config", "round", "level", "weights_remaining", "recorded_test_accuracy",
      "recorded_test_loss" (what the run recorded of that round), "accuracy" and "loss"
      (`training.Evaluator`'s mean cross-entropy): {corruption: {str(severity): value}}}, ...]}.

    Raises:
      ShiftError: bad settings, no runs, an unreadable shift.json or one made with other settings.
      run_models.RunFolderError: an unreadable summary or an incomplete run folder.
      ValueError, data.DataUnavailableError: a run's dataset cannot be loaded.
    """
    settings = check_settings(corruptions, severities, seed, test_examples)
    levels = analysis_results.parse_levels(levels, ShiftError)
    if not output_dir:
        raise ShiftError("output_dir is required: the folder where shift.json goes.")
    runs, finished = [], set()
    for folder in find_run_folders(run_dirs):  # every summary read before any work
        summary = run_models.read_summary(folder)
        kind = run_kind(summary)
        if kind == "imp":
            finished |= {record["round"] for record in summary["rounds"]}
        runs.append((folder, kind, config_with_defaults(kind, summary["config"]), summary))
    # A level some runs lack is fine (a branch run holds only the levels it retrained); one no run has is a typo.
    missing = [] if levels == "all" else sorted(set(levels) - finished)
    if missing:
        raise ShiftError(f"levels {missing}: no IMP run given has finished them; their finished rounds are "
                         f"{sorted(finished)}.")
    path = os.path.join(output_dir, SHIFT_FILE)
    results = {"settings": settings, "entries": []}
    if os.path.exists(path):
        results = analysis_results.read(path, ("settings", "entries"), ShiftError)
        results["settings"].setdefault("test_examples", None)  # written before the setting: every example
        analysis_results.check_same_settings(results, settings, path, ShiftError,
                                             "corruptions, severities, seed and test_examples")
    done = {(os.path.realpath(entry["run"]), entry["round"]) for entry in results["entries"]}
    test_sets = TestSets(settings)
    runs.sort(key=lambda run: (run[2]["dataset"], str(data_dir or run[2].get("data_dir"))))  # stable: found order
    for folder, kind, config, summary in runs:
        asked = [r for r in rounds_to_evaluate(kind, summary) if kind != "imp" or levels == "all" or r in levels]
        rounds = [r for r in asked if (os.path.realpath(folder), r) not in done]
        for round_index in rounds:
            loaded = run_models.load_run_model(folder, round_index, data_dir)
            results["entries"].append(_entry(folder, kind, config, loaded, test_sets.for_run(loaded), settings))
            files.write_json(path, results)
        _LOG.info("shift: %s (%s): %d round(s) evaluated, %d already in %s", folder, method_label(kind, config),
                  len(rounds), len(asked) - len(rounds), path)
    if not os.path.exists(path):  # nothing to evaluate (runs without a finished round): still a result
        files.write_json(path, results)
    return results


def _statistics(values):
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "n": int(len(values))}


def summarize(results):
    """Seeds aggregated: per (dataset, model, method, level), accuracy and relative accuracy statistics.

    A level is an IMP round's weights remaining (so IMP runs at other prune rates do not mix), or the
    LEVEL_FIELD of the other kinds; each seed counts once per point (its first run found).

    Args:
      results: what `evaluate` returns (or shift.json holds).

    Returns:
      A list of rows, grouped by dataset and model, methods in the order first found,
      levels by weights remaining (most first): {"dataset", "model", "method", "kind",
      "level", "dense" (IMP round 0), "weights_remaining" (mean), "runs", "seeds",
      "accuracy" and "relative": {corruption: {str(severity): {"mean", "std" (sample;
      None for one run), "n"}}}}. Relative accuracy is acc(severity) / acc(0) per run,
      then averaged; it is empty when severity 0 was not evaluated, and leaves out runs
      whose clean accuracy is 0.
    """
    groups = collections.defaultdict(dict)
    for entry in results["entries"]:
        config = entry["config"]
        # An IMP round is placed by its weights remaining, not its index: runs of one method at other prune
        # rates (a comparison grid's IMP cells) reach other levels in the same round. A seed counts once per
        # point: those runs share their dense round 0, the same network, which must not count four times.
        level = round(entry["weights_remaining"], 6) if entry["kind"] == "imp" else entry["level"]
        groups[config.get("dataset"), config.get("model"), entry["method"], level].setdefault(config.get("seed"), entry)
    groups = {key: list(by_seed.values()) for key, by_seed in groups.items()}
    data_models = list(dict.fromkeys(key[:2] for key in groups))
    methods = list(dict.fromkeys(key[:3] for key in groups))
    rows = []
    for dataset, model, method, level in groups:
        entries = groups[dataset, model, method, level]
        accuracy, relative = {}, {}
        for corruption in results["settings"]["corruptions"]:
            accuracy[corruption], relative[corruption] = {}, {}
            for severity in map(str, results["settings"]["severities"]):
                accuracy[corruption][severity] = _statistics([e["accuracy"][corruption][severity] for e in entries])
                kept = [e["accuracy"][corruption][severity] / e["accuracy"][corruption]["0"] for e in entries
                        if e["accuracy"][corruption].get("0")]
                if kept:
                    relative[corruption][severity] = _statistics(kept)
        rows.append({"dataset": dataset, "model": model, "method": method, "kind": entries[0]["kind"],
                     "level": level, "dense": entries[0]["kind"] == "imp" and entries[0]["round"] == 0,
                     "weights_remaining": float(np.mean([e["weights_remaining"] for e in entries])),
                     "runs": [e["run"] for e in entries], "seeds": [e["config"].get("seed") for e in entries],
                     "accuracy": accuracy, "relative": relative})
    rows.sort(key=lambda row: (data_models.index((row["dataset"], row["model"])),
                               methods.index((row["dataset"], row["model"], row["method"])), -row["weights_remaining"]))
    return rows
