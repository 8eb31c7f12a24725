r"""Neuron fusion exported to TFLite: size and latency of stripped sparse vs fused models.

    python -m bench.fusion_tflite --rounds=7,11,15 --fractions=0.5,0.8 --quantize_dynamic

(2) LeNet-300-100 / Fashion-MNIST. Source: round(s) --rounds of the IMP run --imp_run
(default the seed-0 ticket of bench.imp_reproduction; rounds 7/11/15 = 21.1/8.7/3.6% of
weights remaining). If that folder is missing, the dense LeNet of bench.neuron_merging
(--dense_iterations) is magnitude-pruned one-shot per layer to the same sparsities (IMP's
rates: 20% of the hidden layers and 10% of the output layer per round). Variants:
  (a) stripped sparse: the zeros kept, float32;
  (b) exact-fused: `fuse_neurons(model)`;
  (c) data-aware merge: `MergeBudget(fraction, 'data_aware')` on --calibration_examples
      training inputs, per --fractions;
  and (b), (c) again with `fuse_neurons(..., width_multiple=--width_multiple)`: merges keep
  a multiple of 16 units and other layers get zero units up to one (XNNPACK's fully
  connected kernel is about 2x slower per unit at some widths; --width_multiple=0 skips).
(3) conv2 / Fashion-MNIST with channel masks: trained --conv_epochs on --train_examples,
the --channel_fraction of filters/units of every conv and hidden dense layer with the
smallest L1 norm removed (kernel slices and biases zeroed; the output layer is never
pruned), fine-tuned --finetune_epochs with a callback that re-zeroes them after every
batch; then (a) stripped vs (b) exact-fused, which must drop exactly those units.

Per model: test accuracy (float32 rows: the Keras model on the full test set, with the
TFLite file checked against Keras on --check_examples test inputs; dynamic rows: the
TFLite file on the full test set), hidden units, params (nonzero), dense multiply-adds,
TFLite bytes raw/gzip, invoke() latency at batch 1 on 1 thread (median/p90 in µs), and
vs (a) of the same quantize mode: multiply-adds ratio, latency ratio (variants timed
side by side in interleaved rounds), latency / MA ratio (target <= 1.3). Trained conv
weights are cached in --output_dir and reused on rerun.
"""

import argparse
import dataclasses
import json
import os
import statistics

import numpy as np

from bench.neuron_merging import accuracy, trained_lenet
from keras_lottery import data
from keras_lottery import export
from keras_lottery import fusion
from keras_lottery import keras
from keras_lottery import models
from keras_lottery import training
from keras_lottery.experiments import run_models
from keras_lottery.export import tflite
from keras_lottery.fusion.report import max_output_difference, model_multiply_adds
from keras_lottery.sparsity import early_bird
from keras_lottery.sparsity import masks

TARGET = 1.3
PRODUCERS = (keras.layers.Dense, keras.layers.Conv2D)


@dataclasses.dataclass
class Row:
    """One TFLite variant of a model and what was measured on it."""

    label: str
    quantize: str | None
    content: bytes = dataclasses.field(repr=False)
    accuracy: float
    units: str
    params: int
    nonzero_params: int
    multiply_adds: int
    check: export.Comparison
    raw_bytes: int = 0
    gzip_bytes: int = 0
    medians: list = dataclasses.field(default_factory=list)  # one per interleaved round
    p90s: list = dataclasses.field(default_factory=list)
    multiply_adds_ratio: float = 1.0
    latency_ratio: float = 1.0

    def as_dict(self):
        values = dataclasses.asdict(self)
        del values["content"]
        return {**values, "latency_median_us": statistics.median(self.medians),
                "latency_p90_us": statistics.median(self.p90s)}


def producers(model):
    """The model's Dense and Conv2D layers, in order."""
    return [layer for layer in model.layers if isinstance(layer, PRODUCERS)]


def width(layer):
    """Units of a Dense layer or filters of a Conv2D layer."""
    return layer.units if isinstance(layer, keras.layers.Dense) else layer.filters


def hidden_widths(model):
    """Widths of all Dense/Conv2D layers but the output layer, e.g. '300-100'."""
    return "-".join(str(width(layer)) for layer in producers(model)[:-1])


def describe(label, model, quantize, splits, check_examples):
    """Converts `model` to TFLite and measures everything but latency.

    Args:
      label: the variant's name in the table.
      model: a plain tf_keras model.
      quantize: None (float32) or 'dynamic'.
      splits: `data.Splits` whose test split gives accuracy and check inputs.
      check_examples: test inputs on which TFLite is compared with Keras.

    Returns:
      A `Row` without latency.
    """
    content = tflite.convert(model, quantize)
    inputs = splits.test_x[:check_examples]
    check = export.compare(tflite.predict(content, inputs), export.keras_outputs(model, inputs))
    if quantize is None:
        test_accuracy = accuracy(model, splits.test_x, splits.test_y)
    else:  # the quantized file itself, on the full test set
        test_accuracy = 100.0 * float(np.mean(np.argmax(tflite.predict(content, splits.test_x), -1) == splits.test_y))
    return Row(label, quantize, content, test_accuracy, hidden_widths(model), model.count_params(),
               sum(int(np.count_nonzero(values)) for values in model.get_weights()),
               model_multiply_adds(model), check)


