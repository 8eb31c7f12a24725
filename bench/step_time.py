r"""Speed of keras_lottery against a plain model and against tfmot, side by side.

    python -m bench.step_time                       # (1) and (2), ~5 min on 2 cores
    python -m bench.step_time --only=imp_round --breakdown   # (2), with where its time goes
    python -m bench.step_time --quick               # smoke run

(1) Per-step training time, LeNet-300-100 (784-300-100-10), batch 60, masks fixed at
    80% sparsity: plain tf_keras model vs keras_lottery's wrapper vs keras_lottery's
    sign-flip wrapper (flip counting in the graph every step) vs tfmot's wrapper
    with UpdatePruningStep. All use default compile settings
    (steps_per_execution=1), so this isolates the wrapper's cost (random data).
(2) `imp.run` itself, at its default settings, on Fashion-MNIST (Debian's copy; 6,000
    training examples, 2,000 iterations a round): each pruning round's wall time
    (prune, rewind, training with its 20 validation checks, backups and TensorBoard
    logs, test evaluation, the round's saves), against plain tf_keras training of the
    same steps and against the round a tfmot user writes with the same checks
    (prune_low_magnitude + UpdatePruningStep, default compile, NumPy masks,
    set_weights rewind, recompile). The variants run between imp.run's rounds, so they
    are interleaved; `--breakdown` adds the seconds of each piece of the round.

Every target printed is compared with the figure measured ("met" / "missed"). Medians,
because these machines are noisy.
"""

import argparse
import collections
import functools
import os
import statistics
import tempfile
import time

import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from bench import targets
import keras_lottery as kl
from keras_lottery import data as data_lib
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


def _tfmot_pruned(dense, sparsity):
    """tfmot's wrapper around a copy of `dense`, its masks set to the magnitude masks at `sparsity`."""
    theirs = _tfmot_wrapped(dense)
    kernels = _tfmot_kernels(theirs)
    for (_, mask), value in zip(kernels, _numpy_masks([weight.numpy() for weight, _ in kernels], sparsity)):
        mask.assign(value)
    return theirs


def per_step(steps, repeats):
    """Median seconds per training step of the three variants."""
    x, y = _data(6000)
    dense = _lenet()
    ours = kl.prune_low_magnitude(dense, kl.OneShot(0.8))
    kl.prune(ours, 0.8)
    flips = kl.prune_low_sign_flip(dense, kl.OneShot(0.8), criterion="hybrid")
    kl.prune(flips, 0.8)
    theirs = _tfmot_pruned(dense, 0.8)
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


def per_step_compute(steps, repeats, batch=512, steps_per_execution=50):
    """Median seconds per step where compute dominates: batch 512, 50 steps per call into TensorFlow.

    Masks fixed at 80%. Variants: plain; keras_lottery's wrapper with UpdateMasks (its
    fast path) and with tfmot's UpdatePruningStep (w * m and the in-graph schedule check,
    as tfmot's own wrapper does); the sign-flip wrapper with UpdateMasks; tfmot's wrapper
    with UpdatePruningStep. No schedule fires during the timing.
    """
    x, y = _data(8192)
    dense = _lenet()
    never = tfmot.sparsity.keras.ConstantSparsity(0.8, begin_step=10**9, frequency=10**9)
    ours = kl.prune_low_magnitude(dense, kl.OneShot(0.0))
    kl.prune(ours, 0.8)
    ours_tfmot = kl.prune_low_magnitude(dense, never)
    kl.prune(ours_tfmot, 0.8)
    flips = kl.prune_low_sign_flip(dense, kl.OneShot(0.0), criterion="hybrid")
    kl.prune(flips, 0.8)
    theirs = _tfmot_pruned(dense, 0.8)
    variants = {
        "plain": (dense, lambda: []),
        "keras_lottery + UpdateMasks": (ours, lambda: [kl.UpdateMasks()]),
        "keras_lottery + UpdatePruningStep": (ours_tfmot, lambda: [tfmot.sparsity.keras.UpdatePruningStep()]),
        "sign_flip + UpdateMasks": (flips, lambda: [kl.UpdateMasks()]),
        "tfmot + UpdatePruningStep": (theirs, lambda: [tfmot.sparsity.keras.UpdatePruningStep()]),
    }
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=0).repeat().batch(batch).prefetch(2)
    for model, _ in variants.values():
        _compile(model, steps_per_execution)
    times, cpu = {name: [] for name in variants}, {name: [] for name in variants}
    for name, (model, callbacks) in variants.items():  # warm-up: trace and build
        model.fit(dataset, steps_per_epoch=steps_per_execution, epochs=1, verbose=0, callbacks=callbacks())
    names = list(variants)
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:  # the order rotates
            model, callbacks = variants[name]
            start, start_cpu = time.perf_counter(), time.process_time()
            model.fit(dataset, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=callbacks())
            times[name].append((time.perf_counter() - start) / steps)
            cpu[name].append((time.process_time() - start_cpu) / steps)
    # The fastest repeat of each: this host runs whole repeats ~1.8x slower at random (bench/RESULTS.md).
    return ({name: min(values) for name, values in times.items()},
            {name: statistics.median(values) for name, values in times.items()},
            {name: statistics.median(values) for name, values in cpu.items()})


