r"""What each method's extra work costs, side by side in one process: steps, mask updates, scoring.

    python -m bench.method_cost            # ~4 min on 2 cores
    python -m bench.method_cost --quick    # smoke run

LeNet-300-100 on Fashion-MNIST (Debian's copy, else a random stand-in of its shape) at the
LTH batch of 60, the grid's setting, measured here:

1. **A training step** of each kind, `steps_per_execution=100` (one call into TensorFlow per
   100 steps, so Python's per-step overhead is out of the figure), median of `--repeats`
   timings of `--steps` steps each after a warm-up that traces: plain tf_keras (dense),
   our static sparse wrapper at 90% (every mask-at-init method, tickets, SET/RigL between
   updates), L0's and variational dropout's training steps (dense weights plus a gate or a
   variance per weight, a noise draw per weight), the supermask's and edge-popup's (a
   Bernoulli draw or a top-k per layer). Ratios to plain tf_keras, the order rotating.
2. **A mask update** of SET, RigL and SNFS (90%, ERK, drop fraction 0.3), median of
   repeats, against the training it accompanies: 100 static sparse steps (RigL's update
   interval). SNFS also takes a dense gradient at each of the 44 steps before its update
   (its momentum window), counted with it.
3. **Scoring at initialization** of SNIP (one batch of 60), GraSP (one batch, a
   Hessian-gradient product) and SynFlow (100 iterations, float64 copy), against the
   2,000-step training that follows them in the grid.

Every figure printed is measured here; the ratios are computed from them.
"""

import argparse
import statistics
import time

import numpy as np

from keras_lottery import data as data_lib
from keras_lottery import models
from keras_lottery import training
from keras_lottery.methods import distributions
from keras_lottery.methods import learned_sparsity
from keras_lottery.methods import mask_updaters
from keras_lottery.methods import pruning_at_init
from keras_lottery.methods import supermasks
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers
import keras_lottery as kl

keras = kl.keras
BATCH = 60
SPARSITY = 0.9
GRID_ITERATIONS = 2000


