r"""Hyperparameter search over pruning settings, with keras-tuner.

    base = imp.ImpConfig(model="lenet_300_100", iterations=5000)
    tuner = tuning.PruningTuner(base, target_weights_remaining=0.1, oracle="random", max_trials=10,
                                directory="runs/tune")
    tuner.search()
    best = tuner.oracle.get_best_trials(1)[0]   # best.score, best.hyperparameters.values

A trial is one `imp.run` (IMP or one pass) pruned to `target_weights_remaining` with
the trial's criterion, prune rate, rewind step, hybrid alpha, learning rate and mode.
Its objective, `val_accuracy_at_target` (max), is the final round's best validation
accuracy; `test_accuracy_at_target`, `weights_remaining` and `total_iterations` are
recorded but never used to choose.

Reaching the target. For a fixed target, a constant rate p and the number of rounds r
are tied: `prune_rate` picks the r whose (1 - p)^r is nearest the target. With
`match_target=True` (default) the rate used is then 1 - target^(1/r), so that every
trial ends at the target itself (otherwise p = 0.5 stops at 12.5% for a 10% target and
p = 0.3 at 11.8%, and the rate that overshoots most would look best). The output layer
is pruned at half rate (LTH), so the overall fraction lands slightly above the target.
One-pass trials prune straight to the target.

Why a `BaseTuner` subclass. `keras_tuner.Tuner.run_trial` builds the model with
`HyperModel.build`, checks that it is a *Keras 3* model and fits it; keras_lottery's
models are Keras 2 (`tf_keras`, which tfmot needs), so that check fails ("FatalTypeError:
Expected ... a valid Keras Model instance"). keras-tuner's extension point for other
work is `BaseTuner.run_trial(trial)` returning a dict of metrics; the rest of `Tuner`
(checkpoints, `executions_per_trial`, `get_best_models`) is about one Keras model, and an
IMP run keeps its own results folder. So `PruningHyperModel.build(hp)` declares the
space (keras-tuner calls `build` to find conditional hyperparameters: `prune_rate` and
`rewind_step` exist for IMP only, `alpha` for the hybrid criterion only) and returns the
trial's `ImpConfig`, never a model; `PruningTuner.run_trial` runs it in
`<directory>/<project_name>/trial_<id>/run` and returns the metrics.

Oracles: 'random' and 'hyperband' (keras-tuner's Bayesian oracle needs scikit-learn,
which the package does not install). Hyperband's budget
`tuner/epochs` (1..`max_budget`) becomes `iterations * budget / max_budget` iterations
per round (the rewind step and one-pass length scaled alike). A trial promoted by successive halving
is retrained from scratch at its larger budget, since an IMP run cannot be extended to
longer rounds afterwards (`tuner/initial_epoch` is unused). `max_trials` caps it too.

Resuming (`overwrite=False`): finished trials are kept, an interrupted one is rerun
(its `imp.run` resumes at its first unfinished round), and the search continues up to
`max_trials`, which may be raised. `pruning_search.json` keeps the search's settings; a
rerun with others is refused (`run_folder.ConfigMismatchError`) before any work.

Distributed (keras-tuner's chief/worker mode over gRPC; needs `grpcio`): run the same
command on every machine with the same `directory`, the chief's address and a unique
id ("chief" for the chief). The chief serves the oracle and runs no trial; each worker
asks it for trials until told to stop; the chief's `search()` returns when every trial
is reported. Without a shared filesystem each worker keeps its own trials' run folders
and the chief keeps `oracle.json` and the `trial.json` files.

    KERASTUNER_TUNER_ID=chief KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m apps.tune_main ...          # on 10.0.0.1
    KERASTUNER_TUNER_ID=tuner0 KERASTUNER_ORACLE_IP=10.0.0.1 KERASTUNER_ORACLE_PORT=8000 \
        python -m apps.tune_main ...          # on each worker: tuner0, tuner1, ...
"""

import dataclasses
import json
import math
import os

from keras_lottery import compat
from keras_lottery import data
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder
from keras_lottery.foundations import files
from keras_lottery.foundations.validation import check_int

import keras_tuner  # after keras_lottery: compat sets TF_USE_LEGACY_KERAS before keras-tuner loads TensorFlow
from keras_tuner.engine import base_tuner

