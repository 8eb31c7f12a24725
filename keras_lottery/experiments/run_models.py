"""Models back from run folders and model files: a round's ticket as a plain tf_keras model.

    loaded = load_run_model("runs/lenet")               # the last finished round
    loaded = load_run_model("runs/lenet", round_index=3)
    loaded.model, loaded.config, loaded.splits

IMP and one-pass runs (`imp.run`: summary.json with "rounds") and sparse runs of any method
(`sparse_training.run`: one round, rebuilt with the method's wrappers, their learning off, or
as the small dense network) save each round's masks and final weights; early-bird runs (`early_bird_flow.run`: summary.json with
"retrain") save the retrained ticket's. The network is rebuilt as the run built it
(`models.build` with the run's seed, wrapped by `imp.wrap` or `prune_low_magnitude`),
the masks and final weights assigned, and the wrappers stripped: pruned weights are
exact zeros in an ordinary model. An early-bird channel ticket comes back as the
narrower network it was retrained as (`fusion.remove_units` with its removed units).
The run's dataset is loaded too (the model's input shape comes from it, and it gives
callers calibration and test examples).
"""

import dataclasses
import json
import os

import numpy as np

from keras_lottery import compat
from keras_lottery import data
from keras_lottery import fusion
from keras_lottery import models
from keras_lottery.data import streaming
from keras_lottery.experiments import early_bird_flow
from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import sparse_config
from keras_lottery.experiments import sparse_training
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers

keras = compat.keras

FINAL_WEIGHTS = early_bird_flow.FINAL_WEIGHTS  # the same name in IMP round folders
MODEL_FILE_EXTENSIONS = (".keras", ".h5", ".hdf5")


class RunFolderError(ValueError):
    """A run folder is missing, unfinished, or lacks what a model is rebuilt from."""


@dataclasses.dataclass
class RunModel:
    """A run's ticket as a plain model, and what it was trained on.

    Attributes:
      model: tf_keras model, wrappers stripped, pruned weights exactly 0.
      config: the run's config dict (from summary.json).
      splits: the run's `data.Splits` (same held-out validation examples).
      kind: 'imp', 'one_pass', 'early_bird' or 'sparse' (`sparse_training.run`).
      round_index: the IMP round loaded (0 for one pass), None for early bird.
      record: the summary's record of that round (early bird: the retrain record,
        plus the ticket's weights_remaining and layers).
      masks: dict mask name -> 0/1 array, as saved (a channel ticket: one entry per unit).
    """

    model: keras.Model
    config: dict
    splits: data.Splits
    kind: str
    round_index: int | None
    record: dict
    masks: dict


def read_summary(run_dir):
    """The summary.json of `run_dir` as a dict.

    Raises:
      RunFolderError: no such folder, no summary.json, or an unreadable one.
    """
    if not os.path.isdir(run_dir):
        raise RunFolderError(
            f"run folder {run_dir!r} does not exist: pass the --output_dir of an IMP or early-bird run."
        )
    path = os.path.join(run_dir, run_folder.SUMMARY)
    if not os.path.exists(path):
        raise RunFolderError(
            f"{run_dir!r} holds no summary.json: it is not a run folder, or its first round has not finished yet."
        )
    try:
        with open(path) as file:
            summary = json.load(file)
        run_folder.check_summary(summary, ("config", "retrain") if isinstance(summary, dict) and "retrain" in summary
                                 else ("config", "rounds"))
    except (OSError, ValueError) as error:
        raise RunFolderError(f"{path} is not a valid run summary ({error}).") from error
    return summary


def _run_kind(summary, run_dir):
    if summary.get("mode") == "sparse":
        return "sparse"
    if "rounds" in summary:
        return "one_pass" if summary["config"].get("mode") == "one_pass" else "imp"
    if "retrain" in summary:
        return "early_bird"
    raise RunFolderError(f"{run_dir}/summary.json has neither 'rounds' (IMP, one pass) nor 'retrain' (early bird).")


def _config_object(config_class, config_dict):
    """A config dataclass from a saved dict: unknown keys dropped, missing ones at their defaults."""
    names = {field.name for field in dataclasses.fields(config_class)}
    return config_class(**{key: value for key, value in config_dict.items() if key in names})


