"""The neuron-fusion sweep: every finished ticket of runs fused by each method at each width, before and after
a short fine-tune.

    results = run(FusionSweepConfig(runs=["runs/lenet"], output_dir="fusion"))   # writes fusion/fusion_sweep.json
    rows = summarize(results)                                                   # seeds aggregated

Unstructured sparsity saves storage, not compute: a masked ticket keeps its dense tensors.
`keras_lottery.fusion.fuse_neurons` turns it into a narrower dense network. This sweep asks
the research idea's four questions (neuron fusion, in the project's research notes) of finished
run folders (`run_models.load_run_model`: IMP runs, every finished round, round 0 being the
dense network; one-pass and sparse runs, their one round; early-bird runs, their ticket):

1. which criterion picks the units, and how many: each method of `FUSION_METHODS` at each
   fraction of units removed. 'exact' is the exact pass alone (no unit that matters goes,
   outputs unchanged); the merge methods 'l1', 'data_free' and 'data_aware' of
   `fusion.merge` remove `fraction` of the units of every Dense/Conv2D layer that fusion may
   narrow (`MergeBudget(fraction, method)`: of the input model's units, the exact pass's
   removals included). Fraction 0 of any method is the exact pass, recorded once as
   ('exact', 0.0), the first point of every method's curve;
2. how they are fused: the method (plain removal 'l1'; Neuron Merging 'data_free', Kim et
   al., NeurIPS 2020; a least-squares refit of the next layer, 'data_aware');
3. whether retraining is needed: test accuracy right after fusion and after
   `fine_tune_iterations` of training on the run's training split, with what it cost;
4. how it depends on architecture, sparsity and recipe: the runs given define those; each
   IMP round is a sparsity. Per-layer widths are recorded, so a ResNet's layers that feed
   its Add skips (which fusion keeps whole) show where the network narrows.

Recorded (`run` lists the fields): the masked ticket's and every fused model's test loss and
accuracy, multiply-adds (dense, `fusion.report.model_multiply_adds`, as a fused model runs;
nonzero, `sparsity.flops.inference_flops`, as the masked ticket could at best), parameters,
widths, units removed, seconds, and the fine-tune's counted iterations and weight change. A
method that cannot rewrite a model (data_free needs ReLU or linear activations and no
BatchNormalization between a layer and its consumers) is recorded with its message.

Choices of ours:
* Calibration data ('data_aware' refits on it; every method's exact pass is checked on its
  first 256 inputs) is the run's first `calibration_examples` training examples, never
  test data. Runs of datasets that the flows normalize (all but MNIST and Fashion-MNIST)
  have their images normalized as their training was, as `experiments.shift` does.
* The fine-tune trains every weight of the fused model (a small dense network: the
  ticket's zeros may become nonzero) with the run's own optimizer, momentum and weight
  decay (`training.make_optimizer` of its recipe) at a constant learning rate: the one its
  schedule ended training at (the base rate; a 'step' schedule's after all its milestones,
  e.g. 0.001 for OpenLTH's ResNet-20; a 'cosine' one ends at 0, so COSINE_FINE_TUNE_SCALE of
  its base rate), unless `fine_tune_learning_rate` is given; batches of the run's batch
  size, shuffled with `seed`, no augmentation, nothing frozen (BatchNorm is folded away).
  `fusion.FineTune` (Adam 1e-4 by epochs) is not used: it counts epochs, not iterations.
* `<output_dir>/fusion_sweep.json` is rewritten (atomically) after each (run, round), so an
  interrupted sweep resumes where it stopped: a (run folder, round) already there is not
  recomputed, and new runs or rounds are added. Its settings (`SETTING_FIELDS`) are recorded
  and a call with other ones for the same output_dir is refused naming the difference.
* `summarize` averages over every run of one method label, dataset and model at one level
  (IMP: the round's weights remaining; the other kinds: `shift.LEVEL_FIELD`), one entry per
  seed, whatever their other settings: pass comparable runs.
"""

import collections
import dataclasses
import logging
import os
import time

import numpy as np

