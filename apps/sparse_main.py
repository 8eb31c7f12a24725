r"""Train one sparse network with a method of the literature: SNIP, GraSP, SynFlow, SET, SNFS, RigL, L0, ...

    python -m apps.sparse_main --method=rigl --sparsity=0.9 --dataset=fashion_mnist \
        --model=lenet_300_100 --iterations=5000 --output_dir=runs/rigl_90
    python -m apps.sparse_main --method=ticket --masks_from=runs/imp --control=reinit --budget=flops \
        --output_dir=runs/scratch_b      # Liu et al.'s Scratch-B of an IMP run's last ticket

Methods (keras_lottery/experiments/sparse_config.py): dense, small_dense, random, snip, grasp,
synflow, ticket (--masks_from), set, snfs, rigl, l0, variational_dropout, supermask,
edge_popup. --control=layer_shuffle|reinit applies Frankle et al. 2021's sanity checks to
a mask chosen before training. Rerunning the same command resumes a stopped or killed run
at its last evaluation. Results: <output_dir>/summary.json (test accuracy, weights remaining,
iterations, training and inference FLOPs), round_0/masks.npz, TensorBoard logs. A grid of
methods x sparsities x seeds: apps.compare_main.
"""

from absl import app
from absl import flags
from absl import logging

from apps import app_errors
from apps import method_flags
from apps import training_flags
from keras_lottery.experiments import sparse_config
from keras_lottery.experiments import sparse_training

FLAGS = flags.FLAGS
_DEFAULTS = sparse_config.SparseConfig()
training_flags.define(_DEFAULTS)
flags.adopt_module_key_flags(training_flags)
method_flags.define()
flags.adopt_module_key_flags(method_flags)
flags.DEFINE_enum("method", _DEFAULTS.method, list(sparse_config.METHODS), "How the mask is chosen (see above).")
flags.DEFINE_float("sparsity", _DEFAULTS.sparsity, "Final fraction of kernel weights pruned (0 for --method=dense).")
flags.DEFINE_enum("control", _DEFAULTS.control, list(sparse_config.CONTROLS),
                  "layer_shuffle: each layer's kept weights moved to random places; reinit: fresh weights.")
flags.DEFINE_string("masks_from", None, "--method=ticket: the finished run whose last round's masks are used.")


def config_from_flags():
    """The `SparseConfig` the flags describe."""
    return sparse_config.SparseConfig(method=FLAGS.method, sparsity=FLAGS.sparsity, control=FLAGS.control,
                                      masks_from=FLAGS.masks_from, **method_flags.values(),
                                      **training_flags.values())


def log_record(record):
    """The line a finished run ends with."""
    logging.info("%s trained: %.2f%% weights remaining, test accuracy %.4f, %d iterations, %.3g training "
                 "multiply-adds, inference %.3gx the dense network's, %.1f s", record["method"],
                 100 * record["weights_remaining"], record["test_accuracy"], record["iterations"],
                 record["training_flops"], record["inference_flops"] / max(1, record["dense_inference_flops"]),
                 record["train_seconds"])


def main(argv):
    del argv
    training_flags.set_up_devices()
    config = training_flags.resolved(config_from_flags())
    logging.info("%s at %g%% sparsity (%s, control %s): %s on %s, results in %s", config.method,
                 100 * config.sparsity, config.distribution, config.control, config.model, config.dataset,
                 config.output_dir)
    summary = sparse_training.run(config, on_round_end=log_record)
    record = summary["rounds"][-1]
    logging.info("done: %s (summary.json): test accuracy %.4f at %.2f%% weights remaining. View with: tensorboard "
                 "--logdir %s/tensorboard", config.output_dir, record["test_accuracy"],
                 100 * record["weights_remaining"], config.output_dir)


if __name__ == "__main__":
    app.run(app_errors.one_line_errors(main))
