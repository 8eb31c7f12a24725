r"""LTH reproduction: LeNet-300-100 on Fashion-MNIST, ticket vs random reinit, several seeds.

    python -m bench.imp_reproduction --iterations=6000 --rounds=14 --seeds=0,1,2

For each seed: an IMP run with rewinding to init (the ticket), then a branch that
takes the ticket's masks round by round and reinitializes the weights randomly
(`--control=random_reinit --masks_from=<ticket run>`, LTH's random-reinit control).
LTH settings (Adam 1.2e-3, batch 60, Dense 20% / output 10% per round, 5,000
validation examples) except the iterations per round, which `--iterations` sets.
Runs resume: rerunning the command finishes what is missing. Prints a Markdown table
(mean ± std over seeds, and the range) for bench/RESULTS.md.
"""

import argparse
import os
import statistics

from keras_lottery import imp


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


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--rounds", type=int, default=14)
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0, 1, 2])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output_dir", default="bench/out/imp_reproduction")
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
    seeds = ",".join(str(s) for s in args.seeds)
    print(f"\nReproduce: python -m bench.imp_reproduction --iterations={args.iterations} "
          f"--rounds={args.rounds} --seeds={seeds}")


if __name__ == "__main__":
    main()
