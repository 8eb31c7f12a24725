r"""Iterative magnitude pruning with rewinding: find lottery tickets.

    python -m apps.imp_main --dataset=fashion_mnist --model=lenet_300_100 \
        --rounds=5 --iterations=2000 --output_dir=runs/lenet

    python -m apps.imp_main --criterion=hybrid --mode=one_pass --rounds=10 --output_dir=runs/one_pass

    python -m apps.imp_main --criterion=hybrid --mode=one_pass --prune_schedule=on_flip --min_flips=1 \
        --rounds=10 --output_dir=runs/on_flip

`--criterion=sign_flip|hybrid` prunes weights whose sign flipped (relative to the
rewind point) first, or by |w| / (1 + flips)^alpha; `--mode=one_pass` prunes while
training continues instead of IMP's rounds, to the sparsity IMP reaches after
`--rounds` rounds; with `--prune_schedule=on_flip` each update prunes the weights that
flipped sign (at least `--min_flips` times), capped at that sparsity, and the last fills it
(`--on_flip_floor=gradual`: each update also prunes by the criterion down to the gradual
schedule's count, the flipped weights first). Rerunning the same command resumes a stopped or killed run, at the last
evaluation of its unfinished round (see keras_lottery/experiments/round_backup.py). Results:
<output_dir>/summary.json, round_<r>/masks.npz, TensorBoard logs
(`tensorboard --logdir <output_dir>/tensorboard`).
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from apps import method_flags
from apps import training_flags
from keras_lottery.experiments import imp

FLAGS = flags.FLAGS
_DEFAULTS = imp.ImpConfig()
training_flags.define(_DEFAULTS)
flags.adopt_module_key_flags(training_flags)  # so that --help lists them

flags.DEFINE_integer("rounds", _DEFAULTS.rounds, "Pruning rounds after the dense round 0.")
flags.DEFINE_float("prune_rate", None, "Fraction of surviving weights pruned per round (default: LTH's rates).")
flags.DEFINE_enum("strategy", _DEFAULTS.strategy, ["layerwise", "global"],
                  "Rank weights per layer or globally (default: the model's: layerwise for the LTH nets, global for "
                  "the CIFAR ResNets and VGGs, as OpenLTH).")
flags.DEFINE_string("layers_to_ignore", None, "Comma-separated layers never pruned (default: the model's: VGG's "
                    "'output', as OpenLTH; '' prunes every layer).")
flags.DEFINE_integer("rewind_step", _DEFAULTS.rewind_step, "Iteration whose weights the ticket rewinds to (0 = init).")
flags.DEFINE_enum("after_rewind", _DEFAULTS.after_rewind, list(imp.AFTER_REWIND),
                  "With --rewind_step=k > 0, the pruned rounds train 'continue': from k to the end with the "
                  "learning-rate schedule from k (Frankle et al. 2020, OpenLTH); 'restart': a whole round from 0.")
flags.DEFINE_enum(
    "control", _DEFAULTS.control, ["ticket", "random_reinit", "random_prune", "signed_constant"],
    "How surviving weights are set each round: the ticket (rewind) or a control.",
)
flags.DEFINE_integer("iterations", None, "Training iterations per round (default: the model's LTH setting).")
flags.DEFINE_float("epochs", None, "Training epochs per round (instead of --iterations).")
flags.DEFINE_integer("evaluations_per_round", _DEFAULTS.evaluations_per_round, "Validation checks per round.")
flags.DEFINE_float("backup_seconds", _DEFAULTS.backup_seconds,
                   "A mid-round backup at the first check at least this many seconds after the last (0: every check).")
flags.DEFINE_string("evaluation_examples", _DEFAULTS.evaluation_examples,
                    "Held-out examples each check reads (a fixed subset): 'auto' keeps validation near 3% of a "
                    "round's compute (all 5,000 in LTH's 50K-iteration rounds), 'all', or a number.")
flags.DEFINE_string("masks_from", None, "Take each round's masks from this run folder (e.g. a ticket run).")
flags.DEFINE_enum("criterion", _DEFAULTS.criterion, list(imp.CRITERIA),
                  "What each prune ranks by: |w|, sign flips first, |w|/(1+flips)^alpha, or random.")
flags.DEFINE_float("alpha", _DEFAULTS.alpha, "Exponent of the hybrid criterion |w| / (1 + flips)^alpha.")
flags.DEFINE_enum("mode", _DEFAULTS.mode, list(imp.MODES),
                  "imp: prune, rewind, retrain each round; one_pass: prune while training continues.")
flags.DEFINE_integer("one_pass_iterations", None, "One-pass training length (default: 3 x --iterations).")
flags.DEFINE_float("prune_begin", _DEFAULTS.prune_begin, "One pass: first mask update, as a fraction of training.")
flags.DEFINE_float("prune_end", _DEFAULTS.prune_end, "One pass: last mask update (target reached), same unit.")
flags.DEFINE_integer("prune_updates", _DEFAULTS.prune_updates, "One pass: number of mask updates.")
flags.DEFINE_enum("prune_schedule", _DEFAULTS.prune_schedule, list(imp.PRUNE_SCHEDULES),
                  "One pass: 'gradual' prunes to a rising sparsity at each update (Zhu & Gupta); 'on_flip' prunes "
                  "at each update the weights that flipped sign, capped at the target, and fills the target at the "
                  "last (needs --criterion=sign_flip or hybrid).")
flags.DEFINE_integer("min_flips", _DEFAULTS.min_flips,
                     "With --prune_schedule=on_flip: sign changes since the reference that make a weight prunable.")
flags.DEFINE_enum("on_flip_floor", _DEFAULTS.on_flip_floor, list(imp.ON_FLIP_FLOORS),
                  "With --prune_schedule=on_flip: 'none' prunes only the flipped weights until the last update "
                  "fills the target; 'gradual' also prunes by the criterion, after the flipped weights, down to what "
                  "the gradual schedule keeps at each update.")


def config_from_flags():
    """The `ImpConfig` the flags describe."""
    return imp.ImpConfig(
        rounds=FLAGS.rounds,
        prune_rate=FLAGS.prune_rate,
        strategy=FLAGS.strategy,
        layers_to_ignore=FLAGS.layers_to_ignore,
        rewind_step=FLAGS.rewind_step,
        after_rewind=FLAGS.after_rewind,
        control=FLAGS.control,
        iterations=FLAGS.iterations,
        epochs=FLAGS.epochs,
        evaluations_per_round=FLAGS.evaluations_per_round,
        evaluation_examples=method_flags.evaluation_examples(FLAGS.evaluation_examples),
        backup_seconds=FLAGS.backup_seconds,
        masks_from=FLAGS.masks_from,
        criterion=FLAGS.criterion,
        alpha=FLAGS.alpha,
        mode=FLAGS.mode,
        one_pass_iterations=FLAGS.one_pass_iterations,
        prune_begin=FLAGS.prune_begin,
        prune_end=FLAGS.prune_end,
        prune_updates=FLAGS.prune_updates,
        prune_schedule=FLAGS.prune_schedule,
        min_flips=FLAGS.min_flips,
        on_flip_floor=FLAGS.on_flip_floor,
        **training_flags.values(),
    )


def log_round(record):
    """Logs a finished IMP round's record (the line each round ends with)."""
    logging.info(
        "round %d: %.1f%% weights remaining, test accuracy %.4f, best validation accuracy %.4f, "
        "early stop at iteration %d, %.1f s",
        record["round"], 100 * record["weights_remaining"], record["test_accuracy"],
        record["best_val_accuracy"], record["early_stop_iteration"], record["train_seconds"],
    )
    _log_flips(record)