def _pick_round(summary, run_dir, round_index):
    finished = [record["round"] for record in summary["rounds"]]
    if not finished:
        raise RunFolderError(f"{run_dir} has no finished round yet: wait for round 0 to finish, or rerun the run.")
    if round_index is None:
        round_index = finished[-1]
    if isinstance(round_index, bool) or round_index not in finished:
        raise RunFolderError(f"{run_dir} has no finished round {round_index!r}; its rounds are {finished}.")
    return round_index, summary["rounds"][finished.index(round_index)]


def _assign_final_weights(model, final, where):
    """Assigns saved final weights (keys sorted = the model's rewindable variables in order)."""
    variables = callbacks.RewindCallback.rewindable_variables(model)
    keys = sorted(final)
    shapes_match = len(keys) == len(variables) and all(
        tuple(final[key].shape) == tuple(variable.shape) for key, variable in zip(keys, variables))
    if not shapes_match:
        raise RunFolderError(
            f"{where} holds {len(keys)} arrays that do not match the {len(variables)} weights of the model "
            "rebuilt from the run's config: was it written by another version of keras_lottery?"
        )
    for variable, key in zip(variables, keys):
        variable.assign(final[key])
    wrappers.apply_masks(model)


def _read_arrays(path):
    try:
        return run_folder.read_npz(path)
    except run_folder.CorruptRecordError as error:
        raise RunFolderError(str(error)) from error


def load_run_model(run_dir, round_index=None, data_dir=None):
    """Rebuilds a run's ticket (a round of an IMP run, or an early-bird run) as a plain model.

    Args:
      run_dir: the run's output folder (with summary.json).
      round_index: the IMP round to load; None for the last finished one. Must be
        None for early-bird runs (they have one ticket).
      data_dir: where the run's dataset is, if not where the run read it from (its
        config's data_dir).

    Returns:
      A `RunModel`.

    Raises:
      RunFolderError: a missing folder or summary, an unknown round (the message lists
        the finished ones), missing or mismatched weight files, or an early-bird run
        saved before final weights were kept (rerun it).
      ValueError, data.DataUnavailableError: the run's dataset cannot be loaded.
    """
    run_dir = os.fspath(run_dir)
    summary = read_summary(run_dir)
    kind = _run_kind(summary, run_dir)
    folder = run_folder.RunFolder(run_dir)
    if kind == "early_bird":
        if round_index is not None:
            raise RunFolderError(f"{run_dir} is an early-bird run: it has one ticket and no rounds; pass no round.")
        weights_path = folder.file(FINAL_WEIGHTS)
        if not os.path.exists(weights_path):
            raise RunFolderError(
                f"{run_dir} is an early-bird run saved before final weights were kept (it has masks.npz but no "
                f"{FINAL_WEIGHTS}). Rerun the same early-bird command: it retrains the ticket and saves them."
            )
        masks_path = folder.file("masks.npz")
        record = {**summary["retrain"], "weights_remaining": summary["weights_remaining"], "layers": summary["layers"]}
        config = _config_object(early_bird_flow.EarlyBirdConfig, summary["config"])
    else:
        round_index, record = _pick_round(summary, run_dir, round_index)
        masks_path = os.path.join(folder.round_dir(round_index), "masks.npz")
        weights_path = os.path.join(folder.round_dir(round_index), FINAL_WEIGHTS)
        config = _config_object(sparse_config.SparseConfig if kind == "sparse" else imp.ImpConfig, summary["config"])
    for path in (masks_path, weights_path):
        if not os.path.exists(path):
            raise RunFolderError(f"{path} is missing: the run folder is incomplete; rerun the run to recompute it.")

    splits = data.load(config.dataset, data_dir or config.data_dir, config.validation_examples,
                       config.train_examples, split_seed=0)
    dense = models.build(config.model, splits.input_shape, splits.num_classes, config.seed)
    masks = _read_arrays(masks_path)
    if kind == "early_bird" and "removed_units" in summary:  # a channel ticket: a narrower plain network
        narrow = fusion.remove_units(dense, summary["removed_units"])
        _assign_final_weights(narrow, _read_arrays(weights_path), weights_path)
        return RunModel(model=narrow, config=summary["config"], splits=splits, kind=kind, round_index=None,
                        record=record, masks=masks)
    if kind == "early_bird":
        wrapped = wrappers.prune_low_magnitude(dense, pruning_schedule=schedules.OneShot(0.0), strategy=config.strategy)
    elif kind == "sparse":  # the method's own wrappers, their learning switched off: a plain masked network
        if config.method == "small_dense":
            dense, _ = models.small_dense(dense, 1.0 - config.sparsity, config.seed)
        wrapped = sparse_training.wrap(config, dense, sparse_training.prunable_layers(config, dense), splits)
        for wrapper in wrappers.prunable_wrappers(wrapped):
            if hasattr(wrapper, "learning"):
                wrapper.learning.assign(0.0)
    else:  # the schedules only carry rates; the saved masks decide what is pruned
        wrapped = imp.wrap(config, dense, {name: schedules.OneShot(0.0) for name in imp.layer_rates(config, dense)})
    try:
        wrappers.set_masks(wrapped, masks)
    except ValueError as error:
        raise RunFolderError(f"{masks_path} does not fit the model rebuilt from the run's config: {error}") from error
    _assign_final_weights(wrapped, _read_arrays(weights_path), weights_path)
    return RunModel(model=wrappers.strip_pruning(wrapped), config=summary["config"], splits=splits, kind=kind,
                    round_index=round_index, record=record, masks=masks)


