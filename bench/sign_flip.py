r"""Sign-flip pruning vs magnitude IMP: accuracy at 20/10/5/2/1% weights remaining vs iterations spent.

    python -m bench.sign_flip --iterations=6000 --seeds=0,1,2 [--shard=0/2]
    python -m bench.sign_flip --model=conv4 --targets=10,1,0.5 --iterations=6000 --seeds=0,1,2
    python -m bench.sign_flip --iterations=2000 --targets=10,2,1,0.5 --rewind_steps=0,100

LeNet-300-100 (or `--model`: conv2, conv4, conv6, ...) on Fashion-MNIST with the LTH
settings (LeNet: Adam 1.2e-3, batch 60, Dense 20% / output 10% per round; Conv-n: conv
10%, fc 20%, output at half rate; rewind to init), `--iterations` per IMP round. Methods:

* magnitude IMP, sign-flip IMP, hybrid IMP (alpha = 1): `imp.run` with
  `criterion=...`; each target (`--targets`, % weights remaining) is read at the IMP round
  whose weights remaining is nearest (LeNet: 21.1%, 10.8%, 4.5%, 1.9%, 0.96% at rounds 7,
  10, 14, 18, 21), so the IMP runs go to the round of the smallest target. Magnitude IMP
  of LeNet shares its run folders with `bench.imp_reproduction` (same config; more rounds
  resume them).
* one-pass sign-flip, one-pass hybrid, and one-pass magnitude (gradual magnitude
  pruning, Zhu & Gupta: the control that tells whether the flips matter):
  `mode='one_pass'`, one training run of
  `--one_pass_factor` x `--iterations` iterations, masks updated 20 times between 20%
  and 70% of it, to the same per-layer sparsity as the IMP round of the target.
* one-pass on_flip hybrid (`prune_schedule='on_flip'`): the same run, but each check
  (every `--flip_check_every` iterations between 20% and 70%) prunes the weights whose
  sign changed since init, capped at the per-layer target, the smallest |w| / (1 + flips)
  first when the cap binds; the last check fills the target by the criterion (|w| of
  the weights that never flipped), so the run ends at the IMP round's weights remaining.
* one-pass on_flip hybrid, gradual floor (`on_flip_floor='gradual'`): the same checks,
  but each also keeps at most what the cubic gradual schedule keeps at its step (the
  cubic of the same window and target, sampled at the flip checks rather than at 20
  updates): the flipped weights go first, then the smallest |w| / (1 + flips) down to
  that count, i.e. gradual pruning in which flipped weights go first. Its own run folders
  (`one_pass_on_flip_floor_...`), so the on_flip runs without the floor still resume.
* with `--alphas=1,0.5,2`, hybrid IMP and one-pass hybrid once per alpha ("one-pass hybrid
  (alpha 0.5)", ...): |w| / (1 + flips) ** alpha, from magnitude (alpha 0) towards flips first.
* with `--rewind_steps=0,k`, the IMP methods again with rewinding to iteration k
  ("magnitude IMP, rewind to k", ...): each pruned round trains from the weights at k to the
  round's end, and the sign-flip criteria count flips against the weights at k, not at
  initialization (`reference='rewind'`), so flips of the first k steps never count.
* random pruning: a random mask at that sparsity at initialization, trained for
  `--iterations` (LTH's random-pruning control).

Rerunning resumes finished runs; `--shard=i/n` runs every n-th job (start n processes
to share the work), `--methods` only some methods (comma-separated; a comma followed by a
space belongs to a name, as in "one-pass on_flip hybrid, gradual floor"), `--report` only prints the table from
what is on disk. Prints a Markdown table for bench/RESULTS.md (and, for the on_flip
runs, how many weights went for their flips and how many the fill added) and draws `--plot`.
"""

import argparse
import dataclasses
import os
import re
import statistics

from keras_lottery import models
from keras_lottery.experiments import imp
from keras_lottery.experiments import one_pass
from keras_lottery.experiments import rounds as rounds_lib
from keras_lottery.experiments import run_folder
from keras_lottery.sparsity import masks as masks_lib

