"""`SparseConfig`: the settings of one sparse training run by a method of the literature, validated once.

    config = SparseConfig(method="rigl", sparsity=0.9, output_dir="runs/rigl_90").resolved()

A sparse run trains one network once, `iterations` steps, at a fixed final sparsity chosen
by `method` (`sparse_training.py` runs it; `compare.py` runs grids of them next to IMP).
The methods, grouped by when their mask is chosen:

* at initialization, then fixed: 'random' (the static random baseline), 'snip', 'grasp',
  'synflow' (`methods.pruning_at_init`);
* from another run: 'ticket', the last round's masks of the finished run in `masks_from`
  (an IMP run: the lottery ticket, its weights rewound to the same seed's initialization);
* moved during training: 'set', 'snfs', 'rigl' (`methods.mask_updaters`, from a random mask
  at the distribution's per-layer sparsities);
* learned: 'l0', 'variational_dropout' (`methods.learned_sparsity`), 'supermask',
  'edge_popup' (`methods.supermasks`), fixed at the target sparsity by `masks.compute` of the
  method's own scores at `learn_until`;
* no mask: 'dense' (sparsity 0) and 'small_dense', a dense network narrowed to the same
  number of kernel weights (`models.small_dense`).

`control` applies Frankle et al. 2021's sanity checks to a mask chosen before training
('random', 'snip', 'grasp', 'synflow', 'ticket'): 'layer_shuffle' moves each layer's kept
weights to random places (same count per layer), 'reinit' draws fresh weights (for 'ticket',
Liu et al. 2019's scratch training of the pruned architecture). `budget='flops'` trains as
many iterations as give the dense network's training FLOPs (Liu et al.'s scratch-B, RigL's
extended training), at most `max_budget_factor` times `iterations`.
"""

import dataclasses

from keras_lottery import training
from keras_lottery.experiments import imp_config
from keras_lottery.experiments import run_folder
from keras_lottery.foundations.validation import check_int
from keras_lottery.methods import distributions
from keras_lottery.sparsity import masks as masks_lib

AT_INIT = ("random", "snip", "grasp", "synflow")
DYNAMIC = ("set", "snfs", "rigl")
LEARNED = ("l0", "variational_dropout", "supermask", "edge_popup")
NO_MASK = ("dense", "small_dense")
METHODS = NO_MASK + AT_INIT + ("ticket",) + DYNAMIC + LEARNED
CONTROLS = ("none", "layer_shuffle", "reinit")
BUDGETS = ("iterations", "flops")
# 'global': one ranking over all layers (the pruning-at-init papers, OpenLTH); the others are
# per-layer sparsities of `methods.distributions`.
DISTRIBUTIONS = ("global", *distributions.DISTRIBUTIONS)
# Methods whose mask holds a set number of weights per layer, and their default distribution: ERK for
# the random masks (RigL's best), uniform for edge-popup (Ramanujan et al.'s k per layer).
PER_LAYER = ("random",) + DYNAMIC + ("edge_popup",)
DEFAULT_DISTRIBUTION = {**{method: "erk" for method in ("random",) + DYNAMIC}, "edge_popup": "uniform"}
# When `learn_until` is unset: L0 and VD fix their mask at 75% of training and train on with it
# (our choice, as RigL's updates end at 75%); the supermasks' weights are frozen, so training after
# the mask is fixed would change nothing: their mask is fixed at the end.
LEARN_UNTIL = {"l0": 0.75, "variational_dropout": 0.75, "supermask": 1.0, "edge_popup": 1.0}


