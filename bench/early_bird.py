r"""Early-bird tickets vs tickets drawn after full training, on Fashion-MNIST.

    python -m bench.early_bird --target_sparsity=0.8 --epochs=20 --seeds=0,1,2
    python -m bench.early_bird --model=conv2 --criterion=l1 --target_sparsity=0.5 --epochs=8 \
        --train_examples=4000 --validation_examples=2000 --seeds=0,1,2   # channel tickets (L1 of filters)
    python -m bench.early_bird --model=conv4_bn --criterion=bn_gamma --target_sparsity=0.5 --epochs=8 \
        --train_examples=4000 --validation_examples=2000 --checks_per_epoch=4 --seeds=0,1,2   # the paper's criterion

Per seed, two flows with the same seed, model and data:
  early bird:    search until the mask is stable (EarlyBirdCallback, queue 5, epsilon 0.1),
                 draw, retrain the ticket from the drawn weights for --epochs;
  full training: train the dense network for --epochs, draw the ticket from the final
                 weights, retrain it the same way.
Prints the epoch the early-bird ticket was drawn, both retrained accuracies and what
each flow spent: training iterations, the same counted in dense-network iterations by
multiply-adds (a channel ticket is retrained as a narrower network, as in the paper),
and seconds of training measured in this process (ratios only; noisy). Run folders land in bench/out/early_bird and
resume (a finished run is read back).
"""

import argparse
import os
import statistics

from bench import targets
from keras_lottery.experiments import early_bird_flow


def _cost(summary, key):
    """A flow's cost; summaries written before these keys existed (same-width retraining) are read alike."""
    if key in summary:
        return summary[key]
    if key == "total_train_seconds":
        return summary["search"]["train_seconds"] + summary["retrain"]["train_seconds"]
    return summary["total_iterations"]  # dense iterations: the retrained network was the dense one


def _ratio(early, full, key):
    return _cost(early, key) / _cost(full, key)


