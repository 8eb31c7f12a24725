"""Settings shared by every experiment (IMP, early bird, ...): `TrainingConfig`.

`TrainingConfig` holds what any training run needs — data, model, optimizer and its
recipe (momentum, weight decay, learning-rate schedule, warmup), seed, output folder —
with the defaults of its model's registry entry (`models/registry.py`); experiment
configs extend it with their own fields.
"""

import dataclasses
import math

from keras_lottery import models
from keras_lottery.foundations.validation import check_int
from keras_lottery.training import lr_schedules
from keras_lottery.training import precision
from keras_lottery.training import strategies
from keras_lottery.training.progress import check_verbose

OPTIMIZERS = ("adam", "sgd", "momentum")  # 'momentum': SGD with momentum 0.9, the LTH paper's name
WEIGHT_DECAY_MODES = ("l2", "decoupled")
LR_SCHEDULES = lr_schedules.KINDS

# The recipe every run trained with before these fields existed (Adam or SGD at a constant rate,
# no decay, no warmup): what a run folder saved without them counts as.
# The recipe fields `TrainingConfig` takes from the model's entry (a branch may change each).
RECIPE_FIELDS = ("momentum", "nesterov", "weight_decay", "weight_decay_mode", "lr_schedule", "lr_milestones",
                 "lr_gamma", "warmup")
LEGACY_RECIPE = {"momentum": 0.0, "nesterov": False, "weight_decay": 0.0, "weight_decay_mode": "l2",
                 "lr_schedule": "constant", "lr_milestones": "", "lr_gamma": 0.1, "warmup": ""}


@dataclasses.dataclass
class TrainingConfig:
    """Data, model, optimizer and recipe settings. `None` means the model's default (its `ModelSpec`)."""

    output_dir: str = "runs/run"
    dataset: str = "fashion_mnist"
    data_dir: str | None = None
    model: str = "lenet_300_100"
    batch_size: int | None = None
    optimizer: str | None = None
    learning_rate: float | None = None
    # OpenLTH's recipe (see `optimizers.make_optimizer`, `lr_schedules.RecipeSchedule`); None: the model's.
    momentum: float | None = None  # SGD's ('sgd' only; 'momentum' means 0.9)
    nesterov: bool | None = None
    weight_decay: float | None = None
    weight_decay_mode: str | None = None  # 'l2' (coupled, as OpenLTH's PyTorch SGD) or 'decoupled'
    lr_schedule: str | None = None  # 'constant', 'step' (x lr_gamma at each milestone) or 'cosine'
    lr_milestones: str | None = None  # 'step' only: comma-separated lengths, "80ep,120ep" or "500it,900it"
    lr_gamma: float | None = None
    warmup: str | None = None  # linear warmup from 0, "5ep" or "500it"; "" none
    seed: int = 0
    train_examples: int | None = None  # train on a subset, for quick runs
    validation_examples: int = 5000  # held out from train, as in the LTH paper
    # Progress lines while training, logged (never printed; see `progress.Progress`): 0 none, 1 a line
    # per evaluation ("pruning round 2 of 5: iteration 300 of 2000 (evaluation 3 of 20), validation accuracy
    # 0.9712"), 2 the same with losses and seconds. Keras's own display is always off. It changes no
    # result, so a run folder resumes under another value.
    verbose: int = 1
    # How training is spread over devices (`strategies.STRATEGIES`, TF Model Garden's names). It changes
    # results only by float rounding (`strategies` says why), so a run folder resumes under another one.
    distribution_strategy: str = "default"
    # Pad-4 random crop + horizontal flip of the training batches; None: the dataset's default (on for
    # CIFAR-10/100, as OpenLTH; off for the others).
    augment: bool | None = None
    # OpenLTH's model options: BatchNorm's gamma and beta, or the output layer, left at their init (`freezing`).
    freeze_batch_norm: bool = False
    freeze_output: bool = False
    mixed_precision: str | None = None  # 'mixed_bfloat16': layers compute in bfloat16 (`precision`); None: float32

    def resolved(self):
        """A copy with the model's defaults filled in and the shared fields validated.

        A recipe field the model's entry sets for another choice is not taken: with
        --optimizer=adam (or 'momentum') the momentum is 0 (0.9) whatever the entry's SGD
        momentum, and with a --lr_schedule other than 'step' there are no milestones.
        Resolving a resolved config gives it back unchanged. Milestones in different units
        are compared once the epoch length is known (`lr_schedules.schedule_for`).

        Subclasses extend this with their own fields (call super().resolved() first).

        Raises:
          ValueError: naming the bad field and what it accepts.
        """
        spec = models.get(self.model)
        config = dataclasses.replace(self)
        # Only None means "the model's default": a 0 given by the user is refused below, never replaced.
        if config.batch_size is None:
            config.batch_size = spec.batch_size
        if config.optimizer is None:
            config.optimizer = spec.optimizer
        if config.learning_rate is None:
            config.learning_rate = spec.learning_rate
        check_int(config.batch_size, "batch_size", 1)
        check_int(config.seed, "seed", 0)
        check_int(config.validation_examples, "validation_examples", 1)
        check_verbose(config.verbose)
        strategies.check_name(config.distribution_strategy)
        precision.check(config.mixed_precision)
        for name in ("freeze_batch_norm", "freeze_output"):
            if not isinstance(getattr(config, name), bool):
                raise ValueError(f"{name} must be True or False; got {getattr(config, name)!r}.")
        if config.augment is not None and not isinstance(config.augment, bool):
            raise ValueError(f"augment must be True, False or None (the dataset's default); got {config.augment!r}.")
        if config.train_examples is not None:
            check_int(config.train_examples, "train_examples", 1)
        if config.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}; got {config.optimizer!r}.")
        if isinstance(config.learning_rate, bool) or not isinstance(config.learning_rate, (int, float)) or not (
                0 < config.learning_rate < math.inf):
            raise ValueError(f"learning_rate must be a number > 0; got {config.learning_rate!r}.")
        _resolve_recipe(config, spec)
        return config


