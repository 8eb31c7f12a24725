r"""Sign-flip pruning vs magnitude IMP: accuracy at 20/10/5/2% weights remaining vs iterations spent.

    python -m bench.sign_flip --iterations=6000 --seeds=0,1,2 [--shard=0/2]

LeNet-300-100 on Fashion-MNIST with the LTH settings (Adam 1.2e-3, batch 60, Dense
20% / output 10% per round, rewind to init), `--iterations` per IMP round. Seven methods:

* magnitude IMP, sign-flip IMP, hybrid IMP (alpha = 1): `imp.run` with
  `criterion=...`, `--rounds` rounds; each target is read at the IMP round whose
  weights remaining is nearest (21.1%, 10.8%, 4.5%, 1.9%). Magnitude IMP shares its
  run folders with `bench.imp_reproduction` (same config; more rounds resume them).
* one-pass sign-flip, one-pass hybrid, and one-pass magnitude (gradual magnitude
  pruning, Zhu & Gupta: the control that tells whether the flips matter):
  `mode='one_pass'`, one training run of
  `--one_pass_factor` x `--iterations` iterations, masks updated 20 times between 20%
  and 70% of it, to the same per-layer sparsity as the IMP round of the target.
* random pruning: a random mask at that sparsity at initialization, trained for
  `--iterations` (LTH's random-pruning control).

Rerunning resumes finished runs; `--shard=i/n` runs every n-th job (start n processes
to share the work), `--report` only prints the table from what is on disk. Prints a
Markdown table for bench/RESULTS.md and draws `--plot`.
"""

import argparse
import dataclasses
import os
import statistics

from keras_lottery.experiments import imp
from keras_lottery.experiments import run_folder

TARGETS = {"20%": 7, "10%": 10, "5%": 14, "2%": 18}  # nearest IMP rounds (LTH rates, LeNet)
IMP_METHODS = ("magnitude", "sign_flip", "hybrid")
ONE_PASS_METHODS = ("sign_flip", "hybrid", "magnitude")  # magnitude: the control for the criterion


def _common(args, seed):
    return dict(dataset="fashion_mnist", model="lenet_300_100", iterations=args.iterations, seed=seed,
                data_dir=args.data_dir, verbose=0)


def jobs(args):
    """(method, target or None, seed, config) for every run, cheapest key results first."""
    listed = []
    for target, rounds in TARGETS.items():
        for seed in args.seeds:
            for criterion in ONE_PASS_METHODS:
                listed.append((f"one-pass {criterion}", target, seed, imp.ImpConfig(
                    output_dir=os.path.join(args.output_dir, f"one_pass_{criterion}_r{rounds}_seed{seed}"),
                    mode="one_pass", criterion=criterion, rounds=rounds,
                    one_pass_iterations=args.one_pass_factor * args.iterations, **_common(args, seed))))
            listed.append(("random pruning", target, seed, imp.ImpConfig(
                output_dir=os.path.join(args.output_dir, f"random_r{rounds}_seed{seed}"),
                mode="one_pass", criterion="random", rounds=rounds, prune_begin=0.0, prune_end=0.0,
                one_pass_iterations=args.iterations, **_common(args, seed))))
    rounds = max(TARGETS.values())
    for seed in args.seeds:
        for criterion in IMP_METHODS:
            folder = (os.path.join(args.reproduction_dir, f"ticket_seed{seed}") if criterion == "magnitude"
                      else os.path.join(args.output_dir, f"imp_{criterion}_seed{seed}"))
            listed.append((f"{criterion} IMP", None, seed, imp.ImpConfig(
                output_dir=folder, criterion=criterion, rounds=rounds, **_common(args, seed))))
    # One-pass at 10% first (the headline), then the IMP runs, then the rest.
    return sorted(listed, key=lambda job: (job[1] != "10%", job[1] is not None))


def _format(values):
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}"


def collect(args):
    """dict (method, target) -> list of (weights remaining, accuracy, iterations spent), one per seed.

    A run folder made with other settings than the ones printed (another --iterations, a
    changed default) is left out, and named with the fields that differ: mixing it in
    would average different experiments.
    """
    results = {}
    for method, target, seed, config in jobs(args):
        folder = run_folder.RunFolder(config.output_dir)
        summary = folder.load_summary() if os.path.exists(config.output_dir) else None
        if summary is None:
            continue
        try:
            folder.check_config(summary, dataclasses.asdict(config.resolved()), imp.config_defaults())
        except run_folder.ConfigMismatchError as error:
            print(f"left out, made with other settings: {str(error).split(' (', 1)[-1].split(').')[0]} "
                  f"({config.output_dir})")
            continue
        if target is not None:
            record = summary["rounds"][0]
            results.setdefault((method, target), []).append(
                (record["weights_remaining"], record["test_accuracy"], record["iterations"]))
            continue
        spent = 0
        for record in summary["rounds"]:
            spent += record["iterations"]
            for name, rounds in TARGETS.items():
                if record["round"] == rounds:
                    results.setdefault((method, name), []).append(
                        (record["weights_remaining"], record["test_accuracy"], spent))
    return results


METHODS = ("magnitude IMP", "sign_flip IMP", "hybrid IMP", "one-pass sign_flip", "one-pass hybrid",
           "one-pass magnitude", "random pruning")


