r"""Speed of keras_lottery against a plain model and against tfmot, side by side.

    python -m bench.step_time            # full measurement (~3 min on 2 cores)
    python -m bench.step_time --quick    # smoke run
    python -m bench.step_time --only=per_step   # (1) only

(1) Per-step training time, LeNet-300-100 (784-300-100-10), batch 60, masks fixed at
    80% sparsity: plain tf_keras model vs keras_lottery's wrapper vs keras_lottery's
    sign-flip wrapper (flip counting in the graph every step) vs tfmot's wrapper
    with UpdatePruningStep. All use default compile settings
    (steps_per_execution=1), so this isolates the wrapper's cost.
(2) Wall time of one whole IMP round (train, evaluate on the test set, prune 20%
    more, rewind): keras_lottery as `keras_lottery.imp` runs it vs the same round
    written the usual way on tfmot (prune_low_magnitude + UpdatePruningStep, default
    compile, masks computed with NumPy and assigned, weights rewound with set_weights).

Variants are measured in interleaved repeats within one process and the medians
compared, because these machines are noisy. Data are random arrays of MNIST's shape:
timing does not depend on the values.
"""

import argparse
import statistics
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

import keras_lottery as kl
from keras_lottery import models
from keras_lottery.experiments import imp as imp_lib

keras = kl.keras
BATCH = 60


def _data(examples, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((examples, 28, 28, 1), dtype=np.float32)
    y = rng.integers(0, 10, examples)
    return x, y


def _dataset(x, y):
    return tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).repeat().batch(BATCH).prefetch(2)


def _lenet(seed=0):
    keras.utils.set_random_seed(seed)
    return models.lenet_300_100((28, 28, 1), 10)


def _compile(model, steps_per_execution=1):
    model.compile(
        keras.optimizers.Adam(1.2e-3),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
        steps_per_execution=steps_per_execution,
    )


def _numpy_masks(model_weights, sparsity):
    """Layerwise magnitude masks computed with NumPy, as a tfmot user would write them."""
    masks = []
    for weights in model_weights:
        threshold = np.quantile(np.abs(weights), sparsity)
        masks.append((np.abs(weights) > threshold).astype(np.float32))
    return masks


def _tfmot_wrapped(dense):
    # begin_step far in the future: tfmot never recomputes masks; we assign them (as rigl does).
    schedule = tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=10**9, frequency=10**9)
    return tfmot.sparsity.keras.prune_low_magnitude(keras.models.clone_model(dense), pruning_schedule=schedule)


def _tfmot_kernels(model):
    return [(w, m) for layer in model.layers if hasattr(layer, "pruning_vars") for w, m, _ in layer.pruning_vars]


def per_step(steps, repeats):
    """Median seconds per training step of the three variants."""
    x, y = _data(6000)
    dense = _lenet()
    ours = kl.prune_low_magnitude(dense, kl.OneShot(0.8))
    kl.prune(ours, 0.8)
    flips = kl.prune_low_sign_flip(dense, kl.OneShot(0.8), criterion="hybrid")
    kl.prune(flips, 0.8)
    theirs = _tfmot_wrapped(dense)
    for (weight, mask), value in zip(_tfmot_kernels(theirs), _numpy_masks([w.numpy() for w, _ in _tfmot_kernels(theirs)], 0.8)):
        mask.assign(value)
    variants = {
        "plain": (dense, []),
        "keras_lottery": (ours, [kl.UpdateMasks()]),
        "sign_flip": (flips, [kl.UpdateMasks()]),
        "tfmot": (theirs, [tfmot.sparsity.keras.UpdatePruningStep()]),
    }
    for model, _ in variants.values():
        _compile(model)
    times = {name: [] for name in variants}
    for name, (model, callbacks) in variants.items():  # warm-up: trace and build
        model.fit(_dataset(x, y), steps_per_epoch=50, epochs=1, verbose=0, callbacks=callbacks)
    for _ in range(repeats):
        for name, (model, callbacks) in variants.items():
            start = time.perf_counter()
            model.fit(_dataset(x, y), steps_per_epoch=steps, epochs=1, verbose=0, callbacks=callbacks)
            times[name].append((time.perf_counter() - start) / steps)
    return {name: statistics.median(values) for name, values in times.items()}


