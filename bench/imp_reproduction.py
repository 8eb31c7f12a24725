r"""LTH reproduction: LeNet-300-100 on Fashion-MNIST, ticket vs random reinit, several seeds.

    python -m bench.imp_reproduction --iterations=6000 --rounds=14 --seeds=0,1,2

For each seed: an IMP run with rewinding to init (the ticket), then a branch that
takes the ticket's masks round by round and reinitializes the weights randomly
(`--control=random_reinit --masks_from=<ticket run>`, LTH's random-reinit control).
LTH settings (Adam 1.2e-3, batch 60, Dense 20% / output 10% per round, 5,000
validation examples) except the iterations per round, which `--iterations` sets.
Runs resume: rerunning the command finishes what is missing. Prints a Markdown table
(mean ± std over seeds, and the range) for bench/RESULTS.md and draws the plot the
LTH paper draws (test accuracy vs weights remaining, log axis) to `--plot`.
"""

import argparse
import os
import statistics

from keras_lottery.experiments import imp


def _runs(args):
    for seed in args.seeds:
        common = dict(
            dataset="fashion_mnist", model="lenet_300_100", rounds=args.rounds, iterations=args.iterations,
            seed=seed, data_dir=args.data_dir, verbose=0,
        )
        ticket_dir = os.path.join(args.output_dir, f"ticket_seed{seed}")
        yield "ticket", seed, imp.ImpConfig(output_dir=ticket_dir, **common)
        yield "random_reinit", seed, imp.ImpConfig(
            output_dir=os.path.join(args.output_dir, f"random_reinit_seed{seed}"),
            control="random_reinit", masks_from=ticket_dir, **common,
        )


def _format(values):
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f} ({100 * min(values):.2f}–{100 * max(values):.2f})"


def _plot(results, seeds, path, title):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    figure, axis = plt.subplots(figsize=(7, 4.5))
    for kind, label, color in (("ticket", "ticket (rewind to init)", "tab:blue"),
                               ("random_reinit", "random reinit (same masks)", "tab:orange")):
        remaining = np.array([r["weights_remaining"] for r in results[kind, seeds[0]]]) * 100
        accuracy = np.array([[r["test_accuracy"] for r in results[kind, s]] for s in seeds]) * 100
        mean, low, high = accuracy.mean(0), accuracy.min(0), accuracy.max(0)
        axis.plot(remaining, mean, "o-", color=color, label=f"{label}, mean of {len(seeds)} seeds")
        axis.fill_between(remaining, low, high, color=color, alpha=0.2)
    dense = np.mean([results["ticket", s][0]["test_accuracy"] for s in seeds]) * 100
    axis.axhline(dense, color="gray", linestyle="--", linewidth=1, label="dense network")
    axis.set_xscale("log")
    axis.invert_xaxis()
    ticks = [100, 51.3, 26.3, 13.5, 7.0, 3.6]
    axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
    axis.set_xlabel("weights remaining (%)")
    axis.set_ylabel("test accuracy (%)")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0, 1, 2])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output_dir", default="bench/out/imp_reproduction")
    parser.add_argument("--plot", default="bench/imp_reproduction.png", help="where to draw the plot")
    args = parser.parse_args()

    results = {}
    for kind, seed, config in _runs(args):
        def progress(record, kind=kind, seed=seed):
            print(f"{kind} seed {seed} round {record['round']}: {100 * record['weights_remaining']:.1f}% "
                  f"remaining, test accuracy {record['test_accuracy']:.4f}, early stop "
                  f"{record['early_stop_iteration']}", flush=True)

        results[kind, seed] = imp.run(config, on_round_end=progress)["rounds"]

    print(f"\nLeNet-300-100 / Fashion-MNIST, {args.iterations} iterations per round, seeds {args.seeds}; "
          "test accuracy % (mean ± std (min–max)) and early-stop iteration (mean):\n")
    print("| round | weights remaining | ticket | random reinit | ticket − reinit | early stop: ticket | early stop: reinit |")
    print("|---|---|---|---|---|---|---|")
    for round_index in range(args.rounds + 1):
        ticket = [results["ticket", s][round_index]["test_accuracy"] for s in args.seeds]
        reinit = [results["random_reinit", s][round_index]["test_accuracy"] for s in args.seeds]
        remaining = results["ticket", args.seeds[0]][round_index]["weights_remaining"]
        stops = {kind: statistics.mean(results[kind, s][round_index]["early_stop_iteration"] for s in args.seeds)
                 for kind in ("ticket", "random_reinit")}
        gap = statistics.mean(t - r for t, r in zip(ticket, reinit))
        print(f"| {round_index} | {100 * remaining:.1f}% | {_format(ticket)} | {_format(reinit)} | "
              f"{100 * gap:+.2f} | {stops['ticket']:.0f} | {stops['random_reinit']:.0f} |")
    _plot(results, args.seeds, args.plot,
          f"LeNet-300-100 / Fashion-MNIST, {args.iterations} iterations per round (band: min–max)")
    print(f"\nPlot: {args.plot}")
    seeds = ",".join(str(s) for s in args.seeds)
    print(f"\nReproduce: python -m bench.imp_reproduction --iterations={args.iterations} "
          f"--rounds={args.rounds} --seeds={seeds}")


if __name__ == "__main__":
    main()
