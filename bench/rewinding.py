r"""IMP with rewinding to iteration 0 vs k > 0 (Frankle et al. 2020), CIFAR-scale nets, several seeds.

Full size, on a machine with CIFAR-10 prepared in TFDS and a GPU (one command per table;
each run resumes when rerun):

    python -m bench.rewinding --dataset=cifar10 --model=resnet20 --rewind_steps=0,2000 \
        --seeds=0,1,2 --rounds=10 --data_dir=~/tensorflow_datasets --output_dir=runs/rewinding_resnet20 \
        --distribution_strategy=mirrored
    python -m bench.rewinding --dataset=cifar10 --model=vgg16 --rewind_steps=0,1000 \
        --seeds=0,1,2 --rounds=10 --data_dir=~/tensorflow_datasets --output_dir=runs/rewinding_vgg16

k = 2000 (ResNet-20) and 1000 (VGG-16) are our choices within the first few thousand
iterations where Frankle et al. 2020 find these CIFAR-10 nets become stable to SGD noise;
check their figures before quoting a k as theirs. Those use OpenLTH's recipe for each model (SGD 0.1, momentum 0.9, weight decay 1e-4,
160 epochs with x0.1 at 80 and 120, batch 128, global pruning 20% a round; VGG's output
layer dense). A CIFAR-10 archive without internet: `python -m apps.prepare_data_main
--dataset=cifar10 --manual_dir=<folder with cifar-10-binary.tar.gz> --data_dir=...` first.

Scaled down to two CPU cores (the figure in bench/RESULTS.md):

    python -m bench.rewinding --dataset=fashion_mnist --model=resnet20 --rewind_steps=0,16 \
        --seeds=0,1,2 --rounds=4 --epochs=4 --train_examples=4000 --lr_milestones=2ep,3ep \
        --evaluations_per_round=4 --output_dir=runs/rewinding_fashion

Each run is `imp.run` with `--rewind_step=k` and the pruned rounds trained from k to the
end with the learning-rate schedule from k (`after_rewind='continue'`, as the paper and
OpenLTH). Prints a Markdown table (test accuracy, mean ± std over seeds, at each level's
weights remaining) and writes the multi-run report (`report_main`'s plots) to
<output_dir>/report.
"""

import argparse
import os
import statistics

from keras_lottery import report
from keras_lottery.experiments import imp


def _ints(text):
    return [int(part) for part in text.split(",") if part.strip()]


def _runs(args):
    for rewind_step in args.rewind_steps:
        for seed in args.seeds:
            yield rewind_step, seed, imp.ImpConfig(
                output_dir=os.path.join(args.output_dir, f"rewind{rewind_step}_seed{seed}"),
                dataset=args.dataset, data_dir=args.data_dir, model=args.model, rounds=args.rounds,
                rewind_step=rewind_step, seed=seed, epochs=args.epochs, train_examples=args.train_examples,
                lr_milestones=args.lr_milestones, distribution_strategy=args.distribution_strategy,
                evaluations_per_round=args.evaluations_per_round, verbose=args.verbose,
            )


def _format(values):
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}"


def table(results, rounds):
    """Markdown: one row per level, one column per rewind step (test accuracy over seeds)."""
    steps = sorted(results)
    first = next(iter(results[steps[0]].values()))
    lines = ["| round | weights remaining | " + " | ".join(f"rewind to {k}" for k in steps) + " |",
             "|---|---|" + "---|" * len(steps)]
    for level in range(rounds + 1):
        cells = [_format([summary["rounds"][level]["test_accuracy"] for summary in results[k].values()])
                 for k in steps]
        remaining = 100 * first["rounds"][level]["weights_remaining"]
        lines.append(f"| {level} | {remaining:.1f}% | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="cifar10")
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--rewind_steps", type=_ints, default=[0, 2000], help="comma-separated k")
    parser.add_argument("--seeds", type=_ints, default=[0, 1, 2])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--epochs", type=float, default=None, help="per round (default: the model's, 160)")
    parser.add_argument("--train_examples", type=int, default=None)
    parser.add_argument("--lr_milestones", default=None, help="default: the model's (80ep,120ep)")
    parser.add_argument("--evaluations_per_round", type=int, default=20)
    parser.add_argument("--distribution_strategy", default="default")
    parser.add_argument("--verbose", type=int, default=1)
    parser.add_argument("--output_dir", default="runs/rewinding")
    args = parser.parse_args()
    results = {}
    for rewind_step, seed, config in _runs(args):
        results.setdefault(rewind_step, {})[seed] = imp.run(config)
    print(f"{args.model} on {args.dataset}, {len(args.seeds)} seeds, test accuracy (%), mean ± std:")
    print(table(results, args.rounds))
    report.write_report([args.output_dir], os.path.join(args.output_dir, "report"))
    print(f"report: {os.path.join(args.output_dir, 'report')}")


if __name__ == "__main__":
    main()
