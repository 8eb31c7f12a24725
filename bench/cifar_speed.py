r"""CIFAR-scale speed, side by side in one process: wrappers, input pipeline, MirroredStrategy.

    python -m bench.cifar_speed                  # ~6 min on 2 cores
    python -m bench.cifar_speed --quick          # smoke run
    python -m bench.cifar_speed --data_dir=~/tensorflow_datasets   # (2) on the real CIFAR-10

ResNet-20 (OpenLTH's recipe: SGD momentum 0.9, coupled weight decay 1e-4) at batch 128 on
32x32x3 images, where a training step is ~1 s of compute on these cores, so per-step Python
overhead is noise:

(1) keras_lottery's wrapped ResNet-20 (masks at 80% sparsity, global) vs the same network
    unwrapped, both compiled with the same `steps_per_execution`, on cached tensors.
    Target <= 1.03x.
(2) The input pipeline keeps up: `StreamingSplits.train_batches` (decode, normalize, pad-4
    crop + flip, in a parallel map, prefetched) feeding the wrapped ResNet-20, vs the same
    batches cached in memory first. Target: steps/s >= 0.95x the cached ones. Without
    --data_dir, a CIFAR-10-shaped dataset of 5,000 random images is prepared offline with
    TFDS's real builder (tests/data/cifar_fixture.py).
(3) MirroredStrategy over 2 logical CPU devices vs 1 device, the wrapped ResNet-20 with
    BatchNorm synchronized: steps/s reported (no target: both devices share the same 2
    cores, so this measures the strategy's overhead, not a speed-up).

Variants alternate within each repeat; the fastest repeat of each is compared, with its
process CPU time. TensorFlow runs `--intra_op_threads` threads (1 by default: steadier).
"""

import argparse
import os
import tempfile
import time

# Two logical CPU devices for (3): before TensorFlow initializes.
from keras_lottery.training import strategies  # noqa: I001  (keras_lottery sets up tf_keras first)

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from bench import targets  # noqa: E402
from keras_lottery import data  # noqa: E402
from keras_lottery import models  # noqa: E402
from keras_lottery import training  # noqa: E402
from keras_lottery.experiments import imp  # noqa: E402
from keras_lottery.sparsity import pruning  # noqa: E402
from keras_lottery.sparsity import wrappers  # noqa: E402

BATCH = 128
SPARSITY = 0.8


def _compile(model, steps_per_execution):
    config = imp.ImpConfig(model="resnet20", dataset="cifar10", iterations=1000).resolved()
    optimizer = training.make_optimizer(config, steps_per_epoch=391, total_iterations=64_000)
    training.compile_for_training(model, optimizer, steps_per_execution=steps_per_execution)


def _resnet(wrapped, synchronized=False):
    dense = models.build("resnet20", (32, 32, 3), 10, seed=0, synchronized_batch_norm=synchronized)
    if not wrapped:
        return dense
    model = wrappers.prune_low_magnitude(dense, strategy="global")
    wrappers.manage_masks(model)  # masks fixed below: no schedule acts while it trains
    pruning.prune(model, SPARSITY, "global", "magnitude")
    return model


class _Timed:
    """Trains a compiled model on a dataset `steps` steps at a time; returns (wall s, CPU s)."""

    def __init__(self, model, dataset, steps, steps_per_execution):
        self.model, self.steps = model, steps
        self.iterator = iter(dataset.repeat())
        self.model.fit(self.iterator, steps_per_epoch=steps_per_execution, epochs=1, verbose=0)  # trace, warm up

    def __call__(self):
        wall, cpu = time.perf_counter(), time.process_time()
        self.model.fit(self.iterator, steps_per_epoch=self.steps, epochs=1, verbose=0)
        return time.perf_counter() - wall, time.process_time() - cpu


def _side_by_side(variants, repeats):
    """{name: (fastest wall, its CPU)} over `repeats` alternating runs of each callable."""
    results = {name: [] for name in variants}
    for _ in range(repeats):
        for name, run in variants.items():
            results[name].append(run())
    return {name: min(times) for name, times in results.items()}


