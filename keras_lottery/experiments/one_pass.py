"""One-pass pruning: prune while training continues — no rewinding, no restarts.

    config = ImpConfig(mode="one_pass", criterion="sign_flip", rounds=10, output_dir="runs/one_pass")
    summary = imp.run(config)  # or one_pass.run(config)

The research idea behind sign-flip pruning: if weights that flip sign are the ones a
ticket can lose, a ticket can be found during *one* training run instead of IMP's
train-prune-rewind rounds. The run trains the dense network for
`one_pass_iterations` (default 3 x IMP's iterations per round); from `prune_begin` to
`prune_end` (fractions of that length) the masks are updated `prune_updates` times on
the cubic `schedules.Gradual` schedule, ranked by `criterion`, up to the per-layer
sparsity IMP reaches after `rounds` rounds (same rates, so the two are compared at
the same weights remaining). Training then continues at the final masks until the end.

With `prune_schedule='on_flip'` the updates are checks instead (`sparsity/on_flip.py`):
each prunes the surviving weights that changed sign at least `min_flips` times since the
reference, capped at the per-layer target, and the last one fills each layer up to its
target by the criterion, so that the run ends at the same weights remaining as the
gradual runs and IMP. The record's `on_flip` says, per layer and check, how many weights
went for their flips and how many the fill added, and the iteration each layer reached
its target. With `on_flip_floor='gradual'` each check also keeps at most what the gradual
schedule keeps at its step (the same begin, updates and target): the flipped weights go
first, then the lowest criterion scores, so that the run is gradual pruning in which
flipped weights go first (the record's `filled` counts the floor's weights too).

With `prune_begin == prune_end` all pruning happens once at that point; at 0 with
`criterion='random'` this is the random-pruning control (a random mask at
initialization, trained for the whole length).

Results: the same run folder as IMP (`summary.json` with one record, "round" 0,
`round_0/masks.npz`, TensorBoard runs `round_0` and `one_pass`); rerunning a finished run returns its summary,
rerunning a killed one resumes at its last evaluation (`round_backup.py`). The record's
`early_stop_iteration` and `best_val_accuracy` count only the evaluations after
`target_reached_iteration`, the last mask update (the network at its final sparsity):
records written before that field existed counted every evaluation, the denser ones too.

With `verbose` >= 1 the run logs what it will do ("one pass: 6000 iterations, pruning
from iteration 1200 to 4200 in 20 updates to 51.3% weights remaining") and a line per
evaluation (`training.Progress`).
"""

import dataclasses
import logging

import numpy as np

from keras_lottery import models
from keras_lottery import training
from keras_lottery.experiments import rounds
from keras_lottery.experiments import run_folder
from keras_lottery.experiments.imp_config import config_defaults
from keras_lottery.foundations import tensorboard
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import on_flip
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import summaries
from keras_lottery.sparsity import wrappers

_LOG = logging.getLogger(__name__)
PROGRESS_LABEL = "one pass"


def total_iterations(config, iterations_per_round):
    """The one-pass training length: `one_pass_iterations`, or 3 IMP rounds' worth."""
    return 3 * iterations_per_round if config.one_pass_iterations is None else config.one_pass_iterations


def pruning_steps(config, total):
    """(begin_step, frequency, updates) of the mask updates within `total` steps.

    Raises:
      ValueError: a window too short for the number of updates.
    """
    begin = int(round(config.prune_begin * total))
    end = int(round(config.prune_end * total))
    if end == begin:
        return begin, 1, 0
    frequency = (end - begin) // config.prune_updates
    if frequency < 1:
        raise ValueError(
            f"prune_updates={config.prune_updates} do not fit in the {end - begin} steps between prune_begin "
            f"and prune_end: use fewer updates or a wider window."
        )
    return begin, frequency, config.prune_updates


def layer_schedules(config, dense_model, total):
    """dict layer name -> schedule reaching IMP's sparsity after `config.rounds` rounds.

    'gradual': `Gradual` (`OneShot` for an empty window); 'on_flip': `OnFlip` with the same
    updates as its checks and the target as its cap, filled at the last one.
    """
    begin, frequency, updates = pruning_steps(config, total)
    result = {}
    for name, rate in rounds.layer_rates(config, dense_model).items():
        target = masks_lib.sparsity_after_rounds(rate, config.rounds)
        if config.prune_schedule == "on_flip":
            result[name] = schedules.OnFlip(target, begin, frequency, updates, min_flips=config.min_flips,
                                            floor=config.on_flip_floor)
        else:
            result[name] = (schedules.OneShot(target, begin) if updates == 0
                            else schedules.Gradual(target, begin, frequency, updates))
    return result


def target_weights_remaining(schedules_by_layer, model):
    """The fraction of prunable weights left at the target sparsity, for the run's description.

    Args:
      schedules_by_layer: dict layer name -> its schedule (`layer_schedules`).
      model: the wrapped model (for the layers' sizes).

    Returns:
      The kept fraction, counted per layer as `masks.keep_count` does (a global ranking, one
      sparsity for all layers together, keeps the same count to within a weight per layer).
    """
    sizes = {name: int(np.size(weight)) for name, _, weight, _ in wrappers.pruning_entries(model)}
    kept = sum(masks_lib.keep_count(size, schedules_by_layer[name].target_sparsity) for name, size in sizes.items())
    return kept / sum(sizes.values())


