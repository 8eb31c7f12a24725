"""The early-bird flow as a library call: search, draw the ticket, retrain it.

    summary = run(EarlyBirdConfig(output_dir="runs/eb", search_epochs=20))

Search: train the dense network with an `EarlyBirdCallback` until the ticket is
drawn (or `search_epochs` end). Draw: an unstructured ('magnitude') ticket is a mask
assigned to the wrapped network; a channel ticket ('l1', or 'bn_gamma' with the
paper's L1 penalty on gamma during the search) becomes a narrower network
(`fusion.remove_units`), as in the paper, so retraining it costs less. Retrain: from
the drawn weights, or rewound to init, for `retrain_epochs`. The summary records the
epoch the ticket was drawn, the distance curve, accuracy, the training iterations
each phase spent and their cost in dense-network iterations (by multiply-adds), in
the same style as IMP's `summary.json`.
"""

import dataclasses
import logging
import math
import os
import time

import numpy as np

from keras_lottery import compat
from keras_lottery import data
from keras_lottery import fusion
from keras_lottery import models
from keras_lottery import training
from keras_lottery.experiments import rounds
from keras_lottery.experiments import run_folder
from keras_lottery.foundations import files
from keras_lottery.foundations import tensorboard
from keras_lottery.foundations.validation import check_int
from keras_lottery.fusion.report import model_multiply_adds
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import early_bird
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import summaries
from keras_lottery.sparsity import wrappers

keras = compat.keras
_LOG = logging.getLogger(__name__)
RETRAIN_FROM = ("drawn", "rewind")
FLOW_CRITERIA = ("magnitude", "l1", "bn_gamma")
FINAL_WEIGHTS = "final_weights.npz"


# What runs saved before a field existed used (see `imp_config.config_defaults`).
LEGACY = {"checks_per_epoch": 1, "gamma_penalty": 1e-4, **training.LEGACY_RECIPE, "augment": False,
          "freeze_batch_norm": False, "freeze_output": False, "mixed_precision": None,
          "momentum": lambda saved: 0.9 if saved.get("optimizer") == "momentum" else 0.0}


@dataclasses.dataclass
class EarlyBirdConfig(training.TrainingConfig):
    """Settings of one early-bird run (plus `TrainingConfig`'s)."""

    output_dir: str = "runs/early_bird"
    target_sparsity: float = 0.5
    criterion: str = "magnitude"  # 'magnitude' (unstructured), or channels: 'l1' (units), 'bn_gamma' (|gamma|)
    gamma_penalty: float = 1e-4  # 'bn_gamma' only: L1 penalty on BatchNorm gamma during the search (the paper's)
    strategy: str = "layerwise"
    epsilon: float = 0.1
    queue_size: int = 5
    search_epochs: int = 20  # the longest search, and the full-training length it is compared with
    retrain_epochs: int | None = None  # default: search_epochs
    retrain_from: str = "drawn"
    stop_at_draw: bool = True  # False: search all search_epochs and take the masks at the end (the full-training flow)
    checks_per_epoch: int = 1  # mask checks per search epoch: with queue_size 5 and 1 check, epoch 5 is the earliest draw

    def resolved(self):
        """A copy with defaults filled in, validated (ValueError names the field)."""
        config = super().resolved()
        if config.augment is None:
            config.augment = data.default_augment(config.dataset)
        if config.retrain_epochs is None:
            config.retrain_epochs = config.search_epochs
        check_int(config.search_epochs, "search_epochs", 1)
        check_int(config.retrain_epochs, "retrain_epochs", 1)
        check_int(config.checks_per_epoch, "checks_per_epoch", 1)
        masks_lib.check_sparsity(config.target_sparsity, "target_sparsity")
        if config.criterion not in FLOW_CRITERIA:
            raise ValueError(
                f"criterion must be one of {FLOW_CRITERIA} for this flow; got {config.criterion!r} (the sign-flip "
                "criteria need a prune_low_sign_flip model: use EarlyBirdCallback directly)."
            )
        if isinstance(config.gamma_penalty, bool) or not isinstance(config.gamma_penalty, (int, float)) \
                or not config.gamma_penalty >= 0:
            raise ValueError(f"gamma_penalty must be a number >= 0 (the paper uses 1e-4); got {config.gamma_penalty!r}.")
        if config.retrain_from not in RETRAIN_FROM:
            raise ValueError(f"retrain_from must be one of {RETRAIN_FROM}; got {config.retrain_from!r}.")
        early_bird.EarlyBirdCallback(config.target_sparsity, config.criterion, config.strategy,
                                     config.epsilon, config.queue_size)  # validates the detector's settings
        return config


def _layer_weights(model):
    """Kernel size per Dense/Conv2D layer name (wrapped or not)."""
    layers = (getattr(layer, "layer", layer) for layer in model.layers)
    return {layer.name: int(layer.kernel.shape.num_elements()) for layer in layers
            if isinstance(layer, (keras.layers.Dense, keras.layers.Conv2D))}


