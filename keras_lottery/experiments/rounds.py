"""One training round in a run folder, shared by IMP (`imp.py`) and one-pass (`one_pass.py`).

A round: the wrapped model for the config's criterion (`wrap`), its per-layer rates
(`layer_rates`), its length (`iterations_per_round`), training with an evaluation
every `interval` steps and a backup at each (`train_round`), and its record as
TensorBoard scalars (`write_tensorboard_round`).
"""

import dataclasses
import math

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery import data
from keras_lottery import models
from keras_lottery import training
from keras_lottery.experiments import round_backup
from keras_lottery.experiments import run_folder
from keras_lottery.experiments.imp_config import config_defaults
from keras_lottery.experiments.imp_config import evaluation_examples
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import summaries
from keras_lottery.sparsity import wrappers

keras = compat.keras


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
        rates = {name: rate for name in schedules.lth_prune_rates(dense_model.layers)}
    else:
        dense_rate = spec.dense_rate if config.prune_rate is None else config.prune_rate
        conv_rate = spec.conv_rate if config.prune_rate is None else config.prune_rate
        rates = schedules.lth_prune_rates(dense_model.layers, dense_rate, conv_rate)
    return {name: rate for name, rate in rates.items() if name not in ignored_layers(config, rates)}


def ignored_layers(config, prunable):
    """The layers `config.layers_to_ignore` names, each checked to be one of the `prunable` ones.

    Raises:
      ValueError: a name that is not a prunable layer of the model, or every layer ignored.
    """
    names = [name.strip() for name in (config.layers_to_ignore or "").split(",") if name.strip()]
    unknown = [name for name in names if name not in prunable]
    if unknown:
        raise ValueError(f"layers_to_ignore names {unknown}, which {config.model} has no prunable layer called; "
                         f"its prunable layers are {sorted(prunable)}.")
    if names and set(names) >= set(prunable):
        raise ValueError(f"layers_to_ignore={config.layers_to_ignore!r} leaves no layer of {config.model} to prune.")
    return set(names)


def load_data(config):
    """(splits, data record) of a round-based run: its dataset read, checked against its batch size.

    Raises:
      ValueError, data.DataUnavailableError: the dataset cannot be read, or is smaller than a batch.
    """
    splits = data.load_for_training(config.dataset, config.data_dir, config.validation_examples,
                                    config.train_examples)
    training.check_batch_size(config.batch_size, splits.train_size)
    return splits, run_folder.data_record(splits)


def steps_per_epoch(config, splits):
    """Batches in one pass over the training examples (the last one may be smaller)."""
    return math.ceil(splits.train_size / config.batch_size)


def iterations_per_round(config, splits):
    if config.iterations is not None:
        return config.iterations
    return max(1, round(config.epochs * steps_per_epoch(config, splits)))


def compile_for_round(model, config, splits, total_iterations, steps_per_execution):
    """Compiles `model` with the config's recipe (`training.make_optimizer`) for rounds of `total_iterations`.

    Call it in the distribution strategy's scope. `total_iterations` is where a cosine schedule
    ends; milestones in epochs count the epochs of `splits`' training set. The config's frozen
    parameters (`freeze_batch_norm`, `freeze_output`) are taken out of training first.
    """
    training.compile_with_recipe(model, config, steps_per_epoch(config, splits), total_iterations,
                                 steps_per_execution)


def wrap(config, dense, layer_schedules):
    """Wraps `dense` for `config.criterion`: the sign-flip wrapper when flips are needed."""
    if config.criterion in ("sign_flip", "hybrid"):
        return sign_flip.prune_low_sign_flip(
            dense, pruning_schedule=layer_schedules, criterion=config.criterion, alpha=config.alpha,
            reference="rewind" if config.rewind_step > 0 else "init", strategy=config.strategy,
        )
    return wrappers.prune_low_magnitude(dense, pruning_schedule=layer_schedules, strategy=config.strategy)


