"""Iterative magnitude pruning (IMP) with rewinding, as a library call.

    config = ImpConfig(output_dir="runs/lenet", rounds=5, iterations=5000)
    summary = run(config)

Round 0 trains the dense network and snapshots the weights at `rewind_step`.
Each round r >= 1 prunes the trained weights of round r-1 to sparsity
`1 - (1 - rate) ** r` per layer (or globally), sets the surviving weights for the
round (the ticket's rewind, or a control), resets the optimizer, and trains again.
Results go to one folder per run (see `run_folder.py`); rerunning the same config
resumes at the first unfinished round, at its last evaluation if it has a backup
(`round_backup.py`). The settings are an `ImpConfig` (`imp_config.py`); the round
itself, shared with one-pass runs, is in `rounds.py`.

`criterion` picks what each round prunes by: 'magnitude' (LTH), 'sign_flip' or
'hybrid' (the model is wrapped with `prune_low_sign_flip`; flips are counted during
each round's training relative to the signs the round started from, i.e. the
rewind point), or 'random'. `mode='one_pass'` runs the one-pass flow instead
(`one_pass.py`): prune while training continues, no rewinding.
"""

import dataclasses

import numpy as np

from keras_lottery import data
from keras_lottery import models
from keras_lottery import training
from keras_lottery.experiments import one_pass
from keras_lottery.experiments import run_folder
from keras_lottery.experiments.imp_config import (  # noqa: F401  (kl.imp's API)
    AFTER_REWIND,
    CRITERIA,
    MODES,
    ON_FLIP_FLOORS,
    PRUNE_SCHEDULES,
    ImpConfig,
    config_defaults,
    with_defaults,
)
from keras_lottery.experiments.rounds import check_keeps_weights, compile_for_round
from keras_lottery.experiments.rounds import (  # noqa: F401  (kl.imp's API, as before the layout move)
    evaluation_interval,
    evaluation_spacing,
    iterations_per_round,
    layer_rates,
    train_round,
    wrap,
    write_tensorboard_round,
)
from keras_lottery.foundations import tensorboard
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import controls
from keras_lottery.sparsity import flops
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import pruning
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import summaries
from keras_lottery.sparsity import wrappers
from keras_lottery.training import OPTIMIZERS, compile_for_training  # noqa: F401


def build_model(config, splits, iterations, replicas=1):
    """The wrapped model for `config`, seeded, masks all ones.

    Each prunable layer gets an `Iterative` schedule with its per-round rate: the
    schedule is where the loop reads the target sparsity of every round. With several
    `replicas`, BatchNorm normalizes by the whole batch, as on one device.
    """
    with training.precision.policy(config.mixed_precision):
        dense = models.build(config.model, splits.input_shape, splits.num_classes, config.seed,
                             synchronized_batch_norm=replicas > 1)
        rounds = max(1, config.rounds)
        return wrap(config, dense, {
            name: schedules.Iterative(rate, steps_per_round=iterations, rounds=rounds)
            for name, rate in layer_rates(config, dense).items()
        })


def rewound_round_iterations(config, iterations):
    """Iterations of each round after the dense one: from the rewind point to the end with 'continue'.

    Raises:
      ValueError: a rewind to the round's last iteration leaves nothing to train.
    """
    if config.after_rewind == "restart" or not config.rewind_step:
        return iterations
    if config.rewind_step >= iterations:
        raise ValueError(f"rewind_step={config.rewind_step} is the round's last iteration: with "
                         "after_rewind='continue' the pruned rounds would train nothing. Lower rewind_step, or "
                         "use --after_rewind=restart.")
    return iterations - config.rewind_step


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


def round_flops(model, iterations, batch_size, earlier_records):
    """The round's FLOPs for its record: the masked network's inference multiply-adds per example, its
    training's (RigL's 3 per active weight, example and step: `flops.training_flops('lottery', ...)`), and
    the run's total so far (absent when an earlier record, of a run saved before these fields, lacks it).
    """
    inference = flops.inference_flops(model)
    training_cost = int(flops.training_flops("lottery", inference, inference, iterations, batch_size))
    result = {"inference_flops": int(inference), "training_flops": training_cost}
    if all("training_flops" in record for record in earlier_records):
        result["total_training_flops"] = training_cost + sum(record["training_flops"] for record in earlier_records)
    return result