def channel_weights_remaining(dense, narrow):
    """(overall, per layer) fraction of the dense network's kernel weights the narrow one keeps."""
    before, after = _layer_weights(dense), _layer_weights(narrow)
    return sum(after.values()) / sum(before.values()), {name: after[name] / before[name] for name in before}


def _compile(model, config, splits, epochs, steps_per_execution=1):
    """Compiles with the config's recipe (`training.make_optimizer`) for `epochs` of training."""
    steps = rounds.steps_per_epoch(config, splits)
    training.compile_with_recipe(model, config, steps, epochs * steps, steps_per_execution)


def _fit(model, config, splits, epochs, folder, phase, extra, checks_per_epoch=1):
    """Trains `epochs` epochs, each cut into `checks_per_epoch` Keras epochs (where callbacks look)."""
    steps = math.ceil(rounds.steps_per_epoch(config, splits) / checks_per_epoch)
    curves = training.TrainingSummaries(folder.file("tensorboard", phase))  # x = iteration, not check
    start = time.perf_counter()
    # The validation checks first: they add val_loss and val_accuracy to the logs the others read.
    checks = training.HeldOutChecks(splits.validation_x, splits.validation_y)
    # A line per check ("search: iteration 240 of 4800 (evaluation 4 of 20), ..."), logged; Keras's own
    # display (stdout, "Epoch 4/20" for a check) stays off.
    progress = training.Progress(phase, epochs * checks_per_epoch, steps, config.verbose)
    history = model.fit(
        splits.train_batches(config.batch_size, config.seed, augment=config.augment),
        epochs=epochs * checks_per_epoch, steps_per_epoch=steps,
        callbacks=[checks, *extra, curves, training.StopOnDivergence(f"the {phase} phase", config.learning_rate),
                   progress],
        verbose=0,
    )
    seconds = time.perf_counter() - start
    test_loss, test_accuracy = training.Evaluator(splits.test_x, splits.test_y)(model)
    return {
        "epochs": len(history.history["loss"]) / checks_per_epoch,
        "iterations": len(history.history["loss"]) * steps,
        "multiply_adds_per_example": model_multiply_adds(model),
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "best_val_accuracy": float(np.max(history.history["val_accuracy"])),
        "train_seconds": round(seconds, 3),  # fit only (validation included), not the test evaluation
    }


def _draw(detector, config):
    """The drawn (or, for the full-training flow, final) masks at the target sparsity."""
    sparsity = detector.sparsities[0]
    return (detector.drawn_masks.get(sparsity) if config.stop_at_draw else None) or detector.compute_masks(sparsity)


def _ticket(model, drawn, config, rewind, splits):
    """The network to retrain: `model` masked (unstructured), or a narrow copy (channels), compiled."""
    channel = config.criterion in early_bird.CHANNEL_CRITERIA
    if not channel:
        wrappers.set_masks(model, drawn)  # before rewinding, which keeps pruned weights at 0
    if config.retrain_from == "rewind":
        rewind.rewind(model)
    else:
        callbacks.reset_optimizer(model.optimizer)
    if not channel:
        return model
    ticket = fusion.remove_units(model, {name: np.flatnonzero(mask < 0.5) for name, mask in drawn.items()})
    _compile(ticket, config, splits, config.retrain_epochs)
    return ticket


def run(config):
    """Runs the search, draw and retrain phases and returns the summary dict.

    A finished run in `output_dir` with the same config is returned as it is; a
    different config there is refused (run_folder.ConfigMismatchError). A run finished
    by an older version (no final weights; a channel ticket retrained at full width)
    is run again.

    Results: summary.json, masks.npz (kernel masks; for a channel ticket, one 0/1
    entry per unit of each layer it narrows) and final_weights.npz (the retrained
    ticket's weights, keyed like IMP's round_<r>/final_weights.npz), each written
    atomically, summary.json last. A channel ticket's summary adds "removed_units"
    (layer -> indices), which `fusion.remove_units` takes to rebuild the narrow network.
    A finished run whose masks or final weights do not read back is run again (logged).
    The run holds its folder's lock throughout (`run_folder.RunFolder.locked`).

    Raises:
      ValueError: bad config or data, an output folder that holds another run, is in
        use or cannot be written, a batch larger than the training set — before any training.
    """
    config = config.resolved()
    folder = run_folder.RunFolder(config.output_dir)
    with folder.locked():
        return _run(config, folder)


def _finished_files_read_back(folder):
    for name in ("masks.npz", FINAL_WEIGHTS):
        try:
            run_folder.read_npz(folder.file(name))
        except run_folder.CorruptRecordError as error:
            _LOG.warning("%s cannot be read (%s): the run is computed again.", folder.file(name), error.__cause__)
            return False
    return True


