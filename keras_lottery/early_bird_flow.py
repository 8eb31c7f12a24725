"""The early-bird flow as a library call: search, draw the ticket, retrain it.

    summary = run(EarlyBirdConfig(output_dir="runs/eb", search_epochs=20))

Search: train the dense network with an `EarlyBirdCallback` until the ticket is
drawn (or `search_epochs` end). Draw: assign the drawn masks. Retrain: from the
drawn weights, or rewound to init, for `retrain_epochs`. The summary records the
epoch the ticket was drawn, the distance curve, accuracy and the training iterations
each phase spent, in the same style as IMP's `summary.json`.
"""

import dataclasses
import math
import os
import time

import numpy as np

from keras_lottery import callbacks
from keras_lottery import compat
from keras_lottery import data
from keras_lottery import early_bird
from keras_lottery import masks as masks_lib
from keras_lottery import models
from keras_lottery import records
from keras_lottery import schedules
from keras_lottery import training
from keras_lottery import wrappers
from keras_lottery.validation import check_int

keras = compat.keras
RETRAIN_FROM = ("drawn", "rewind")
FINAL_WEIGHTS = "final_weights.npz"


@dataclasses.dataclass
class EarlyBirdConfig(training.TrainingConfig):
    """Settings of one early-bird run (plus `TrainingConfig`'s)."""

    output_dir: str = "runs/early_bird"
    target_sparsity: float = 0.5
    criterion: str = "magnitude"  # 'magnitude' or 'l1' (units); 'bn_gamma' tickets are not retrained here yet
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
        config.retrain_epochs = config.retrain_epochs or config.search_epochs
        check_int(config.search_epochs, "search_epochs", 1)
        check_int(config.retrain_epochs, "retrain_epochs", 1)
        check_int(config.checks_per_epoch, "checks_per_epoch", 1)
        masks_lib.check_sparsity(config.target_sparsity, "target_sparsity")
        if config.criterion not in ("magnitude", "l1"):
            raise ValueError(
                f"criterion must be 'magnitude' or 'l1' for this flow; got {config.criterion!r} "
                "('bn_gamma' channel tickets are drawn by EarlyBirdCallback but not yet retrained here)."
            )
        if config.retrain_from not in RETRAIN_FROM:
            raise ValueError(f"retrain_from must be one of {RETRAIN_FROM}; got {config.retrain_from!r}.")
        early_bird.EarlyBirdCallback(config.target_sparsity, config.criterion, config.strategy,
                                     config.epsilon, config.queue_size)  # validates the detector's settings
        return config


def kernel_masks(model, drawn, criterion):
    """Per-weight masks from drawn masks: a unit mask ('l1') covers its unit's whole kernel slice."""
    if criterion == "magnitude":
        return drawn
    return {name: np.broadcast_to(drawn[name], weight.shape).astype(np.float32) if name in drawn
            else np.ones(weight.shape, np.float32) for name, _, weight, _ in wrappers.pruning_entries(model)}


def _steps_per_epoch(config, splits):
    return math.ceil(len(splits.train_y) / config.batch_size)


def _fit(model, config, splits, epochs, folder, phase, extra, checks_per_epoch=1):
    """Trains `epochs` epochs, each cut into `checks_per_epoch` Keras epochs (where callbacks look)."""
    steps = math.ceil(_steps_per_epoch(config, splits) / checks_per_epoch)
    tensorboard = keras.callbacks.TensorBoard(folder.file("tensorboard", phase), profile_batch=0)
    start = time.perf_counter()
    history = model.fit(
        data.to_dataset(splits.train_x, splits.train_y, config.batch_size, shuffle_seed=config.seed, repeat=True),
        epochs=epochs * checks_per_epoch, steps_per_epoch=steps,
        validation_data=data.to_dataset(splits.validation_x, splits.validation_y, 1000),
        callbacks=[*extra, tensorboard, training.StopOnDivergence(f"the {phase} phase", config.learning_rate)],
        verbose=config.verbose,
    )
    test_loss, test_accuracy = model.evaluate(data.to_dataset(splits.test_x, splits.test_y, 1000), verbose=0)
    return {
        "epochs": len(history.history["loss"]) / checks_per_epoch,
        "iterations": len(history.history["loss"]) * steps,
        "test_accuracy": float(test_accuracy),
        "test_loss": float(test_loss),
        "best_val_accuracy": float(np.max(history.history["val_accuracy"])),
        "train_seconds": round(time.perf_counter() - start, 3),
    }


