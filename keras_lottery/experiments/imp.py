"""Iterative magnitude pruning (IMP) with rewinding, as a library call.

    config = ImpConfig(output_dir="runs/lenet", rounds=5, iterations=5000)
    summary = run(config)

Round 0 trains the dense network and snapshots the weights at `rewind_step`.
Each round r >= 1 prunes the trained weights of round r-1 to sparsity
`1 - (1 - rate) ** r` per layer (or globally), sets the surviving weights for the
round (the ticket's rewind, or a control), resets the optimizer, and trains again.
Results go to one folder per run (see `records.py`); rerunning the same config
resumes at the first unfinished round, at its last evaluation if it has a backup
(`round_backup.py`).

`criterion` picks what each round prunes by: 'magnitude' (LTH), 'sign_flip' or
'hybrid' (the model is wrapped with `prune_low_sign_flip`; flips are counted during
each round's training relative to the signs the round started from, i.e. the
rewind point), or 'random'. `mode='one_pass'` runs the one-pass flow instead
(`one_pass.py`): prune while training continues, no rewinding.
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_lottery import callbacks
from keras_lottery import compat
from keras_lottery import controls
from keras_lottery import data
from keras_lottery import masks as masks_lib
from keras_lottery import models
from keras_lottery import records
from keras_lottery import pruning
from keras_lottery import round_backup
from keras_lottery import schedules
from keras_lottery import sign_flip
from keras_lottery import summaries
from keras_lottery import training
from keras_lottery import wrappers
from keras_lottery.validation import check_int

keras = compat.keras

OPTIMIZERS = training.OPTIMIZERS
compile_for_training = training.compile_for_training


@dataclasses.dataclass
class ImpConfig(training.TrainingConfig):
    """Settings of one IMP run (plus `TrainingConfig`'s). `None` means the model's LTH default."""

    output_dir: str = "runs/imp"
    rounds: int = 5  # pruning rounds after the dense round 0
    prune_rate: float | None = None  # None: LTH's per-layer rates; else this rate for every layer
    strategy: str = "layerwise"
    rewind_step: int = 0
    control: str = "ticket"
    iterations: int | None = None  # training iterations per round
    epochs: float | None = None  # alternative to iterations
    evaluations_per_round: int = 20  # validation checks per round (early-stop records)
    masks_from: str | None = None  # take each round's masks from this run folder (a branch)
    criterion: str = "magnitude"  # what each prune ranks by: see CRITERIA
    alpha: float = 1.0  # the hybrid criterion's exponent: |w| / (1 + flips) ** alpha
    mode: str = "imp"  # 'imp' (prune, rewind, retrain) or 'one_pass' (prune while training on)
    one_pass_iterations: int | None = None  # one-pass training length; None: 3 x iterations
    prune_begin: float = 0.2  # one pass: first mask update, as a fraction of its training
    prune_end: float = 0.7  # one pass: last mask update (the target sparsity), same unit
    prune_updates: int = 20  # one pass: mask updates between prune_begin and prune_end

    def resolved(self):
        """A copy with every default filled in and every field validated.

        Raises:
          ValueError: naming the bad field and what it accepts.
        """
        if self.iterations is not None and self.epochs is not None:
            raise ValueError("give either iterations or epochs, not both.")
        config = super().resolved()
        if config.iterations is None and config.epochs is None:
            config.iterations = models.get(config.model).iterations
        check_int(config.rounds, "rounds", 0)
        check_int(config.rewind_step, "rewind_step", 0)
        check_int(config.evaluations_per_round, "evaluations_per_round", 1)
        if config.iterations is not None:
            check_int(config.iterations, "iterations", 1)
        if config.epochs is not None and not (isinstance(config.epochs, (int, float)) and config.epochs > 0):
            raise ValueError(f"epochs must be > 0; got {config.epochs!r}.")
        if config.prune_rate is not None:
            masks_lib.check_sparsity(config.prune_rate, "prune_rate")
        masks_lib.check_strategy(config.strategy)
        controls.check_control(config.control)
        if config.iterations is not None and config.rewind_step > config.iterations:
            raise ValueError(
                f"rewind_step={config.rewind_step} is beyond the {config.iterations} training iterations "
                "of a round: it would never be reached."
            )
        if config.masks_from is not None:
            _check_masks_from(config.masks_from, config.rounds)
        if config.criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}; got {config.criterion!r}.")
        sign_flip.check_alpha(config.alpha)
        if config.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}; got {config.mode!r}.")
        if config.one_pass_iterations is not None:
            check_int(config.one_pass_iterations, "one_pass_iterations", 1)
        check_int(config.prune_updates, "prune_updates", 1)
        fractions = (config.prune_begin, config.prune_end)
        if not all(isinstance(f, (int, float)) and not isinstance(f, bool) for f in fractions) or not (
                0 <= config.prune_begin <= config.prune_end < 1):
            raise ValueError(
                "prune_begin and prune_end are fractions of the one-pass training with "
                f"0 <= prune_begin <= prune_end < 1; got {config.prune_begin!r} and {config.prune_end!r}."
            )
        if config.mode == "one_pass" and config.masks_from is not None:
            raise ValueError("masks_from takes masks round by round from an IMP run; it has no meaning in one-pass mode.")
        return config


CRITERIA = ("magnitude", "sign_flip", "hybrid", "random")
MODES = ("imp", "one_pass")


def config_defaults():
    """Every `ImpConfig` field's default (what a run saved before the field existed used)."""
    return {field.name: field.default for field in dataclasses.fields(ImpConfig)}


def _check_masks_from(folder, rounds):
    source = records.RunFolder(folder)
    summary = source.load_summary()
    if summary is None:
        raise ValueError(f"masks_from={folder!r} holds no finished run (no summary.json).")
    finished = len(summary["rounds"]) - 1
    if finished < rounds:
        raise ValueError(f"masks_from={folder!r} has {finished} pruning rounds; this run needs {rounds}.")


def layer_rates(config, dense_model):
    """Per-round prune rate of every prunable layer, by layer name.

    LTH's rates by default: Dense 20%, convolutions 10% (15% for Conv-6), the output
    layer at half rate. `prune_rate` replaces the Dense and convolution rates (the
    output layer still at half). With the global strategy, one rate (`prune_rate`,
    default 20%, as OpenLTH) for all layers ranked together.
    """
    spec = models.get(config.model)
    if config.strategy == "global":
        rate = 0.2 if config.prune_rate is None else config.prune_rate
        return {name: rate for name in schedules.lth_prune_rates(dense_model.layers)}
    dense_rate = spec.dense_rate if config.prune_rate is None else config.prune_rate
    conv_rate = spec.conv_rate if config.prune_rate is None else config.prune_rate
    return schedules.lth_prune_rates(dense_model.layers, dense_rate, conv_rate)


def iterations_per_round(config, splits):
    if config.iterations is not None:
        return config.iterations
    steps_per_epoch = math.ceil(len(splits.train_y) / config.batch_size)
    return max(1, round(config.epochs * steps_per_epoch))


def wrap(config, dense, layer_schedules):
    """Wraps `dense` for `config.criterion`: the sign-flip wrapper when flips are needed."""
    if config.criterion in ("sign_flip", "hybrid"):
        return sign_flip.prune_low_sign_flip(
            dense, pruning_schedule=layer_schedules, criterion=config.criterion, alpha=config.alpha,
            reference="rewind" if config.rewind_step > 0 else "init", strategy=config.strategy,
        )
    return wrappers.prune_low_magnitude(dense, pruning_schedule=layer_schedules, strategy=config.strategy)


def build_model(config, splits, iterations):
    """The wrapped model for `config`, seeded, masks all ones.

    Each prunable layer gets an `Iterative` schedule with its per-round rate: the
    schedule is where the loop reads the target sparsity of every round.
    """
    dense = models.build(config.model, splits.input_shape, splits.num_classes, config.seed)
    rounds = max(1, config.rounds)
    return wrap(config, dense, {
        name: schedules.Iterative(rate, steps_per_round=iterations, rounds=rounds)
        for name, rate in layer_rates(config, dense).items()
    })


def _evaluation_interval(iterations, evaluations, rewind_step):
    interval = max(1, iterations // evaluations)
    return interval, training.steps_per_execution(interval, rewind_step)


def _prune_for_round(config, model, round_index, masks_source, rng):
    """Assigns the masks of round `round_index`: from the wrappers' schedules, or from another run."""
    if masks_source is not None:
        wrappers.set_masks(model, masks_source.load_masks(round_index))
        return
    sparsity = {}
    for name, wrapper, _, _ in wrappers.pruning_entries(model):
        sparsity[name] = wrapper.pruning_schedule.sparsity_at_round(round_index)
    if config.strategy == "global":
        sparsity = next(iter(sparsity.values()))
    pruning.prune(model, sparsity, config.strategy, config.criterion, rng)


def _fit_round(model, train, validation, epochs_done, epochs, interval, config, callbacks):
    # The divergence check comes before the backup in `callbacks`, so a NaN model is never saved.
    model.fit(train, initial_epoch=epochs_done, epochs=epochs, steps_per_epoch=interval,
              validation_data=validation, callbacks=callbacks, verbose=config.verbose)


def train_round(model, config, splits, round_index, iterations, interval, folder, extra_callbacks):
    """Trains one round, evaluating every `interval` steps, and returns its record.

    A round killed mid-way resumes at its last evaluation: see `round_backup.py`. The
    training batches are one seeded stream per round, so the resumed round skips the
    batches already trained and sees the rest in the uninterrupted order. The caller
    deletes the backup once the round's results are saved.
    """
    epochs = max(1, iterations // interval)
    backup = round_backup.RoundBackup(folder, round_index, model, epochs, dataclasses.asdict(config),
                                      config_defaults(), extra_callbacks)
    epochs_done = backup.restore()
    train = data.to_dataset(
        splits.train_x, splits.train_y, config.batch_size, shuffle_seed=config.seed * 1000 + round_index, repeat=True
    ).skip(epochs_done * interval)
    validation = data.to_dataset(splits.validation_x, splits.validation_y, 1000)
    tensorboard = keras.callbacks.TensorBoard(folder.file("tensorboard", f"round_{round_index}"), profile_batch=0)
    sparsity = summaries.SparsitySummaries(folder.file("tensorboard", f"round_{round_index}", "sparsity"))
    try:
        _fit_round(model, train, validation, epochs_done, epochs, interval, config,
                   [*extra_callbacks, tensorboard, sparsity,
                    training.StopOnDivergence(f"round {round_index}", config.learning_rate), backup])
    except training.TrainingDivergedError:
        folder.remove_backup(round_index)  # resuming it would diverge again: nothing of the round is kept
        raise
    seconds = backup.seconds()
    test_loss, test_accuracy = model.evaluate(
        data.to_dataset(splits.test_x, splits.test_y, 1000), verbose=0
    )
    val_loss = [logs["val_loss"] for logs in backup.logs]
    best = int(np.argmin(val_loss))
    return {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "best_val_accuracy": float(np.max([logs["val_accuracy"] for logs in backup.logs])),
        "early_stop_iteration": (best + 1) * interval,
        "iterations": epochs * interval,
        "train_seconds": round(seconds, 3),
    }


def write_tensorboard_round(folder, record):
    """Writes a round's record as scalars (step = round) under tensorboard/imp.

    `imp/<record key>` for accuracy, early stop and weights remaining, and
    `flips/<layer>/<statistic>` for sign-flip runs (see `sign_flip.flip_statistics`).
    """
    writer = tf.summary.create_file_writer(folder.file("tensorboard", "imp"))
    with writer.as_default(step=record["round"]):
        for key in ("test_accuracy", "best_val_accuracy", "early_stop_iteration", "weights_remaining"):
            tf.summary.scalar(f"imp/{key}", record[key])
        for layer, statistics in record.get("flips", {}).items():
            for key, value in statistics.items():
                tf.summary.scalar(f"flips/{layer}/{key}", value)
    writer.close()


def run(config, on_round_end=None):
    """Runs (or resumes) IMP and returns the summary dict.

    Args:
      config: an `ImpConfig`.
      on_round_end: optional callable(record) called after each finished round
        (the app logs a progress line with it).

    Returns:
      The summary: {"config": ..., "rounds": [record per round]}.

    Raises:
      ValueError: bad config, a missing dataset, or an output folder that holds a
        run with another config — all before any training.
    """
    config = config.resolved()
    if config.mode == "one_pass":
        from keras_lottery import one_pass  # imported here: one_pass builds on this module

        return one_pass.run(config, on_round_end)
    folder = records.RunFolder(config.output_dir)
    config_dict = dataclasses.asdict(config)
    summary = folder.load_checked(config_dict, config_defaults())
    if summary is not None:
        summary["config"] = config_dict
    else:
        summary = {"config": config_dict, "rounds": []}
        summaries.write_hparams(folder.file("tensorboard", "imp"), config_dict)
    done = len(summary["rounds"])
    folder.remove_leftovers(done)
    if done >= config.rounds + 1:
        return summary

    splits = data.load(
        config.dataset, config.data_dir, config.validation_examples, config.train_examples, split_seed=0
    )
    iterations = iterations_per_round(config, splits)
    if config.rewind_step > iterations:
        raise ValueError(f"rewind_step={config.rewind_step} is beyond the {iterations} iterations of a round.")
    interval, steps_per_execution = _evaluation_interval(iterations, config.evaluations_per_round, config.rewind_step)
    summary["iterations_per_round"] = iterations
    masks_source = records.RunFolder(config.masks_from) if config.masks_from else None

    model = build_model(config, splits, iterations)
    compile_for_training(model, config.optimizer, config.learning_rate, steps_per_execution)
    rewind = callbacks.RewindCallback(config.rewind_step)
    variables = callbacks.RewindCallback.rewindable_variables(model)
    if done:
        rewind.load_state(folder.load_snapshot())
        wrappers.set_masks(model, folder.load_masks(done - 1))
        final = folder.load_final_weights(done - 1)
        for variable, key in zip(variables, sorted(final)):
            variable.assign(final[key])
        wrappers.apply_masks(model)
        flip_state = folder.load_flip_state(done - 1)
        if flip_state is not None:  # the flips the next prune ranks by
            sign_flip.set_state(model, flip_state)

    for round_index in range(done, config.rounds + 1):
        seed = config.seed * 1000 + round_index
        extra = [rewind] if round_index == 0 else []
        if round_index > 0:
            _prune_for_round(config, model, round_index, masks_source, np.random.default_rng(seed))
            controls.start_round(model, config.control, rewind, seed)
            # Flips count from the signs this round starts from (the rewind point).
            sign_flip.reset_reference(model, config.rewind_step)
        record = train_round(model, config, splits, round_index, iterations, interval, folder, extra)
        current = wrappers.get_masks(model)
        overall, per_layer = masks_lib.weights_remaining(current)
        spent = sum(r["iterations"] for r in summary["rounds"]) + record["iterations"]
        record = {"round": round_index, "weights_remaining": overall, "layers": per_layer, **record,
                  "total_iterations": spent, "flips": sign_flip.flip_statistics(model)}
        if round_index == 0:
            folder.save_snapshot(rewind.state())
        folder.save_round(round_index, current, {f"{i:04d}": v.numpy() for i, v in enumerate(variables)},
                          sign_flip.get_state(model))
        summary["rounds"].append(record)
        folder.save_summary(summary)
        folder.remove_backup(round_index)
        write_tensorboard_round(folder, record)
        if on_round_end is not None:
            on_round_end(record)
    return summary