def describe(total, begin, frequency, updates, weights_remaining, min_flips=None, floor="none"):
    """What a one-pass run does, in one line for the start of its log.

    Args:
      total: training iterations.
      begin, frequency, updates: the mask updates (`pruning_steps`).
      weights_remaining: the fraction left at the target sparsity.
      min_flips: None for the gradual schedule; for 'on_flip', its `min_flips`.
      floor: for 'on_flip', its `on_flip_floor`.

    Returns:
      E.g. "one pass: 6000 iterations, pruning from iteration 1200 to 4200 in 20 updates to 51.3%
      weights remaining".
    """
    if min_flips is not None:
        flips = "1 sign flip" if min_flips == 1 else f"{min_flips} sign flips"
        last = begin + frequency * updates
        pruning = (f"pruning the weights with {flips} every {frequency} iterations from iteration {begin} to {last}"
                   if updates else f"pruning the weights with {flips} once at iteration {begin}")
        floor_text = ", at least as far as the gradual schedule at each check" if floor == "gradual" else ""
        return (f"{PROGRESS_LABEL}: {total} iterations, {pruning}, at most to {100 * weights_remaining:.1f}% weights "
                f"remaining{floor_text}, filled to it by the criterion at iteration {last}")
    if updates == 0:
        pruning = f"pruning once at iteration {begin}"
    else:
        pruning = f"pruning from iteration {begin} to {begin + frequency * updates} in {updates} updates"
    return f"{PROGRESS_LABEL}: {total} iterations, {pruning} to {100 * weights_remaining:.1f}% weights remaining"


def run(config, on_round_end=None):
    """Runs the one-pass flow for an `ImpConfig` with `mode='one_pass'`; returns the summary.

    Raises:
      ValueError: as `imp.run`: bad config or data, an output folder that holds a run
        with another config or data, is in use or cannot be written — all before any training.
    """
    config = config.resolved()
    if config.mode != "one_pass":
        raise ValueError("one_pass.run needs ImpConfig(mode='one_pass'); use imp.run for IMP.")
    folder = run_folder.RunFolder(config.output_dir)
    with folder.locked():
        return _run(config, folder, on_round_end)


def _run(config, folder, on_round_end):
    config_dict = dataclasses.asdict(config)
    summary = folder.load_checked(config_dict, config_defaults())
    flips = config.criterion in ("sign_flip", "hybrid")
    if summary is not None and folder.verify_rounds(summary, flip_state=flips, snapshot=False):
        return summary
    folder.remove_leftovers(0)

    splits, data_record = rounds.load_data(config)
    total = total_iterations(config, rounds.iterations_per_round(config, splits))
    interval = rounds.evaluation_spacing(total, config.evaluations_per_round)
    total = interval * (total // interval)
    begin, frequency, updates = pruning_steps(config, total)
    if begin + frequency * updates >= total:
        raise ValueError(f"the last mask update (step {begin + frequency * updates}) must come before the end "
                         f"of training ({total} steps): lower prune_end.")
    if config.rewind_step > begin:
        raise ValueError(f"rewind_step={config.rewind_step} (the sign reference) comes after the first mask "
                         f"update at step {begin}: raise prune_begin or lower rewind_step.")
    strategy = training.strategies.get(config.distribution_strategy)
    with strategy.scope(), training.precision.policy(config.mixed_precision):
        dense = models.build(config.model, splits.input_shape, splits.num_classes, config.seed,
                             synchronized_batch_norm=strategy.num_replicas_in_sync > 1)
        schedules_by_layer = layer_schedules(config, dense, total)
        model = rounds.wrap(config, dense, schedules_by_layer)
        rounds.check_keeps_weights(config, {name: s.target_sparsity for name, s in schedules_by_layer.items()},
                                   model)
        rounds.compile_for_round(model, config, splits, total, training.steps_per_execution(
            interval, begin, frequency if updates else 0, config.rewind_step))
    if config.verbose:
        _LOG.info("%s", describe(total, begin, frequency, updates, target_weights_remaining(schedules_by_layer, model),
                                 config.min_flips if config.prune_schedule == "on_flip" else None,
                                 config.on_flip_floor))
    summaries.write_hparams(folder.file("tensorboard", "one_pass"), config_dict)
    # With rewind_step > 0 the sign-flip reference is the weights at that step: the
    # RewindCallback's snapshot sets it (nothing is rewound in one pass).
    extra = [callbacks.RewindCallback(config.rewind_step)] if config.rewind_step else []
    extra.append(callbacks.UpdateMasks(criterion=config.criterion, seed=config.seed))
    target_reached = begin + frequency * updates
    record = rounds.train_round(model, config, splits, 0, total, interval, folder, extra, data_record,
                                label=PROGRESS_LABEL, final_masks_at=target_reached)
    current = wrappers.get_masks(model)
    overall, per_layer = masks_lib.weights_remaining(current)
    record = {"round": 0, "weights_remaining": overall, "layers": per_layer, **record,
              "total_iterations": record["iterations"], "target_reached_iteration": int(target_reached),
              "flips": sign_flip.flip_statistics(model)}
    if config.prune_schedule == "on_flip":
        record["on_flip"] = on_flip.history(model)
    variables = callbacks.RewindCallback.rewindable_variables(model)
    folder.save_round(0, current, {f"{i:04d}": v.numpy() for i, v in enumerate(variables)},
                      sign_flip.get_state(model))
    summary = {"config": config_dict, "mode": "one_pass", "data": data_record, "iterations_per_round": int(total),
               "prune_steps": [int(step) for step in begin + frequency * np.arange(updates + 1)], "rounds": [record]}
    folder.save_summary(summary)
    folder.remove_backup(0)
    rounds.write_tensorboard_round(folder, record, run="one_pass", step=record["iterations"])
    tensorboard.end_hparams_session(folder.file("tensorboard", "one_pass"), "success")
    if on_round_end is not None:
        on_round_end(record)
    return summary