DEFAULT_MODEL = "lenet_300_100"
IMP_METHODS = ("magnitude", "sign_flip", "hybrid")
ONE_PASS_METHODS = ("sign_flip", "hybrid", "magnitude")  # magnitude: the control for the criterion
# on_flip needs flip counts (no magnitude). With min_flips=1 every weight that ever flipped is pruned at a
# check, so the fill ranks weights that never flipped, where sign_flip and hybrid are both |w|: the two
# criteria differ only in which hits go first when the cap binds. One of them is enough here.
ON_FLIP_METHODS = ("hybrid",)
HEADLINE = "10%"


def _common(args, seed):
    return dict(dataset="fashion_mnist", model=args.model, iterations=args.iterations, seed=seed,
                data_dir=args.data_dir, verbose=0)


def imp_remaining(model, max_rounds=60):
    """[weights remaining after round r for r = 0..max_rounds] of `model`'s IMP at the LTH rates, to the weight."""
    config = imp.ImpConfig(model=model, dataset="fashion_mnist").resolved()
    dense = models.build(model, (28, 28, 1), 10, 0)
    sizes = {layer.name: int(layer.kernel.shape.num_elements()) for layer in dense.layers if hasattr(layer, "kernel")}
    rates = rounds_lib.layer_rates(config, dense)
    total = sum(sizes.values())
    # Ignored layers (none in the LTH nets) stay dense.
    return [sum(masks_lib.keep_count(size, masks_lib.sparsity_after_rounds(rates[name], r)) if name in rates
                else size for name, size in sizes.items()) / total for r in range(max_rounds + 1)]


def target_rounds(model, percents):
    """dict target label ('10%') -> the IMP round whose weights remaining is nearest that percentage."""
    remaining = imp_remaining(model)
    return {f"{p:g}%": min(range(1, len(remaining)), key=lambda r: abs(remaining[r] - p / 100)) for p in percents}


def _folder(args, name):
    # LeNet's folders keep the names they had before --model, so that its finished runs are found.
    return os.path.join(args.output_dir, name if args.model == DEFAULT_MODEL else f"{args.model}_{name}")