def _run(config, folder):
    config_dict = dataclasses.asdict(config)
    previous = folder.load_checked(config_dict, LEGACY, required=("config", "retrain"))
    channel = config.criterion in early_bird.CHANNEL_CRITERIA
    if previous is not None and os.path.exists(folder.file(FINAL_WEIGHTS)) and (
            not channel or "removed_units" in previous) and _finished_files_read_back(folder):
        return previous
    splits = data.load_for_training(config.dataset, config.data_dir, config.validation_examples,
                                    config.train_examples)
    training.check_batch_size(config.batch_size, splits.train_size)
    strategy = training.strategies.get(config.distribution_strategy)
    with strategy.scope(), training.precision.policy(config.mixed_precision):
        model = models.build(config.model, splits.input_shape, splits.num_classes, config.seed,
                             synchronized_batch_norm=strategy.num_replicas_in_sync > 1)
        scored = early_bird.criterion_scores(model, config.criterion)  # e.g. 'bn_gamma' without BatchNorm: fail early
        # A channel ticket takes units only where the narrow network can lose them: not a ResNet's
        # convolutions that feed an Add (their channels must match the other members').
        layers = fusion.removable_unit_layers(model, list(scored)) if channel else None
        if channel and not layers:
            raise ValueError(f"criterion={config.criterion!r} removes units, and no layer of model {config.model!r} "
                             "can lose any (each feeds an Add or a model output): use criterion='magnitude' for an "
                             "unstructured ticket.")
        if not channel:  # an unstructured ticket is a mask on the same network; a channel ticket a new one
            model = wrappers.prune_low_magnitude(model, pruning_schedule=schedules.OneShot(0.0),
                                                 strategy=config.strategy)
        if config.criterion == "bn_gamma" and config.gamma_penalty:
            # Search only: the narrow network is built from the config, without this loss.
            early_bird.add_gamma_l1_penalty(model, config.gamma_penalty)
        # Epoch ends (where the detector looks) must fall on execution boundaries.
        epoch_steps = rounds.steps_per_epoch(config, splits)
        _compile(model, config, splits, config.search_epochs, training.steps_per_execution(
            epoch_steps, math.ceil(epoch_steps / config.checks_per_epoch)))
    rewind = callbacks.RewindCallback(0)
    detector = early_bird.EarlyBirdCallback(config.target_sparsity, config.criterion, config.strategy,
                                            config.epsilon, config.queue_size, stop_training=config.stop_at_draw,
                                            layers=layers)
    # The HParams session: the search run's curves are its metrics.
    summaries.write_hparams(folder.file("tensorboard", "search"), config_dict)
    search = _fit(model, config, splits, config.search_epochs, folder, "search", [rewind, detector],
                  config.checks_per_epoch)
    sparsity = detector.sparsities[0]
    drawn = _draw(detector, config)
    with strategy.scope():
        ticket = _ticket(model, drawn, config, rewind, splits)
    retrain = _fit(ticket, config, splits, config.retrain_epochs, folder, "retrain", [])
    extra = {}
    if channel:
        saved_masks = {name: np.asarray(mask, np.float32) for name, mask in drawn.items()}
        overall, per_layer = channel_weights_remaining(model, ticket)
        extra["removed_units"] = {name: np.flatnonzero(mask < 0.5).tolist() for name, mask in drawn.items()}
    else:
        saved_masks = wrappers.get_masks(ticket)
        overall, per_layer = masks_lib.weights_remaining(saved_masks)
    # A channel ticket's iteration costs what its narrow network costs: count it in dense iterations.
    retrain_cost = retrain["iterations"] * retrain["multiply_adds_per_example"] / search["multiply_adds_per_example"]
    summary = {
        "config": config_dict,
        "data": run_folder.data_record(splits),
        # In epochs: a ticket drawn at the 5th of 4 checks per epoch is drawn at epoch 1.25.
        "drawn_epoch": (detector.drawn_epoch[sparsity] / config.checks_per_epoch
                        if sparsity in detector.drawn_epoch else None),
        "distances": detector.distances[sparsity],
        "search": search,
        "retrain": retrain,
        "weights_remaining": overall,
        "layers": per_layer,
        **extra,
        "total_iterations": search["iterations"] + retrain["iterations"],
        "total_dense_iterations": search["iterations"] + retrain_cost,
        "total_train_seconds": search["train_seconds"] + retrain["train_seconds"],
    }
    files.write_npz(folder.file("masks.npz"), saved_masks)
    variables = callbacks.RewindCallback.rewindable_variables(ticket)
    files.write_npz(folder.file(FINAL_WEIGHTS), {f"{i:04d}": v.numpy() for i, v in enumerate(variables)})
    folder.save_summary(summary)
    tensorboard.end_hparams_session(folder.file("tensorboard", "search"), "success")
    return summary