keras = compat.keras

OBJECTIVE = keras_tuner.Objective("val_accuracy_at_target", direction="max")
ORACLES = ("random", "hyperband")
SETTINGS_FILE = "pruning_search.json"
RUN_FOLDER = "run"  # a trial's imp.run folder, inside keras-tuner's trial folder
# Base-config fields that may change when a search resumes (as run_folder.RESUMABLE_FIELDS for a run).
_RESUMABLE_BASE_FIELDS = ("output_dir", "data_dir", "verbose")


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _fraction(value, name):
    """`value` as a float, or ValueError unless it is a number in (0, 1)."""
    if not _is_number(value) or not 0 < value < 1:
        raise ValueError(f"{name} must be a fraction in (0, 1); got {value!r}.")
    return float(value)


def _choices(values, name, allowed=None):
    if isinstance(values, str) or not isinstance(values, (tuple, list)) or not values:
        raise ValueError(f"{name} must be a non-empty tuple; got {values!r}.")
    unknown = [value for value in values if allowed is not None and value not in allowed]
    if unknown:
        raise ValueError(f"{name} must be taken from {allowed}; got {unknown!r}.")


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    """The pruning hyperparameters searched. A single value is fixed (recorded, not searched).

    Attributes:
      criteria: what each prune ranks by (`imp.CRITERIA`).
      prune_rates: per-round rates; each decides a trial's number of rounds (module docstring).
      rewind_steps: iterations to rewind to (IMP only); None: 0, 1% and 5% of a round.
      alpha_range: (min, max) of the hybrid criterion's exponent, sampled uniformly.
      learning_rate_span: the learning rate is sampled log-uniformly in [lr / span, lr * span]
        around the base config's rate (the model's LTH rate unless set); 1 fixes it.
      modes: 'imp' and/or 'one_pass'.
    """

    criteria: tuple = ("magnitude", "sign_flip", "hybrid")
    prune_rates: tuple = (0.2, 0.3, 0.5)
    rewind_steps: tuple | None = None
    alpha_range: tuple = (0.5, 2.0)
    learning_rate_span: float = 3.0
    modes: tuple = ("imp",)

    def check(self, iterations):
        """Validates every field, with rounds of `iterations` iterations.

        Raises:
          ValueError: naming the bad field and what it accepts.
        """
        _choices(self.criteria, "criteria", imp.CRITERIA)
        _choices(self.modes, "modes", imp.MODES)
        _choices(self.prune_rates, "prune_rates")
        for rate in self.prune_rates:
            _fraction(rate, "prune_rates")
        if self.rewind_steps is not None:
            _choices(self.rewind_steps, "rewind_steps")
            for step in self.rewind_steps:
                if check_int(step, "rewind_steps", 0) > iterations:
                    raise ValueError(f"rewind step {step} is beyond the {iterations} iterations of a round.")
        pair = self.alpha_range
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(map(_is_number, pair))
                and 0 <= pair[0] <= pair[1]):
            raise ValueError(f"alpha_range must be (min, max) with 0 <= min <= max; got {pair!r}.")
        if not _is_number(self.learning_rate_span) or not self.learning_rate_span >= 1:
            raise ValueError(f"learning_rate_span must be a number >= 1; got {self.learning_rate_span!r}.")


def rounds_for_target(prune_rate, target_weights_remaining):
    """The number of rounds r >= 1 whose (1 - prune_rate)^r is nearest the target (fewer on a tie).

    Raises:
      ValueError: a rate or a target outside (0, 1).
    """
    keep = 1 - _fraction(prune_rate, "prune_rate")
    target = _fraction(target_weights_remaining, "target_weights_remaining")
    exact = math.log(target) / math.log(keep)
    candidates = sorted({max(1, math.floor(exact)), max(1, math.ceil(exact))})
    return min(candidates, key=lambda rounds: abs(keep ** rounds - target))


def _choice(hp, name, values):
    """A Choice over `values`, or a Fixed hyperparameter for a single value (recorded, not searched)."""
    values = list(dict.fromkeys(values))
    return hp.Fixed(name, values[0]) if len(values) == 1 else hp.Choice(name, values)