def measure_variants(variants, splits, args):
    """Rows for every variant (float32, plus 'dynamic' with --quantize_dynamic), latency included.

    All files are timed in --repeats interleaved rounds (order reversed every other
    round) of --latency_runs invoke() calls each. Ratios are taken against the first
    variant, (a), of the same quantize mode; the latency ratio is the median of the
    per-round ratios.

    Returns:
      (rows, median invoke() latency in µs of a model that only reshapes its input).
    """
    modes = [None, "dynamic"] if args.quantize_dynamic else [None]
    rows = [describe(label, model, mode, splits, args.check_examples) for mode in modes
            for label, model in variants.items()]
    floor = keras.Sequential([keras.layers.InputLayer(input_shape=splits.input_shape), keras.layers.Flatten()])
    contents = [row.content for row in rows] + [tflite.convert(floor)]
    measured = [[] for _ in contents]
    for repeat in range(args.repeats):
        for index in (range(len(contents)) if repeat % 2 == 0 else reversed(range(len(contents)))):
            measured[index].append(tflite.measure_content(contents[index], splits.test_x[0], 1, args.latency_runs))
    for row, measurements in zip(rows, measured):
        row.raw_bytes, row.gzip_bytes = measurements[0].raw_bytes, measurements[0].gzip_bytes
        row.medians = [m.latency_median_us for m in measurements]
        row.p90s = [m.latency_p90_us for m in measurements]
    for row in rows:
        reference = next(other for other in rows if other.quantize == row.quantize)
        row.multiply_adds_ratio = row.multiply_adds / reference.multiply_adds
        row.latency_ratio = statistics.median(a / b for a, b in zip(row.medians, reference.medians))
    return rows, statistics.median(m.latency_median_us for m in measured[-1])


def print_table(title, rows, floor_us):
    """Prints the rows as a Markdown table under `title`."""
    print(f"\n{title}\n")
    print("| model | test acc. % | hidden units | params (nonzero) | multiply-adds | TFLite bytes | gzip bytes | "
          "latency median µs | p90 µs | MA ratio | latency ratio | latency / MA | TFLite vs Keras |")
    print("|---" * 13 + "|")
    for row in rows:
        ratio = row.latency_ratio / row.multiply_adds_ratio
        mark = "" if row.label.startswith("(a)") else (" ✓" if ratio <= TARGET else " ✗")
        name = row.label + (f" [{row.quantize}]" if row.quantize else "")
        print(f"| {name} | {row.accuracy:.2f} | {row.units} | {row.params:,} ({row.nonzero_params:,}) | "
              f"{row.multiply_adds:,} | {row.raw_bytes:,} | {row.gzip_bytes:,} | "
              f"{statistics.median(row.medians):.1f} | {statistics.median(row.p90s):.1f} | "
              f"{row.multiply_adds_ratio:.3f} | {row.latency_ratio:.3f} | {ratio:.2f}{mark} | "
              f"max Δ {row.check.max_abs_diff:.2g}, argmax {row.check.argmax_agreement:.1%} |")
    print(f"\ninvoke() floor (a model that only reshapes its input): {floor_us:.1f} µs")


def magnitude_pruned(model, rounds):
    """A copy of `model` pruned one-shot by |w| per layer to IMP's sparsity after `rounds` rounds.

    Hidden layers lose 20% and the output layer 10% of the survivors per round (LTH's rates).
    """
    layers = producers(model)
    sparsity = {layer.name: masks.sparsity_after_rounds(0.1 if layer is layers[-1] else 0.2, rounds)
                for layer in layers}
    kernel_masks = masks.compute({layer.name: np.abs(layer.kernel.numpy()) for layer in layers}, sparsity)
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    for layer in producers(pruned):
        layer.kernel.assign(layer.kernel.numpy() * kernel_masks[layer.name])
    return pruned