from keras_lottery import compat
from keras_lottery import data
from keras_lottery import fusion
from keras_lottery import training
from keras_lottery.experiments import analysis_results
from keras_lottery.experiments import run_models
from keras_lottery.experiments import shift
from keras_lottery.foundations import files
from keras_lottery.foundations.validation import check_int
from keras_lottery.fusion import report as fusion_report
from keras_lottery.sparsity import flops

keras = compat.keras
FUSION_SWEEP_FILE = "fusion_sweep.json"
FUSION_METHODS = ("exact", *fusion.METHODS)
DEFAULT_FRACTIONS = (0.0, 0.25, 0.5, 0.75)
SETTING_FIELDS = ("methods", "fractions", "fine_tune_iterations", "fine_tune_learning_rate", "calibration_examples",
                  "test_examples", "seed")
COSINE_FINE_TUNE_SCALE = 0.01  # a cosine schedule's rate at about 94% of its length
CHECK_EXAMPLES = 256  # calibration inputs on which fuse_neurons checks its exact pass

_LOG = logging.getLogger(__name__)


class FusionSweepError(ValueError):
    """Bad sweep input: no runs, a bad setting, an unfinished round, or a fusion_sweep.json of other settings."""


def _number_list(values, name, check):
    values = [values] if isinstance(values, (str, int, float)) else list(values)
    if not values or len(set(values)) != len(values):
        raise FusionSweepError(f"{name} must be a non-empty list without repeats; got {values!r}.")
    for value in values:
        check(value)
    return values


@dataclasses.dataclass
class FusionSweepConfig:
    """What the sweep fuses, and how.

    Attributes:
      runs: run folders, or folders holding them at any depth.
      output_dir: where fusion_sweep.json goes (created if needed); one there is resumed.
      methods: of FUSION_METHODS; 'exact' is also run whenever 0 is among the fractions.
      fractions: fractions of units removed, each in [0, 1); those above 0 apply to the
        merge methods, 0 is the exact pass.
      fine_tune_iterations: training iterations after fusion (0: no fine-tune).
      fine_tune_learning_rate: the fine-tune's constant rate; None: the rate the run's
        schedule ended at (see the module docstring).
      calibration_examples: the first training examples 'data_aware' refits on.
      test_examples: the first test examples scored; None: the whole test set.
      rounds: 'all', or the IMP rounds to fuse (a list of ints or "0,3,5"); the other
        kinds of run have one model, fused whatever this says.
      data_dir: where the runs' datasets are, if not where the runs read them.
      seed: seeds the fine-tune's batch order.
    """

    runs: tuple = ()
    output_dir: str = ""
    methods: tuple = FUSION_METHODS
    fractions: tuple = DEFAULT_FRACTIONS
    fine_tune_iterations: int = 300
    fine_tune_learning_rate: float | None = None
    calibration_examples: int = 2000
    test_examples: int | None = None
    rounds: object = "all"
    data_dir: str | None = None
    seed: int = 0

    def resolved(self):
        """A checked copy: lists normalized (fractions sorted floats, rounds 'all' or sorted ints).

        Raises:
          FusionSweepError: naming the bad field and what it accepts.
        """
        config = dataclasses.replace(self)
        if not config.output_dir:
            raise FusionSweepError("output_dir is required: the folder where fusion_sweep.json goes.")

        def known(method):
            if method not in FUSION_METHODS:
                raise FusionSweepError(f"unknown fusion method {method!r}: choose among {', '.join(FUSION_METHODS)}.")

        def fraction(value):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
                raise FusionSweepError(f"fractions are shares of units removed, each in [0, 1); got {value!r}.")

        config.methods = tuple(_number_list(config.methods, "methods", known))
        config.fractions = tuple(sorted(float(value) for value in _number_list(config.fractions, "fractions",
                                                                               fraction)))
        try:
            config.fine_tune_iterations = check_int(config.fine_tune_iterations, "fine_tune_iterations", 0)
            config.calibration_examples = check_int(config.calibration_examples, "calibration_examples", 1)
            if config.test_examples is not None:
                config.test_examples = check_int(config.test_examples, "test_examples", 1)
            config.seed = check_int(config.seed, "seed", 0)
        except ValueError as error:
            raise FusionSweepError(str(error)) from None
        rate = config.fine_tune_learning_rate
        if rate is not None and (isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate < 1e3):
            raise FusionSweepError(f"fine_tune_learning_rate must be a number > 0, or None (the run's); got {rate!r}.")
        config.rounds = _check_rounds(config.rounds)
        return config

    def settings(self):
        """The recorded settings (`SETTING_FIELDS`), JSON-ready; call on a resolved config."""
        return {name: list(value) if isinstance(value, tuple) else value
                for name, value in ((name, getattr(self, name)) for name in SETTING_FIELDS)}

    def fusions(self):
        """The (method, fraction) pairs each ticket gets, in order: ('exact', 0.0) first when run."""
        pairs = [("exact", 0.0)] if "exact" in self.methods or 0.0 in self.fractions else []
        return pairs + [(method, fraction) for method in self.methods if method != "exact"
                        for fraction in self.fractions if fraction > 0]


