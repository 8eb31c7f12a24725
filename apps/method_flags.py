"""Flags of the sparse-training methods, shared by `apps.sparse_main` (one run) and `apps.compare_main` (a grid)."""

from absl import app
from absl import flags

from keras_lottery.experiments import sparse_config

FLAGS = flags.FLAGS
_DEFAULTS = sparse_config.SparseConfig()


def define():
    """Declares the flags of the training length, checks and the methods' own settings."""
    flags.DEFINE_integer("iterations", None, "Training iterations (default: the model's).")
    flags.DEFINE_float("epochs", None, "Training epochs (instead of --iterations).")
    flags.DEFINE_enum("budget", _DEFAULTS.budget, list(sparse_config.BUDGETS),
                      "iterations: every run trains --iterations; flops: a sparse run trains as many iterations as "
                      "the dense network's training FLOPs buy (at most --max_budget_factor x), as Scratch-B / RigL 5x.")
    flags.DEFINE_float("max_budget_factor", _DEFAULTS.max_budget_factor, "--budget=flops: at most this many times "
                       "--iterations.")
    flags.DEFINE_integer("evaluations_per_round", _DEFAULTS.evaluations_per_round, "Validation checks during training.")
    flags.DEFINE_string("evaluation_examples", _DEFAULTS.evaluation_examples,
                        "Held-out examples each check reads: 'auto', 'all' or a number.")
    flags.DEFINE_float("backup_seconds", _DEFAULTS.backup_seconds,
                       "A mid-run backup at the first check at least this many seconds after the last (0: every check).")
    flags.DEFINE_string("layers_to_ignore", None, "Comma-separated layers left dense (default: the model's).")
    flags.DEFINE_enum("distribution", None, list(sparse_config.DISTRIBUTIONS),
                      "Per-layer sparsities: global (one ranking over all layers; default for SNIP/GraSP/SynFlow and "
                      "the learned methods) or uniform / erdos_renyi / erk (default erk for random, SET, SNFS, RigL).")
    flags.DEFINE_integer("scoring_examples", None, "SNIP / GraSP: examples of the scoring batch (default: batch size).")
    flags.DEFINE_integer("update_frequency", _DEFAULTS.update_frequency, "SET / SNFS / RigL: steps between mask "
                         "updates (RigL's 100).")
    flags.DEFINE_float("drop_fraction", _DEFAULTS.drop_fraction, "SET / SNFS / RigL: fraction of each layer's "
                       "weights swapped at the first update, cosine-decayed to 0 at 75% of training.")
    flags.DEFINE_float("penalty", None, "L0 / variational dropout: the regularizer's weight per training example "
                       "(divided by the training-set size, as the papers' ELBO); default: the method's.")
    flags.DEFINE_float("learn_until", None, "Learned methods: the fraction of training at which the mask is fixed at "
                       "the target sparsity (default: 0.75 for L0 and VD, the end for the supermasks).")
    flags.DEFINE_enum("supermask_weights", _DEFAULTS.supermask_weights, ["init", "signed_constant"],
                      "Supermasks' frozen weights: the initialization, or its signs x the layer's std (Zhou et al.).")


def evaluation_examples(value):
    """--evaluation_examples as 'auto', 'all' or an int.

    Raises:
      app.UsageError: anything else.
    """
    if value in (None, "auto", "all"):
        return value
    try:
        return int(value)
    except ValueError:
        raise app.UsageError(f"--evaluation_examples must be 'auto', 'all' or a number; got {value!r}.") from None


def values():
    """The flags as `SparseConfig` keyword arguments (unset ones left out: the config's default)."""
    names = ("iterations", "epochs", "budget", "max_budget_factor", "evaluations_per_round", "backup_seconds",
             "layers_to_ignore", "distribution", "scoring_examples", "update_frequency", "drop_fraction", "penalty",
             "learn_until", "supermask_weights")
    result = {name: getattr(FLAGS, name) for name in names if getattr(FLAGS, name) is not None}
    result["evaluation_examples"] = evaluation_examples(FLAGS.evaluation_examples)
    return result