def log_one_pass(record):
    """Logs a finished one-pass run's record: it has one, and it is not a round."""
    logging.info(
        "one pass trained: %.1f%% weights remaining, test accuracy %.4f; after the target sparsity (iteration %d): "
        "best validation accuracy %.4f, early stop at iteration %d; %.1f s",
        100 * record["weights_remaining"], record["test_accuracy"], record["target_reached_iteration"],
        record["best_val_accuracy"], record["early_stop_iteration"], record["train_seconds"],
    )
    _log_flips(record)
    for layer, history in record.get("on_flip", {}).items():
        logging.info("  %s: %d weights pruned for their sign flips, %d filled by the criterion; target reached at "
                     "iteration %s", layer, history["pruned_for_flips"], history["filled"],
                     history["target_reached_iteration"])


def _log_flips(record):
    for layer, statistics in record.get("flips", {}).items():
        logging.info("  %s: %.1f%% of surviving weights flipped now, %.2f sign changes per weight",
                     layer, 100 * statistics["fraction_flipped"], statistics["mean_flips"])


def _plural(count, noun):
    return f"{count} {noun}{'' if count == 1 else 's'}"


def main(argv):
    del argv
    training_flags.set_up_devices()
    config = training_flags.resolved(config_from_flags())
    one_pass = config.mode == "one_pass"
    plan = (f"pruned while it trains to the sparsity of {_plural(config.rounds, 'IMP round')}" if one_pass
            else f"dense round 0 and {_plural(config.rounds, 'pruning round')}")
    logging.info("%s (%s criterion): %s on %s, %s, results in %s", config.mode, config.criterion,
                 config.model, config.dataset, plan, config.output_dir)
    summary = imp.run(config, on_round_end=log_one_pass if one_pass else log_round)
    last, count = summary["rounds"][-1], len(summary["rounds"])
    done = (f"one pass of {last['iterations']} iterations" if one_pass
            else f"{_plural(count, 'round')} ({_plural(count - 1, 'pruning round')})")
    logging.info(
        "done: %s in %s (summary.json); %.1f%% weights remaining, test accuracy %.4f. "
        "View with: tensorboard --logdir %s/tensorboard",
        done, config.output_dir, 100 * last["weights_remaining"], last["test_accuracy"], config.output_dir,
    )


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