def _check_rounds(rounds):
    if isinstance(rounds, str) and rounds.strip() == "all":
        return "all"
    text = rounds if isinstance(rounds, str) else None
    try:
        values = [int(part) for part in rounds.split(",")] if text is not None else list(rounds)
        values = [check_int(value, "each round", 0) for value in values]
    except (TypeError, ValueError):
        raise FusionSweepError(f"rounds must be 'all' or IMP round numbers such as '0,3,5'; got {rounds!r}.") from None
    if not values or len(set(values)) != len(values):
        raise FusionSweepError(f"rounds must be 'all' or distinct IMP round numbers; got {rounds!r}.")
    return tuple(sorted(values))


def _rounds_of(folder, kind, summary, rounds):
    """The rounds of one run to fuse; a requested IMP round it has not finished is refused."""
    available = shift.rounds_to_evaluate(kind, summary)
    if kind != "imp" or rounds == "all":
        return available
    missing = [r for r in rounds if r not in available]
    if missing:
        raise FusionSweepError(f"{folder} has not finished rounds {missing}; its finished rounds are {available}: "
                               "pass --rounds among them (or 'all').")
    return list(rounds)


def _inputs(loaded):
    """(train_x, test_x) as the run trained on them: normalized per channel for the datasets the flows normalize."""
    splits = run_models.splits_as_trained(loaded)
    return splits.train_x, splits.test_x


def fine_tune_optimizer_config(run_config, learning_rate=None):
    """The run's recipe at a constant learning rate, for `training.make_optimizer` (see the module docstring).

    Args:
      run_config: a run's saved config dict, with defaults (`shift.config_with_defaults`).
      learning_rate: the constant rate, or None for the rate the run's schedule ended at.

    Returns:
      A resolved `training.TrainingConfig` with lr_schedule 'constant' and no warmup.
    """
    names = {field.name for field in dataclasses.fields(training.TrainingConfig)}
    resolved = training.TrainingConfig(**{key: value for key, value in run_config.items() if key in names}).resolved()
    if learning_rate is None:
        learning_rate = resolved.learning_rate
        if resolved.lr_schedule == "step":
            learning_rate *= resolved.lr_gamma ** len(training.lr_schedules.split_lengths(resolved.lr_milestones))
        elif resolved.lr_schedule == "cosine":
            learning_rate *= COSINE_FINE_TUNE_SCALE
    return dataclasses.replace(resolved, learning_rate=float(learning_rate), lr_schedule="constant",
                               lr_milestones="", warmup="")