class _Timers:
    """Seconds spent in named pieces of `imp.run`, by wrapping them while installed (the breakdown of (2))."""

    def __init__(self):
        from keras_lottery import training as training_lib
        from keras_lottery.experiments import round_backup
        from keras_lottery.experiments import rounds as rounds_lib
        from keras_lottery.experiments import run_folder
        from keras_lottery.foundations import files
        from keras_lottery.sparsity import pruning
        from keras_lottery.sparsity import summaries

        pieces = [
            (keras.Model, "fit", "fit (training, checks and callbacks)"),
            (keras.Model, "evaluate", "model.evaluate (Keras's validation_data, test)"),
            (getattr(training_lib, "Evaluator", None), "__call__", "checks and test evaluation (Evaluator)"),
            (pruning, "prune", "prune"),
            (run_folder.RunFolder, "save_round", "the round's results (fsynced)"),
            (run_folder.RunFolder, "save_summary", "summary.json (fsynced)"),
            (rounds_lib, "write_tensorboard_round", "per-round TensorBoard scalars"),
            (summaries.SparsitySummaries, "_log", "sparsity summaries (scalars, histograms)"),
            (summaries.SparsitySummaries, "on_train_end", "sparsity summaries, end of round"),
            (keras.callbacks.TensorBoard, "on_epoch_end", "Keras TensorBoard callback, each check"),
            (keras.callbacks.TensorBoard, "on_train_begin", "Keras TensorBoard callback, start of round"),
            (keras.callbacks.TensorBoard, "on_train_end", "Keras TensorBoard callback, end of round"),
            (summaries.SparsitySummaries, "on_train_begin", "sparsity summaries, start of round"),
            (round_backup.RoundBackup, "on_epoch_end", "backups, in the training thread"),
            (files, "_write_atomic", "atomic writes (any thread)"),
        ]
        self.pieces = [(owner, name, key) for owner, name, key in pieces if hasattr(owner, name)]
        self.seconds = collections.defaultdict(float)
        self._originals = []

    def install(self):
        self.seconds.clear()
        for owner, name, key in self.pieces:
            original = getattr(owner, name)
            self._originals.append((owner, name, original))
            setattr(owner, name, self._timed(original, key))

    def _timed(self, original, key):
        @functools.wraps(original)
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start

        return timed

    def uninstall(self):
        while self._originals:
            owner, name, original = self._originals.pop()
            setattr(owner, name, original)