def lenet_sources(args):
    """The LeNet models to fuse: IMP rounds of --imp_run, or the magnitude-pruned fallback.

    Returns:
      (list of (title, model), `data.Splits`, a line saying where the models came from).
    """
    if os.path.isdir(args.imp_run):
        sources, splits = [], None
        for round_index in args.rounds:
            loaded = run_models.load_run_model(args.imp_run, round_index)
            splits = loaded.splits
            remaining = loaded.record["weights_remaining"]
            sources.append((f"IMP round {round_index}, {remaining:.1%} of weights remaining", loaded.model))
        return sources, splits, f"Source: IMP ticket {args.imp_run}, rounds {args.rounds}."
    splits = data.load("fashion_mnist", validation_examples=5000)
    dense = trained_lenet(splits, 0, args.dense_iterations, args.dense_dir)
    sources = []
    for rounds in args.rounds:
        pruned = magnitude_pruned(dense, rounds)
        remaining = sum(np.count_nonzero(layer.kernel.numpy()) for layer in producers(pruned)) / sum(
            layer.kernel.shape.num_elements() for layer in producers(pruned))
        sources.append((f"one-shot magnitude pruning as IMP round {rounds}, {remaining:.1%} of weights remaining",
                        pruned))
    return sources, splits, (f"Source: {args.imp_run} is MISSING; fallback: the dense LeNet trained "
                             f"{args.dense_iterations} iterations (bench.neuron_merging), pruned one-shot by |w| "
                             "with no retraining after pruning.")


def run_lenet(args):
    """Part (2): LeNet-300-100 tickets, stripped vs fused, in TFLite. Returns JSON-ready results."""
    sources, splits, origin = lenet_sources(args)
    print(origin, flush=True)
    calibration = splits.train_x[np.random.default_rng(0).permutation(len(splits.train_x))[:args.calibration_examples]]
    results = []
    for title, model in sources:
        variants = {"(a) stripped sparse": model}
        multiples = [None, args.width_multiple] if args.width_multiple else [None]
        for multiple in multiples:  # fuse_neurons(width_multiple=16): widths XNNPACK runs at full speed
            suffix = f", width x{multiple}" if multiple else ""
            variants[f"(b) exact-fused{suffix}"] = fusion.fuse_neurons(model, width_multiple=multiple)
            for fraction in args.fractions:
                variants[f"(c) data-aware {fraction:.0%}{suffix}"] = fusion.fuse_neurons(
                    model, merge=fusion.MergeBudget(fraction, "data_aware"), calibration_data=calibration,
                    width_multiple=multiple)
        rows, floor_us = measure_variants(variants, splits, args)
        print_table(f"LeNet-300-100 / Fashion-MNIST, {title}:", rows, floor_us)
        results.append({"source": title, "floor_us": floor_us, "rows": [row.as_dict() for row in rows]})
    return {"origin": origin, "tables": results}


def cached_weights(model, path, train):
    """Loads `model`'s weights from `path`, or calls `train(model)` and saves them there atomically.

    Returns:
      True if the weights were read back from `path`.
    """
    if os.path.exists(path):
        model.load_weights(path)
        return True
    train(model)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    temporary = path + ".partial.weights.h5"
    model.save_weights(temporary)
    os.replace(temporary, path)  # a killed run never leaves a half-written file under the real name
    return False


def zero_units(model, unit_masks):
    """Multiplies each named layer's kernel (last axis) and bias by its 0/1 per-unit mask."""
    for name, mask in unit_masks.items():
        layer = model.get_layer(name)
        layer.kernel.assign(layer.kernel * mask)
        layer.bias.assign(layer.bias * mask)


class KeepUnitsRemoved(keras.callbacks.Callback):
    """Re-zeroes the removed units' kernels and biases after every training batch."""

    def __init__(self, unit_masks):
        super().__init__()
        self.unit_masks = unit_masks

    def on_train_batch_end(self, batch, logs=None):
        zero_units(self.model, self.unit_masks)


def conv_ticket(args, splits):
    """Trains conv2, removes --channel_fraction of its units by L1 norm and fine-tunes (all cached).

    Returns:
      (the fine-tuned model with removed units at zero, dict layer -> removed unit indices,
      dict of test accuracies: trained, pruned, fine-tuned).
    """
    def fit(epochs, callbacks=()):
        def train(model):
            training.compile_for_training(model, "adam", models.get("conv2").learning_rate)
            model.fit(data.to_dataset(splits.train_x, splits.train_y, models.get("conv2").batch_size,
                                      shuffle_seed=args.seed), epochs=epochs, callbacks=list(callbacks), verbose=0)
        return train

    stem = os.path.join(args.output_dir, f"conv2_seed{args.seed}_n{len(splits.train_x)}_e{args.conv_epochs}")
    model = models.build("conv2", splits.input_shape, splits.num_classes, args.seed)
    loaded = cached_weights(model, stem + ".weights.h5", fit(args.conv_epochs))
    print(f"conv2: {'read back' if loaded else 'trained'} {args.conv_epochs} epochs on {len(splits.train_x)} "
          "examples", flush=True)
    accuracies = {"trained": accuracy(model, splits.test_x, splits.test_y)}
    scores = early_bird.criterion_scores(model, "l1")  # per unit; the output layer is left out
    unit_masks = masks.compute(scores, args.channel_fraction)
    zero_units(model, unit_masks)
    accuracies["pruned"] = accuracy(model, splits.test_x, splits.test_y)
    path = f"{stem}_l1_{args.channel_fraction:g}_ft{args.finetune_epochs}.weights.h5"
    cached_weights(model, path, fit(args.finetune_epochs, [KeepUnitsRemoved(unit_masks)]))
    accuracies["fine-tuned"] = accuracy(model, splits.test_x, splits.test_y)
    removed = {name: np.flatnonzero(mask < 0.5) for name, mask in unit_masks.items()}
    for name, indices in removed.items():  # the fine-tune must have kept them at exactly zero
        layer = model.get_layer(name)
        if np.any(layer.kernel.numpy()[..., indices]) or np.any(layer.bias.numpy()[indices]):
            raise RuntimeError(f"{name}: removed units are nonzero after the fine-tune ({path}); delete the file.")
    return model, removed, accuracies


