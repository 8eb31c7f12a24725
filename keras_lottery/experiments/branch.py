"""Branches: retrain the tickets of a finished IMP run at chosen levels, with other data or another recipe.

    config = BranchConfig(source_dir="runs/resnet20", output_dir="runs/resnet20_to_svhn",
                          dataset="svhn_cropped", levels="0,3,6")
    summary = run(config)

OpenLTH's "retrain" branch, and the transfer experiment of Morcos et al. 2019 ("One
ticket to win them all"): for each level L asked (a round of the source run; 0 is the
dense network), the source's round-L masks are put on a freshly built network, its
surviving weights are set as the source's tickets were (the source's rewind point, or a
control: `random_reinit`, `random_prune`, `signed_constant`), and it trains with this
branch's dataset and recipe. Nothing of the source is retrained for the levels not asked.

Every training setting left unset is the source run's, not the model's default: a
branch that changes only `--dataset` trains as the source did. The model is always the
source's. Before any training, the source's weights and masks are checked against the
network built for this branch's data (input channels, classes): a mismatch names the
variable, both shapes and what to change.

Results go to their own run folder (`output_dir`), the layout of an IMP run with only
the levels asked (`round_<L>/`, one record per level in `summary.json`), so that
`report_main` reads it; rerunning resumes at the first level not finished, mid-level
from its last backup. The source folder is only read.
"""

import dataclasses

import numpy as np

from keras_lottery import data
from keras_lottery import models
from keras_lottery import training
from keras_lottery.experiments import rounds
from keras_lottery.experiments import run_folder
from keras_lottery.experiments.imp_config import ImpConfig, with_defaults
from keras_lottery.foundations import tensorboard
from keras_lottery.sparsity import callbacks
from keras_lottery.sparsity import controls
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import summaries
from keras_lottery.sparsity import wrappers

# What a branch may change; every other `ImpConfig` field is the source's.
CHANGEABLE = ("output_dir", "dataset", "data_dir", "batch_size", "optimizer", "learning_rate", "seed",
              "train_examples", "validation_examples", "verbose", "iterations", "epochs", "evaluations_per_round",
              "evaluation_examples", "backup_seconds", "control", "distribution_strategy", "augment", "freeze_batch_norm",
              "freeze_output", "mixed_precision") + training.RECIPE_FIELDS


@dataclasses.dataclass
class BranchConfig:
    """A branch of a finished IMP run. `None` means the source run's value."""

    source_dir: str = ""  # the IMP run folder whose tickets are retrained (read only)
    output_dir: str = "runs/branch"
    levels: str = "all"  # comma-separated rounds of the source, e.g. "0,2,4"; "all": every finished round
    control: str = "ticket"  # how surviving weights start: the ticket (rewind point) or a control
    dataset: str | None = None
    data_dir: str | None = None
    model: str | None = None  # the source's always; given, it must be the source's
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    seed: int | None = None
    train_examples: int | None = None
    validation_examples: int | None = None
    iterations: int | None = None
    epochs: float | None = None
    evaluations_per_round: int | None = None
    evaluation_examples: int | str | None = None
    backup_seconds: float | None = None
    verbose: int = 1
    momentum: float | None = None
    nesterov: bool | None = None
    weight_decay: float | None = None
    weight_decay_mode: str | None = None
    lr_schedule: str | None = None
    lr_milestones: str | None = None
    lr_gamma: float | None = None
    warmup: str | None = None
    distribution_strategy: str | None = None
    augment: bool | None = None
    freeze_batch_norm: bool | None = None
    freeze_output: bool | None = None
    mixed_precision: str | None = None

    def source_config(self):
        """The source run's resolved `ImpConfig` as it trained (its saved config, defaults filled in).

        Raises:
          ValueError: no source given, or it holds no finished IMP run.
        """
        if not self.source_dir:
            raise ValueError("source_dir is required: the folder of a finished IMP run whose tickets to retrain.")
        summary = run_folder.RunFolder(self.source_dir).load_summary()
        if summary is None:
            raise ValueError(f"source_dir={self.source_dir!r} holds no IMP run (no summary.json): run "
                             "apps.imp_main there first, or point at the folder it wrote.")
        if summary.get("mode", summary["config"].get("mode")) == "one_pass":
            raise ValueError(f"source_dir={self.source_dir!r} is a one-pass run: it has no rounds to branch from.")
        saved = with_defaults(summary["config"])
        known = {field.name for field in dataclasses.fields(ImpConfig)}
        return ImpConfig(**{key: value for key, value in saved.items() if key in known}), summary

    def resolved(self):
        """(the `ImpConfig` this branch trains with, the levels, the source summary), validated.

        Raises:
          ValueError: naming the bad field, before any training.
        """
        source, summary = self.source_config()
        if self.model is not None and self.model != source.model:
            raise ValueError(f"model={self.model!r}: a branch retrains the source's tickets, which are of "
                             f"{source.model!r}; leave --model out.")
        changes = {name: getattr(self, name) for name in CHANGEABLE if getattr(self, name) is not None}
        if "iterations" in changes or "epochs" in changes:  # one length replaces the other
            changes.setdefault("iterations", None)
            changes.setdefault("epochs", None)
        if self.dataset is not None and self.dataset != source.dataset and self.data_dir is None:
            changes["data_dir"] = None  # the source's data_dir holds the source's dataset
        config = dataclasses.replace(source, masks_from=None, **changes).resolved()
        finished = [record["round"] for record in summary["rounds"]]
        levels = _parse_levels(self.levels, finished, self.source_dir)
        return config, levels, summary