def flip_check_updates(args):
    """The on_flip checks of a one-pass run: one every `--flip_check_every` iterations of its window."""
    # One update spans the whole window (prune_begin to prune_end, the config's defaults).
    _, window, _ = one_pass.pruning_steps(imp.ImpConfig(prune_updates=1), args.one_pass_factor * args.iterations)
    return max(1, window // args.flip_check_every)


def jobs(args):
    """(method, target or None, seed, config) for every run, cheapest key results first."""
    listed = []
    targets = target_rounds(args.model, args.targets)
    for target, rounds in targets.items():
        for seed in args.seeds:
            for criterion, alpha in criterion_variants(ONE_PASS_METHODS, args.alphas):
                listed.append((method_name("one-pass", criterion, alpha), target, seed, imp.ImpConfig(
                    output_dir=_folder(args, f"one_pass_{criterion}{_alpha_tag(alpha)}_r{rounds}_seed{seed}"),
                    mode="one_pass", criterion=criterion, alpha=alpha, rounds=rounds,
                    one_pass_iterations=args.one_pass_factor * args.iterations, **_common(args, seed))))
            for criterion in ON_FLIP_METHODS:
                listed.append((f"one-pass on_flip {criterion}", target, seed, imp.ImpConfig(
                    output_dir=_folder(args, f"one_pass_on_flip_{criterion}_r{rounds}_seed{seed}"),
                    mode="one_pass", criterion=criterion, rounds=rounds, prune_schedule="on_flip",
                    prune_updates=flip_check_updates(args), one_pass_iterations=args.one_pass_factor * args.iterations,
                    **_common(args, seed))))
                listed.append((f"one-pass on_flip {criterion}, gradual floor", target, seed, imp.ImpConfig(
                    output_dir=_folder(args, f"one_pass_on_flip_floor_{criterion}_r{rounds}_seed{seed}"),
                    mode="one_pass", criterion=criterion, rounds=rounds, prune_schedule="on_flip",
                    on_flip_floor="gradual", prune_updates=flip_check_updates(args),
                    one_pass_iterations=args.one_pass_factor * args.iterations, **_common(args, seed))))
            listed.append(("random pruning", target, seed, imp.ImpConfig(
                output_dir=_folder(args, f"random_r{rounds}_seed{seed}"),
                mode="one_pass", criterion="random", rounds=rounds, prune_begin=0.0, prune_end=0.0,
                one_pass_iterations=args.iterations, **_common(args, seed))))
    rounds = max(targets.values())
    for seed in args.seeds:
        for rewind_step in args.rewind_steps:
            for criterion, alpha in criterion_variants(IMP_METHODS, args.alphas):
                tag = _alpha_tag(alpha) + (f"_k{rewind_step}" if rewind_step else "")
                if criterion == "magnitude" and args.model == DEFAULT_MODEL and not rewind_step:
                    folder = os.path.join(args.reproduction_dir, f"ticket_seed{seed}")
                else:
                    folder = _folder(args, f"imp_{criterion}{tag}_seed{seed}")
                listed.append((imp_method(criterion, rewind_step, alpha), None, seed, imp.ImpConfig(
                    output_dir=folder, criterion=criterion, alpha=alpha, rounds=rounds, rewind_step=rewind_step,
                    **_common(args, seed))))
    # One-pass at 10% first (the headline), then the IMP runs, then the rest.
    return sorted(listed, key=lambda job: (job[1] != HEADLINE, job[1] is not None))


def _format(values):
    mean = statistics.mean(values)
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * mean:.2f} ± {100 * spread:.2f}"


def _flip_share(record):
    """Of the weights an on_flip run pruned, the share that went for their sign flips (None for other runs)."""
    history = record.get("on_flip")
    if not history:
        return None
    pruned = sum(layer["pruned_for_flips"] + layer["filled"] for layer in history.values())
    return sum(layer["pruned_for_flips"] for layer in history.values()) / pruned if pruned else 0.0


def collect(args):
    """dict (method, target) -> list of (weights remaining, accuracy, iterations spent, flip share or None, seed),
    one per seed.

    A run folder made with other settings than the ones printed (another --iterations, a
    changed default) is left out, and named with the fields that differ: mixing it in
    would average different experiments.
    """
    results = {}
    targets = target_rounds(args.model, args.targets)
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
                (record["weights_remaining"], record["test_accuracy"], record["iterations"], _flip_share(record), seed))
            continue
        spent = 0
        for record in summary["rounds"]:
            spent += record["iterations"]
            for name, rounds in targets.items():
                if record["round"] == rounds:
                    results.setdefault((method, name), []).append(
                        (record["weights_remaining"], record["test_accuracy"], spent, None, seed))
    return results


METHODS = ("magnitude IMP", "sign_flip IMP", "hybrid IMP", "one-pass sign_flip", "one-pass hybrid",
           "one-pass magnitude", "one-pass on_flip hybrid", "one-pass on_flip hybrid, gradual floor", "random pruning")
ONE_PASS = [method for method in METHODS if method.startswith("one-pass")]


def criterion_variants(criteria, alphas=(1.0,)):
    """(criterion, alpha) of each criterion; hybrid once per alpha of `alphas` (1 first: its plain name)."""
    variants = [(criterion, 1.0) for criterion in criteria]
    if "hybrid" in criteria:
        variants += [("hybrid", float(alpha)) for alpha in alphas if alpha != 1]
    return variants


def _alpha_tag(alpha):
    # alpha 1 keeps the folder names of runs made before --alphas.
    return "" if alpha == 1 else f"_a{alpha:g}"


def method_name(prefix, criterion, alpha=1.0):
    """ "one-pass hybrid", or "one-pass hybrid (alpha 0.5)" for the hybrid criterion at another alpha than 1."""
    return f"{prefix} {criterion}" + (f" (alpha {alpha:g})" if alpha != 1 else "")