def fine_tune(model, x, y, iterations, batch_size, optimizer, seed=0):
    """Trains `model` for `iterations` batches of (x, y) and says what that did.

    The batches are `data.to_dataset(x, y, batch_size, shuffle_seed=seed, repeat=True)`
    in order; the loss is the flows' (`training.compile_for_training`).

    Args:
      model: a tf_keras model on logits (compiled here, in place).
      x, y: training inputs and integer labels.
      iterations: training steps (an int >= 1).
      batch_size: examples per step.
      optimizer: a fresh tf_keras optimizer instance.
      seed: the batch order's shuffle seed (and Keras's global seed, for dropout).

    Returns:
      dict: "iterations" (batches counted as they ran), "seconds", "weight_change"
      (||w_after - w_before|| / ||w_before|| over the trainable weights).
    """
    iterations = check_int(iterations, "iterations", 1)
    before = [weight.numpy().copy() for weight in model.trainable_weights]
    training.compile_for_training(model, optimizer)
    batches = []  # one call per batch run (steps_per_execution 1), whatever the optimizer counts
    counter = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: batches.append(batch))
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    model.fit(data.to_dataset(x, y, batch_size, shuffle_seed=seed, repeat=True), epochs=1,
              steps_per_epoch=iterations, callbacks=[counter], verbose=0)
    seconds = time.perf_counter() - start
    change = sum(float(np.sum((weight.numpy() - old) ** 2)) for weight, old in zip(model.trainable_weights, before))
    scale = sum(float(np.sum(old ** 2)) for old in before)
    return {"iterations": len(batches), "seconds": seconds,
            "weight_change": float(np.sqrt(change / max(scale, 1e-30)))}


def nonzero_parameters(model):
    """Nonzero entries over all of a model's weights (what `count_params` counts, zeros left out)."""
    return int(sum(np.count_nonzero(weight) for weight in model.get_weights()))


def _costs(model):
    return {"multiply_adds": fusion_report.model_multiply_adds(model), "multiply_adds_nonzero":
            flops.inference_flops(model), "params": int(model.count_params()), "params_nonzero":
            nonzero_parameters(model), "widths": [list(item) for item in fusion_report.widths(model).items()]}


class _Round:
    """One ticket and what every fusion of it is measured with."""

    def __init__(self, loaded, run_config, config):
        self.ticket, self.config = loaded.model, config
        train_x, test_x = _inputs(loaded)
        count = config.test_examples or len(test_x)
        self.evaluator = training.Evaluator(test_x[:count], loaded.splits.test_y[:count])
        self.train = (train_x, loaded.splits.train_y)
        self.calibration = train_x[:config.calibration_examples]
        self.optimizer_config = fine_tune_optimizer_config(run_config, config.fine_tune_learning_rate)

    def measure(self, model):
        loss, accuracy = self.evaluator(model)
        return {"test_loss": float(loss), "test_accuracy": float(accuracy)}

    def fuse(self, method, fraction):
        """The record of one fusion: its model's costs and accuracy, before and after the fine-tune."""
        record = {"fusion": method, "fraction": fraction}
        start = time.perf_counter()
        try:
            fused = fusion.fuse_neurons(
                self.ticket, merge=None if method == "exact" else fusion.MergeBudget(fraction, method),
                calibration_data=self.calibration if method == "data_aware" else None,
                sample_data=self.calibration[:CHECK_EXAMPLES])
        except fusion.FusionError as error:  # a method this model's layers rule out: recorded, not fatal
            return {**record, "error": " ".join(str(error).split())}
        record["fuse_seconds"] = time.perf_counter() - start
        record["units_removed"] = fusion.fusion_report(self.ticket, fused).units_removed
        record.update(_costs(fused), **self.measure(fused))
        record["fine_tune"] = None
        if self.config.fine_tune_iterations:
            done = fine_tune(fused, *self.train, self.config.fine_tune_iterations, self.optimizer_config.batch_size,
                             training.make_optimizer(self.optimizer_config, 1, None), self.config.seed)
            record["fine_tune"] = {**done, "learning_rate": self.optimizer_config.learning_rate,
                                   "optimizer": self.optimizer_config.optimizer,
                                   "batch_size": self.optimizer_config.batch_size, **self.measure(fused)}
        return record


