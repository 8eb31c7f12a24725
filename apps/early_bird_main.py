r"""Early-bird tickets: search until the mask stops changing, draw the ticket, retrain it.

    python -m apps.early_bird_main --dataset=fashion_mnist --model=lenet_300_100 \
        --target_sparsity=0.8 --search_epochs=20 --output_dir=runs/early_bird

    python -m apps.early_bird_main --model=conv4_bn --criterion=bn_gamma --target_sparsity=0.5 \
        --search_epochs=8 --checks_per_epoch=4 --output_dir=runs/early_bird_conv4_bn

A channel ticket ('l1', 'bn_gamma') is retrained as a narrower network (its removed
units gone), so its iterations cost less; the summary counts them in dense-network
iterations too.

Results: <output_dir>/summary.json (epoch drawn, distance curve, accuracy, iterations
per phase and their dense cost, removed units of a channel ticket), masks.npz, final_weights.npz (the retrained ticket, for apps.export_main),
TensorBoard logs (`early_bird_distance_*` under search/).
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from apps import training_flags
from keras_lottery.experiments import early_bird_flow

FLAGS = flags.FLAGS
_DEFAULTS = early_bird_flow.EarlyBirdConfig()
training_flags.define(_DEFAULTS)
flags.adopt_module_key_flags(training_flags)  # so that --help lists them

flags.DEFINE_float("target_sparsity", _DEFAULTS.target_sparsity, "Fraction of weights (or units) the ticket prunes.")
flags.DEFINE_enum("criterion", _DEFAULTS.criterion, list(early_bird_flow.FLOW_CRITERIA),
                  "Weights by |w|; or channels (retrained as a narrower network) by the L1 norm of each unit, "
                  "or by |BatchNorm gamma| (one global threshold).")
flags.DEFINE_float("gamma_penalty", _DEFAULTS.gamma_penalty,
                   "With --criterion=bn_gamma: L1 penalty on BatchNorm gamma during the search (0 turns it off).")
flags.DEFINE_enum("strategy", _DEFAULTS.strategy, ["layerwise", "global"], "Rank per layer or globally.")
flags.DEFINE_float("epsilon", _DEFAULTS.epsilon, "Largest mask distance that counts as stable, in (0, 1).")
flags.DEFINE_integer("queue_size", _DEFAULTS.queue_size, "Masks compared (>= 2).")
flags.DEFINE_integer("search_epochs", _DEFAULTS.search_epochs, "Longest search (the full-training length).")
flags.DEFINE_integer("retrain_epochs", None, "Epochs to retrain the ticket (default: search_epochs).")
flags.DEFINE_integer("checks_per_epoch", _DEFAULTS.checks_per_epoch,
                     "Mask checks per search epoch (with --queue_size=5 and 1 check, epoch 5 is the earliest draw).")
flags.DEFINE_enum("retrain_from", _DEFAULTS.retrain_from, ["drawn", "rewind"], "Retrain from the drawn weights or init.")


def main(argv):
    del argv
    training_flags.set_up_devices()
    config = early_bird_flow.EarlyBirdConfig(
        target_sparsity=FLAGS.target_sparsity, criterion=FLAGS.criterion, strategy=FLAGS.strategy,
        epsilon=FLAGS.epsilon, queue_size=FLAGS.queue_size, search_epochs=FLAGS.search_epochs,
        retrain_epochs=FLAGS.retrain_epochs, retrain_from=FLAGS.retrain_from,
        checks_per_epoch=FLAGS.checks_per_epoch, gamma_penalty=FLAGS.gamma_penalty, **training_flags.values(),
    )
    config = training_flags.resolved(config)
    logging.info("early bird: %s on %s at sparsity %s, results in %s",
                 config.model, config.dataset, config.target_sparsity, config.output_dir)
    summary = early_bird_flow.run(config)
    drawn = summary["drawn_epoch"]
    logging.info(
        "ticket %s; retrained: test accuracy %.4f at %.1f%% weights remaining; %d training iterations in all, "
        "costing %.0f iterations of the dense network",
        f"drawn at epoch {drawn} of {config.search_epochs}" if drawn else
        f"not drawn within {config.search_epochs} epochs (masks taken at the end of the search)",
        summary["retrain"]["test_accuracy"], 100 * summary["weights_remaining"], summary["total_iterations"],
        summary["total_dense_iterations"],
    )


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main, "error: interrupted; rerun the same command to run it again (an early-bird run restarts)"))