def imp_method(criterion, rewind_step=0, alpha=1.0):
    """The name of an IMP method: "sign_flip IMP"; "..., rewind to 100" for rewinding to k > 0; hybrid's alpha."""
    name = f"{criterion} IMP" + (f" (alpha {alpha:g})" if alpha != 1 else "")
    return name if rewind_step == 0 else f"{name}, rewind to {rewind_step}"


def all_methods(rewind_steps=(0,), alphas=(1.0,)):
    """METHODS with hybrid at each other alpha after its alpha-1 row, and the IMP methods of each k > 0."""
    extra_alphas = [alpha for alpha in alphas if alpha != 1]
    imp_rows = [imp_method(criterion, k, alpha) for k in rewind_steps
                for criterion, alpha in criterion_variants(IMP_METHODS, alphas)]
    names = list(METHODS)
    position = names.index("one-pass hybrid") + 1
    names[position:position] = [method_name("one-pass", "hybrid", alpha) for alpha in extra_alphas]
    return tuple(imp_rows) + tuple(names[len(IMP_METHODS):])


def report(args, results):
    targets = list(target_rounds(args.model, args.targets))
    print(f"\n{args.model} / Fashion-MNIST, {args.iterations} iterations per IMP round, seeds {args.seeds}: "
          "test accuracy % (mean ± std over seeds) and training iterations spent to get there\n")
    print("| method | " + " | ".join(f"{t} remaining: accuracy | iterations" for t in targets) + " |")
    print("|---|" + "---|---|" * len(targets))
    for method in all_methods(args.rewind_steps, args.alphas):
        cells = []
        for target in targets:
            rows = results.get((method, target), [])
            if not rows:
                cells += ["—", "—"]
                continue
            seeds = f" (n={len(rows)})" if len(rows) != len(args.seeds) else ""
            cells += [f"{_format([r[1] for r in rows])}{seeds} @ {100 * rows[0][0]:.2f}%",
                      f"{statistics.mean(r[2] for r in rows):,.0f}"]
        print(f"| {method} | " + " | ".join(cells) + " |")
    shares = [(method, target, [r[3] for r in results.get((method, target), [])]) for method in METHODS
              for target in targets if method.startswith("one-pass on_flip")]
    if any(values for _, _, values in shares):
        print("\nShare of the pruned weights that went for their sign flips (the rest: by the criterion, for the "
              "gradual floor or the fill at the last check), mean over seeds:\n")
        print("| method | " + " | ".join(targets) + " |")
        print("|---|" + "---|" * len(targets))
        for method in [m for m in METHODS if m.startswith("one-pass on_flip")]:
            cells = [next((f"{100 * statistics.mean(v):.1f}%" for m, t, v in shares if m == method and t == target
                           and v), "—") for target in targets]
            print(f"| {method} | " + " | ".join(cells) + " |")
    imp_rows = results.get(("magnitude IMP", HEADLINE), [])
    for method in ONE_PASS:
        rows = results.get((method, HEADLINE), [])
        if imp_rows and rows:
            gap = statistics.mean(r[1] for r in rows) - statistics.mean(r[1] for r in imp_rows)
            cost = statistics.mean(r[2] for r in rows) / statistics.mean(r[2] for r in imp_rows)
            met = gap >= -0.005 and cost <= 1 / 3
            print(f"\nTarget at {HEADLINE} ({method}): accuracy {100 * gap:+.2f} pt vs magnitude IMP (need >= -0.50), "
                  f"iterations {cost:.2f}x IMP's (need <= 0.33): {'met' if met else 'NOT met'}")


OFF_SCALE = 5.0  # points: a difference panel's axis stops here; methods beyond it are named "off scale"


def _points(results, method, targets):
    """[(mean weights remaining, mean accuracy)] of `method` at each target it reached."""
    return [(statistics.mean(r[0] for r in rows), statistics.mean(r[1] for r in rows))
            for rows in (results.get((method, target)) for target in targets) if rows]