def _round_ours(model, rewind, data, iterations, sparsity):
    start = time.perf_counter()
    model.fit(_dataset(*data[0]), steps_per_epoch=iterations, epochs=1, verbose=0)
    model.evaluate(*data[1], batch_size=1000, verbose=0)
    kl.prune(model, sparsity)
    rewind.rewind(model)
    return time.perf_counter() - start


def _round_tfmot(model, initial, data, iterations, sparsity):
    start = time.perf_counter()
    model.fit(_dataset(*data[0]), steps_per_epoch=iterations, epochs=1, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    model.evaluate(*data[1], batch_size=1000, verbose=0)
    kernels = _tfmot_kernels(model)
    new_masks = _numpy_masks([w.numpy() * m.numpy() for w, m in kernels], sparsity)
    for (_, mask), value in zip(kernels, new_masks):
        mask.assign(value)
    model.set_weights(initial)  # rewind (set_weights covers the inner layers' weights)
    for weight, mask in kernels:
        weight.assign(weight * mask)
    _compile(model)  # the usual way to reset the optimizer: compile again
    return time.perf_counter() - start


def imp_round(iterations, repeats):
    """Median seconds of one IMP round, keras_lottery vs the usual tfmot code."""
    train, test = _data(6000, 0), _data(10000, 1)
    dense = _lenet()
    ours = kl.prune_low_magnitude(dense, kl.OneShot(0.0))
    interval, steps_per_execution = imp_lib.evaluation_interval(iterations, 1, 0)  # as imp.run compiles
    _compile(ours, steps_per_execution)
    rewind = kl.RewindCallback(0)
    rewind.take_snapshot(ours)
    theirs = _tfmot_wrapped(dense)
    _compile(theirs)
    initial = theirs.get_weights()
    times = {"keras_lottery": [], "tfmot": []}
    _round_ours(ours, rewind, (train, test), 50, 0.2)  # warm-up
    _round_tfmot(theirs, initial, (train, test), 50, 0.2)
    for _ in range(repeats):
        times["keras_lottery"].append(_round_ours(ours, rewind, (train, test), iterations, 0.36))
        times["tfmot"].append(_round_tfmot(theirs, initial, (train, test), iterations, 0.36))
    return {name: statistics.median(values) for name, values in times.items()}, steps_per_execution


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, for a smoke test")
    parser.add_argument("--only", choices=["per_step"], help="measure only (1)")
    args = parser.parse_args()
    steps, repeats, iterations = (100, 2, 200) if args.quick else (1000, 7, 2000)
    command = "python -m bench.step_time" + (" --quick" if args.quick else "") + (
        f" --only={args.only}" if args.only else "")

    step = per_step(steps, repeats)
    print(f"(1) per-step training time, LeNet-300-100, batch {BATCH}, 80% sparsity, "
          f"{steps} steps x {repeats} interleaved repeats (median):")
    for name, seconds in step.items():
        print(f"    {name:14s} {seconds * 1e3:7.3f} ms/step   ratio to plain {seconds / step['plain']:.3f}x")
    if args.only == "per_step":
        print(f"targets: keras_lottery/plain <= 1.05x; sign_flip/plain <= 1.15x. Reproduce: {command}")
        return
    rounds, steps_per_execution = imp_round(iterations, repeats)
    print(f"(2) one IMP round ({iterations} iterations, test evaluation, prune, rewind), "
          f"{repeats} interleaved repeats (median):")
    for name, seconds in rounds.items():
        print(f"    {name:14s} {seconds:7.3f} s   ratio to tfmot {seconds / rounds['tfmot']:.3f}x")
    print(f"    (keras_lottery compiles with steps_per_execution={steps_per_execution}, as imp.run does)")
    print(f"targets: (1) keras_lottery/plain <= 1.05x, sign_flip/plain <= 1.15x; (2) keras_lottery/tfmot <= 0.8x. Reproduce: {command}")


if __name__ == "__main__":
    main()
