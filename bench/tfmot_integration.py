r"""tfmot's own integration suite with `prune_low_magnitude` replaced by keras_lottery's.

    python -m bench.tfmot_integration --tests_dir=/path/to/tfmot_tests

`--tests_dir` holds three files of tensorflow/model-optimization at tag v0.8.1 (the tfmot
this package pins), which cannot be committed here (they are tfmot's code) nor fetched
by CI (no network):

    prune_integration_test.py  tensorflow_model_optimization/python/core/sparsity/keras/prune_integration_test.py
    test_utils.py              tensorflow_model_optimization/python/core/sparsity/keras/test_utils.py
    keras_test_utils.py        tensorflow_model_optimization/python/core/keras/test_utils.py

e.g. `git show v0.8.1:<path> > <tests_dir>/<name>` in a clone. The installed tfmot wheel
lacks the two test_utils modules; they are loaded from `--tests_dir` under their
package names. The suite runs three times, each in a fresh pytest process, from a
scratch folder: with tfmot's own function (the reference), with
`keras_lottery.prune_low_magnitude`, and with it at `share_layers=True` (tfmot's way of
wrapping the model's own layers). Prints passed / failed / skipped of each and the
tests that fail.
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import textwrap

FILES = ("prune_integration_test.py", "test_utils.py", "keras_test_utils.py")

_CONFTEST = '''
import importlib.util, os, sys
folder = os.environ["KERAS_LOTTERY_TFMOT_TESTS"]
for name, file in (("tensorflow_model_optimization.python.core.sparsity.keras.test_utils", "test_utils.py"),
                   ("tensorflow_model_optimization.python.core.keras.test_utils", "keras_test_utils.py")):
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, file))
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
variant = os.environ["KERAS_LOTTERY_TFMOT_VARIANT"]
if variant != "tfmot":
    import functools
    import keras_lottery
    from tensorflow_model_optimization.python.core.sparsity.keras import prune
    prune.prune_low_magnitude = (keras_lottery.prune_low_magnitude if variant == "keras_lottery" else
                                 functools.partial(keras_lottery.prune_low_magnitude, share_layers=True))
'''

VARIANTS = {
    "tfmot": "tfmot.sparsity.keras.prune_low_magnitude (reference)",
    "keras_lottery": "keras_lottery.prune_low_magnitude",
    "keras_lottery_shared": "keras_lottery.prune_low_magnitude(..., share_layers=True)",
}


def run_suite(tests_dir, variant):
    """(counts dict, failed test names, pytest's last line) of one run of the suite."""
    with tempfile.TemporaryDirectory() as scratch:
        with open(os.path.join(scratch, "conftest.py"), "w") as file:
            file.write(textwrap.dedent(_CONFTEST))
        with open(os.path.join(tests_dir, FILES[0])) as source, \
                open(os.path.join(scratch, FILES[0]), "w") as target:
            target.write(source.read())
        environment = {**os.environ, "KERAS_LOTTERY_TFMOT_TESTS": os.path.abspath(tests_dir),
                       "KERAS_LOTTERY_TFMOT_VARIANT": variant, "TF_USE_LEGACY_KERAS": "1",
                       "CUDA_VISIBLE_DEVICES": ""}
        result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rf", FILES[0]],
                                cwd=scratch, env=environment, capture_output=True, text=True)
    summary = [line for line in result.stdout.splitlines() if re.search(r"\d+ (passed|failed)", line)]
    last = summary[-1] if summary else result.stdout[-2000:] + result.stderr[-2000:]
    counts = {kind: int(number) for number, kind in re.findall(r"(\d+) (passed|failed|skipped|error)", last)}
    failed = sorted(set(re.findall(r"^FAILED \S+::(\S+)", result.stdout, re.MULTILINE)))
    return counts, failed, last


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests_dir", required=True, help=f"the folder holding {', '.join(FILES)} of tfmot v0.8.1")
    args = parser.parse_args()
    missing = [name for name in FILES if not os.path.isfile(os.path.join(args.tests_dir, name))]
    if missing:
        raise SystemExit(f"error: {args.tests_dir} lacks {', '.join(missing)}: see python -m bench.tfmot_integration -h.")
    for variant, label in VARIANTS.items():
        counts, failed, last = run_suite(args.tests_dir, variant)
        print(f"{label}: " + ", ".join(f"{counts.get(kind, 0)} {kind}" for kind in ("passed", "failed", "skipped")))
        for name in failed:
            print(f"    failed: {name}")
        if not counts:
            print(f"    (no result: {last})")
    print(f"Reproduce: python -m bench.tfmot_integration --tests_dir={args.tests_dir}")


if __name__ == "__main__":
    main()