def _entry(folder, kind, run_config, round_index, config):
    start = time.perf_counter()
    loaded = run_models.load_run_model(folder, round_index, config.data_dir)
    unit = _Round(loaded, run_config, config)
    entry = {"run": folder, "kind": kind, "method": shift.method_label(kind, run_config),
             "config": {key: run_config[key] for key in shift.RECORDED_FIELDS if key in run_config},
             "round": loaded.round_index,
             "level": loaded.round_index if kind == "imp" else run_config.get(shift.LEVEL_FIELD[kind]),
             "weights_remaining": float(loaded.record["weights_remaining"]),
             "recorded_test_accuracy": loaded.record.get("test_accuracy"),
             "ticket": {**_costs(unit.ticket), **unit.measure(unit.ticket)},
             "fusions": [unit.fuse(method, fraction) for method, fraction in config.fusions()]}
    entry["seconds"] = time.perf_counter() - start
    return entry


def run(config):
    """Fuses every chosen round of every run by each (method, fraction), resuming fusion_sweep.json.

    Args:
      config: a `FusionSweepConfig`.

    Returns:
      The results, as written to fusion_sweep.json: {"settings": {...}, "entries": [{"run",
      "kind", "method" (the run's method label), "config", "round", "level",
      "weights_remaining", "recorded_test_accuracy", "ticket": {costs, "test_loss",
      "test_accuracy"}, "fusions": [{"fusion", "fraction", "units_removed", "multiply_adds",
      "multiply_adds_nonzero", "params", "params_nonzero", "widths", "test_loss",
      "test_accuracy", "fuse_seconds", "fine_tune": None or {"iterations", "seconds",
      "weight_change", "learning_rate", "optimizer", "batch_size", "test_loss",
      "test_accuracy"}} or {"fusion", "fraction", "error"}, ...], "seconds"}, ...]}.

    Raises:
      FusionSweepError: bad settings, no runs, an unfinished requested round, an unreadable
        fusion_sweep.json or one made with other settings.
      run_models.RunFolderError: an unreadable summary or an incomplete run folder.
      ValueError, data.DataUnavailableError: a run's dataset cannot be loaded.
    """
    if not isinstance(config, FusionSweepConfig):
        raise TypeError(f"run takes a FusionSweepConfig; got {type(config).__name__}.")
    config = config.resolved()
    try:
        folders = shift.find_run_folders(config.runs)
    except shift.ShiftError as error:
        raise FusionSweepError(str(error)) from None
    runs = []
    for folder in folders:  # every summary read, every requested round checked, before any work
        summary = run_models.read_summary(folder)
        kind = shift.run_kind(summary)
        run_config = shift.config_with_defaults(kind, summary["config"])
        runs.append((folder, kind, run_config, _rounds_of(folder, kind, summary, config.rounds)))
    path = os.path.join(config.output_dir, FUSION_SWEEP_FILE)
    results = {"settings": config.settings(), "entries": []}
    if os.path.exists(path):
        results = analysis_results.read(path, ("settings", "entries"), FusionSweepError)
        analysis_results.check_same_settings(results, config.settings(), path, FusionSweepError)
    done = {(os.path.realpath(entry["run"]), entry["round"]) for entry in results["entries"]}
    runs.sort(key=lambda run: (run[2]["dataset"], str(config.data_dir or run[2].get("data_dir"))))  # stable
    for folder, kind, run_config, rounds in runs:
        for round_index in rounds:
            if (os.path.realpath(folder), round_index) in done:
                continue
            entry = _entry(folder, kind, run_config, round_index, config)
            results["entries"].append(entry)
            files.write_json(path, results)
            _LOG.info("fusion sweep: %s round %s (%.3g%% weights): %d fusions in %.1f s", folder, round_index,
                      100 * entry["weights_remaining"], len(entry["fusions"]), entry["seconds"])
    if not os.path.exists(path):  # nothing to fuse (runs without a finished round): still a result
        files.write_json(path, results)
    return results


def _statistics(values):
    values = np.asarray([value for value in values if value is not None], np.float64)
    if not len(values):
        return None
    return {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else None,
            "n": int(len(values))}


# Row field -> the ticket's field, over every run of a row ...
_TICKET_MEASURES = {"ticket_accuracy": "test_accuracy", "ticket_loss": "test_loss", "ticket_params": "params_nonzero",
                    "ticket_multiply_adds": "multiply_adds_nonzero", "dense_multiply_adds": "multiply_adds",
                    "dense_params": "params"}