class PruningHyperModel(keras_tuner.HyperModel):
    """Pruning hyperparameters -> the `ImpConfig` of one trial (never a Keras model).

    Args:
      base_config: an `imp.ImpConfig` with every setting not searched (data, model,
        iterations per round, strategy, seed, ...); `epochs` must be None, since budgets
        and rewind steps are counted in iterations.
      target_weights_remaining: the fraction of prunable weights every trial ends with.
      space: a `SearchSpace` (default: `SearchSpace()`).
      match_target: adjust each IMP trial's rate so that its rounds reach the target
        exactly (module docstring); False: use the sampled rate as it is.

    Raises:
      TypeError: `base_config` is not an `imp.ImpConfig`.
      ValueError: a bad target, space or base config.
    """

    def __init__(self, base_config, target_weights_remaining, space=None, match_target=True):
        super().__init__(name="pruning")
        if not isinstance(base_config, imp.ImpConfig):
            raise TypeError(f"base_config must be an imp.ImpConfig; got {type(base_config).__name__}.")
        if base_config.epochs is not None:
            raise ValueError("tuning needs base_config.iterations (per round), not epochs: Hyperband budgets "
                             "and rewind steps are counted in iterations.")
        if base_config.masks_from is not None:
            raise ValueError("masks_from fixes every round's masks; there would be nothing to tune.")
        self.base_config = base_config.resolved()
        self.target = _fraction(target_weights_remaining, "target_weights_remaining")
        self.space = space if space is not None else SearchSpace()
        iterations = self.base_config.iterations
        self.space.check(iterations)
        self.match_target = bool(match_target)
        default_steps = (0, round(0.01 * iterations), round(0.05 * iterations))
        self.rewind_steps = tuple(dict.fromkeys(self.space.rewind_steps or default_steps))

    def build(self, hp):
        """Declares the search space on `hp` and returns the trial's `ImpConfig`.

        Args:
          hp: a `keras_tuner.HyperParameters`.

        Returns:
          The `imp.ImpConfig` of these hyperparameters at the full budget, with the base
          config's output_dir (the tuner gives each trial its own).
        """
        space = self.space
        mode = _choice(hp, "mode", space.modes)
        criterion = _choice(hp, "criterion", space.criteria)
        rate, rewind_step, alpha = None, None, None
        if "imp" in space.modes:
            with hp.conditional_scope("mode", ["imp"]):
                rate = _choice(hp, "prune_rate", space.prune_rates)
                rewind_step = _choice(hp, "rewind_step", self.rewind_steps)
        if "hybrid" in space.criteria:
            with hp.conditional_scope("criterion", ["hybrid"]):
                low, high = space.alpha_range
                alpha = hp.Fixed("alpha", low) if low == high else hp.Float("alpha", low, high)
        center, span = self.base_config.learning_rate, space.learning_rate_span
        learning_rate = (hp.Fixed("learning_rate", center) if span == 1
                         else hp.Float("learning_rate", center / span, center * span, sampling="log"))
        if mode == "imp":
            rounds = rounds_for_target(rate, self.target)
            prune_rate = 1 - self.target ** (1 / rounds) if self.match_target else rate
        else:  # one pass has no rounds: one schedule straight to the target
            rounds, prune_rate = 1, 1 - self.target
        return dataclasses.replace(
            self.base_config, mode=mode, criterion=criterion, rounds=rounds, prune_rate=prune_rate,
            rewind_step=0 if rewind_step is None else rewind_step, alpha=self.base_config.alpha if alpha is None else alpha,
            learning_rate=learning_rate,
        )

    def fit(self, hp, model, on_round_end=None):
        """Runs (or resumes) `imp.run(model)`, the `ImpConfig` from `build` (`hp` is unused).

        Returns:
          The run's `trial_metrics`.
        """
        del hp
        return trial_metrics(imp.run(model, on_round_end=on_round_end))


def trial_metrics(summary):
    """The metrics keras-tuner records for a trial (the final round's), from its `imp.run` summary."""
    last = summary["rounds"][-1]
    return {
        OBJECTIVE.name: float(last["best_val_accuracy"]),
        "test_accuracy_at_target": float(last["test_accuracy"]),
        "weights_remaining": float(last["weights_remaining"]),
        "total_iterations": float(last["total_iterations"]),
    }