def _parse_levels(text, finished, source_dir):
    if text == "all":
        return list(finished)
    try:
        levels = [int(part) for part in str(text).split(",") if part.strip()]
    except ValueError:
        raise ValueError(f"levels must be 'all' or comma-separated round numbers such as '0,2,4'; got {text!r}.") from None
    missing = [level for level in levels if level not in finished]
    if not levels or missing:
        raise ValueError(f"levels {missing or text!r}: {source_dir} has finished rounds {finished}; pick among them.")
    return sorted(set(levels))


def check_shapes(model, snapshot, source_masks, dataset, source_dataset):
    """Refuses source weights or masks that do not fit the network built for this branch's data.

    Raises:
      ValueError: naming the first variable whose shapes differ, both shapes and the fix.
    """
    variables = callbacks.RewindCallback.rewindable_variables(model)
    values = [snapshot[key] for key in sorted(snapshot)]
    fix = (f"a ticket of {source_dataset} transfers to datasets with the same input channels and number of classes; "
           f"{dataset} gives other shapes. Pick such a dataset, or branch a source run trained on the same shapes")
    if len(variables) != len(values):
        raise ValueError(f"the source's rewind point has {len(values)} variables, the network built for {dataset} "
                         f"{len(variables)}: {fix}.")
    for variable, value in zip(variables, values):
        if tuple(variable.shape) != value.shape:
            raise ValueError(f"variable {variable.name} is {tuple(variable.shape)} for {dataset} but "
                             f"{value.shape} in the source run: {fix}.")
    kernels = {name: tuple(weight.shape) for name, _, weight, _ in wrappers.pruning_entries(model)}
    for name, mask in source_masks.items():
        if kernels.get(name) != mask.shape:
            raise ValueError(f"the source's mask of layer {name!r} is {mask.shape}, the layer is {kernels.get(name)} "
                             f"for {dataset}: {fix}.")


def run(config, on_level_end=None):
    """Runs (or resumes) the branch and returns its summary.

    Args:
      config: a `BranchConfig`.
      on_level_end: optional callable(record) after each finished level.

    Returns:
      {"config": the branch's training config, "branch": {source, levels, ...}, "data": ..., "rounds": [...]}.

    Raises:
      ValueError: bad settings, a source that is not a finished IMP run, levels it has not finished, or
        shapes that do not fit the new data; all before any training. `RunInUseError` when another
        process works in `output_dir`.
    """
    train_config, levels, source_summary = config.resolved()
    folder = run_folder.RunFolder(config.output_dir)
    if folder.path == run_folder.RunFolder(config.source_dir).path:
        raise ValueError("output_dir is the source run's folder: a branch writes its own; pick another --output_dir.")
    with folder.locked():
        return _run(config, train_config, levels, source_summary, folder, on_level_end)