# ... and the fused model's (or, fine_tune_*/fine_tuned_*, its fine-tune's), over the runs the fusion worked on.
_MEASURES = {"fused_accuracy": "test_accuracy", "fused_loss": "test_loss", "multiply_adds": "multiply_adds",
             "params": "params", "units_removed": "units_removed", "fuse_seconds": "fuse_seconds",
             "fine_tuned_accuracy": "test_accuracy", "fine_tuned_loss": "test_loss", "fine_tune_seconds": "seconds",
             "fine_tune_iterations": "iterations"}


def _read(record, name):
    return (record.get("fine_tune") or {} if name.startswith("fine_tun") else record).get(_MEASURES[name])


def summarize(results):
    """Seeds aggregated: per (dataset, model, method, level, fusion, fraction), mean ± std (n) of every measure.

    A level is an IMP round's weights remaining (so runs at other prune rates do not mix)
    or the LEVEL_FIELD of the other kinds; each seed counts once per point (its first run).

    Args:
      results: what `run` returns (or fusion_sweep.json holds).

    Returns:
      A list of rows, grouped by dataset and model, methods in the order first found,
      levels by weights remaining (most first), fusions in the sweep's order: {"dataset",
      "model", "method", "kind", "level", "dense" (IMP round 0), "weights_remaining",
      "fusion", "fraction", "runs", "seeds", "errors" (the distinct messages of runs this
      fusion failed on), "widths" ({layer: mean width}, model order), "ticket_widths"
      (the first run's ticket's), and one {"mean", "std" (sample;
      None for one run), "n"} (None where no run has it) per key of `_TICKET_MEASURES`
      (over every run) and `_MEASURES` (over the runs the fusion worked on)}.
    """
    groups = collections.defaultdict(dict)
    order, data_models = [], []
    for entry in results["entries"]:
        config = entry["config"]
        level = round(entry["weights_remaining"], 6) if entry["kind"] == "imp" else entry["level"]
        for record in entry["fusions"]:
            key = (config.get("dataset"), config.get("model"), entry["method"], level, record["fusion"],
                   record["fraction"])
            groups[key].setdefault(config.get("seed"), (entry, record))
            order.append(key[:3])
            data_models.append(key[:2])
    order, data_models = list(dict.fromkeys(order)), list(dict.fromkeys(data_models))
    fusions = list(dict.fromkeys((record["fusion"], record["fraction"]) for entry in results["entries"]
                                 for record in entry["fusions"]))
    rows = []
    for key, by_seed in groups.items():
        pairs = list(by_seed.values())
        worked = [(entry, record) for entry, record in pairs if "error" not in record]
        widths = collections.defaultdict(list)
        for _, record in worked:
            for layer, width in record["widths"]:  # [layer, width] pairs in model order (JSON keeps a list's)
                widths[layer].append(width)
        first = pairs[0][0]
        rows.append({
            "dataset": key[0], "model": key[1], "method": key[2], "kind": first["kind"], "level": key[3],
            "dense": first["kind"] == "imp" and first["round"] == 0,
            "weights_remaining": float(np.mean([entry["weights_remaining"] for entry, _ in pairs])),
            "fusion": key[4], "fraction": key[5], "runs": [entry["run"] for entry, _ in pairs],
            "seeds": [entry["config"].get("seed") for entry, _ in pairs],
            "errors": sorted({record["error"] for _, record in pairs if "error" in record}),
            "widths": {layer: float(np.mean(values)) for layer, values in widths.items()},
            "ticket_widths": dict(first["ticket"]["widths"]),
            **{name: _statistics([entry["ticket"][field] for entry, _ in pairs])
               for name, field in _TICKET_MEASURES.items()},
            **{name: _statistics([_read(record, name) for _, record in worked]) for name in _MEASURES},
        })
    rows.sort(key=lambda row: (data_models.index((row["dataset"], row["model"])),
                               order.index((row["dataset"], row["model"], row["method"])), -row["weights_remaining"],
                               fusions.index((row["fusion"], row["fraction"]))))
    return rows