def scale_to_budget(config, budget, max_budget):
    """`config` with rounds of `budget / max_budget` of its iterations (Hyperband's resource).

    The rewind step and the one-pass length are scaled alike, so that a trial tests the
    same point of training at every budget.
    """
    if budget is None or budget >= max_budget:
        return config
    fraction = budget / max_budget
    iterations = max(1, round(config.iterations * fraction))
    one_pass = config.one_pass_iterations
    return dataclasses.replace(
        config, iterations=iterations, rewind_step=min(iterations, round(config.rewind_step * fraction)),
        one_pass_iterations=None if one_pass is None else max(1, round(one_pass * fraction)),
    )


def make_oracle(oracle, max_trials, seed, max_budget=9, hyperband_factor=3):
    """The keras-tuner oracle named `oracle`, maximizing `OBJECTIVE`.

    Args:
      oracle: one of `ORACLES`.
      max_trials: the most trials to run (>= 1); caps Hyperband too.
      seed: the oracle's sampling seed (>= 1: keras-tuner draws a random one for 0).
      max_budget: Hyperband's largest budget (its `max_epochs`), the unit of `tuner/epochs`.
      hyperband_factor: Hyperband's reduction factor (>= 2).

    Raises:
      ValueError: an unknown oracle or a bad count.
    """
    if oracle not in ORACLES:
        raise ValueError(f"oracle must be one of {ORACLES}; got {oracle!r}.")
    check_int(max_trials, "max_trials", 1)
    check_int(seed, "seed", 1)
    if oracle == "random":
        return keras_tuner.oracles.RandomSearchOracle(objective=OBJECTIVE, max_trials=max_trials, seed=seed)
    check_int(max_budget, "max_budget", 1)
    check_int(hyperband_factor, "hyperband_factor", 2)
    result = keras_tuner.oracles.HyperbandOracle(
        objective=OBJECTIVE, max_epochs=max_budget, factor=hyperband_factor, seed=seed)
    result.max_trials = max_trials  # HyperbandOracle takes no max_trials, but Oracle.create_trial honours it
    return result


