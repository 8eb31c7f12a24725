"""Instability analysis (linear mode connectivity) of finished IMP runs.

    config = InstabilityConfig(runs=["runs/lenet_s0", "runs/lenet_s1"], output_dir="instability",
                               levels="0,3,6", rewind_iterations="0,100,500")
    results = run(config)          # writes instability/instability.json after every cell
    rows = summarize(results)      # seeds aggregated

Frankle, Dziugaite, Roy & Carbin, "Linear Mode Connectivity and the Lottery Ticket
Hypothesis" (ICML 2020). The instability of a network state W_k at iteration k: train two
copies of it for the rest of training with different SGD noise, then evaluate the test
error along the straight line between them (`interpolation.interpolate`, `points` evenly
spaced alphas, the paper's 30 by default); the error barrier is the largest error on the
line minus the mean of the endpoints' errors (`interpolation.barrier`; the loss barrier
likewise). A state is stable when its barrier is about 0: the paper's threshold, 2%, is
recorded as the flag `stable` (barrier < STABLE_THRESHOLD).

For each source run, each level L asked (a finished IMP round; 0 is the dense network)
and each k in `rewind_iterations` (a cell):

* W_k is the source's dense round 0 replayed: the network built as the source built it
  (`imp.build_model`, the source's seed: its initial weights), trained k iterations with
  the source's recipe on round 0's data order (`splits.train_batches(batch, seed * 1000)`,
  the stream `rounds.train_round` used), then masked by the source's round-L masks (level
  0: none), or with `masks='random'` (or 'imp,random': a cell of each) by the random-pruning
  control's: as many weights kept in each layer, at random positions (`random_masks`),
  which tells whether a ticket's stability comes from its IMP mask or from its sparsity
  alone. A cell is (level, k, masks), its entry records `masks`, and a random cell's copies
  read the same two data orders as the IMP cell's. One replay per source, to the largest
  k, snapshots at each k. When the
  source's `rewind_step` is one of the k, the replayed state is compared with the source's
  saved rewind snapshot and the largest absolute difference recorded (`replay_check`; 0
  on CPU in our tests); a difference above REPLAY_TOLERANCE is logged as a warning.
* Each copy trains T - k iterations, T being the source round's iterations
  (`iterations_per_round`), in the package's pruning wrappers with the level's masks set,
  so that pruned weights stay exactly 0 in both copies and all along the line. The
  optimizer starts fresh (its state zeroed, as our IMP rounds after a rewind), and the
  learning-rate schedule continues from iteration k (the recipe's `RecipeSchedule` started
  at k), whatever the source's `after_rewind`.
* The SGD noise is the data order (and the augmentation, keyed on the same seed, where the
  run augments): copy c of (level, k) reads the stream of `copy_seed(seed, level, k, c)`,
  different for the two copies. `same_data_order=True` gives both copies copy 0's stream:
  they train alike, and the barrier is exactly 0 (the known answer the tests check).
  Dropout noise, where a model has dropout, is not controlled.
* BatchNorm: every variable is interpolated, the moving statistics included (no
  recomputation at each alpha; see `interpolation.py`).
* Also the ticket-to-dense path of each level L > 0: the error along the line between the
  source's trained round-L ticket (its final weights, masked) and its trained dense network
  (round 0's final weights), evaluated with masks of ones.

Differences from the paper: its sparse instability at k uses IMP masks found with
rewinding to that same k; ours uses the source run's masks (found with the source's
rewind point) at every k. To reproduce the paper exactly, pass one source run per k made
with `rewind_step=k` and read each at its own k. The paper's copies train with the full
recipe from k; so do ours, but with a fresh optimizer state at k.

Resumable: `<output_dir>/instability.json` (written atomically) holds the settings, each
source's record, every finished cell and ticket-to-dense path; a rerun skips what is there
and adds new runs, levels, k or mask kinds. The replayed states and each copy's trained weights are
kept as .npz under `<output_dir>/copies/` until the cells that need them are written (so
a kill between copy A and copy B does not train A again), then removed (`keep_copies`
keeps them). A rerun with other settings (interpolation points, test examples,
same_data_order) is refused naming the difference.
"""

import contextlib
import dataclasses
import hashlib
import logging
import os
import re
import shutil

import numpy as np
import tensorflow as tf