def plot(rows, args, path):
    """The detector's mask distance at each check of the full-training flow, one line per seed, draws marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for index, (seed, early, full) in enumerate(rows):
        epochs = [(check + 1) / args.checks_per_epoch for check in range(len(full["distances"]))]
        points = [(epoch, distance) for epoch, distance in zip(epochs, full["distances"]) if distance is not None]
        axes.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=2, color=f"C{index}",
                  label=f"seed {seed}")
        if early["drawn_epoch"] is not None:
            axes.axvline(early["drawn_epoch"], color=f"C{index}", linestyle=":", linewidth=1)
    axes.axhline(0.1, color="grey", linestyle="--", linewidth=1,
                 label="epsilon 0.1 (drawn when the last 5 masks are all within it)")
    axes.set_xlabel("epoch of full training (dotted: the early-bird draw)")
    axes.set_ylabel("max mask distance over the queue")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    axes.set_title(f"{args.model} / Fashion-MNIST: early-bird mask distance ({args.criterion}, "
                   f"{args.target_sparsity:g} sparsity)", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target_sparsity", type=float, default=0.8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0, 1, 2])
    parser.add_argument("--model", default="lenet_300_100")
    parser.add_argument("--criterion", default="magnitude", choices=list(early_bird_flow.FLOW_CRITERIA))
    parser.add_argument("--train_examples", type=int, default=None)
    parser.add_argument("--validation_examples", type=int, default=5000)
    parser.add_argument("--checks_per_epoch", type=int, default=1)
    parser.add_argument("--lr_milestones", default=None,
                        help="the 'step' schedule's milestones, e.g. 8ep,12ep (a 160-epoch recipe's 80ep,120ep scaled "
                             "to 16 epochs); default: the model's recipe")
    parser.add_argument("--output_dir", default="bench/out/early_bird")
    parser.add_argument("--plot", default=None, help="also draw the mask distance per check to this PNG")
    args = parser.parse_args()

    # LeNet/magnitude runs keep their original folder names, so earlier results are read back.
    default = (args.model, args.criterion, args.train_examples, args.validation_examples, args.checks_per_epoch,
               args.lr_milestones) == ("lenet_300_100", "magnitude", None, 5000, 1, None)
    variant = "" if default else (f"_{args.model}_{args.criterion}_n{args.train_examples or 'all'}"
                                  f"_v{args.validation_examples}"
                                  + (f"_c{args.checks_per_epoch}" if args.checks_per_epoch > 1 else "")
                                  + (f"_m{args.lr_milestones.replace(',', '-')}" if args.lr_milestones else ""))
    rows = []
    for seed in args.seeds:
        flows = {}
        for name, stop in (("early_bird", True), ("full", False)):
            config = early_bird_flow.EarlyBirdConfig(
                output_dir=os.path.join(args.output_dir, f"{name}_s{args.target_sparsity:g}_seed{seed}{variant}"),
                target_sparsity=args.target_sparsity, search_epochs=args.epochs, retrain_epochs=args.epochs,
                model=args.model, criterion=args.criterion, train_examples=args.train_examples,
                validation_examples=args.validation_examples, checks_per_epoch=args.checks_per_epoch,
                stop_at_draw=stop, seed=seed, verbose=0,
                **({"lr_milestones": args.lr_milestones} if args.lr_milestones else {}),
            )
            flows[name] = early_bird_flow.run(config)
            print(f"seed {seed} {name}: drawn epoch {flows[name]['drawn_epoch']}, retrained test accuracy "
                  f"{flows[name]['retrain']['test_accuracy']:.4f}, {flows[name]['total_iterations']} iterations",
                  flush=True)
        rows.append((seed, flows["early_bird"], flows["full"]))

    print(f"\n{args.model} / Fashion-MNIST, {args.criterion} masks at sparsity {args.target_sparsity:g}, "
          f"{args.checks_per_epoch} mask check(s) per epoch, "
          f"{args.epochs} epochs of full training, retraining {args.epochs} epochs from the drawn weights:\n")
    print("| seed | epoch drawn (of full) | early-bird ticket acc. | full-training ticket acc. | difference | "
          "iterations: early bird / full | cost ratio: iterations | cost ratio: multiply-adds | cost ratio: seconds |")
    print("|---|---|---|---|---|---|---|---|---|")
    for seed, early, full in rows:
        difference = 100 * (early["retrain"]["test_accuracy"] - full["retrain"]["test_accuracy"])
        print(f"| {seed} | {early['drawn_epoch']} ({args.epochs}) | {100 * early['retrain']['test_accuracy']:.2f} | "
              f"{100 * full['retrain']['test_accuracy']:.2f} | {difference:+.2f} | {early['total_iterations']} / "
              f"{full['total_iterations']} | {_ratio(early, full, 'total_iterations'):.3f} | "
              f"{_ratio(early, full, 'total_dense_iterations'):.3f} | {_ratio(early, full, 'total_train_seconds'):.3f} |")
    drawn = [early["drawn_epoch"] or args.epochs for _, early, _ in rows]
    differences = [100 * (e["retrain"]["test_accuracy"] - f["retrain"]["test_accuracy"]) for _, e, f in rows]
    first = rows[0][1]
    retrain_share = first["retrain"].get("multiply_adds_per_example", 1) / first["search"].get(
        "multiply_adds_per_example", 1)
    drawn_share = statistics.mean(drawn) / args.epochs
    difference = statistics.mean(differences)
    cost = statistics.mean(_ratio(e, f, "total_dense_iterations") for _, e, f in rows)
    print(f"\nmean: drawn at {drawn_share:.0%} of full training{targets.verdict(drawn_share, '<=', 0.2, '{:.0%}')}; "
          f"accuracy difference {difference:+.2f} pt{targets.within(difference, 0.5)}; cost ratio by "
          f"multiply-adds {cost:.3f}{targets.verdict(cost, '<=', 0.5)}, "
          f"by iterations {statistics.mean(_ratio(e, f, 'total_iterations') for _, e, f in rows):.3f}, "
          f"by seconds {statistics.mean(_ratio(e, f, 'total_train_seconds') for _, e, f in rows):.3f}; "
          f"a retraining iteration costs {retrain_share:.3f} of a dense one (seed {rows[0][0]})")
    seeds = ",".join(str(s) for s in args.seeds)
    extra = "" if not variant else (f" --model={args.model} --criterion={args.criterion}"
                                    + (f" --train_examples={args.train_examples}" if args.train_examples else "")
                                    + f" --validation_examples={args.validation_examples}"
                                    + f" --checks_per_epoch={args.checks_per_epoch}"
                                    + (f" --lr_milestones={args.lr_milestones}" if args.lr_milestones else ""))
    if args.plot:
        plot(rows, args, args.plot)
        print(f"Plot: {args.plot}")
    print(f"Reproduce: python -m bench.early_bird --target_sparsity={args.target_sparsity:g} "
          f"--epochs={args.epochs} --seeds={seeds}{extra}")


if __name__ == "__main__":
    main()
