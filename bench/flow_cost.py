r"""What a one-pass run and an early-bird search cost against plain training of the same steps.

    python -m bench.flow_cost                 # ~6 min on 2 cores
    python -m bench.flow_cost --quick         # smoke run

Issue 20 asks that an IMP round, a one-pass run and an early-bird search each cost at
most 1.10x plain tf_keras training of the same steps, at the default settings, measured
side by side in one process (`bench.step_time --only=imp_round` measures the IMP round).
Here, repeated with the order rotating:

  one pass:   `one_pass.run` at its defaults (LeNet-300-100 on Fashion-MNIST, Debian's
              copy, 6,000 training examples: 3 x 2,000 iterations, 20 checks, mask
              updates, backups, TensorBoard, test evaluation, the run's saves) — the whole
              call, from loading the data to the saved summary;
  early bird: the search phase of `early_bird_flow.run` at its defaults (all 55,000
              training examples, the detector at each epoch's end, a validation check
              per epoch, TensorBoard), as the run records it (`search.train_seconds`: the
              fit, checks included);
  plain:      what a tf_keras user writes for the same steps: load the data (one pass
              only, as its run does), build LeNet, compile (Adam, steps_per_execution 100
              and 1,000, the faster taken), `fit` — each repeat from a fresh model, so
              both sides pay their tracing.

Every target printed is a comparison computed from the figure measured.
"""

import argparse
import os
import statistics
import tempfile
import time

import tensorflow as tf

from bench import targets
from keras_lottery import data as data_lib
from keras_lottery import models
from keras_lottery.experiments import early_bird_flow
from keras_lottery.experiments import imp_config
from keras_lottery.experiments import one_pass
import keras_lottery as kl

keras = kl.keras