def _style(method):
    if "IMP" in method:
        return "o--" if "rewind to" in method else "o-"
    return ("v-." if "floor" in method else "d-." if "on_flip" in method
            else "s--" if "one-pass" in method else "x:")


def _difference_panel(axis, results, methods, reference, targets, colors):
    """Accuracy minus `reference`'s at each target (points), paired by seed (the same initialization and data
    order): the mean and std over seeds of the per-seed differences, for `methods`."""
    reference_by_seed = {target: {r[4]: r[1] for r in results.get((reference, target), [])} for target in targets}
    drawn = []
    for method in methods:
        if method == reference:
            continue
        points = []
        for target in targets:
            rows = [r for r in results.get((method, target), []) if r[4] in reference_by_seed[target]]
            if rows:
                differences = [100 * (r[1] - reference_by_seed[target][r[4]]) for r in rows]
                points.append((statistics.mean(r[0] for r in rows), statistics.mean(differences),
                               statistics.stdev(differences) if len(differences) > 1 else 0.0))
        if not points:
            continue
        means = [p[1] for p in points]
        off = min(means) < -OFF_SCALE or max(means) > OFF_SCALE
        axis.errorbar([100 * p[0] for p in points], means, yerr=[p[2] for p in points],
                      fmt=_style(method), color=colors[method], capsize=2, markersize=4,
                      label=method + (" (off scale)" if off else ""))
        drawn += [d for d in means if abs(d) <= OFF_SCALE]
    axis.axhline(0.0, color="black", linewidth=0.8)
    if drawn:
        axis.set_ylim(min(drawn + [0.0]) - 0.5, max(drawn + [0.0]) + 0.5)
    axis.set_ylabel(f"accuracy minus {reference}'s (points)")
    axis.set_title(f"vs {reference}, paired by seed (bars: std of the differences)", fontsize="medium")
    axis.legend(loc="upper left", fontsize=7)