def run(config, on_round_end=None):
    """Runs (or resumes) IMP and returns the summary dict.

    The run holds its folder's lock throughout (`run_folder.RunFolder.locked`): a second
    process on the same folder fails at once. Rerunning the same config resumes; rounds
    whose files cannot be read back are recomputed (`RunFolder.verify_rounds`).

    Args:
      config: an `ImpConfig`.
      on_round_end: optional callable(record) called after each finished round
        (the app logs a progress line with it).

    Returns:
      The summary: {"config": ..., "data": what was read, "rounds": [record per round]}.

    Raises:
      ValueError: bad config, a missing dataset, an output folder that holds a run
        with another config or data, is in use (`RunInUseError`) or cannot be written
        (`OutputDirError`), a batch larger than the training set, rounds that would
        prune every weight of a layer — all before any training.
    """
    config = config.resolved()
    if config.mode == "one_pass":
        return one_pass.run(config, on_round_end)
    folder = run_folder.RunFolder(run_folder.worker_output_dir(
        config.output_dir, training.strategies.get(config.distribution_strategy)))
    with folder.locked():
        return _run(config, folder, on_round_end)


def _run(config, folder, on_round_end):
    config_dict = dataclasses.asdict(config)
    summary = folder.load_checked(config_dict, config_defaults())
    resumed = summary is not None
    if resumed:
        summary["config"] = config_dict
        done = folder.verify_rounds(summary, flip_state=config.criterion in ("sign_flip", "hybrid"))
    else:
        summary = {"config": config_dict, "rounds": []}
        done = 0
    folder.remove_leftovers(done)
    if done >= config.rounds + 1:
        return summary

    splits = data.load_for_training(config.dataset, config.data_dir, config.validation_examples,
                                    config.train_examples)
    data_record = run_folder.data_record(splits)
    folder.check_data(summary if resumed else None, data_record)
    summary["data"] = data_record
    training.check_batch_size(config.batch_size, splits.train_size)
    iterations = iterations_per_round(config, splits)
    if config.rewind_step > iterations:
        raise ValueError(f"rewind_step={config.rewind_step} is beyond the {iterations} iterations of a round.")
    later = rewound_round_iterations(config, iterations)
    intervals = {0: evaluation_spacing(iterations, config.evaluations_per_round),
                 1: evaluation_spacing(later, config.evaluations_per_round)}
    steps_per_execution = training.steps_per_execution(intervals[0], config.rewind_step, intervals[1])
    summary["iterations_per_round"] = iterations
    summary["iterations_after_rewind"] = later
    masks_source = run_folder.RunFolder(config.masks_from) if config.masks_from else None

    # The model, its optimizer and the variables they make belong to the strategy: built in its scope.
    strategy = training.strategies.get(config.distribution_strategy)
    summary["replicas"] = strategy.num_replicas_in_sync  # of the last (re)start; a resume may change it
    with strategy.scope():
        model = build_model(config, splits, iterations, strategy.num_replicas_in_sync)
        wrappers.manage_masks(model)  # the rounds set the masks with prune(); round 0 trains dense on purpose
        if config.masks_from is None:  # else the masks come from another run, which had them
            check_keeps_weights(config, {name: wrapper.pruning_schedule.sparsity_at_round(config.rounds)
                                         for name, wrapper, _, _ in wrappers.pruning_entries(model)}, model)
        compile_for_round(model, config, splits, iterations, steps_per_execution)
    if not done:
        summaries.write_hparams(folder.file("tensorboard", "imp"), config_dict)  # named by the run folder
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
        masks_before = wrappers.get_masks(model) if round_index > 0 else None
        if round_index > 0:
            _prune_for_round(config, model, round_index, masks_source, np.random.default_rng(seed))
            controls.start_round(model, config.control, rewind, seed)
            # Flips count from the signs this round starts from (the rewind point).
            sign_flip.reset_reference(model, config.rewind_step)
        # From round 1 a rewind to k continues the learning-rate schedule from k (after_rewind='continue').
        schedule_start = config.rewind_step if round_index and later != iterations else 0
        training.set_schedule_start(model.optimizer, schedule_start)
        try:
            record = train_round(model, config, splits, round_index, later if round_index else iterations,
                                 intervals[min(round_index, 1)], folder, extra, data_record, masks_before)
        except training.TrainingDivergedError:
            tensorboard.end_hparams_session(folder.file("tensorboard", "imp"), "failure")
            raise
        current = wrappers.get_masks(model)
        overall, per_layer = masks_lib.weights_remaining(current)
        spent = sum(r["iterations"] for r in summary["rounds"]) + record["iterations"]
        record = {"round": round_index, "weights_remaining": overall, "layers": per_layer, **record,
                  "total_iterations": spent, "flips": sign_flip.flip_statistics(model),
                  **round_flops(model, record["iterations"], config.batch_size, summary["rounds"])}
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
    tensorboard.end_hparams_session(folder.file("tensorboard", "imp"), "success")
    return summary