from keras_lottery import data
from keras_lottery import training
from keras_lottery.experiments import analysis_results
from keras_lottery.experiments import imp
from keras_lottery.experiments import interpolation
from keras_lottery.experiments import rounds
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import run_models
from keras_lottery.experiments import shift
from keras_lottery.experiments.imp_config import ImpConfig, with_defaults
from keras_lottery.experiments.instability_config import (  # noqa: F401  (this module's API)
    DEFAULT_REWIND_ITERATIONS,
    STABLE_THRESHOLD,
    InstabilityConfig,
    MASKS,
    InstabilityError,
    copy_seed,
    parse_levels,
    parse_masks,
    parse_rewind_iterations,
    random_masks,
)
from keras_lottery.foundations import files
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import wrappers

INSTABILITY_FILE = "instability.json"
COPIES_DIR = "copies"
REPLAY_TOLERANCE = 1e-5

_LOG = logging.getLogger(__name__)


@dataclasses.dataclass
class _Source:
    folder: str
    key: str  # real path: the same run found twice is one source
    summary: dict
    config: ImpConfig
    levels: list
    iterations: int


def _load_source(path, config):
    summary = run_models.read_summary(path)
    kind = shift.run_kind(summary)
    if kind != "imp" or "branch" in summary:
        what = "a branch" if "branch" in summary else f"a {kind.replace('_', '-')} run"
        raise InstabilityError(f"{path} is {what}: the instability analysis replays an IMP run's dense training "
                               "from its initialization; pass IMP run folders (apps.imp_main).")
    saved = with_defaults(summary["config"])
    known = {field.name for field in dataclasses.fields(ImpConfig)}
    imp_config = ImpConfig(**{key: value for key, value in saved.items() if key in known}).resolved()
    finished = [record["round"] for record in summary["rounds"]]
    levels = finished if config.levels == "all" else config.levels
    missing = [level for level in levels if level not in finished]
    if missing or not levels:
        raise InstabilityError(f"levels {missing or levels}: {path} has finished rounds {finished}; pick among them "
                               "(or levels='all').")
    iterations = summary.get("iterations_per_round")
    if iterations is None:
        raise InstabilityError(f"{path}/summary.json has no iterations_per_round (an older run): rerun its "
                               "apps.imp_main command once, which records it, then analyze it.")
    late = [k for k in config.rewind_iterations if k >= iterations]
    if late:
        raise InstabilityError(f"rewind_iterations {late} are not before the end of {path}'s training ({iterations} "
                               "iterations a round): the copies would train nothing. Pick smaller k.")
    return _Source(path, os.path.realpath(path), summary, imp_config, list(levels), int(iterations))


def _as_list(arrays):
    return [arrays[key] for key in sorted(arrays)]


def _as_dict(values):
    return {f"{index:04d}": np.asarray(value) for index, value in enumerate(values)}


def replay_states(model, config, splits, ks):
    """The source's dense round 0 replayed: the weights after k iterations, for each k in `ks`.

    Args:
      model: the source's network as `imp.build_model` built it (seeded: its initial weights), all
        masks ones, compiled by `rounds.compile_for_round` for the source's round length, with steps
        per execution dividing every k.
      config: the source's `ImpConfig`.
      splits: the source's data.
      ks: sorted iterations.

    Returns:
      dict k -> list of arrays, in `RewindCallback.rewindable_variables(model)` order.
    """
    snapshots = [callbacks.RewindCallback(k) for k in ks]
    callbacks.reset_optimizer(model.optimizer)
    training.set_schedule_start(model.optimizer, 0)
    if ks[-1] == 0:
        for snapshot in snapshots:
            snapshot.take_snapshot(model)
    else:
        # tf.data's seeded shuffle also depends on TensorFlow's global seed: the source's, set by models.build.
        tf.random.set_seed(config.seed)
        train = splits.train_batches(config.batch_size, config.seed * 1000, augment=config.augment)
        model.fit(train, epochs=1, steps_per_epoch=ks[-1], verbose=0,
                  callbacks=[*snapshots, training.StopOnDivergence("the replay of round 0", config.learning_rate)])
    return {k: snapshot.snapshot for k, snapshot in zip(ks, snapshots)}


def _train_copy(model, config, splits, state, masks, k, iterations, seed):
    """Copy of W_k (`state` masked by `masks`) trained `iterations` - k steps on the stream of `seed`."""
    variables = callbacks.RewindCallback.rewindable_variables(model)
    wrappers.set_masks(model, masks)
    for variable, value in zip(variables, state):
        variable.assign(value)
    callbacks.reset_optimizer(model.optimizer)
    wrappers.apply_masks(model)  # W_k masked: pruned weights exactly 0
    training.set_schedule_start(model.optimizer, k)
    tf.random.set_seed(config.seed)  # as in `replay_states`: the stream is a function of the seeds only
    train = splits.train_batches(config.batch_size, seed, augment=config.augment)
    model.fit(train, epochs=1, steps_per_epoch=iterations - k, verbose=0,
              callbacks=[training.StopOnDivergence(f"a copy from iteration {k}", config.learning_rate)])
    return [variable.numpy() for variable in variables]