def run_conv(args):
    """Part (3): conv2 with channel masks, stripped vs exact-fused, in TFLite. Returns JSON-ready results."""
    splits = data.load("fashion_mnist", validation_examples=5000, train_examples=args.train_examples or None)
    model, removed, accuracies = conv_ticket(args, splits)
    fused = fusion.fuse_neurons(model)
    expected = {layer.name: width(layer) - len(removed.get(layer.name, ())) for layer in producers(model)}
    found = {layer.name: width(layer) for layer in producers(fused)}
    difference = max_output_difference(model, fused, splits.test_x[:args.check_examples])
    print(f"\nconv2 / Fashion-MNIST, {args.channel_fraction:.0%} of the filters/units of each conv and hidden dense "
          f"layer removed by L1 norm; test accuracy trained {accuracies['trained']:.2f}, pruned (no fine-tune) "
          f"{accuracies['pruned']:.2f}, after {args.finetune_epochs} fine-tune epoch(s) {accuracies['fine-tuned']:.2f}")
    verdict = "exactly the removed units" if found == expected else "MISMATCH"
    print(f"fused widths {found}, expected {expected}: {verdict}; max output difference on {args.check_examples} test inputs {difference:.3g} (must be <= 1e-4)")
    rows, floor_us = measure_variants({"(a) stripped sparse": model, "(b) exact-fused": fused}, splits, args)
    print_table("conv2 / Fashion-MNIST, channel ticket:", rows, floor_us)
    return {"accuracies": accuracies, "fused_widths": found, "expected_widths": expected,
            "max_output_difference": difference, "floor_us": floor_us, "rows": [row.as_dict() for row in rows]}


def main():
    def numbers(kind):
        return lambda text: [kind(value) for value in text.split(",")]

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", type=numbers(str), default=["lenet", "conv"], help="lenet and/or conv")
    parser.add_argument("--imp_run", default="bench/out/imp_reproduction/ticket_seed0")
    parser.add_argument("--rounds", type=numbers(int), default=[7, 11, 15])
    parser.add_argument("--fractions", type=numbers(float), default=[0.5, 0.8])
    parser.add_argument("--calibration_examples", type=int, default=5000)
    parser.add_argument("--dense_iterations", type=int, default=30000, help="fallback LeNet's training")
    parser.add_argument("--dense_dir", default="bench/out/neuron_merging", help="fallback LeNet's weight cache")
    parser.add_argument("--width_multiple", type=int, default=16)
    parser.add_argument("--quantize_dynamic", action="store_true", help="also measure quantize='dynamic'")
    parser.add_argument("--conv_epochs", type=int, default=2)
    parser.add_argument("--train_examples", type=int, default=20000, help="conv training subset; 0: all 55,000")
    parser.add_argument("--channel_fraction", type=float, default=0.5)
    parser.add_argument("--finetune_epochs", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check_examples", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--latency_runs", type=int, default=1000)
    parser.add_argument("--output_dir", default="bench/out/fusion_tflite")
    args = parser.parse_args()

    results = {"args": vars(args)}
    if "lenet" in args.parts:
        results["lenet"] = run_lenet(args)
    if "conv" in args.parts:
        results["conv"] = run_conv(args)
    os.makedirs(args.output_dir, exist_ok=True)
    with open(os.path.join(args.output_dir, "results.json"), "w") as file:
        json.dump(results, file, indent=1, default=float)
    flags = " ".join(f"--{name}={','.join(map(str, value)) if isinstance(value, list) else value}"
                     for name, value in vars(args).items() if name != "quantize_dynamic")
    print(f"\nreproduce: python -m bench.fusion_tflite {flags}" + (" --quantize_dynamic" * args.quantize_dynamic))


if __name__ == "__main__":
    main()