@dataclasses.dataclass
class SparseConfig(training.TrainingConfig):
    """Settings of one sparse run (plus `TrainingConfig`'s). `None` means the method's or model's default."""

    output_dir: str = "runs/sparse"
    method: str = "rigl"  # see METHODS and the module docstring
    sparsity: float = 0.9  # the final fraction of kernel weights pruned ('dense': 0)
    # 'global' or a `methods.distributions` name; None: 'global' for SNIP/GraSP/SynFlow, L0, VD and the
    # supermask (the method ranks all layers), 'erk' for random and SET/SNFS/RigL (RigL's best), 'uniform'
    # for edge-popup (its top-k per layer).
    distribution: str | None = None
    control: str = "none"  # 'layer_shuffle' or 'reinit' of a mask chosen before training (see CONTROLS)
    masks_from: str | None = None  # method 'ticket': the finished run whose last round's masks are used
    iterations: int | None = None  # training iterations; None: the model's (or `epochs`)
    epochs: float | None = None
    budget: str = "iterations"  # 'iterations' (this many) or 'flops' (the dense run's training FLOPs)
    max_budget_factor: float = 5.0  # budget 'flops': at most this many times `iterations`
    evaluations_per_round: int = 20  # validation checks during the training
    evaluation_examples: int | str = "auto"  # as `ImpConfig`'s
    backup_seconds: float = 10.0  # as `ImpConfig`'s
    layers_to_ignore: str | None = None  # layers left dense; None: the model's
    scoring_examples: int | None = None  # SNIP/GraSP's batch (the first training examples); None: batch_size
    update_frequency: int = 100  # SET/SNFS/RigL: steps between mask updates (RigL's 100)
    drop_fraction: float = 0.3  # SET/SNFS/RigL: the first update's drop fraction, cosine-decayed (RigL's 0.3)
    penalty: float | None = None  # L0 / VD: the regularizer's coefficient; None: the method's default
    learn_until: float | None = None  # learned methods: fraction of training at which the mask is fixed
    supermask_weights: str = "signed_constant"  # supermasks: 'init' or 'signed_constant' (Zhou et al.'s best)

    def resolved(self, check_sources=True):
        """A copy with every default filled in and every field validated.

        Args:
          check_sources: read `masks_from`'s summary and last masks (False: a grid checks a
            ticket cell before its source has run).

        Raises:
          ValueError: naming the bad field and what it accepts.
        """
        if self.iterations is not None and self.epochs is not None:
            raise ValueError("give either iterations or epochs, not both.")
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {self.method!r}.")
        config = imp_config.resolve_round_settings(super().resolved())
        if config.method == "dense":
            if config.sparsity != 0:
                raise ValueError(f"method 'dense' trains every weight: sparsity must be 0, got {config.sparsity!r}.")
        else:
            masks_lib.check_sparsity(config.sparsity)
            if config.sparsity == 0:
                raise ValueError(f"method {config.method!r} with sparsity 0 prunes nothing: give --sparsity in "
                                 "(0, 1), or use --method=dense.")
        if config.distribution is None:
            config.distribution = DEFAULT_DISTRIBUTION.get(config.method, "global")
        if config.distribution not in DISTRIBUTIONS:
            raise ValueError(f"distribution must be one of {DISTRIBUTIONS}; got {config.distribution!r}.")
        if config.distribution == "global" and config.method in PER_LAYER:
            raise ValueError(f"method {config.method!r} keeps a fixed number of weights in each layer (a random mask, "
                             "or edge-popup's top-k per layer) and needs per-layer sparsities: use "
                             "--distribution=uniform, erdos_renyi or erk (not 'global').")
        if config.control not in CONTROLS:
            raise ValueError(f"control must be one of {CONTROLS}; got {config.control!r}.")
        if config.control != "none" and config.method not in AT_INIT + ("ticket",):
            raise ValueError(f"control={config.control!r} replaces a mask chosen before training; method "
                             f"{config.method!r} has none. Use it with one of {AT_INIT + ('ticket',)}.")
        if (config.method == "ticket") != (config.masks_from is not None):
            raise ValueError("method 'ticket' takes its masks from a finished run: give --masks_from=<its folder>; "
                             "masks_from is for method 'ticket' only.")
        if config.masks_from is not None and check_sources:
            _check_masks_from(config.masks_from)
        if config.budget not in BUDGETS:
            raise ValueError(f"budget must be one of {BUDGETS}; got {config.budget!r}.")
        if isinstance(config.max_budget_factor, bool) or not isinstance(config.max_budget_factor, (int, float)) or \
                not config.max_budget_factor >= 1:
            raise ValueError(f"max_budget_factor must be a number >= 1; got {config.max_budget_factor!r}.")
        check_int(config.update_frequency, "update_frequency", 1)
        if isinstance(config.drop_fraction, bool) or not isinstance(config.drop_fraction, (int, float)) or \
                not 0 < config.drop_fraction < 1:
            raise ValueError(f"drop_fraction must be in (0, 1); got {config.drop_fraction!r}.")
        if config.scoring_examples is None:
            config.scoring_examples = config.batch_size
        check_int(config.scoring_examples, "scoring_examples", 1)
        if config.penalty is not None and (isinstance(config.penalty, bool) or
                                           not isinstance(config.penalty, (int, float)) or config.penalty < 0):
            raise ValueError(f"penalty must be a number >= 0 (None: the method's default); got {config.penalty!r}.")
        if config.learn_until is None:
            config.learn_until = LEARN_UNTIL.get(config.method, 1.0)
        if isinstance(config.learn_until, bool) or not isinstance(config.learn_until, (int, float)) or \
                not 0 < config.learn_until <= 1:
            raise ValueError(f"learn_until must be a fraction of training in (0, 1]; got {config.learn_until!r}.")
        if config.supermask_weights not in ("init", "signed_constant"):
            raise ValueError(f"supermask_weights must be 'init' or 'signed_constant'; got {config.supermask_weights!r}.")
        return config


def _check_masks_from(folder):
    source = run_folder.RunFolder(folder)
    summary = source.load_summary()
    if summary is None or not summary["rounds"]:
        raise ValueError(f"masks_from={folder!r} holds no finished run (no summary.json with a round): run it "
                         "first, e.g. python -m apps.imp_main --output_dir=<that folder>.")
    source.load_masks(len(summary["rounds"]) - 1)  # unreadable: CorruptRecordError, before any training


def config_defaults():
    """Every `SparseConfig` field's default (runs saved before a field existed had it)."""
    return {field.name: field.default for field in dataclasses.fields(SparseConfig)}