def _report(title, results, baseline, steps, target=None, higher_is_better=False):
    print(f"\n{title}")
    for name, (wall, cpu) in results.items():
        print(f"  {name:<44} {steps / wall:6.3f} steps/s  ({wall:.2f} s wall, {cpu:.2f} s CPU for {steps} steps)")
    for name, (wall, cpu) in results.items():
        if name == baseline:
            continue
        ratio, cpu_ratio = wall / results[baseline][0], cpu / results[baseline][1]
        speed = 1 / ratio
        line = f"  {name} / {baseline}: {ratio:.3f}x time ({cpu_ratio:.3f}x CPU), {speed:.3f}x steps/s"
        if target is not None:
            line += (targets.verdict(speed, ">=", target, "{:.2f}x steps/s") if higher_is_better
                     else targets.verdict(ratio, "<=", target, "{:.2f}x time"))
        print(line)


def _random_batches(count, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(count * BATCH, 32, 32, 3)).astype(np.float32)
    y = rng.integers(0, 10, count * BATCH)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(BATCH).cache()


def wrapper_cost(steps, repeats, steps_per_execution):
    cached = _random_batches(8)
    variants = {}
    for name, wrapped in (("plain tf_keras ResNet-20", False), ("keras_lottery wrapped, 80% sparse", True)):
        model = _resnet(wrapped)
        _compile(model, steps_per_execution)
        variants[name] = _Timed(model, cached, steps, steps_per_execution)
    _report(f"(1) ResNet-20 training step, batch {BATCH}, steps_per_execution={steps_per_execution}, cached tensors",
            _side_by_side(variants, repeats), "plain tf_keras ResNet-20", steps, target=1.03)


def pipeline_cost(steps, repeats, steps_per_execution, data_dir):
    if data_dir is None:
        from tests.data import cifar_fixture  # noqa: PLC0415  (offline: a CIFAR-10-shaped dataset)

        data_dir = cifar_fixture.prepare_tiny_cifar10(tempfile.mkdtemp(prefix="cifar_speed_"), train_per_batch=1000,
                                                      test_examples=100)
    splits = data.load_streaming("cifar10", data_dir, validation_examples=100)
    streamed = splits.train_batches(BATCH, seed=0, augment=True)
    cached = tf.data.Dataset.from_tensor_slices(tuple(np.stack(part) for part in zip(
        *[(x.numpy(), y.numpy()) for x, y in streamed.take(16)]))).cache()
    variants = {}
    for name, dataset in (("cached batches", cached), ("streamed: decode + augment + normalize", streamed)):
        model = _resnet(True)
        _compile(model, steps_per_execution)
        variants[name] = _Timed(model, dataset, steps, steps_per_execution)
    _report(f"(2) input pipeline feeding the wrapped ResNet-20 ({splits.train_size} training images, "
            f"{data_dir})", _side_by_side(variants, repeats), "cached batches", steps, target=0.95,
            higher_is_better=True)


def mirrored_cost(steps, repeats, steps_per_execution):
    cached = _random_batches(8)
    variants = {}
    for name, strategy, synchronized in (
            ("one device", tf.distribute.OneDeviceStrategy("/cpu:0"), False),
            ("MirroredStrategy, 2 CPU devices", strategies.get("mirrored"), True)):
        with strategy.scope():
            model = _resnet(True, synchronized)
            _compile(model, steps_per_execution)
        variants[name] = _Timed(model, cached, steps, steps_per_execution)
    _report("(3) wrapped ResNet-20 under MirroredStrategy (2 logical CPU devices on the same cores) vs one device",
            _side_by_side(variants, repeats), "one device", steps)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="few steps, for a smoke test")
    parser.add_argument("--only", choices=["wrapper", "pipeline", "mirrored"])
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps_per_execution", type=int, default=10)
    parser.add_argument("--data_dir", default=None, help="(2): a TFDS data_dir with cifar10 prepared")
    parser.add_argument("--intra_op_threads", type=int, default=1)
    args = parser.parse_args()
    strategies.split_cpu(2)
    tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    steps, repeats, spe = (4, 1, 2) if args.quick else (args.steps, args.repeats, args.steps_per_execution)
    print(f"command: python -m bench.cifar_speed {' '.join(os.sys.argv[1:])}")
    print(f"machine: {os.cpu_count()} CPUs, TensorFlow {tf.__version__}, {args.intra_op_threads} intra-op thread(s)")
    if args.only in (None, "wrapper"):
        wrapper_cost(steps, repeats, spe)
    if args.only in (None, "pipeline"):
        pipeline_cost(steps, repeats, spe, args.data_dir)
    if args.only in (None, "mirrored"):
        mirrored_cost(steps, repeats, spe)


if __name__ == "__main__":
    main()