def _number(value):
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _resolve_recipe(config, spec):
    """Fills and checks the recipe fields of `config` (in place) from the model's `spec`."""
    if config.optimizer == "sgd":
        fixed = {}
    else:  # Adam has no momentum; 'momentum' fixes it at 0.9 without Nesterov
        fixed = {"momentum": 0.0 if config.optimizer == "adam" else 0.9, "nesterov": False}
        for name, value in fixed.items():
            given = getattr(config, name)
            same_type = isinstance(given, bool) if name == "nesterov" else _number(given)
            if given is not None and (not same_type or given != value):
                raise ValueError(
                    f"--{name}={given!r} has no effect with --optimizer={config.optimizer!r}"
                    + (" (SGD with momentum 0.9)" if config.optimizer == "momentum" else "")
                    + f": use --optimizer=sgd to set it, or leave --{name} unset."
                )
            setattr(config, name, value)
    for name in ("momentum", "nesterov", "weight_decay", "weight_decay_mode", "lr_schedule", "lr_gamma", "warmup"):
        if getattr(config, name) is None:
            setattr(config, name, getattr(spec, name))
    if config.lr_milestones is None:
        config.lr_milestones = spec.lr_milestones if config.lr_schedule == "step" else ""
    if not _number(config.momentum) or not 0 <= config.momentum < 1:
        raise ValueError(f"--momentum must be a number in [0, 1); got {config.momentum!r}.")
    config.momentum = float(config.momentum)
    if not isinstance(config.nesterov, bool):
        raise ValueError(f"--nesterov must be True or False; got {config.nesterov!r}.")
    if config.nesterov and config.momentum == 0:
        raise ValueError("--nesterov needs --momentum > 0 (Nesterov momentum with momentum 0 is plain SGD).")
    if not _number(config.weight_decay) or not 0 <= config.weight_decay < math.inf:
        raise ValueError(f"--weight_decay must be a finite number >= 0; got {config.weight_decay!r}.")
    config.weight_decay = float(config.weight_decay)
    if config.weight_decay_mode not in WEIGHT_DECAY_MODES:
        raise ValueError(f"--weight_decay_mode must be one of {WEIGHT_DECAY_MODES}; got {config.weight_decay_mode!r}.")
    if config.lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"--lr_schedule must be one of {LR_SCHEDULES}; got {config.lr_schedule!r}.")
    if not _number(config.lr_gamma) or not 0 < config.lr_gamma <= 1:
        raise ValueError(f"--lr_gamma must be a number in (0, 1]; got {config.lr_gamma!r}.")
    config.lr_gamma = float(config.lr_gamma)
    if not isinstance(config.warmup, str):
        raise ValueError(f"--warmup must be a length such as '5ep' or '500it' ('' for none); got {config.warmup!r}.")
    if config.warmup.strip():
        lr_schedules.parse_length(config.warmup, "--warmup")
    _check_milestones(config.lr_milestones, config.lr_schedule)


def _check_milestones(text, schedule):
    """Refuses milestones that do not parse, decrease within a unit, or do not fit the schedule."""
    if not isinstance(text, str):
        raise ValueError(f"--lr_milestones must be comma-separated lengths such as '80ep,120ep'; got {text!r}.")
    if "," in text and not all(part.strip() for part in text.split(",")):
        raise ValueError(f"--lr_milestones has an empty length in {text!r}; write them as '80ep,120ep'.")
    lengths = [lr_schedules.parse_length(part, "--lr_milestones") for part in lr_schedules.split_lengths(text)]
    if schedule == "step" and not lengths:
        raise ValueError("--lr_schedule='step' needs at least one milestone: give --lr_milestones, e.g. '80ep,120ep'.")
    if schedule != "step" and lengths:
        raise ValueError(
            f"--lr_milestones={text!r} has no effect with --lr_schedule={schedule!r}: use --lr_schedule=step, "
            "or leave --lr_milestones unset."
        )
    # Within a unit they must increase; epochs against iterations wait for the epoch length.
    for unit in lr_schedules.UNITS:
        values = [value for value, u in lengths if u == unit]
        if any(later <= earlier for earlier, later in zip(values, values[1:])):
            raise ValueError(f"--lr_milestones must be increasing; got {text!r}.")


def check_batch_size(batch_size, train_examples):
    """Refuses a batch larger than the training set, which would repeat examples within each step.

    Raises:
      ValueError: naming both numbers and the fix.
    """
    if batch_size > train_examples:
        raise ValueError(
            f"batch_size={batch_size} is larger than the {train_examples} training examples: every step would "
            f"repeat examples. Use --batch_size <= {train_examples}, or train on more examples."
        )