def _run(config, train_config, levels, source_summary, folder, on_level_end):
    source = run_folder.RunFolder(config.source_dir)
    config_dict = {**dataclasses.asdict(train_config), "branch_of": source.path, "levels": levels}
    summary = folder.load_checked(config_dict)
    if summary is None:
        summary = {"config": config_dict, "rounds": []}
    done = {record["round"] for record in summary["rounds"]}
    todo = [level for level in levels if level not in done]
    if not todo:
        return summary

    splits = data.load_for_training(train_config.dataset, train_config.data_dir, train_config.validation_examples,
                                    train_config.train_examples)
    data_record = run_folder.data_record(splits)
    folder.check_data(summary if summary["rounds"] else None, data_record)
    summary["data"] = data_record
    summary["branch"] = {"source": source.path, "source_dataset": source_summary["config"]["dataset"],
                         "levels": levels, "control": train_config.control}
    training.check_batch_size(train_config.batch_size, splits.train_size)
    iterations = rounds.iterations_per_round(train_config, splits)
    if train_config.rewind_step and train_config.after_rewind == "continue":
        if train_config.rewind_step >= iterations:
            raise ValueError(f"the source rewinds to iteration {train_config.rewind_step}, past this branch's "
                             f"{iterations} iterations: train longer (--iterations or --epochs).")
        iterations -= train_config.rewind_step  # as the source's pruned rounds: from k to the end
    interval = rounds.evaluation_spacing(iterations, train_config.evaluations_per_round)
    snapshot = source.load_snapshot()
    strategy = training.strategies.get(train_config.distribution_strategy)
    with strategy.scope(), training.precision.policy(train_config.mixed_precision):
        dense = models.build(train_config.model, splits.input_shape, splits.num_classes, train_config.seed,
                             synchronized_batch_norm=strategy.num_replicas_in_sync > 1)
        first_masks = source.load_masks(todo[0])
        model = wrappers.prune_low_magnitude(dense, pruning_schedule={name: schedules.OneShot(0.0)
                                                                      for name in first_masks})
        wrappers.manage_masks(model)  # the masks are the source's, set below
        # Every level's masks have the shapes of one model's kernels: checking the first checks them all.
        check_shapes(model, snapshot, first_masks, train_config.dataset, source_summary["config"]["dataset"])
        rounds.compile_for_round(model, train_config, splits, iterations + train_config.rewind_step,
                                 training.steps_per_execution(interval))
    rewind = callbacks.RewindCallback(train_config.rewind_step)
    rewind.load_state(snapshot)
    tensorboard_dir = folder.file("tensorboard", "branch")
    if not summary["rounds"]:
        summaries.write_hparams(tensorboard_dir, config_dict)
    for level in todo:
        wrappers.set_masks(model, source.load_masks(level))
        controls.start_round(model, train_config.control, rewind, train_config.seed * 1000 + level)
        training.set_schedule_start(model.optimizer, train_config.rewind_step if train_config.after_rewind
                                    == "continue" else 0)
        try:
            record = rounds.train_round(model, train_config, splits, level, iterations, interval, folder, [],
                                        data_record, label=f"branch level {level}")
        except training.TrainingDivergedError:
            tensorboard.end_hparams_session(tensorboard_dir, "failure")
            raise
        current = wrappers.get_masks(model)
        overall, per_layer = masks_lib.weights_remaining(current)
        spent = sum(r["iterations"] for r in summary["rounds"]) + record["iterations"]
        record = {"round": level, "weights_remaining": overall, "layers": per_layer, **record,
                  "total_iterations": spent}
        variables = callbacks.RewindCallback.rewindable_variables(model)
        folder.save_round(level, current, {f"{i:04d}": np.asarray(v.numpy()) for i, v in enumerate(variables)})
        summary["rounds"].append(record)
        folder.save_summary(summary)
        folder.remove_backup(level)
        rounds.write_tensorboard_round(folder, record, run="branch")
        if on_level_end is not None:
            on_level_end(record)
    tensorboard.end_hparams_session(tensorboard_dir, "success")
    return summary