def check_keeps_weights(config, final_sparsity, model):
    """Refuses a run whose final masks would prune every weight of a layer (a dead network).

    A layer keeps at least one weight while its sparsity is below 1 (`masks.keep_count`),
    but `1 - (1 - rate) ** rounds` is exactly 1 in floating point once `(1 - rate) **
    rounds` is below about 1e-16 (rate 0.9 from round 16): every weight would go. With the
    global strategy, all layers together.

    Args:
      config: the run's `ImpConfig` (its strategy; the message names `rounds`).
      final_sparsity: dict layer name -> the sparsity of its last mask.
      model: the wrapped model (for the layers' sizes).

    Raises:
      ValueError: naming the layer and what to lower.
    """
    sizes = {name: int(np.size(weight)) for name, _, weight, _ in wrappers.pruning_entries(model)}
    entries = [(f"layer {name!r}", final_sparsity[name], sizes[name]) for name in sizes]
    if config.strategy == "global" and entries:
        entries = [("the layers together", entries[0][1], sum(sizes.values()))]
    for name, sparsity, size in entries:
        if masks_lib.keep_count(size, sparsity) == 0:
            raise ValueError(
                f"rounds={config.rounds} would prune every weight of {name} (its sparsity reaches {sparsity:g}: the "
                f"kept fraction underflows), and the network would be dead. Lower --rounds or --prune_rate."
            )


