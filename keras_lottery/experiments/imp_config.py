"""`ImpConfig`: the settings of an IMP or one-pass run, validated once.

    config = ImpConfig(output_dir="runs/lenet", rounds=5, iterations=5000).resolved()

Every flag of `apps.imp_main` is a field here; `resolved()` fills each `None` with the
model's default and checks every field before any work starts. IMP (`imp.py`) and
one-pass (`one_pass.py`) runs read the same config, so each flow finds it here rather
than in the other.
"""

import dataclasses

from keras_lottery import data
from keras_lottery import models
from keras_lottery import training
from keras_lottery.experiments import run_folder
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import controls
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import sign_flip


@dataclasses.dataclass
class ImpConfig(training.TrainingConfig):
    """Settings of one IMP run (plus `TrainingConfig`'s). `None` means the model's LTH default."""

    output_dir: str = "runs/imp"
    rounds: int = 5  # pruning rounds after the dense round 0
    prune_rate: float | None = None  # None: LTH's per-layer rates; else this rate for every layer
    strategy: str | None = None  # 'layerwise' or 'global'; None: the model's (LTH nets layerwise, CIFAR nets global)
    # Layers left dense, e.g. "output" (comma-separated names); None: the model's (VGG's output layer, as OpenLTH).
    layers_to_ignore: str | None = None
    rewind_step: int = 0
    # After a rewind to iteration k > 0, rounds 1.. train 'continue': from k to the round's end (iterations - k
    # steps), the learning-rate schedule from its position at k, as Frankle et al. 2020 and OpenLTH; 'restart':
    # the whole round again from schedule position 0 (how runs before this field trained). The optimizer's
    # state (momenta) starts at zero in both, as OpenLTH's, which saves only the weights at k.
    after_rewind: str = "continue"
    control: str = "ticket"
    iterations: int | None = None  # training iterations per round
    epochs: float | None = None  # alternative to iterations
    evaluations_per_round: int = 20  # validation checks per round (early-stop records)
    # Held-out examples each check uses: 'auto' (a bounded share of the round's cost, see
    # EVALUATION_BUDGET), 'all', or a number; a fixed subset, the same at every check.
    evaluation_examples: int | str = "auto"
    # A mid-round backup at the first check at least this many seconds after the last one (0: at every
    # check): a killed round resumes from it, bit-exactly. It changes no result, so a resume may change it.
    backup_seconds: float = 10.0
    masks_from: str | None = None  # take each round's masks from this run folder (a branch)
    criterion: str = "magnitude"  # what each prune ranks by: see CRITERIA
    alpha: float = 1.0  # the hybrid criterion's exponent: |w| / (1 + flips) ** alpha
    mode: str = "imp"  # 'imp' (prune, rewind, retrain) or 'one_pass' (prune while training on)
    one_pass_iterations: int | None = None  # one-pass training length; None: 3 x iterations
    prune_begin: float = 0.2  # one pass: first mask update, as a fraction of its training
    prune_end: float = 0.7  # one pass: last mask update (the target sparsity), same unit
    prune_updates: int = 20  # one pass: mask updates between prune_begin and prune_end
    # One pass: 'gradual' (Zhu & Gupta's cubic schedule to the target, ranked by the criterion) or
    # 'on_flip' (each update prunes the weights that flipped, capped at the target; the last fills it).
    prune_schedule: str = "gradual"
    min_flips: int = 1  # on_flip: sign changes since the reference that make a weight prunable
    # on_flip: 'none' (a check prunes only the flipped weights; the last fills the target) or 'gradual' (each
    # check also keeps at most what the gradual schedule keeps at its step: flipped weights first, then the
    # lowest criterion scores). Runs saved before the field were 'none'.
    on_flip_floor: str = "none"

    def resolved(self):
        """A copy with every default filled in and every field validated.

        Raises:
          ValueError: naming the bad field and what it accepts.
        """
        if self.iterations is not None and self.epochs is not None:
            raise ValueError("give either iterations or epochs, not both.")
        config = resolve_round_settings(super().resolved())
        spec = models.get(config.model)
        if config.strategy is None:
            config.strategy = spec.strategy
        if config.after_rewind not in AFTER_REWIND:
            raise ValueError(f"after_rewind must be one of {AFTER_REWIND}; got {config.after_rewind!r}.")
        check_int(config.rounds, "rounds", 0)
        check_int(config.rewind_step, "rewind_step", 0)
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
        if (config.control == "random_prune" and config.criterion != "magnitude" and config.strategy == "layerwise"
                and config.masks_from is None):
            raise ValueError(
                f"control='random_prune' replaces each round's masks by random ones with the same number of weights "
                f"per layer, which the layerwise rates fix: criterion={config.criterion!r} would rank nothing. Drop "
                "--criterion (random_prune needs none), use --control=ticket to prune by it, or --strategy=global "
                "(then the criterion sets how many weights each layer keeps)."
            )
        if config.prune_schedule not in PRUNE_SCHEDULES:
            raise ValueError(f"prune_schedule must be one of {PRUNE_SCHEDULES}; got {config.prune_schedule!r}.")
        schedules.check_min_flips(config.min_flips)
        if config.prune_schedule == "on_flip":
            if config.mode != "one_pass":
                raise ValueError("prune_schedule='on_flip' prunes weights as they flip while training goes on: "
                                 "use it with --mode=one_pass (IMP prunes at each round's end).")
            if config.criterion not in ("sign_flip", "hybrid"):
                raise ValueError(
                    f"prune_schedule='on_flip' counts sign flips, and criterion={config.criterion!r} keeps none: use "
                    "--criterion=sign_flip (hits ordered, and the target filled, by flips then |w|) or "
                    "--criterion=hybrid (by |w| / (1 + flips)^alpha).")
        elif config.min_flips != 1:
            raise ValueError(f"min_flips={config.min_flips} applies to --prune_schedule=on_flip only; "
                             f"prune_schedule is {config.prune_schedule!r}: drop --min_flips or use on_flip.")
        if config.on_flip_floor not in ON_FLIP_FLOORS:
            raise ValueError(f"on_flip_floor must be one of {ON_FLIP_FLOORS} ('gradual': each on_flip check "
                             f"keeps at most what the gradual schedule keeps); got {config.on_flip_floor!r}.")
        if config.on_flip_floor != "none" and config.prune_schedule != "on_flip":
            raise ValueError(f"on_flip_floor={config.on_flip_floor!r} applies to --prune_schedule=on_flip only; "
                             f"prune_schedule is {config.prune_schedule!r}: drop --on_flip_floor or use on_flip.")
        if config.mode == "one_pass" and config.masks_from is not None:
            raise ValueError("masks_from takes masks round by round from an IMP run; it has no meaning in one-pass mode.")
        return config