def channel_statistics(images):
    """Per-channel (mean, std) over every pixel, as `data.streaming` computes them (std 1 where constant)."""
    images = np.asarray(images, np.float64)
    mean = images.mean(axis=(0, 1, 2))
    std = np.sqrt(np.maximum((images ** 2).mean(axis=(0, 1, 2)) - mean ** 2, 0.0))
    return mean, np.where(std > 0, std, 1.0)


def input_normalization(loaded):
    """(mean, std) per channel that `loaded`'s run trained its inputs with, or None (images in [0, 1]).

    `load_run_model` returns `data.load`'s splits, in [0, 1]; the flows train every dataset
    but the IDX ones (MNIST, Fashion-MNIST) on images normalized per channel
    (`data.load_for_training`): by the dataset's published statistics, else by the kept
    training images'. Feed `streaming.normalized(x, *input_normalization(loaded))` to such a
    run's model.

    Args:
      loaded: a `RunModel`.
    """
    dataset = loaded.config["dataset"]
    if dataset in data.IDX_DATASETS:
        return None
    return data.CHANNEL_STATISTICS.get(dataset) or channel_statistics(loaded.splits.train_x)


def splits_as_trained(loaded):
    """`loaded.splits` with every image as the run's model saw it in training (`input_normalization`).

    Args:
      loaded: a `RunModel`.

    Returns:
      A `data.Splits`: the same object for runs on [0, 1] images, else a normalized copy.
    """
    normalization = input_normalization(loaded)
    if normalization is None:
        return loaded.splits
    mean, std = normalization
    splits = loaded.splits
    return dataclasses.replace(splits, train_x=streaming.normalized(splits.train_x, mean, std),
                               validation_x=streaming.normalized(splits.validation_x, mean, std),
                               test_x=streaming.normalized(splits.test_x, mean, std))


def load_model_file(path):
    """Loads a tf_keras model saved by `model.save` (.keras, .h5, or a SavedModel folder).

    Pruning wrappers and schedules of keras_lottery load too (`wrappers.custom_objects`);
    the model comes back as saved (wrapped or not), uncompiled.

    Raises:
      FileNotFoundError: no such file or folder.
      ValueError: a file that is not .keras/.h5/.hdf5, or a folder without saved_model.pb.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist.")
    if os.path.isdir(path):
        if not os.path.exists(os.path.join(path, "saved_model.pb")):
            raise ValueError(f"{path!r} is a folder without saved_model.pb: not a SavedModel.")
    elif not path.endswith(MODEL_FILE_EXTENSIONS):
        raise ValueError(
            f"{path!r} is not a Keras model file: expected {', '.join(MODEL_FILE_EXTENSIONS)} or a SavedModel folder."
        )
    return keras.models.load_model(path, custom_objects=wrappers.custom_objects(), compile=False)