class PruningTuner(base_tuner.BaseTuner):
    """A keras-tuner tuner whose trials are `imp.run` calls (see the module docstring).

    `search()` (no arguments) runs trials until the oracle stops, or resumes a search; in
    distributed mode the chief serves the oracle there until the workers are done. It
    raises `keras_tuner.errors.FatalRuntimeError` if the dataset is unavailable, and
    RuntimeError after three failed trials in a row (keras-tuner's limit).

    Args:
      base_config: an `imp.ImpConfig` with every setting that is not searched.
      target_weights_remaining: the fraction of prunable weights every trial ends with, in (0, 1).
      space: a `SearchSpace` (default: `SearchSpace()`).
      oracle: 'random' or 'hyperband'.
      max_trials: the most trials to run (>= 1).
      directory: keras-tuner's working folder; results go to `<directory>/<project_name>`.
      project_name: the search's folder name.
      overwrite: delete an earlier search in that folder instead of resuming it.
      seed: the oracle's sampling seed; default base_config.seed + 1.
      max_budget, hyperband_factor: Hyperband's settings (`make_oracle`).
      match_target: see `PruningHyperModel`.
      on_trial_begin: optional callable(trial), before a trial runs.
      on_trial_end: optional callable(trial, metrics), after it (metrics None if it failed;
        `trial.status` and `trial.message` say why).
      on_round_end: optional callable(trial, record), after each round of a trial.

    Raises:
      TypeError, ValueError: bad arguments, or (`run_folder.ConfigMismatchError`) a search
        with other settings in the folder; all before any training.
    """

    def __init__(self, base_config, target_weights_remaining, space=None, oracle="random", max_trials=10,
                 directory="runs/tune", project_name="pruning", overwrite=False, seed=None, max_budget=9,
                 hyperband_factor=3, match_target=True, on_trial_begin=None, on_trial_end=None,
                 on_round_end=None):
        hypermodel = PruningHyperModel(base_config, target_weights_remaining, space, match_target)
        seed = hypermodel.base_config.seed + 1 if seed is None else seed
        oracle_instance = make_oracle(oracle, max_trials, seed, max_budget, hyperband_factor)
        oracle_instance.verbose = 0  # keras-tuner's display prints; callers log through the callbacks
        self.max_budget = max_budget
        self.settings = _settings(hypermodel, oracle, max_budget, hyperband_factor)
        settings_path = os.path.join(str(directory), str(project_name), SETTINGS_FILE)
        if not overwrite:
            _check_settings(settings_path, self.settings)
        super().__init__(oracle_instance, hypermodel, directory=directory, project_name=project_name,
                         overwrite=overwrite)
        files.write_json(settings_path, self.settings)
        self._on_trial_begin = on_trial_begin
        self._on_trial_end = on_trial_end
        self._on_round_end = on_round_end
        self._metrics = {}

    def trial_output_dir(self, trial_id):
        """The `imp.run` folder of trial `trial_id` (summary.json, masks, TensorBoard)."""
        return os.path.join(self.get_trial_dir(trial_id), RUN_FOLDER)

    def trial_config(self, trial):
        """The `imp.ImpConfig` that `trial` runs: its hyperparameters, budget and run folder."""
        hp = trial.hyperparameters
        config = scale_to_budget(self.hypermodel.build(hp.copy()), hp.values.get("tuner/epochs"), self.max_budget)
        return dataclasses.replace(config, output_dir=self.trial_output_dir(trial.trial_id))

    def run_trial(self, trial):
        """Runs (or resumes) one trial's `imp.run`; returns its metrics dict for the oracle."""
        config = self.trial_config(trial)
        # Free the previous trial's Keras graph state, as keras-tuner's own Tuner does between builds.
        keras.backend.clear_session()
        on_round_end = None
        if self._on_round_end is not None:
            def on_round_end(record):
                self._on_round_end(trial, record)
        try:
            metrics = self.hypermodel.fit(trial.hyperparameters, config, on_round_end=on_round_end)
        except data.DataUnavailableError as error:  # the same for every trial: stop the search now
            raise keras_tuner.errors.FatalRuntimeError(str(error)) from error
        self._metrics[trial.trial_id] = metrics
        return metrics

    def on_trial_begin(self, trial):
        """Calls the `on_trial_begin` callback."""
        super().on_trial_begin(trial)
        if self._on_trial_begin is not None:
            self._on_trial_begin(trial)

    def on_trial_end(self, trial):
        """Reports the trial to the oracle (keras-tuner), then calls the `on_trial_end` callback."""
        super().on_trial_end(trial)
        if self._on_trial_end is not None:
            self._on_trial_end(trial, self._metrics.pop(trial.trial_id, None))

    def load_model(self, trial):
        """Not available: a trial is an IMP run (many rounds), not one Keras model."""
        raise NotImplementedError(
            "a pruning trial is an IMP run, not one Keras model: read its results from "
            f"tuner.trial_output_dir({trial.trial_id!r}) (summary.json, round_<r>/masks.npz).")


def _settings(hypermodel, oracle, max_budget, hyperband_factor):
    """What a resumed search must share with the original, as they read back from JSON."""
    base = {key: value for key, value in dataclasses.asdict(hypermodel.base_config).items()
            if key not in _RESUMABLE_BASE_FIELDS}
    settings = {"base_config": base, "target_weights_remaining": hypermodel.target,
                "match_target": hypermodel.match_target, "space": dataclasses.asdict(hypermodel.space),
                "rewind_steps": hypermodel.rewind_steps, "oracle": oracle}
    if oracle == "hyperband":
        settings.update(max_budget=max_budget, hyperband_factor=hyperband_factor)
    return json.loads(json.dumps(settings))


def _flatten(settings, prefix=""):
    flat = {}
    for key, value in settings.items():
        flat.update(_flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def _check_settings(path, settings):
    if not os.path.exists(path):
        return
    with open(path) as file:
        saved = _flatten(json.load(file))
    current = _flatten(settings)
    differences = [f"{key}: {saved.get(key)!r} -> {current.get(key)!r}"
                   for key in sorted(set(saved) | set(current)) if saved.get(key) != current.get(key)]
    if differences:
        raise run_folder.ConfigMismatchError(
            f"{os.path.dirname(path)} holds a search with other settings ({'; '.join(differences)}). Rerun "
            "with the same settings to resume it, or use another folder or project name, or overwrite=True.")
