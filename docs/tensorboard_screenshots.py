r"""The README's TensorBoard screenshots, taken from a real TensorBoard in a headless Chromium.

    python docs/tensorboard_screenshots.py                       # two tiny sign-flip runs, ~1 min
    python docs/tensorboard_screenshots.py --runs_dir=runs/mine --prefix=mine_

Makes two small sign-flip IMP runs (seeds 0 and 1, LeNet-300-100 on Fashion-MNIST,
Debian's copy) unless `--runs_dir` names a folder of finished run folders, starts
`python -m tensorboard.main` on them, and saves what a user sees for each view below
into `--output_dir` (PNG, 256 colours). Needs Debian's `chromium` (`apt-get install
chromium`); the screenshots are not part of the tests (tests/experiments/
test_tensorboard_views.py checks the same views through TensorBoard's HTTP API).
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import urllib.request

REPOSITORY = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# name -> the part of TensorBoard's URL that opens the view (its filters are regular expressions).
VIEWS = {
    "rounds": "?tagFilter=imp%2F(test_accuracy%7Cweights_remaining%7Cbest_val_accuracy%7Cearly_stop)#timeseries",
    "round_curves": "?tagFilter=%5E(train%7Cvalidation)%2F&runFilter=seed0#timeseries",
    "flips": "?tagFilter=flips%2Ffc1%2F(fraction_flipped%7Cmean_flips)&runFilter=seed0#timeseries",
    "hparams": "#hparams",
    # Keras's TensorBoard callback's tags (x = "epoch"), as runs made before it was replaced show them.
    "keras_epoch_curves": "?tagFilter=%5Eepoch_(loss%7Caccuracy)&runFilter=seed0#timeseries",
}
DEFAULT_VIEWS = ("rounds", "round_curves", "flips", "hparams")


def _make_runs(folder):
    sys.path.insert(0, REPOSITORY)
    from keras_lottery.experiments import imp

    for seed in (0, 1):
        imp.run(imp.ImpConfig(output_dir=os.path.join(folder, f"seed{seed}"), rounds=3, iterations=300,
                              train_examples=3000, criterion="sign_flip", seed=seed, verbose=0))


def _start_tensorboard(logdir):
    board = subprocess.Popen([sys.executable, "-m", "tensorboard.main", f"--logdir={logdir}", "--port=0",
                              "--host=127.0.0.1", "--load_fast=false"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for line in board.stdout:
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", line)
        if found:
            return board, found.group(1)
    raise RuntimeError("TensorBoard did not start")


def _wait_for_runs(url, count, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        with urllib.request.urlopen(url + "data/runs", timeout=10) as response:
            if len(json.loads(response.read())) >= count:
                return
        time.sleep(0.5)


def _screenshot(url, path, width, height):
    subprocess.run(["chromium", "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                    f"--window-size={width},{height}", "--virtual-time-budget=20000", f"--screenshot={path}", url],
                   check=True, capture_output=True, timeout=120)
    from PIL import Image  # matplotlib's dependency; 256 colours make these ~3x smaller

    Image.open(path).convert("RGB").quantize(256).save(path, optimize=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs_dir", help="a folder of finished run folders (default: make two tiny runs)")
    parser.add_argument("--output_dir", default=os.path.join(REPOSITORY, "docs", "images"))
    parser.add_argument("--prefix", default="tensorboard_", help="file name prefix of the screenshots")
    parser.add_argument("--views", default=",".join(DEFAULT_VIEWS), help=f"comma-separated, of {sorted(VIEWS)}")
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=820)
    args = parser.parse_args()
    views = args.views.split(",")
    unknown = sorted(set(views) - set(VIEWS))
    if unknown:
        parser.error(f"unknown views {unknown}; choose from {sorted(VIEWS)}")
    with tempfile.TemporaryDirectory() as scratch:
        runs_dir = args.runs_dir or scratch
        if not args.runs_dir:
            _make_runs(scratch)
        board, url = _start_tensorboard(runs_dir)
        try:
            _wait_for_runs(url, 2)
            time.sleep(3)  # TensorBoard's first load reads every file
            os.makedirs(args.output_dir, exist_ok=True)
            for view in views:
                path = os.path.join(args.output_dir, f"{args.prefix}{view}.png")
                _screenshot(url + VIEWS[view], path, args.width, args.height)
                print(path)
        finally:
            board.kill()
            board.wait()


if __name__ == "__main__":
    main()
