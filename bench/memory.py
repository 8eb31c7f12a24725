r"""Memory over IMP rounds: does peak RSS keep growing after the first rounds?

    python -m bench.memory --rounds=10 --iterations=1000

Runs `imp.run` (LeNet-300-100 / Fashion-MNIST, rewinding to init) in this process
and, after every round, reads the process's resident set size now (VmRSS) and its
peak so far (VmHWM) from /proc/self/status. A model, graph or callback that leaked
per round would make the peak climb round after round; the target is that the peak
after the last round is less than 5% above the peak after round 2. A fresh run
folder under --output_dir is used each time (the previous one is removed first).
"""

import argparse
import shutil
import time

from bench import targets
from keras_lottery.experiments import imp


def memory_mib():
    """(current RSS, peak RSS) of this process in MiB, from /proc/self/status."""
    values = {}
    with open("/proc/self/status") as status:
        for line in status:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                values[key] = int(rest.split()[0]) / 1024  # kB -> MiB
    return values["VmRSS"], values["VmHWM"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--iterations", type=int, default=1000)
    parser.add_argument("--train_examples", type=int, default=20000)
    parser.add_argument("--output_dir", default="bench/out/memory")
    args = parser.parse_args()

    shutil.rmtree(args.output_dir, ignore_errors=True)
    readings = []
    start = time.perf_counter()

    def on_round_end(record):
        current, peak = memory_mib()
        readings.append((record["round"], current, peak, time.perf_counter() - start))
        print(f"round {record['round']}: RSS {current:.0f} MiB, peak {peak:.0f} MiB, "
              f"{record['weights_remaining']:.1%} weights remaining, {readings[-1][3]:.0f} s", flush=True)

    before = memory_mib()
    imp.run(imp.ImpConfig(output_dir=args.output_dir, rounds=args.rounds, iterations=args.iterations,
                          train_examples=args.train_examples, verbose=0), on_round_end=on_round_end)

    print(f"\nbefore the run: RSS {before[0]:.0f} MiB\n")
    print("| round | RSS MiB | peak RSS MiB | peak vs round 2 |")
    print("|---|---|---|---|")
    peak_round_2 = next(peak for round_index, _, peak, _ in readings if round_index == 2)
    for round_index, current, peak, _ in readings:
        print(f"| {round_index} | {current:.0f} | {peak:.0f} | {100 * (peak / peak_round_2 - 1):+.1f}% |")
    growth = readings[-1][2] / peak_round_2 - 1
    print(f"\npeak RSS after round {readings[-1][0]} is {100 * growth:+.1f}% vs after round 2"
          f"{targets.verdict(100 * growth, '<', 5, '+{:g}%')}")
    print(f"reproduce: python -m bench.memory --rounds={args.rounds} --iterations={args.iterations} "
          f"--train_examples={args.train_examples}")


if __name__ == "__main__":
    main()