def _plain(splits_or_loader, steps, steps_per_execution, batch_size):
    """Seconds (wall, CPU) of plain tf_keras training: (load), build, compile, fit `steps` steps."""
    start, cpu = time.perf_counter(), time.process_time()
    splits = splits_or_loader() if callable(splits_or_loader) else splits_or_loader
    keras.utils.set_random_seed(0)
    model = models.lenet_300_100(splits.input_shape, splits.num_classes)
    model.compile(keras.optimizers.Adam(1.2e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"], steps_per_execution=steps_per_execution)
    train = data_lib.to_dataset(splits.train_x, splits.train_y, batch_size, shuffle_seed=0, repeat=True)
    model.fit(train, steps_per_epoch=steps, epochs=1, verbose=0)
    return time.perf_counter() - start, time.process_time() - cpu


def _one_pass(output_dir, train_examples, iterations):
    """((wall, CPU) seconds of the whole `one_pass.run` call, its training iterations)."""
    config = imp_config.ImpConfig(output_dir=output_dir, mode="one_pass",
                                  train_examples=train_examples, iterations=iterations, verbose=0)
    start, cpu = time.perf_counter(), time.process_time()
    summary = one_pass.run(config)
    return (time.perf_counter() - start, time.process_time() - cpu), summary["rounds"][0]["iterations"]


def _early_bird(output_dir, train_examples, search_epochs):
    """(seconds of the search's fit as the run records them, the search's iterations); a 1-epoch retrain."""
    config = early_bird_flow.EarlyBirdConfig(output_dir=output_dir,
                                             train_examples=train_examples, search_epochs=search_epochs,
                                             retrain_epochs=1, verbose=0)
    summary = early_bird_flow.run(config)
    return summary["search"]["train_seconds"], summary["search"]["iterations"]


def measure(repeats, quick, flows=("one pass", "early-bird search")):
    """({flow: {variant: [wall seconds]}}, {flow: {variant: [CPU seconds]}}, {flow: its iterations}).

    Each flow runs once first to learn its length and warm the process (imports, first
    tracing); that run is left out. Then `repeats` rounds of every variant, the order
    rotating each round. `flows` picks which of the two flows to measure.
    """
    train_examples, iterations = (1000, 200) if quick else (6000, 2000)
    eb_examples, eb_epochs = (2000, 6) if quick else (None, 20)
    defaults = imp_config.ImpConfig()
    batch_size = models.get(defaults.model).batch_size
    eb_splits = data_lib.load(defaults.dataset, None, defaults.validation_examples, eb_examples)

    def load_one_pass_data():
        return data_lib.load(defaults.dataset, None, defaults.validation_examples, train_examples)

    walls, cpus = {flow: {} for flow in flows}, {"one pass": {}} if "one pass" in flows else {}
    with tempfile.TemporaryDirectory() as scratch:
        runs = iter(range(10 ** 6))  # a fresh run folder for every flow run
        first = {"one pass": lambda: _one_pass(os.path.join(scratch, str(next(runs))), train_examples, iterations)[1],
                 "early-bird search": lambda: _early_bird(os.path.join(scratch, str(next(runs))), eb_examples,
                                                          eb_epochs)[1]}
        steps = {flow: first[flow]() for flow in flows}
        variants = [
            ("one pass", "one_pass.run",
             lambda: _one_pass(os.path.join(scratch, str(next(runs))), train_examples, iterations)[0]),
            ("early-bird search", "early_bird_flow search (fit)",
             lambda: (_early_bird(os.path.join(scratch, str(next(runs))), eb_examples, eb_epochs)[0], None)),
        ]
        for spe in (100, 1000):
            variants += [
                ("one pass", f"plain, steps_per_execution={spe}",
                 lambda spe=spe: _plain(load_one_pass_data, steps["one pass"], spe, batch_size)),
                ("early-bird search", f"plain, steps_per_execution={spe}",
                 lambda spe=spe: (_plain(eb_splits, steps["early-bird search"], spe, batch_size)[0], None)),
            ]
        variants = [variant for variant in variants if variant[0] in flows]
        for repeat in range(repeats):
            shift = repeat % len(variants)
            for flow, name, timed in variants[shift:] + variants[:shift]:
                wall, cpu = timed()
                walls[flow].setdefault(name, []).append(wall)
                if cpu is not None:
                    cpus[flow].setdefault(name, []).append(cpu)
    return walls, cpus, steps


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short flows, for a smoke test")
    parser.add_argument("--repeats", type=int, default=3, help="measured repeats of each variant (after a warm-up)")
    parser.add_argument("--intra_op_threads", type=int, default=1,
                        help="TensorFlow's intra-op threads (0: its default); 1 as bench.step_time, whose "
                             "RESULTS.md section says why")
    parser.add_argument("--flows", default="one_pass,early_bird",
                        help="comma-separated flows to measure: one_pass, early_bird")
    args = parser.parse_args()
    names = {"one_pass": "one pass", "early_bird": "early-bird search"}
    chosen = [part.strip() for part in args.flows.split(",") if part.strip()]
    if not chosen or any(part not in names for part in chosen):
        parser.error(f"--flows takes a comma-separated list of {', '.join(names)}; got {args.flows!r}")
    if args.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.intra_op_threads)
    walls, cpus, steps = measure(args.repeats, args.quick, tuple(names[part] for part in chosen))
    verdicts = []
    for flow, variants in walls.items():
        print(f"{flow} ({steps[flow]} training iterations), {args.repeats} repeats, wall seconds:")
        medians = {name: statistics.median(values) for name, values in variants.items()}
        plain = min(seconds for name, seconds in medians.items() if name.startswith("plain"))
        fastest_plain = min(min(values) for name, values in variants.items() if name.startswith("plain"))
        for name, values in variants.items():
            print(f"    {name:34s} median {medians[name]:7.3f} s  ratio to plain {medians[name] / plain:.3f}x  "
                  f"fastest {min(values):.3f} s ({min(values) / fastest_plain:.3f}x)  "
                  f"(each: {' '.join(f'{v:.2f}' for v in values)})")
        ours = next(name for name in variants if not name.startswith("plain"))
        ratio = medians[ours] / plain
        verdicts.append(f"{flow} / plain training, wall (median) {ratio:.3f}x" + targets.verdict(ratio, "<=", 1.10,
                                                                                               "{:g}x"))
        fastest = min(variants[ours]) / fastest_plain
        verdicts.append(f"{flow} / plain training, fastest repeats {fastest:.3f}x"
                        + targets.verdict(fastest, "<=", 1.10, "{:g}x"))
        if cpus.get(flow):
            cpu = {name: statistics.median(values) for name, values in cpus[flow].items()}
            cpu_plain = min(seconds for name, seconds in cpu.items() if name.startswith("plain"))
            print("    CPU seconds (median): " + ", ".join(f"{n} {s:.3f} ({s / cpu_plain:.3f}x)" for n, s in cpu.items()))
            verdicts.append(f"{flow} / plain training, CPU seconds {cpu[ours] / cpu_plain:.3f}x"
                            + targets.verdict(cpu[ours] / cpu_plain, "<=", 1.10, "{:g}x"))
    for verdict in verdicts:
        print(verdict)
    command = "python -m bench.flow_cost" + "".join(
        flag for flag, on in ((" --quick", args.quick), (f" --repeats={args.repeats}", args.repeats != 3),
                              (f" --intra_op_threads={args.intra_op_threads}", args.intra_op_threads != 1),
                              (f" --flows={args.flows}", args.flows != "one_pass,early_bird")) if on)
    print(f"Reproduce: {command}")


if __name__ == "__main__":
    main()