def _masked_final_weights(model, folder, level):
    """Round `level`'s final weights, each kernel multiplied by its mask (pruned weights exactly 0)."""
    weights = _as_list(folder.load_final_weights(level))
    masks = folder.load_masks(level)
    position = {id(v): i for i, v in enumerate(callbacks.RewindCallback.rewindable_variables(model))}
    for name, _, weight, _ in wrappers.pruning_entries(model):
        weights[position[id(weight)]] = weights[position[id(weight)]] * masks[name]
    return weights


def _path_record(alphas, errors, losses):
    error_barrier = interpolation.barrier(errors)
    return {"alphas": alphas, "errors": errors, "losses": losses, "error_barrier": error_barrier,
            "loss_barrier": interpolation.barrier(losses), "stable": error_barrier < STABLE_THRESHOLD}


class _Analysis:
    """One call of `run`: the results file, the copies folder, and the work on each source."""

    def __init__(self, config, results, path, on_cell_end):
        self.config, self.results, self.path, self.on_cell_end = config, results, path, on_cell_end

    def save(self):
        files.write_json(self.path, self.results)

    def copies_dir(self, source):
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", os.path.basename(source.key) or "run")
        return os.path.join(self.config.output_dir, COPIES_DIR,
                            f"{name}-{hashlib.sha1(source.key.encode()).hexdigest()[:8]}")

    def analyze(self, source):
        config = self.config
        done = {(entry["level"], entry["k"], entry.get("masks", "imp"))  # entries from before `masks`: IMP
                for entry in self.results["cells"] if entry["source"] == source.key}
        # Random masks at level 0 are masks of ones: the dense cells again.
        cells = [(level, k, kind) for kind in config.masks for level in source.levels for k in config.rewind_iterations
                 if (level, k, kind) not in done and (kind == "imp" or level > 0)]
        done_paths = {entry["level"] for entry in self.results["ticket_to_dense"] if entry["source"] == source.key}
        # A random mask has no trained ticket to draw a line to the dense network from.
        paths = [level for level in source.levels
                 if level > 0 and level not in done_paths and "imp" in config.masks]
        if not cells and not paths:
            return
        cfg, folder = source.config, run_folder.RunFolder(source.folder)
        splits = data.load_for_training(cfg.dataset, config.data_dir or cfg.data_dir, cfg.validation_examples,
                                        cfg.train_examples)
        folder.check_data(source.summary, run_folder.data_record(splits))  # the replay needs the source's data
        examples = len(splits.test_y) if config.test_examples is None else config.test_examples
        if examples > len(splits.test_y):
            raise InstabilityError(f"test_examples={examples}, but {source.folder}'s test set has "
                                   f"{len(splits.test_y)}: pass at most that many, or None for all.")
        test = (splits.test_x[:examples], splits.test_y[:examples])
        ks = sorted({k for _, k, _ in cells})
        model = imp.build_model(cfg, splits, source.iterations)  # seeded as the source: its initial weights
        wrappers.manage_masks(model)  # masks are set by hand: the source's
        steps = training.steps_per_execution(source.iterations, *ks, *[source.iterations - k for k in ks])
        rounds.compile_for_round(model, cfg, splits, source.iterations, steps)
        states = self.states(source, model, cfg, splits, ks) if cells else {}
        for level, k, kind in cells:
            self.cell(source, model, cfg, splits, level, k, kind, states[k], test)
        for level in paths:
            wrappers.set_masks(model, folder.load_masks(0))  # ones: the dense endpoint uses every weight
            record = _path_record(*interpolation.interpolate(
                model, _masked_final_weights(model, folder, level), _as_list(folder.load_final_weights(0)),
                config.interpolation_points, *test))
            self.add("ticket_to_dense", {**self.identity(source, level), **record})
        if not config.keep_copies:
            shutil.rmtree(self.copies_dir(source), ignore_errors=True)
            with contextlib.suppress(OSError):  # only an empty folder goes: other sources may have theirs there
                os.rmdir(os.path.join(config.output_dir, COPIES_DIR))

    def states(self, source, model, cfg, splits, ks):
        """W_k for each k: from the copies folder where an earlier call saved them, else replayed."""
        paths = {k: os.path.join(self.copies_dir(source), f"replay_k{k}.npz") for k in ks}
        if all(os.path.exists(path) for path in paths.values()):
            return {k: _as_list(run_folder.read_npz(path)) for k, path in paths.items()}
        wrappers.set_masks(model, run_folder.RunFolder(source.folder).load_masks(0))
        states = replay_states(model, cfg, splits, ks)
        for k, path in paths.items():
            files.write_npz(path, _as_dict(states[k]))
        record = self.results["sources"][source.key]
        if cfg.rewind_step in states:
            snapshot = _as_list(run_folder.RunFolder(source.folder).load_snapshot())
            difference = max(float(np.max(np.abs(a - b), initial=0.0)) for a, b in zip(states[cfg.rewind_step],
                                                                                      snapshot))
            record["replay_check"] = {"k": cfg.rewind_step, "max_abs_difference": difference,
                                      "matches": difference <= REPLAY_TOLERANCE}
            if difference > REPLAY_TOLERANCE:
                _LOG.warning("instability: %s's round 0 replayed to iteration %d differs from its rewind snapshot "
                             "by up to %g: W_k is not exactly the source's.", source.folder, cfg.rewind_step,
                             difference)
            self.save()
        return states

    def identity(self, source, level, kind="imp"):
        record = source.summary["rounds"][[r["round"] for r in source.summary["rounds"]].index(level)]
        return {"run": source.folder, "source": source.key, "dataset": source.config.dataset,
                "model": source.config.model, "seed": source.config.seed, "level": level, "masks": kind,
                "weights_remaining": float(record["weights_remaining"])}

    def copy_path(self, source, level, k, kind, copy):
        tag = "" if kind == "imp" else f"_{kind}"  # the IMP copies keep the names they had before `masks`
        return os.path.join(self.copies_dir(source), f"level{level}_k{k}{tag}_copy{copy}.npz")

    def cell(self, source, model, cfg, splits, level, k, kind, state, test):
        masks = run_folder.RunFolder(source.folder).load_masks(level)
        if kind == "random":
            masks = random_masks(masks, cfg.seed, level)
        seeds = [copy_seed(cfg.seed, level, k, copy) for copy in (0, 1)]
        if self.config.same_data_order:
            seeds[1] = seeds[0]
        copies = []
        for copy, seed in enumerate(seeds):
            path = self.copy_path(source, level, k, kind, copy)
            if os.path.exists(path):
                copies.append(_as_list(run_folder.read_npz(path)))
                continue
            copies.append(_train_copy(model, cfg, splits, state, masks, k, source.iterations, seed))
            files.write_npz(path, _as_dict(copies[-1]))
            if self.config.verbose >= 2:
                _LOG.info("instability: %s level %d k=%d: copy %d trained", source.folder, level, k, copy)
        wrappers.set_masks(model, masks)
        record = _path_record(*interpolation.interpolate(model, copies[0], copies[1],
                                                         self.config.interpolation_points, *test))
        self.add("cells", {**self.identity(source, level, kind), "k": k, "iterations": source.iterations - k,
                           "copy_seeds": seeds, **record})
        if not self.config.keep_copies:
            for copy in (0, 1):
                path = self.copy_path(source, level, k, kind, copy)
                if os.path.exists(path):
                    os.remove(path)

    def add(self, kind, entry):
        self.results[kind].append(entry)
        self.save()
        if self.config.verbose:
            where = f"k={entry['k']}" if kind == "cells" else "ticket to dense"
            _LOG.info("instability: %s level %d (%.3g%% weights), %s: error barrier %.4f, loss barrier %.4f",
                      entry["run"], entry["level"], 100 * entry["weights_remaining"], where, entry["error_barrier"],
                      entry["loss_barrier"])
        if self.on_cell_end is not None:
            self.on_cell_end(kind, entry)