def plot(results, path, iterations, model, targets, methods=METHODS):
    """Accuracy vs weights remaining (every method); each family's difference from its magnitude control;
    and, when the headline target was run, accuracy there vs the iterations spent."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib import ticker

    headline = any(results.get((method, HEADLINE)) for method in methods)
    figure, axes = plt.subplots(2, 2, figsize=(14, 10)) if headline else plt.subplots(1, 3, figsize=(19, 5.5))
    axes = list(axes.ravel())
    overview, imp_panel, one_pass_panel = axes[0], axes[2 if headline else 1], axes[3 if headline else 2]
    palette = plt.get_cmap("tab20")
    colors = {method: palette(index % 20) for index, method in enumerate(methods)}  # 20 distinct before a repeat
    for method in methods:
        points = _points(results, method, targets)
        if points:
            overview.plot([100 * p[0] for p in points], [100 * p[1] for p in points], _style(method),
                          color=colors[method], label=method, markersize=4)
        rows = results.get((method, HEADLINE))
        if headline and rows:  # the headline comparison: accuracy at the 10% target vs its cost
            accuracies = [100 * r[1] for r in rows]
            axes[1].errorbar([statistics.mean(r[2] for r in rows)], [statistics.mean(accuracies)],
                             yerr=[[statistics.mean(accuracies) - min(accuracies)],
                                   [max(accuracies) - statistics.mean(accuracies)]],
                             fmt=_style(method)[0], color=colors[method], capsize=3, label=method)
    _difference_panel(imp_panel, results, [m for m in methods if "IMP" in m], "magnitude IMP", targets, colors)
    _difference_panel(one_pass_panel, results, [m for m in methods if m.startswith("one-pass")],
                      "one-pass magnitude", targets, colors)
    # A tick at each target's weights remaining, as the runs measured it.
    ticks = sorted({round(100 * results[m, t][0][0], 2) for t in targets for m in methods if results.get((m, t))})
    for axis in (overview, imp_panel, one_pass_panel):
        axis.set_xscale("log")
        axis.invert_xaxis()
        if ticks:
            axis.set_xticks(ticks, [f"{t:g}" for t in ticks])
        axis.xaxis.set_minor_formatter(ticker.NullFormatter())
        axis.set_xlabel("weights remaining (%)")
        axis.grid(alpha=0.3)
    overview.set_ylabel("test accuracy (%)")
    overview.set_title("every method", fontsize="medium")
    overview.legend(loc="lower left", fontsize=7)
    if headline:
        axes[1].set_xscale("log")
        axes[1].set_xlabel(f"training iterations spent to reach the {HEADLINE} target (bars: min-max over seeds)")
        axes[1].set_ylabel("test accuracy (%)")
        axes[1].grid(alpha=0.3)
    figure.suptitle(f"Sign-flip vs magnitude pruning, {model} / Fashion-MNIST ({iterations} iterations per "
                    "IMP round; mean of seeds)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def selected_methods(text, rewind_steps=(0,), alphas=(1.0,)):
    """The method names of `--methods`: split at each comma not followed by a space (names hold ', ').

    Raises:
      ValueError: a name that is no method, with the known ones.
    """
    names = [name.strip() for name in re.split(r",(?! )", text) if name.strip()]
    known = all_methods(rewind_steps, alphas)
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}: choose among {list(known)}")
    return names


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6000)
    parser.add_argument("--model", default=DEFAULT_MODEL, help="lenet_300_100, conv2, conv4, conv6, ...")
    parser.add_argument("--targets", type=lambda text: [float(p) for p in text.split(",")], default=[20, 10, 5, 2, 1],
                        help="%% weights remaining, comma-separated; each read at the nearest IMP round")
    parser.add_argument("--flip_check_every", type=int, default=100,
                        help="one-pass on_flip: iterations between two checks for flipped weights")
    parser.add_argument("--rewind_steps", type=lambda text: [int(k) for k in text.split(",")], default=[0],
                        help="IMP methods: rewind to each of these iterations (0: init); with k > 0 the sign-flip "
                             "criteria count flips since the weights at k")
    parser.add_argument("--alphas", type=lambda text: [float(a) for a in text.split(",")], default=[1.0],
                        help="the hybrid criterion's exponents, |w| / (1 + flips) ** alpha: its IMP and one-pass "
                             "methods run once per alpha (1: the plain 'hybrid' rows)")
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
    models.get(args.model)  # an unknown model fails here, with the known names
    if args.flip_check_every < 1:
        parser.error("--flip_check_every must be >= 1.")
    if any(k < 0 or k >= args.iterations for k in args.rewind_steps):
        parser.error(f"--rewind_steps must be in 0..{args.iterations - 1} (the iterations of a round); "
                     f"got {args.rewind_steps}.")

    try:
        methods = None if args.methods is None else selected_methods(args.methods, args.rewind_steps, args.alphas)
    except ValueError as error:
        parser.error(str(error))

    if not args.report:
        index, count = (int(part) for part in args.shard.split("/"))
        selected = [job for job in jobs(args) if methods is None or job[0] in methods]
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
    plot(results, args.plot, args.iterations, args.model, list(target_rounds(args.model, args.targets)),
         all_methods(args.rewind_steps, args.alphas))
    seeds = ",".join(str(s) for s in args.seeds)
    targets = ",".join(f"{t:g}" for t in args.targets)
    print(f"\nPlot: {args.plot}\nReproduce: python -m bench.sign_flip --model={args.model} --targets={targets} "
          f"--iterations={args.iterations} --one_pass_factor={args.one_pass_factor} "
          f"--flip_check_every={args.flip_check_every} --seeds={seeds}"
          + (f" --rewind_steps={','.join(str(k) for k in args.rewind_steps)}" if args.rewind_steps != [0] else "")
          + (f" --alphas={','.join(f'{a:g}' for a in args.alphas)}" if args.alphas != [1.0] else ""))


if __name__ == "__main__":
    main()