def _tfmot_round(model, initial, train, validation, test, iterations, evaluations, sparsity):
    """The round a tfmot user writes: fit with the same checks, test evaluation, NumPy masks, rewind, recompile."""
    interval = max(1, iterations // evaluations)
    start = time.perf_counter()
    model.fit(train, steps_per_epoch=interval, epochs=iterations // interval, validation_data=validation, verbose=0,
              callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    model.evaluate(test, verbose=0)
    kernels = _tfmot_kernels(model)
    new_masks = _numpy_masks([w.numpy() * m.numpy() for w, m in kernels], sparsity)
    for (_, mask), value in zip(kernels, new_masks):
        mask.assign(value)
    model.set_weights(initial)  # rewind (set_weights covers the inner layers' weights)
    for weight, mask in kernels:
        weight.assign(weight * mask)
    _compile(model)  # the usual way to reset the optimizer: compile again
    return time.perf_counter() - start


def imp_round(iterations, rounds, train_examples, output_dir, breakdown):
    """Seconds of `imp.run`'s pruning rounds (default settings), with plain training and a tfmot round between.

    The other variants run inside `imp.run`'s `on_round_end`, so each repeat of the three
    is measured side by side at the same point of the session; round 0 (tracing, no
    prune) is not compared, and each variant's first run (its tracing) is left out. Plain
    training is the same LeNet, data pipeline, optimizer and number of steps with no
    wrapper, callback or check, at steps_per_execution 100 and 1,000. The tfmot round
    checks the same held-out examples as `imp.run`'s round does, as often.

    Returns:
      (wall seconds of each repeat, by variant; CPU seconds of the process (all its
      threads) in each repeat, by variant; median seconds per round of each piece of
      `imp.run` when `breakdown`, else {}; the examples each check read).
    """
    config = imp_lib.ImpConfig(output_dir=output_dir, rounds=rounds, iterations=iterations,
                               train_examples=train_examples, verbose=0)
    splits = data_lib.load(config.dataset, None, config.validation_examples, train_examples)
    train = data_lib.to_dataset(splits.train_x, splits.train_y, BATCH, shuffle_seed=0, repeat=True)
    test = data_lib.to_dataset(splits.test_x, splits.test_y, 1000)
    plain = {steps: _lenet() for steps in (100, 1000)}
    for steps, model in plain.items():
        _compile(model, steps)
    theirs = _tfmot_wrapped(_lenet())
    _compile(theirs)
    initial = theirs.get_weights()
    times, pieces, checked = collections.defaultdict(list), collections.defaultdict(list), []
    cpu_times = collections.defaultdict(list)
    timers = _Timers() if breakdown else None
    marks = {}

    def on_round_end(record):
        elapsed, cpu = time.perf_counter() - marks["start"], time.process_time() - marks["cpu"]
        if timers is not None:
            timers.uninstall()  # the other variants run untimed
        if record["round"] > 0:
            times["imp.run round"].append(elapsed)
            cpu_times["imp.run round"].append(cpu)
            for key, seconds in (timers.seconds.items() if timers is not None else ()):
                pieces[key].append(seconds)
        checked.append(record.get("evaluation_examples", len(splits.validation_y)))
        validation = data_lib.to_dataset(splits.validation_x[:checked[-1]], splits.validation_y[:checked[-1]], 1000)
        for steps, model in plain.items():
            start, cpu = time.perf_counter(), time.process_time()
            model.fit(train, steps_per_epoch=iterations, epochs=1, verbose=0)
            times[f"plain tf_keras, steps_per_execution={steps}"].append(time.perf_counter() - start)
            cpu_times[f"plain tf_keras, steps_per_execution={steps}"].append(time.process_time() - cpu)
        cpu = time.process_time()
        times["tfmot round"].append(_tfmot_round(theirs, initial, train, validation, test, iterations,
                                                 config.evaluations_per_round, 1 - 0.8 ** max(1, record["round"])))
        cpu_times["tfmot round"].append(time.process_time() - cpu)
        if timers is not None:
            timers.install()
        marks["start"], marks["cpu"] = time.perf_counter(), time.process_time()

    if timers is not None:
        timers.install()
    marks["start"], marks["cpu"] = time.perf_counter(), time.process_time()
    try:
        imp_lib.run(config, on_round_end=on_round_end)
    finally:
        if timers is not None:
            timers.uninstall()
    # Each variant's first run (after round 0) traces its functions: left out, as round 0 is.
    warm = {name: values if name == "imp.run round" else values[1:] for name, values in times.items()}
    warm_cpu = {name: values if name == "imp.run round" else values[1:] for name, values in cpu_times.items()}
    return warm, warm_cpu, {name: statistics.median(values) for name, values in pieces.items()}, checked[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few steps, for a smoke test")
    parser.add_argument("--only", choices=["per_step", "imp_round", "compute"], help="measure only (1), (2) or (3)")
    parser.add_argument("--rounds", type=int, default=6, help="(2): pruning rounds of the imp.run (repeats)")
    parser.add_argument("--iterations", type=int, default=2000, help="(2): training iterations a round")
    parser.add_argument("--breakdown", action="store_true", help="(2): also time the pieces of imp.run's round")
    parser.add_argument("--output_dir", default=None, help="(2): imp.run's run folder (default: a temporary one)")
    parser.add_argument("--intra_op_threads", type=int, default=1,
                        help="TensorFlow's intra-op threads (0: its default, one per core). On these 2-core machines "
                             "LeNet trains faster on 1 and two threads time bimodally (2.7 s or 5.1 s for the same "
                             "2,000 steps), which would swamp the ratios")
    args = parser.parse_args()
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    steps, repeats, iterations, train_examples = (100, 2, 200, 1000) if args.quick else (1000, 7, args.iterations, 6000)
    command = "python -m bench.step_time" + " ".join(
        [""] + [flag for flag, on in (("--quick", args.quick), (f"--only={args.only}", args.only),
                                      (f"--rounds={args.rounds}", args.rounds != 6),
                                      (f"--iterations={args.iterations}", args.iterations != 2000),
                                      ("--breakdown", args.breakdown),
                                      (f"--intra_op_threads={args.intra_op_threads}", args.intra_op_threads != 1))
                if on])
    verdicts = []
    if args.only in (None, "compute"):
        compute_steps = 40 if args.quick else 300
        step, step_medians, step_cpu = per_step_compute(compute_steps, repeats)
        plain_step = step["plain"]
        print(f"(3) per-step training time where compute dominates, LeNet-300-100, batch 512, steps_per_execution=50, "
              f"80% sparsity, {compute_steps} steps x {repeats} interleaved repeats (fastest repeat; median and CPU "
              "time beside):")
        for name, seconds in step.items():
            print(f"    {name:36s} {seconds * 1e3:7.3f} ms/step   ratio to plain {seconds / plain_step:.3f}x   "
                  f"(median {step_medians[name] * 1e3:.3f} ms, CPU {step_cpu[name] / step_cpu['plain']:.3f}x)")
        ours_update_masks = step["keras_lottery + UpdateMasks"] / plain_step
        ours_tfmot = step["keras_lottery + UpdatePruningStep"] / step["tfmot + UpdatePruningStep"]
        verdicts += [f"(3) keras_lottery + UpdateMasks / plain {ours_update_masks:.3f}x"
                     + targets.verdict(ours_update_masks, "<=", 1.05, "{:g}x"),
                     f"(3) keras_lottery + UpdatePruningStep / tfmot + UpdatePruningStep {ours_tfmot:.3f}x"
                     + targets.verdict(ours_tfmot, "<=", 1.0, "{:g}x")]
    if args.only in (None, "per_step"):
        step = per_step(steps, repeats)
        print(f"(1) per-step training time, LeNet-300-100, batch {BATCH}, 80% sparsity, "
              f"{steps} steps x {repeats} interleaved repeats (median):")
        for name, seconds in step.items():
            print(f"    {name:14s} {seconds * 1e3:7.3f} ms/step   ratio to plain {seconds / step['plain']:.3f}x")
        verdicts += [f"(1) keras_lottery/plain {step['keras_lottery'] / step['plain']:.3f}x"
                     + targets.verdict(step["keras_lottery"] / step["plain"], "<=", 1.05, "{:g}x"),
                     f"(1) sign_flip/plain {step['sign_flip'] / step['plain']:.3f}x"
                     + targets.verdict(step["sign_flip"] / step["plain"], "<=", 1.15, "{:g}x")]
    if args.only in (None, "imp_round"):
        with tempfile.TemporaryDirectory() as scratch:
            samples, cpu_samples, pieces, checked = imp_round(iterations, args.rounds, train_examples,
                                                 args.output_dir or os.path.join(scratch, "imp"), args.breakdown)
        medians = {name: statistics.median(values) for name, values in samples.items()}
        plain = min(seconds for name, seconds in medians.items() if name.startswith("plain"))
        round_seconds = medians["imp.run round"]
        print(f"(2) imp.run pruning rounds on LeNet-300-100 / Fashion-MNIST ({train_examples} training examples, "
              f"{iterations} iterations a round, default settings: 20 checks of {checked} held-out examples, test "
              f"evaluation, backups, TensorBoard), {args.rounds} rounds, each followed by the other variants:")
        for name, seconds in medians.items():
            print(f"    {name:40s} median {seconds:7.3f} s   ratio to plain {seconds / plain:.3f}x   "
                  f"(each: {' '.join(f'{value:.2f}' for value in samples[name])})")
        for name, seconds in pieces.items():
            print(f"      of a round: {name:44s} {seconds:7.3f} s ({100 * seconds / round_seconds:4.1f}% of it)")
        # This host runs some repeats 1.2x or 2.4x slower at random (any variant, any process): the fastest
        # repeats compare the variants without that noise.
        fastest_plain = min(min(values) for name, values in samples.items() if name.startswith("plain"))
        print(f"    fastest repeats: imp.run round {min(samples['imp.run round']):.3f} s, plain {fastest_plain:.3f} s, "
              f"ratio {min(samples['imp.run round']) / fastest_plain:.3f}x")
        # CPU time does not see those stalls (the process waits in them; it does no more work).
        cpu = {name: statistics.median(values) for name, values in cpu_samples.items()}
        cpu_plain = min(seconds for name, seconds in cpu.items() if name.startswith("plain"))
        print("    CPU seconds of the process (median): " + ", ".join(
            f"{name} {seconds:.3f} ({seconds / cpu_plain:.3f}x)" for name, seconds in cpu.items()))
        verdicts += [f"(2) imp.run round / plain training {round_seconds / plain:.3f}x"
                     + targets.verdict(round_seconds / plain, "<=", 1.10, "{:g}x"),
                     f"(2) imp.run round / plain training, CPU seconds {cpu['imp.run round'] / cpu_plain:.3f}x"
                     + targets.verdict(cpu["imp.run round"] / cpu_plain, "<=", 1.10, "{:g}x"),
                     f"(2) imp.run round / tfmot round {round_seconds / medians['tfmot round']:.3f}x"
                     + targets.verdict(round_seconds / medians["tfmot round"], "<=", 0.8, "{:g}x")]
    for verdict in verdicts:
        print(verdict)
    print(f"Reproduce: {command}")


if __name__ == "__main__":
    main()