def report(args, results):
    print(f"\nLeNet-300-100 / Fashion-MNIST, {args.iterations} iterations per IMP round, seeds {args.seeds}: "
          "test accuracy % (mean ± std over seeds) and training iterations spent to get there\n")
    print("| method | " + " | ".join(f"{t} remaining: accuracy | iterations" for t in TARGETS) + " |")
    print("|---|" + "---|---|" * len(TARGETS))
    for method in METHODS:
        cells = []
        for target in TARGETS:
            rows = results.get((method, target), [])
            if not rows:
                cells += ["—", "—"]
                continue
            seeds = f" (n={len(rows)})" if len(rows) != len(args.seeds) else ""
            cells += [f"{_format([r[1] for r in rows])}{seeds} @ {100 * rows[0][0]:.1f}%",
                      f"{statistics.mean(r[2] for r in rows):,.0f}"]
        print(f"| {method} | " + " | ".join(cells) + " |")
    imp_rows = results.get(("magnitude IMP", "10%"), [])
    for method in ("one-pass sign_flip", "one-pass hybrid", "one-pass magnitude"):
        rows = results.get((method, "10%"), [])
        if imp_rows and rows:
            gap = statistics.mean(r[1] for r in rows) - statistics.mean(r[1] for r in imp_rows)
            cost = statistics.mean(r[2] for r in rows) / statistics.mean(r[2] for r in imp_rows)
            met = gap >= -0.005 and cost <= 1 / 3
            print(f"\nTarget at 10% ({method}): accuracy {100 * gap:+.2f} pt vs magnitude IMP (need >= -0.50), "
                  f"iterations {cost:.2f}x IMP's (need <= 0.33): {'met' if met else 'NOT met'}")


def plot(results, path, iterations):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib import ticker

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, method in enumerate(METHODS):
        points = [(statistics.mean(r[0] for r in results[method, t]), statistics.mean(r[1] for r in results[method, t]))
                  for t in TARGETS if results.get((method, t))]
        if not points:
            continue
        color = f"C{index}"
        style = "o-" if "IMP" in method else ("s--" if "one-pass" in method else "x:")
        left.plot([100 * p[0] for p in points], [100 * p[1] for p in points], style, color=color, label=method)
        rows = results.get((method, "10%"))
        if rows:  # the headline comparison: accuracy at 10.8% remaining vs its cost
            accuracies = [100 * r[1] for r in rows]
            right.errorbar([statistics.mean(r[2] for r in rows)], [statistics.mean(accuracies)],
                           yerr=[[statistics.mean(accuracies) - min(accuracies)], [max(accuracies) - statistics.mean(accuracies)]],
                           fmt=style[0], color=color, capsize=3, label=method)
    left.set_xscale("log")
    left.invert_xaxis()
    ticks = [21.1, 10.8, 4.5, 1.9]
    left.set_xticks(ticks, [f"{t:g}" for t in ticks])
    left.xaxis.set_minor_formatter(ticker.NullFormatter())
    left.set_xlabel("weights remaining (%)")
    right.set_xscale("log")
    right.set_xlabel("training iterations spent to reach 10.8% remaining (bars: min-max over seeds)")
    for axis in (left, right):
        axis.set_ylabel("test accuracy (%)")
        axis.grid(alpha=0.3)
    left.legend(loc="lower left", fontsize=8)
    figure.suptitle(f"Sign-flip vs magnitude pruning, LeNet-300-100 / Fashion-MNIST ({iterations} iterations per "
                    "IMP round; mean of seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--one_pass_factor", type=int, default=3, help="one-pass length in IMP rounds")
    parser.add_argument("--seeds", type=lambda text: [int(s) for s in text.split(",")], default=[0, 1, 2])
    parser.add_argument("--data_dir", default=None)
    parser.add_argument("--output_dir", default="bench/out/sign_flip")
    parser.add_argument("--reproduction_dir", default="bench/out/imp_reproduction",
                        help="magnitude IMP run folders (shared with bench.imp_reproduction)")
    parser.add_argument("--shard", default="0/1", help="i/n: run every n-th job starting at i")
    parser.add_argument("--report", action="store_true", help="only print the table from finished runs")
    parser.add_argument("--methods", default=None, help="comma-separated: only run these methods (e.g. 'one-pass magnitude')")
    parser.add_argument("--plot", default="bench/sign_flip.png")
    args = parser.parse_args()

    if not args.report:
        index, count = (int(part) for part in args.shard.split("/"))
        selected = [job for job in jobs(args) if args.methods is None or job[0] in args.methods.split(",")]
        for number, (method, target, seed, config) in enumerate(selected):
            if number % count != index:
                continue

            def progress(record, method=method, seed=seed):
                print(f"{method} seed {seed} round {record['round']}: {100 * record['weights_remaining']:.2f}% "
                      f"remaining, test accuracy {record['test_accuracy']:.4f}, {record['train_seconds']:.0f} s",
                      flush=True)

            imp.run(config, on_round_end=progress)
    results = collect(args)
    report(args, results)
    plot(results, args.plot, args.iterations)
    seeds = ",".join(str(s) for s in args.seeds)
    print(f"\nPlot: {args.plot}\nReproduce: python -m bench.sign_flip --iterations={args.iterations} "
          f"--one_pass_factor={args.one_pass_factor} --seeds={seeds}")


if __name__ == "__main__":
    main()