def _data():
    try:
        splits = data_lib.load("fashion_mnist", validation_examples=5000)
        return splits.train_x[:12000], splits.train_y[:12000], "Fashion-MNIST (Debian's copy)"
    except data_lib.DataUnavailableError:
        rng = np.random.default_rng(0)
        return (rng.random((12000, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 12000),
                "random images of Fashion-MNIST's shape (Fashion-MNIST not found)")


def _lenet():
    return models.build("lenet_300_100", (28, 28, 1), 10, seed=0)


def _names(model):
    return {name: schedules.OneShot(0.0) for name in schedules.lth_prune_rates(model.layers)}


def _static_sparse():
    model = wrappers.prune_low_magnitude(_lenet(), pruning_schedule=_names(_lenet()))
    pruning_at_init.prune_at_init(model, "random", distributions.distribute(model, "erk", SPARSITY),
                                  strategy="layerwise")
    return model


VARIANTS = {
    "plain tf_keras (dense)": _lenet,
    "static sparse (ours, 90%)": _static_sparse,
    "L0 gates": lambda: learned_sparsity.prune_low_l0(_lenet(), seed=0),
    "variational dropout": lambda: learned_sparsity.prune_low_variational_dropout(_lenet(), seed=0),
    "supermask": lambda: supermasks.prune_low_supermask(_lenet(), seed=0),
    "edge-popup (90%)": lambda: supermasks.prune_low_edge_popup(_lenet(), SPARSITY, seed=0),
}


def _compiled(make):
    model = make()
    if wrappers.prunable_wrappers(model):
        wrappers.manage_masks(model)
    training.compile_for_training(model, "adam", 1.2e-3, steps_per_execution=100)
    return model


def _train_seconds(model, x, y, steps):
    dataset = data_lib.to_dataset(x, y, BATCH, shuffle_seed=0, repeat=True)
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - start


def measure_steps(x, y, steps, repeats):
    models_by_name = {name: _compiled(make) for name, make in VARIANTS.items()}
    for model in models_by_name.values():
        _train_seconds(model, x, y, 100)  # traces the train function
    timings = {name: [] for name in VARIANTS}
    names = list(VARIANTS)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            timings[name].append(_train_seconds(models_by_name[name], x, y, steps) / steps)
    return {name: statistics.median(values) for name, values in timings.items()}


def measure_updates(x, y, repeats, step_seconds):
    batch = (x[:BATCH], y[:BATCH])
    results = {}
    for name in ("set", "rigl", "snfs"):
        model = _compiled(_static_sparse)
        _train_seconds(model, x, y, 100)
        updater = mask_updaters.get(name, total_steps=10_000)
        updater.prepare(model)
        seconds = []
        for repeat in range(repeats):
            step = 100 * (repeat + 1)
            start = time.perf_counter()
            if name == "snfs":
                for observed in range(step - updater.window() + 1, step + 1):
                    updater.observe(model, batch, observed)
            updater.update(model, step, batch if updater.batch_at_update else None)
            seconds.append(time.perf_counter() - start)
        results[name] = statistics.median(seconds[1:] if len(seconds) > 1 else seconds)  # the first traces
    return {name: (value, value / (100 * step_seconds)) for name, value in results.items()}


def measure_scoring(x, y, repeats, step_seconds):
    results = {}
    for method in ("snip", "grasp", "synflow"):
        seconds = []
        for _ in range(repeats):
            model = wrappers.prune_low_magnitude(_lenet(), pruning_schedule=_names(_lenet()))
            batch = (x[:BATCH], y[:BATCH]) if method in pruning_at_init.NEEDS_DATA else None
            start = time.perf_counter()
            pruning_at_init.prune_at_init(model, method, SPARSITY, data=batch)
            seconds.append(time.perf_counter() - start)
        value = min(seconds)  # each repeat traces anew on a fresh model: the fastest is the least noisy
        results[method] = (value, value / (GRID_ITERATIONS * step_seconds))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: few steps and repeats")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=5)
    arguments = parser.parse_args()
    steps, repeats = (200, 2) if arguments.quick else (arguments.steps, arguments.repeats)
    x, y, source = _data()
    print(f"bench.method_cost: LeNet-300-100, batch {BATCH}, {source}; {steps} steps x {repeats} repeats per variant, "
          "steps_per_execution=100")
    print("command: python -m bench.method_cost" + (" --quick" if arguments.quick else ""))
    per_step = measure_steps(x, y, steps, repeats)
    plain = per_step["plain tf_keras (dense)"]
    print("\n1. training step (median ms/step, ratio to plain tf_keras):")
    for name, seconds in per_step.items():
        print(f"   {name:28s} {1000 * seconds:7.3f} ms  {seconds / plain:5.2f}x")
    sparse_step = per_step["static sparse (ours, 90%)"]
    print(f"\n2. one mask update (median of {repeats}), vs the 100 static sparse steps between two updates "
          f"({100 * 1000 * sparse_step:.0f} ms):")
    for name, (seconds, ratio) in measure_updates(x, y, max(3, repeats), sparse_step).items():
        extra = " (its 44 dense gradients before the update included)" if name == "snfs" else ""
        print(f"   {name:5s} {1000 * seconds:8.1f} ms = {100 * ratio:6.1f}% of the interval's training{extra}")
    print(f"\n3. scoring at initialization (fastest of {repeats}, tracing included), vs the {GRID_ITERATIONS}-step "
          f"training after it ({GRID_ITERATIONS * sparse_step:.1f} s):")
    for name, (seconds, ratio) in measure_scoring(x, y, max(2, min(repeats, 3)), sparse_step).items():
        print(f"   {name:8s} {seconds:7.2f} s = {100 * ratio:6.1f}% of the training")


if __name__ == "__main__":
    main()