def run(config):
    """Runs the search, draw and retrain phases and returns the summary dict.

    A finished run in `output_dir` with the same config is returned as it is; a
    different config there is refused (records.ConfigMismatchError). A run finished
    by an older version, which kept no final weights, is run again to save them.

    Results: summary.json, masks.npz and final_weights.npz (the retrained ticket's
    weights, keyed like IMP's round_<r>/final_weights.npz), each written atomically,
    summary.json last.
    """
    config = config.resolved()
    folder = records.RunFolder(config.output_dir)
    config_dict = dataclasses.asdict(config)
    previous = folder.load_checked(config_dict, {"checks_per_epoch": 1}, required=("config", "retrain"))
    if previous is not None and os.path.exists(folder.file(FINAL_WEIGHTS)):
        return previous
    splits = data.load(config.dataset, config.data_dir, config.validation_examples, config.train_examples)
    dense = models.build(config.model, splits.input_shape, splits.num_classes, config.seed)
    # Masks are assigned by hand below; the schedule only documents that nothing else prunes.
    model = wrappers.prune_low_magnitude(dense, pruning_schedule=schedules.OneShot(0.0), strategy=config.strategy)
    # Epoch ends (where the detector looks) must fall on execution boundaries.
    epoch_steps = _steps_per_epoch(config, splits)
    training.compile_for_training(model, config.optimizer, config.learning_rate, training.steps_per_execution(
        epoch_steps, math.ceil(epoch_steps / config.checks_per_epoch)))
    rewind = callbacks.RewindCallback(0)
    detector = early_bird.EarlyBirdCallback(config.target_sparsity, config.criterion, config.strategy,
                                            config.epsilon, config.queue_size, stop_training=config.stop_at_draw)
    search = _fit(model, config, splits, config.search_epochs, folder, "search", [rewind, detector],
                  config.checks_per_epoch)
    sparsity = detector.sparsities[0]
    drawn = (detector.drawn_masks.get(sparsity) if config.stop_at_draw else None) or detector.compute_masks(sparsity)
    wrappers.set_masks(model, kernel_masks(model, drawn, config.criterion))
    if config.retrain_from == "rewind":
        rewind.rewind(model)
    else:
        callbacks.reset_optimizer(model.optimizer)
    retrain = _fit(model, config, splits, config.retrain_epochs, folder, "retrain", [])
    overall, per_layer = masks_lib.weights_remaining(wrappers.get_masks(model))
    summary = {
        "config": config_dict,
        # In epochs: a ticket drawn at the 5th of 4 checks per epoch is drawn at epoch 1.25.
        "drawn_epoch": (detector.drawn_epoch[sparsity] / config.checks_per_epoch
                        if sparsity in detector.drawn_epoch else None),
        "distances": detector.distances[sparsity],
        "search": search,
        "retrain": retrain,
        "weights_remaining": overall,
        "layers": per_layer,
        "total_iterations": search["iterations"] + retrain["iterations"],
    }
    records.write_npz(folder.file("masks.npz"), wrappers.get_masks(model))
    variables = callbacks.RewindCallback.rewindable_variables(model)
    records.write_npz(folder.file(FINAL_WEIGHTS), {f"{i:04d}": v.numpy() for i, v in enumerate(variables)})
    folder.save_summary(summary)
    return summary