def run(config, on_cell_end=None):
    """Runs (or resumes) the analysis and returns its results, as written to instability.json.

    Args:
      config: an `InstabilityConfig`.
      on_cell_end: optional callable(kind, entry) after each entry written: kind 'cells' (an
        instability cell) or 'ticket_to_dense'.

    Returns:
      {"settings": {...}, "sources": {real path: {"run", "dataset", "model", "seed", "rewind_step",
      "iterations", "levels", "replay_check" (None unless rewind_step is one of the k)}},
      "cells": [{"run", "source", "dataset", "model", "seed", "level", "masks", "weights_remaining", "k",
      "iterations" (per copy), "copy_seeds", "alphas", "errors", "losses", "error_barrier",
      "loss_barrier", "stable"}, ...], "ticket_to_dense": [the same without k, iterations and seeds]}.

    Raises:
      InstabilityError: a bad setting, a run that is not a finished IMP run, a level it has not
        finished, a k not before its end, an unreadable instability.json or one of other settings:
        all before any training; more test examples than a source's test set: before that source's.
      run_folder.DataMismatchError: the data found is not the data the source trained on.
      run_folder.RunInUseError: another process works in output_dir.
      training.TrainingDivergedError: a copy's loss became NaN.
    """
    config = config.resolved()
    sources, seen = [], set()
    try:
        folders = shift.find_run_folders(config.runs)
    except shift.ShiftError as error:
        raise InstabilityError(str(error)) from None
    for folder in folders:  # every source read and checked before any work
        source = _load_source(folder, config)
        if source.key not in seen:
            seen.add(source.key)
            sources.append(source)
    path = os.path.join(config.output_dir, INSTABILITY_FILE)
    settings = config.settings()
    if os.path.exists(path):
        results = analysis_results.read(path, ("settings", "sources", "cells", "ticket_to_dense"), InstabilityError)
        analysis_results.check_same_settings(results, settings, path, InstabilityError)
    else:
        results = {"settings": settings, "sources": {}, "cells": [], "ticket_to_dense": []}
    with run_folder.RunFolder(config.output_dir).locked():
        analysis = _Analysis(config, results, path, on_cell_end)
        for source in sources:
            results["sources"].setdefault(source.key, {
                "run": source.folder, "dataset": source.config.dataset, "model": source.config.model,
                "seed": source.config.seed, "rewind_step": source.config.rewind_step,
                "iterations": source.iterations, "replay_check": None})
            results["sources"][source.key]["levels"] = sorted(
                set(results["sources"][source.key].get("levels", [])) | set(source.levels))
            analysis.analyze(source)
        analysis.save()
    return results