def resolve_round_settings(config):
    """Fills and checks, in place, the fields every flow that trains in rounds has (IMP, one pass, sparse runs).

    The length (`iterations` or `epochs`, default the model's), `augment` (the dataset's),
    `layers_to_ignore` (the model's), and the checks: `evaluations_per_round`,
    `evaluation_examples`, `backup_seconds`.

    Returns:
      `config`.

    Raises:
      ValueError: naming the bad field and what it accepts.
    """
    spec = models.get(config.model)
    if config.iterations is None and config.epochs is None:
        config.iterations, config.epochs = spec.iterations, spec.epochs
    if config.augment is None:
        config.augment = data.default_augment(config.dataset)
    if config.layers_to_ignore is None:
        config.layers_to_ignore = ",".join(spec.layers_to_ignore)
    if not isinstance(config.layers_to_ignore, str):
        raise ValueError(f"layers_to_ignore must be comma-separated layer names (a string, '' for none); "
                         f"got {config.layers_to_ignore!r}.")
    check_int(config.evaluations_per_round, "evaluations_per_round", 1)
    if isinstance(config.backup_seconds, bool) or not isinstance(config.backup_seconds, (int, float)) or not (
            0 <= config.backup_seconds < float("inf")):
        raise ValueError(f"backup_seconds must be a number >= 0 (0: a backup at every check); "
                         f"got {config.backup_seconds!r}.")
    if config.evaluation_examples not in ("auto", "all"):
        check_int(config.evaluation_examples, "evaluation_examples ('auto', 'all' or a number)", 1)
        if config.evaluation_examples > config.validation_examples:
            raise ValueError(
                f"evaluation_examples={config.evaluation_examples} is more than the {config.validation_examples} "
                "validation examples held out: use at most that many, 'all', or raise validation_examples."
            )
    if config.iterations is not None:
        check_int(config.iterations, "iterations", 1)
    if config.epochs is not None and not (isinstance(config.epochs, (int, float)) and config.epochs > 0):
        raise ValueError(f"epochs must be > 0; got {config.epochs!r}.")
    return config