def evaluation_spacing(iterations, evaluations):
    """Steps between a round's evaluations: never more evaluations than `evaluations` asks.

    `iterations // evaluations` steps apart when that gives exactly the number asked (2,000
    iterations, 20 checks: every 100). Where it would give more (50 iterations and 20 checks:
    every 2 steps, 25 checks), the smallest wider spacing that divides the round and keeps at
    least half the checks asked (every 5: 10), else `ceil(iterations / evaluations)`, which trains
    the round's whole checks only (every 3: 16 checks, 48 iterations; the record says so).
    """
    interval = max(1, iterations // evaluations)
    if iterations // interval <= evaluations:
        return interval
    wider = math.ceil(iterations / evaluations)
    for candidate in range(wider, 2 * wider + 1):
        if iterations % candidate == 0 and iterations // candidate >= evaluations / 2:
            return candidate
    return wider


def evaluation_interval(iterations, evaluations, rewind_step):
    """(steps between evaluations, steps per execution) of a round of `iterations` steps."""
    interval = evaluation_spacing(iterations, evaluations)
    return interval, training.steps_per_execution(interval, rewind_step)


def _fit_round(model, train, epochs_done, epochs, interval, callbacks):
    # The checks come first in `callbacks` (they log val_loss), the divergence check before the backup,
    # so that a NaN model is never saved. Keras's display stays off: it calls each evaluation interval
    # an "Epoch" and writes to stdout; the `training.Progress` among `callbacks` logs a line instead.
    model.fit(train, initial_epoch=epochs_done, epochs=epochs, steps_per_epoch=interval,
              callbacks=callbacks, verbose=0)


def train_round(model, config, splits, round_index, iterations, interval, folder, extra_callbacks, data_record=None,
                masks_before=None, label=None, final_masks_at=0):
    """Trains one round, evaluating every `interval` steps, and returns its record.

    A round killed mid-way resumes at its last evaluation: see `round_backup.py`. The
    training batches are one seeded stream per round, so the resumed round skips the
    batches already trained and sees the rest in the uninterrupted order. The caller
    deletes the backup once the round's results are saved. `data_record`
    (`run_folder.data_record`) is kept in the backup, and a backup of other data is refused.
    `masks_before` (the masks before the prune that started the round) makes the round's
    first TensorBoard log count the weights that prune changed (`mask_changes`).

    TensorBoard: one run per round, `tensorboard/round_<r>`, with the training and
    validation curves (`train/...`, `validation/...`), the sparsity views and histograms,
    all at x = training iteration of the round.

    With `config.verbose` >= 1 each evaluation logs a line (`training.Progress`) that starts
    with `label` (default "dense round 0", then "pruning round <r> of <config.rounds>").

    `final_masks_at` is the iteration of the round's last mask update (one pass: the target
    sparsity; IMP: 0, the masks are set before the round): the record's
    `early_stop_iteration` and `best_val_accuracy` count only the evaluations after it, so
    that they describe the network at its final sparsity, not a denser one on the way.
    """
    epochs = max(1, iterations // interval)
    if final_masks_at >= epochs * interval:
        raise ValueError(f"final_masks_at={final_masks_at} leaves no evaluation of the round's {epochs * interval} "
                         "iterations after it to count: the last mask update must come before the round ends.")
    backup = round_backup.RoundBackup(folder, round_index, model, epochs, dataclasses.asdict(config),
                                      config_defaults(), extra_callbacks, data_record, config.backup_seconds)
    epochs_done = backup.restore()
    train = splits.train_batches(config.batch_size, config.seed * 1000 + round_index,
                                 skip_batches=epochs_done * interval, augment=config.augment)
    checked = evaluation_examples(config, iterations, len(splits.validation_y))
    # First: it adds val_loss and val_accuracy to the logs every callback after it reads.
    checks = training.HeldOutChecks(splits.validation_x[:checked], splits.validation_y[:checked])
    # Last among the callbacks: the line of an evaluation comes after its check and its backup.
    # IMP's round 0 trains the dense network, rounds 1..rounds prune: "round 0 of 1" would read as done.
    default_label = "dense round 0" if round_index == 0 else f"pruning round {round_index} of {config.rounds}"
    progress = training.Progress(default_label if label is None else label,
                                 epochs, interval, config.verbose)
    # One writer for the round's TensorBoard run: two event files in one folder are read one after
    # the other, and a live view can miss points of the older one.
    writer = tf.summary.create_file_writer(folder.file("tensorboard", f"round_{round_index}"))
    curves = training.TrainingSummaries(writer)
    # Histograms at the round's start (after its prune) and end only: one per evaluation cost ~15% of a
    # 2,000-iteration LeNet round (bench/RESULTS.md). A resumed round's first log is not its start.
    sparsity = summaries.SparsitySummaries(writer, histogram_freq=epochs + 1,
                                           masks_before=masks_before if epochs_done == 0 else None)
    try:
        try:
            _fit_round(model, train, epochs_done, epochs, interval,
                       [checks, *extra_callbacks, curves, sparsity,
                        training.StopOnDivergence(f"round {round_index}", config.learning_rate), backup, progress])
        finally:
            backup.wait()  # the newest backup is whole on disk before anything reads or removes it
    except training.TrainingDivergedError:
        folder.remove_backup(round_index)  # resuming it would diverge again: nothing of the round is kept
        raise
    finally:
        writer.close()
    seconds = backup.seconds()
    test_loss, test_accuracy = training.Evaluator(splits.test_x, splits.test_y)(model)
    # Evaluation e (from 0) comes after iteration (e + 1) * interval; a mask update at step s is made after
    # the evaluation at iteration s: the evaluations after `final_masks_at` are e >= final_masks_at // interval.
    first = final_masks_at // interval
    counted = backup.logs[first:]
    best = first + int(np.argmin([logs["val_loss"] for logs in counted]))
    return {
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "best_val_accuracy": float(np.max([logs["val_accuracy"] for logs in counted])),
        "early_stop_iteration": (best + 1) * interval,
        "iterations": epochs * interval,
        "evaluations": epochs,
        "evaluation_examples": checked,
        "train_seconds": round(seconds, 3),
    }


def write_tensorboard_round(folder, record, run="imp", step=None):
    """Writes a round's record as scalars under `tensorboard/<run>`, in a tag space of its own.

    `<run>/<record key>` for accuracy, early stop and weights remaining, and
    `<run>/flips/<layer>/<statistic>` for sign-flip runs (`sign_flip.flip_statistics`):
    the per-step views of the rounds (`flips/<layer>/...` at x = iteration) keep their
    own tags, so TensorBoard never draws both in one chart. IMP: run 'imp', x = round;
    one-pass: run 'one_pass', x = the run's iterations (`step`).
    """
    writer = tf.summary.create_file_writer(folder.file("tensorboard", run))
    with writer.as_default(step=record["round"] if step is None else step):
        for key in ("test_accuracy", "best_val_accuracy", "early_stop_iteration", "weights_remaining"):
            tf.summary.scalar(f"{run}/{key}", record[key])
        for layer, statistics in record.get("flips", {}).items():
            for key, value in statistics.items():
                tf.summary.scalar(f"{run}/flips/{layer}/{key}", value)
    writer.close()