def _statistics(values):
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "n": int(len(values))}


def _aggregate(entries, key_of):
    groups = {}
    for entry in entries:
        # A seed counts once per point (its first source found), as in shift.summarize.
        groups.setdefault(key_of(entry), {}).setdefault(entry["seed"], entry)
    rows = []
    for key, by_seed in groups.items():
        members = list(by_seed.values())
        error_barrier = _statistics([entry["error_barrier"] for entry in members])
        rows.append({"dataset": key[0], "model": key[1], "level": key[2],
                     "weights_remaining": float(np.mean([entry["weights_remaining"] for entry in members])),
                     "masks": key[4], **({"k": key[5]} if len(key) > 5 else {}),
                     "error_barrier": error_barrier,
                     "loss_barrier": _statistics([entry["loss_barrier"] for entry in members]),
                     "stable": error_barrier["mean"] < STABLE_THRESHOLD,
                     "alphas": members[0]["alphas"],
                     "errors": np.mean([entry["errors"] for entry in members], axis=0).tolist(),
                     "seeds": [entry["seed"] for entry in members], "runs": [entry["run"] for entry in members]})
    order = list(dict.fromkeys((row["dataset"], row["model"]) for row in rows))
    rows.sort(key=lambda row: (order.index((row["dataset"], row["model"])), row["level"], -row["weights_remaining"],
                               MASKS.index(row["masks"]), row.get("k", 0)))
    return rows


def summarize(results):
    """Seeds aggregated: barrier statistics per (dataset, model, level, masks, k), and per level of the
    ticket-to-dense path.

    Cells group by (dataset, model, level, weights remaining, masks, k): sources of other prune rates reach
    other weights remaining at one level and stay apart, and so do the IMP and random masks of a level.
    Each seed counts once per group.

    Args:
      results: what `run` returns (or instability.json holds).

    Returns:
      {"cells": [{"dataset", "model", "level", "weights_remaining", "masks", "k", "error_barrier" and
      "loss_barrier": {"mean", "std" (sample; None for one seed), "n"}, "stable" (mean error barrier below
      STABLE_THRESHOLD), "alphas", "errors" (the mean error curve), "seeds", "runs"}, ...] sorted by
      dataset/model, level, masks ('imp' first) and k, "ticket_to_dense": [the same rows without k]}.
    """
    def path_key(entry):  # entries written before `masks` existed are IMP's
        return (entry["dataset"], entry["model"], entry["level"], round(entry["weights_remaining"], 6),
                entry.get("masks", "imp"))

    def cell_key(entry):
        return (*path_key(entry), entry["k"])

    return {"cells": _aggregate(results["cells"], cell_key),
            "ticket_to_dense": _aggregate(results["ticket_to_dense"], path_key)}