CRITERIA = ("magnitude", "sign_flip", "hybrid", "random")
MODES = ("imp", "one_pass")
PRUNE_SCHEDULES = ("gradual", "on_flip")
ON_FLIP_FLOORS = schedules.ON_FLIP_FLOORS
AFTER_REWIND = ("continue", "restart")


# What runs saved before a field existed used, where that differs from today's default.
_LEGACY = {
    **training.LEGACY_RECIPE,
    # The LTH paper's 'momentum' optimizer is SGD with momentum 0.9: runs saved before the field have 0.9.
    "momentum": lambda saved: 0.9 if saved.get("optimizer") == "momentum" else 0.0,
    "evaluation_examples": "all",  # every check read the whole validation set
    # Rounds after a rewind to k > 0 trained the whole round again; with k = 0 both values are the same run.
    "after_rewind": lambda saved: "restart" if saved.get("rewind_step") else "continue",
    "strategy": "layerwise",
    "augment": False,  # no run augmented before the field
    "freeze_batch_norm": False,
    "freeze_output": False,
    "mixed_precision": None,
    "layers_to_ignore": "",
}

# 'auto' evaluation: the checks of a round read at most this many held-out examples per
# training example the round processes (iterations x batch size), never fewer than
# MIN_EVALUATION_EXAMPLES per check. A forward pass costs about a third of a training
# step per example, so validation stays near 3% of a round's compute: LTH's 50K-iteration
# LeNet rounds read all 5,000 examples at each of 20 checks; a 2,000-iteration round reads
# 600 (20 full passes cost ~20% of such a round; bench/RESULTS.md).
EVALUATION_BUDGET = 0.1
MIN_EVALUATION_EXAMPLES = 500


def config_defaults():
    """Every `ImpConfig` field's default as a run saved before the field existed used it.

    A value may be a callable of the saved config (`RunFolder.check_config` calls it); use
    `with_defaults` for the saved config completed with plain values.
    """
    return {**{field.name: field.default for field in dataclasses.fields(ImpConfig)}, **_LEGACY}


def with_defaults(saved):
    """A saved config dict with each missing field at the default its run used (`config_defaults`)."""
    defaults = {key: value(saved) if callable(value) else value for key, value in config_defaults().items()}
    return {**defaults, **saved}


def evaluation_examples(config, iterations, validation_examples):
    """How many held-out examples each of a round's checks reads (the first ones: a fixed subset).

    Args:
      config: a resolved `ImpConfig`.
      iterations: the round's training iterations.
      validation_examples: the size of the held-out set.
    """
    if config.evaluation_examples == "all":
        return validation_examples
    if config.evaluation_examples == "auto":
        budget = EVALUATION_BUDGET * iterations * config.batch_size / config.evaluations_per_round
        return min(validation_examples, max(MIN_EVALUATION_EXAMPLES, int(budget)))
    return min(validation_examples, config.evaluation_examples)


def _check_masks_from(folder, rounds):
    source = run_folder.RunFolder(folder)
    summary = source.load_summary()
    if summary is None:
        raise ValueError(f"masks_from={folder!r} holds no finished run (no summary.json).")
    finished = len(summary["rounds"]) - 1
    if finished < rounds:
        raise ValueError(f"masks_from={folder!r} has {finished} pruning rounds; this run needs {rounds}.")
    for round_index in range(1, rounds + 1):
        source.load_masks(round_index)  # unreadable: CorruptRecordError, before any training
