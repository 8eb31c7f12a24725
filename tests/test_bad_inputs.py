"""The bad-input catalogue: every entry of docs/bad_inputs.md raises its clear error before any work.

Each case names the input, the exception and words the message must contain (the
problem and the fix). Cases that take an output folder also check that nothing was
left there. `test_catalogue_matches_the_docs` keeps this list and the docs table equal.
"""

import json
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from unittest import mock

import numpy as np
import pytest

import keras_lottery as kl
from keras_lottery import data
from keras_lottery import fusion
from keras_lottery import methods
from keras_lottery import models
from keras_lottery import keras
from keras_lottery import report
from keras_lottery import training
from keras_lottery.data import corruptions
from keras_lottery.data import datasets
from keras_lottery.experiments import branch
from keras_lottery.experiments import compare
from keras_lottery.experiments import sparse_config
from keras_lottery.experiments import early_bird_flow
from keras_lottery.experiments import fusion_sweep
from keras_lottery.experiments import imp
from keras_lottery.experiments import instability
from keras_lottery.experiments import run_folder
from keras_lottery.experiments import shift
from keras_lottery.export import tflite as tflite_lib
from keras_lottery.sparsity import early_bird
from keras_lottery.sparsity import flops
from tests import processes
from tests.conftest import _write_idx

DOCS = pathlib.Path(__file__).resolve().parents[1] / "docs" / "bad_inputs.md"
pytestmark = pytest.mark.usefixtures("app_server")  # the app cases run in the app server (tests/processes.py)


def dense():
    return keras.Sequential([keras.layers.InputLayer((8,)), keras.layers.Dense(6, activation="relu", name="fc1"),
                             keras.layers.Dense(3, name="out")])


def pruned():
    return kl.prune_low_magnitude(dense(), kl.OneShot(0.5))


class Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.layer = keras.layers.Dense(2)

    def call(self, inputs):
        return self.layer(inputs)


def keras3_layer():
    keras3 = pytest.importorskip("keras")
    return keras3.layers.Dense(2)


def keras3_subclassed():
    keras3 = pytest.importorskip("keras")

    class Keras3Subclassed(keras3.Model):
        def __init__(self):
            super().__init__()
            self.layer = keras3.layers.Dense(2)

        def call(self, inputs):
            return self.layer(inputs)

    model = Keras3Subclassed()
    model(np.zeros((1, 4), np.float32))
    return model


def with_layer_norm():
    inputs = keras.Input((8,))
    hidden = keras.layers.Dense(6, activation="relu", name="fc1")(inputs)
    outputs = keras.layers.Dense(3, name="out")(keras.layers.LayerNormalization(name="norm")(hidden))
    return keras.Model(inputs, outputs)


def imp_config(tiny_fashion, output_dir, **overrides):
    settings = dict(output_dir=str(output_dir), dataset="fashion_mnist", data_dir=tiny_fashion, rounds=1,
                    iterations=20, batch_size=20, validation_examples=100, verbose=0)
    settings.update(overrides)
    return imp.ImpConfig(**settings)


QUICK = dict(evaluations_per_round=2)  # the finished run below: 2 evaluations per round, not 20
_FINISHED = {}  # "factory": this module's tmp_path_factory; "run": the finished run, once made


@pytest.fixture(scope="module", autouse=True)
def _finished_run_cache(tmp_path_factory):
    _FINISHED["factory"] = tmp_path_factory
    yield
    _FINISHED.clear()


def finished_run(tiny_fashion, output_dir):
    """Puts a finished 1-round run (`imp_config(**QUICK)`) in output_dir: a copy of one trained once per module."""
    if "run" not in _FINISHED:
        _FINISHED["run"] = _FINISHED["factory"].mktemp("finished_run")
        imp.run(imp_config(tiny_fashion, _FINISHED["run"], **QUICK))
    shutil.copytree(_FINISHED["run"], output_dir)


def truncated_idx(tiny_fashion, folder):
    """A copy of the tiny dataset whose training images file is cut short, then loaded."""
    folder.mkdir()
    for source in pathlib.Path(tiny_fashion).iterdir():
        content = source.read_bytes()
        (folder / source.name).write_bytes(content[:len(content) // 2] if "train-images" in source.name else content)
    return data.load("fashion_mnist", str(folder), validation_examples=10)


_CLEANUPS = []  # run after each case: holders to kill, immutable folders to release


@pytest.fixture(autouse=True)
def _clean_up_after_each_case():
    yield
    while _CLEANUPS:
        _CLEANUPS.pop()()


_HOLD_LOCK = """
import fcntl, json, os, socket, sys, time
descriptor = os.open(os.path.join(sys.argv[1], "run.lock"), os.O_RDWR | os.O_CREAT)
fcntl.flock(descriptor, fcntl.LOCK_EX)
os.write(descriptor, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "just now",
                                 "command": "apps.imp_main --seed=1"}).encode())
print("locked", flush=True)
time.sleep(120)
"""


def held(folder):
    """`folder`, its lock held by another process (as a run in it holds it) until the case ends."""
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True)
    _CLEANUPS.append(lambda: (holder.kill(), holder.wait()))
    assert holder.stdout.readline().strip() == "locked"
    return folder


def read_only(folder):
    """A folder this process cannot write in (for root, which writes anyway, an immutable one)."""
    folder.mkdir(mode=0o555)
    _CLEANUPS.append(lambda: folder.chmod(0o755))
    if os.geteuid() == 0:
        if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode:
            pytest.skip("as root, a folder is read-only only with chattr +i, which this file system refuses")
        _CLEANUPS.append(lambda: subprocess.run(["chattr", "-i", str(folder)], check=True))
    return folder


def offline(call):
    """`call()` with the download host unreachable (tests never touch the network)."""
    with mock.patch.object(datasets, "_network_reachable", return_value=False):
        return call()


def incomplete_copy(tiny_fashion, folder):
    """A copy of the tiny dataset without its training labels."""
    shutil.copytree(tiny_fashion, folder)
    (folder / "train-labels-idx1-ubyte.gz").unlink()
    return str(folder)


def without_test_images(tiny_fashion, folder):
    """A copy of the tiny dataset whose test files hold no examples."""
    shutil.copytree(tiny_fashion, folder)
    _write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((0, 28, 28), np.uint8), 0x803)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros(0, np.uint8), 0x801)
    return str(folder)


def wrong_summary(tiny_fashion, output_dir, summary):
    output_dir.mkdir()
    (output_dir / "summary.json").write_text(json.dumps(summary))
    imp.run(imp_config(tiny_fashion, output_dir))


def branch_of_a_corrupt_run(tiny_fashion, tmp_path):
    finished_run(tiny_fashion, tmp_path / "ticket")
    masks = tmp_path / "ticket" / "round_1" / "masks.npz"
    masks.write_bytes(masks.read_bytes()[:100])
    imp.run(imp_config(tiny_fashion, tmp_path / "branch", control="random_reinit", masks_from=str(tmp_path / "ticket"),
                       **QUICK))


def resumed_on_other_data(tiny_fashion, tmp_path):
    finished_run(tiny_fashion, tmp_path / "run")
    other = tmp_path / "other_data"
    shutil.copytree(tiny_fashion, other)
    labels = other / "t10k-labels-idx1-ubyte.gz"
    _write_idx(labels, np.zeros(200, np.uint8), 0x801)  # the same size, other labels
    imp.run(imp_config(str(other), tmp_path / "run", rounds=2, **QUICK))  # one more round, on other data


def tfmot_model_with_update_masks():
    import tensorflow_model_optimization as tfmot

    model = tfmot.sparsity.keras.prune_low_magnitude(dense(), pruning_schedule=tfmot.sparsity.keras.ConstantSparsity(0.5, 0))
    model.compile("sgd", "mse")
    model.fit(np.ones((4, 8)), np.ones((4, 3)), epochs=1, verbose=0, callbacks=[kl.UpdateMasks()])


def fit_with_nothing_applying_the_schedule():
    model = kl.prune_low_magnitude(dense(), pruning_schedule=kl.OneShot(0.8, 0))
    model.compile("sgd", "mse")
    model.fit(np.ones((4, 8)), np.ones((4, 3)), epochs=1, verbose=0)


def on_flip_on_a_magnitude_wrapper():
    model = kl.prune_low_magnitude(dense(), pruning_schedule=kl.OnFlip(0.5, begin_step=1, frequency=1, updates=1))
    model.compile("sgd", "mse")
    model.fit(np.ones((4, 8)), np.ones((4, 3)), epochs=1, verbose=0, callbacks=[kl.UpdateMasks()])


def interrupted_app(tiny_fashion, output_dir):
    """Starts apps.imp_main, sends it SIGINT (Ctrl-C) once a round is under way; raises as `app` does."""
    stderr = tempfile.TemporaryFile()
    command = [sys.executable, "-m", "apps.imp_main", f"--data_dir={tiny_fashion}", f"--output_dir={output_dir}",
               "--rounds=1", "--iterations=400", "--batch_size=20", "--validation_examples=100",
               "--evaluations_per_round=40", "--backup_seconds=0", "--verbose=0"]
    process = processes.popen(command, stderr=stderr, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    deadline = time.monotonic() + 120
    while not (output_dir / "round_0" / run_folder.BACKUP).exists():
        assert process.poll() is None and time.monotonic() < deadline, "the app ended before its first backup"
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGINT)
    process.wait(60)
    stderr.seek(0)
    raise subprocess.CalledProcessError(process.returncode, "apps.imp_main", "", stderr.read().decode())


def app(module, *flags):
    """Runs an app; raises CalledProcessError with its output if it fails."""
    result = processes.run([sys.executable, "-m", module, *flags], env={**os.environ, "CUDA_VISIBLE_DEVICES": ""})
    if result.returncode:
        raise subprocess.CalledProcessError(result.returncode, module, result.stdout, result.stderr)


# (id, what is wrong, call(tiny_fashion, tmp_path), exception, words the message must contain)
CASES = [
    ("keras3-layer", "a Keras 3 layer to wrap", lambda d, t: kl.prune_low_magnitude(keras3_layer()),
     TypeError, "Keras 3.*from keras_lottery import keras"),
    ("keras3-subclassed", "a Keras 3 subclassed model (cannot be converted)",
     lambda d, t: kl.prune_low_magnitude(keras3_subclassed(), kl.OneShot(0.5)), TypeError,
     "subclassed Keras 3 model.*from keras_lottery import keras"),
    ("subclassed-model", "a subclassed model", lambda d, t: kl.prune_low_magnitude(Subclassed()),
     TypeError, "subclassed.*Sequential"),
    ("not-a-model", "a string instead of a model", lambda d, t: kl.strip_pruning("model.h5"),
     TypeError, "tf_keras Model"),
    ("schedule-type", "a number as pruning_schedule", lambda d, t: kl.prune_low_magnitude(dense(), 0.5),
     TypeError, "PruningSchedule"),
    ("sparsity-above-one", "target sparsity 1.5", lambda d, t: kl.OneShot(1.5), ValueError, r"\[0, 1\)"),
    ("sparsity-negative", "target sparsity -0.1", lambda d, t: kl.OneShot(-0.1), ValueError, r"\[0, 1\)"),
    ("strategy", "an unknown mask strategy", lambda d, t: kl.prune_low_magnitude(dense(), kl.OneShot(0.5),
                                                                              strategy="per_row"),
     ValueError, "layerwise.*global"),
    ("prune-sparsity", "prune(model, 1.5)", lambda d, t: kl.prune(pruned(), 1.5), ValueError, "fc1.*0.8 to keep"),
    ("criterion", "an unknown criterion", lambda d, t: kl.prune(pruned(), 0.5, criterion="taylor"),
     ValueError, "criterion.*magnitude"),
    ("flip-on-magnitude", "a sign-flip criterion on a magnitude-wrapped model",
     lambda d, t: kl.prune(pruned(), 0.5, criterion="sign_flip"), ValueError, "prune_low_sign_flip"),
    ("alpha", "hybrid alpha < 0", lambda d, t: kl.prune_low_sign_flip(dense(), kl.OneShot(0.5), "hybrid", -1.0),
     ValueError, "alpha"),
    ("flip-reference", "an unknown flip reference",
     lambda d, t: kl.prune_low_sign_flip(dense(), kl.OneShot(0.5), reference="yesterday"), ValueError, "init.*rewind"),
    ("mask-shape", "a mask of the wrong shape",
     lambda d, t: kl.set_masks(pruned(), {"fc1": np.ones((3, 3)), "out": np.ones((6, 3))}), ValueError, "fc1.*shape"),
    ("mask-layer", "a mask for a layer that is not pruned", lambda d, t: kl.set_masks(pruned(), {"conv9": np.ones(3)}),
     ValueError, "conv9"),
    ("rewind-step", "rewind_step < 0", lambda d, t: kl.RewindCallback(rewind_step=-1), ValueError, "rewind_step"),
    ("early-bird-epsilon", "epsilon outside (0, 1)", lambda d, t: kl.EarlyBirdCallback(0.5, epsilon=1.5),
     ValueError, "epsilon"),
    ("early-bird-queue", "queue_size < 2", lambda d, t: kl.EarlyBirdCallback(0.5, queue_size=1),
     ValueError, "queue_size"),
    ("bn-gamma-without-bn", "criterion 'bn_gamma' on a model without BatchNormalization",
     lambda d, t: early_bird.criterion_scores(pruned(), "bn_gamma"), ValueError, "BatchNormalization.*l1"),
    ("fusion-unsupported-layer", "a layer fusion cannot rewrite between two Dense layers",
     lambda d, t: kl.fuse_neurons(with_layer_norm()), fusion.FusionError, "norm.*LayerNormalization.*supports"),
    ("merge-without-data", "a data-aware merge without calibration data",
     lambda d, t: kl.fuse_neurons(dense(), merge=kl.MergeBudget(0.5, "data_aware")), ValueError, "calibration_data"),
    ("remove-units-output", "removing units of the model's output layer",
     lambda d, t: kl.remove_units(dense(), {"out": [0]}), ValueError, "'out' cannot be removed.*model output.*other layers"),
    ("early-bird-flow-bn-gamma", "the early-bird flow with criterion 'bn_gamma' on a model without BatchNormalization",
     lambda d, t: early_bird_flow.run(early_bird_flow.EarlyBirdConfig(
         output_dir=str(t / "run"), data_dir=d, model="lenet_300_100", criterion="bn_gamma", validation_examples=100,
         verbose=0)), ValueError, "needs BatchNormalization.*criterion='l1'"),
    ("quantize-mode", "an unknown quantization", lambda d, t: kl.export_tflite(dense(), str(t / "m.tflite"),
                                                                               quantize="int4"),
     ValueError, "quantize.*float16"),
    ("int8-without-data", "int8 without representative data",
     lambda d, t: kl.export_tflite(dense(), str(t / "m.tflite"), quantize="int8"), ValueError, "representative_data"),
    ("dataset-too-small", "more validation examples than the dataset has",
     lambda d, t: data.load("fashion_mnist", d, validation_examples=10**7), ValueError, "Lower validation_examples"),
    ("dataset-corrupt-idx", "a truncated IDX file", lambda d, t: truncated_idx(d, t / "data"), ValueError,
     "cannot read .*train-images.*re-download"),
    ("dataset-name", "an empty dataset name", lambda d, t: data.load(""), ValueError, "fashion_mnist"),
    ("imp-verbose", "verbose=5 (levels are 0, 1, 2)",
     lambda d, t: imp.run(imp_config(d, t / "run", verbose=5)), ValueError, "verbose must be 0.*1.*2.*got 5"),
    ("export-signature-name", "a TFLite signature name that is not an identifier",
     lambda d, t: kl.export_tflite(dense(), str(t / "m.tflite"), signature=tflite_lib.Signature("pixel values")),
     ValueError, "Python identifier such as 'logits'"),
    ("export-evaluation-data", "evaluation_data that is not an (inputs, labels) pair",
     lambda d, t: kl.export_tflite(dense(), str(t / "m.tflite"), evaluation_data=np.zeros((4, 8, 8))),
     ValueError, r"pair \(inputs, labels\)"),
    ("imp-rounds", "rounds < 0", lambda d, t: imp.run(imp_config(d, t / "run", rounds=-1)), ValueError, "rounds"),
    ("imp-rewind-beyond-round", "rewind_step beyond a round's iterations",
     lambda d, t: imp.run(imp_config(d, t / "run", rewind_step=1000)), ValueError, "rewind_step.*iterations"),
    ("imp-other-config", "an output_dir holding a run with another config",
     lambda d, t: (finished_run(d, t / "run"), imp.run(imp_config(d, t / "run", seed=5, **QUICK))),
     run_folder.ConfigMismatchError, "seed.*another --output_dir"),
    ("imp-corrupt-summary", "an output_dir whose summary.json is not JSON",
     lambda d, t: ((t / "run").mkdir(), (t / "run" / "summary.json").write_text("{trunc"), imp.run(imp_config(d, t / "run"))),
     run_folder.CorruptRecordError, "not a valid summary.*another --output_dir"),
    ("imp-nan-loss", "a learning rate so high that the loss becomes NaN during a round",
     lambda d, t: imp.run(imp_config(d, t / "run", learning_rate=1e12, optimizer="sgd")), training.TrainingDivergedError,
     "diverged.*Lower the learning rate"),
    ("imp-folder-in-use", "an output_dir another process is running in",
     lambda d, t: imp.run(imp_config(d, held(t / "run"))), run_folder.RunInUseError,
     r"in use by another run \(pid \d+ on host .*started .*command: apps.imp_main --seed=1\).*another --output_dir"),
    ("imp-output-dir-file", "an output_dir that is a file",
     lambda d, t: ((t / "run").write_text("x"), imp.run(imp_config(d, t / "run"))), run_folder.OutputDirError,
     "is a file, not a folder: choose a folder path"),
    ("imp-output-dir-read-only", "a read-only output_dir",
     lambda d, t: imp.run(imp_config(d, read_only(t / "read_only"))), run_folder.OutputDirError,
     "cannot write in output_dir .*read_only.*choose a folder you can write to"),
    ("data-dir-missing", "a data_dir that does not exist",
     lambda d, t: imp.run(imp_config(d, t / "run", data_dir=str(t / "nowhere"))), ValueError,
     "data_dir .*nowhere does not exist: fix the path"),
    ("data-dir-file", "a data_dir that is a file",
     lambda d, t: ((t / "data").write_text("x"), imp.run(imp_config(d, t / "run", data_dir=str(t / "data")))),
     ValueError, "is a file, not a folder: pass the folder"),
    ("data-dir-incomplete", "a data_dir lacking one of the four IDX files (Debian's copy is not read instead)",
     lambda d, t: offline(lambda: imp.run(imp_config(d, t / "run", data_dir=incomplete_copy(d, t / "data")))),
     data.DataUnavailableError, "data.* lacks train-labels-idx1-ubyte"),
    ("dataset-empty-test-split", "a dataset whose test split is empty",
     lambda d, t: imp.run(imp_config(d, t / "run", data_dir=without_test_images(d, t / "data"))), ValueError,
     "t10k-images-idx3-ubyte.gz holds no images: the test split would be empty"),
    ("batch-size-zero", "batch_size=0 (not replaced by the model's default)",
     lambda d, t: imp.run(imp_config(d, t / "run", batch_size=0)), ValueError, "batch_size must be an integer >= 1; got 0"),
    ("learning-rate-zero", "learning_rate=0 (not replaced by the model's default)",
     lambda d, t: imp.run(imp_config(d, t / "run", learning_rate=0)), ValueError, "learning_rate must be a number > 0; got 0"),
    ("batch-larger-than-train", "a batch larger than the training set",
     lambda d, t: imp.run(imp_config(d, t / "run", train_examples=100, batch_size=1000)), ValueError,
     "batch_size=1000 is larger than the 100 training examples.*--batch_size <= 100"),
    ("summary-wrong-structure", "a summary.json that is valid JSON of the wrong structure",
     lambda d, t: wrong_summary(d, t / "run", {"config": {}, "rounds": "oops"}), run_folder.CorruptRecordError,
     "'rounds' is 'oops', not a list.*another --output_dir"),
    ("summary-without-config", "a summary.json without its config",
     lambda d, t: wrong_summary(d, t / "run", {"rounds": []}), run_folder.CorruptRecordError,
     "not a valid summary \\(it has no 'config'\\).*another --output_dir"),
    ("masks-from-corrupt", "a branch whose masks_from run has a truncated masks file",
     lambda d, t: branch_of_a_corrupt_run(d, t), run_folder.CorruptRecordError,
     "ticket/round_1/masks.npz.*Rerun the command of the run it belongs to"),
    ("data-changed-on-resume", "resuming a run on other data than it started with",
     lambda d, t: resumed_on_other_data(d, t), run_folder.DataMismatchError,
     "t10k-labels-idx1-ubyte.gz: sha256 .* then, .* now.*Point --data_dir at the data the run started with"),
    ("update-masks-tfmot-wrapper", "a tfmot-wrapped model given to UpdateMasks",
     lambda d, t: tfmot_model_with_update_masks(), TypeError, "tfmot's prune_low_magnitude.*UpdatePruningStep"),
    ("fit-stays-dense", "fit on a model whose schedule prunes, with no callback to apply it",
     lambda d, t: fit_with_nothing_applying_the_schedule(), ValueError,
     r"nothing applies it.*UpdateMasks\(\).*UpdatePruningStep\(\)"),
    ("prune-everything", "prune(model, 1.0), which would leave a dead network", lambda d, t: kl.prune(pruned(), 1.0),
     ValueError, r"fc1.*\[0, 1\).*0.8 to keep"),
    ("random-prune-with-criterion", "criterion='sign_flip' with control='random_prune' (it would rank nothing)",
     lambda d, t: imp.run(imp_config(d, t / "run", criterion="sign_flip", control="random_prune")), ValueError,
     "would rank nothing.*--control=ticket"),
    ("imp-rounds-kill-a-layer", "so many rounds that a layer keeps no weight",
     lambda d, t: imp.run(imp_config(d, t / "run", rounds=17, prune_rate=0.9)), ValueError,
     "rounds=17 would prune every weight of layer 'fc1'.*Lower --rounds or --prune_rate"),
    ("on-flip-criterion", "one_pass with prune_schedule='on_flip' and criterion='magnitude' (it counts no flips)",
     lambda d, t: imp.run(imp_config(d, t / "run", mode="one_pass", prune_schedule="on_flip")), ValueError,
     "criterion='magnitude' keeps none: use --criterion=sign_flip.*--criterion=hybrid"),
    ("on-flip-min-flips", "min_flips < 1", lambda d, t: imp.run(imp_config(
        d, t / "run", mode="one_pass", criterion="hybrid", prune_schedule="on_flip", min_flips=0)), ValueError,
     "min_flips .* must be an integer >= 1; got 0"),
    ("on-flip-floor", "one_pass on_flip with an unknown on_flip_floor", lambda d, t: imp.run(imp_config(
        d, t / "run", mode="one_pass", criterion="hybrid", prune_schedule="on_flip", on_flip_floor="cubic")),
     ValueError, r"on_flip_floor must be one of \('none', 'gradual'\).*got 'cubic'"),
    ("on-flip-wrapper", "an OnFlip schedule on a prune_low_magnitude model",
     lambda d, t: on_flip_on_a_magnitude_wrapper(), ValueError, "counts no flips: wrap the model with.*prune_low_sign_flip"),
    ("app-on-flip-criterion", "apps.imp_main --mode=one_pass --prune_schedule=on_flip (the default criterion magnitude)",
     lambda d, t: app("apps.imp_main", f"--data_dir={d}", f"--output_dir={t / 'run'}", "--mode=one_pass",
                      "--prune_schedule=on_flip", "--min_flips=2"),
     subprocess.CalledProcessError, "prune_schedule='on_flip' counts sign flips.*--criterion=hybrid"),
    ("app-prune-rate", "apps.imp_main --prune_rate=1.5",
     lambda d, t: app("apps.imp_main", f"--data_dir={d}", f"--output_dir={t / 'run'}", "--prune_rate=1.5"),
     subprocess.CalledProcessError, "prune_rate"),
    ("app-output-dir-file", "apps.imp_main --output_dir=<a file>",
     lambda d, t: ((t / "run").write_text("x"), app("apps.imp_main", f"--data_dir={d}", f"--output_dir={t / 'run'}")),
     subprocess.CalledProcessError, "error: output_dir .*run is a file, not a folder"),
    ("app-folder-in-use", "apps.imp_main on a folder another run holds",
     lambda d, t: app("apps.imp_main", f"--data_dir={d}", f"--output_dir={held(t / 'run')}"),
     subprocess.CalledProcessError, "error: .*run is in use by another run"),
    ("app-ctrl-c", "Ctrl-C while apps.imp_main trains",
     lambda d, t: interrupted_app(d, t / "run"), subprocess.CalledProcessError,
     "error: interrupted; rerun the same command to resume"),
    ("app-export-flags", "apps.export_main with both --run_dir and --model_path",
     lambda d, t: app("apps.export_main", f"--run_dir={t}", f"--model_path={t / 'm.keras'}"),
     subprocess.CalledProcessError, "exactly one of --run_dir"),
    ("report-no-runs", "report_main over a folder with no runs",
     lambda d, t: report.write_report([str(t)], str(t / "report")), report.ReportError, "no summary.json.*pass run folders"),
    ("shift-unknown-corruption", "experiments.shift.evaluate with a corruption it does not know",
     lambda d, t: shift.evaluate([str(t)], str(t / "shift"), corruptions=("fog",)), shift.ShiftError,
     "unknown corruption 'fog': choose one of gaussian_noise, gaussian_blur, rotation, contrast"),
    ("instability-points", "an instability analysis with fewer than two interpolation points",
     lambda d, t: instability.InstabilityConfig(runs=[str(t)], output_dir=str(t / "out"),
                                                interpolation_points=1).resolved(), instability.InstabilityError,
     "interpolation_points .*must be an integer >= 2"),
    ("instability-k-past-end", "an instability k not before the end of the source run's training",
     lambda d, t: (finished_run(d, t / "ticket"), instability.run(instability.InstabilityConfig(
         runs=[str(t / "ticket")], output_dir=str(t / "out"), rewind_iterations="0,25")))[-1],
     instability.InstabilityError, "rewind_iterations \\[25\\] are not before the end of .*20 iterations a round.*"
     "Pick smaller k"),
    ("fusion-sweep-method", "experiments.fusion_sweep.run with a fusion method it does not know",
     lambda d, t: fusion_sweep.run(fusion_sweep.FusionSweepConfig(runs=[str(t)], output_dir=str(t / "fusion"),
                                                                  methods=("merge",))),
     fusion_sweep.FusionSweepError, "unknown fusion method 'merge': choose among exact, l1, data_free, data_aware"),
    ("fusion-sweep-round", "apps.fusion_sweep_main at an IMP round the run has not finished",
     lambda d, t: (finished_run(d, t / "ticket"), app("apps.fusion_sweep_main", f"--runs={t / 'ticket'}",
                                                      f"--output_dir={t / 'fusion'}", "--rounds=4"))[-1],
     subprocess.CalledProcessError, "error: .*ticket has not finished rounds \\[4\\]; its finished rounds are \\[0, 1\\]"),
    ("corruption-severity", "a corruption severity outside 0..5",
     lambda d, t: corruptions.corrupt(np.zeros((1, 4, 4, 1)), "contrast", 6), ValueError,
     "severity must be an integer 0\\.\\.5 \\(0 = clean images\\), got 6"),
    ("resnet-depth", "a ResNet depth that is not 6n+2", lambda d, t: models.resnet(21), ValueError,
     "depth 21 is invalid: it must be 6n\\+2"),
    ("lr-milestones", "milestones that do not increase",
     lambda d, t: imp_config(d, t / "run", lr_schedule="step", lr_milestones="10it,5it").resolved(), ValueError,
     "lr_milestones"),
    ("momentum-with-adam", "--momentum with the Adam optimizer",
     lambda d, t: imp_config(d, t / "run", optimizer="adam", momentum=0.9).resolved(), ValueError, "momentum.*sgd"),
    ("layers-to-ignore", "layers_to_ignore naming no layer of the model",
     lambda d, t: imp.run(imp_config(d, t / "run", layers_to_ignore="fc9")), ValueError,
     "layers_to_ignore names \\['fc9'\\].*its prunable layers are"),
    ("distribution-strategy", "an unknown distribution strategy",
     lambda d, t: imp_config(d, t / "run", distribution_strategy="mirror").resolved(), ValueError,
     "distribution_strategy must be one of.*mirrored"),
    ("multi-worker-without-tf-config", "multi_worker_mirrored without TF_CONFIG",
     lambda d, t: app("apps.imp_main", f"--data_dir={d}", f"--output_dir={t / 'run'}",
                      "--distribution_strategy=multi_worker_mirrored"),
     subprocess.CalledProcessError, "needs the cluster in TF_CONFIG"),
    ("cifar-offline", "--dataset=cifar10 neither prepared nor downloadable",
     lambda d, t: offline(lambda: imp.run(imp_config(None, t / "run", dataset="cifar10", data_dir=str(t)))),
     data.DataUnavailableError, "--data_dir.*apps.prepare_data_main"),
    ("prepare-no-archive", "apps.prepare_data_main with a manual_dir that has no CIFAR files",
     lambda d, t: app("apps.prepare_data_main", "--dataset=cifar10", f"--manual_dir={t}", f"--data_dir={t / 'tfds'}"),
     subprocess.CalledProcessError, "error: .*cifar-10"),
    ("branch-no-source", "apps.branch_main from a folder with no run",
     lambda d, t: app("apps.branch_main", f"--source_dir={t / 'none'}", f"--output_dir={t / 'branch'}"),
     subprocess.CalledProcessError, "holds no IMP run"),
    ("branch-levels", "a branch at a level the source has not finished",
     lambda d, t: (finished_run(d, t / "ticket"), branch.run(branch.BranchConfig(
         source_dir=str(t / "ticket"), output_dir=str(t / "branch"), levels="4")))[-1], ValueError,
     "has finished rounds \\[0, 1\\]; pick among them"),
    ("prune-at-init-without-data", "SNIP without a batch to score on",
     lambda d, t: methods.prune_at_init(pruned(), "snip", 0.5), ValueError, "snip.*data"),
    ("mask-updater", "an unknown dynamic sparse training method",
     lambda d, t: methods.mask_updaters.get("deepr"), ValueError, "rigl.*set.*snfs"),
    ("sparse-method", "apps.sparse_main with an unknown method",
     lambda d, t: app("apps.sparse_main", f"--data_dir={d}", f"--output_dir={t / 'run'}", "--method=deepr"),
     subprocess.CalledProcessError, "--method.*rigl"),
    ("sparse-global-random-mask", "RigL with one global ranking instead of per-layer sparsities",
     lambda d, t: sparse_config.SparseConfig(output_dir=str(t / "run"), method="rigl", distribution="global").resolved(),
     ValueError, "needs per-layer sparsities: use --distribution=uniform, erdos_renyi or erk"),
    ("sparse-control-dynamic", "a mask control on a method that chooses no mask before training",
     lambda d, t: app("apps.sparse_main", f"--data_dir={d}", f"--output_dir={t / 'run'}", "--method=set",
                      "--control=layer_shuffle"), subprocess.CalledProcessError, "Use it with one of"),
    ("sparse-ticket-without-source", "method 'ticket' without --masks_from",
     lambda d, t: sparse_config.SparseConfig(output_dir=str(t / "run"), method="ticket").resolved(), ValueError,
     "give --masks_from"),
    ("sparse-ticket-unfinished-source", "--masks_from a folder with no finished run",
     lambda d, t: sparse_config.SparseConfig(output_dir=str(t / "run"), method="ticket",
                                             masks_from=str(t / "none")).resolved(), ValueError,
     "holds no finished run.*run it first"),
    ("compare-unknown-method", "apps.compare_main with a method it does not know",
     lambda d, t: app("apps.compare_main", f"--data_dir={d}", f"--output_dir={t / 'grid'}", "--methods=snip,deepr"),
     subprocess.CalledProcessError, "unknown grid method 'deepr'"),
    ("compare-seed", "apps.compare_main with --seed instead of --seeds",
     lambda d, t: app("apps.compare_main", f"--data_dir={d}", f"--output_dir={t / 'grid'}", "--seed=3"),
     subprocess.CalledProcessError, "--seeds"),
    ("compare-control", "a grid method with a control it cannot take",
     lambda d, t: compare.CompareConfig(output_dir=str(t / "grid"), methods=("rigl/layer_shuffle",)).resolved(),
     ValueError, "a control is one of"),
    ("small-dense-density", "a small dense network of density 0",
     lambda d, t: models.small_dense(dense(), 0.0, seed=0), ValueError, "density"),
    ("flops-method", "training FLOPs of a method the table does not know",
     lambda d, t: flops.training_flops("deepr", 10, 1, 100, 60), ValueError, "rigl"),
]


# Set up first (a folder, a file, a run or data), or left on purpose (the interrupted run's backup, to resume).
PRE_EXISTING = ("imp-other-config", "imp-corrupt-summary", "dataset-corrupt-idx", "imp-folder-in-use",
                "imp-output-dir-file", "data-dir-file", "data-dir-incomplete", "dataset-empty-test-split",
                "summary-wrong-structure", "summary-without-config", "masks-from-corrupt", "data-changed-on-resume",
                "app-output-dir-file", "app-folder-in-use", "app-ctrl-c", "branch-levels",
                "instability-k-past-end", "fusion-sweep-round")


def _message(error):
    if isinstance(error, subprocess.CalledProcessError):
        return f"{error.stdout}\n{error.stderr}"
    return str(error)


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
def test_bad_input_fails_clearly_before_work(case, tiny_fashion, tmp_path):
    _, _, call, exception, words = case
    with pytest.raises(exception) as raised:
        call(tiny_fashion, tmp_path)
    assert re.search(words, _message(raised.value), re.DOTALL | re.IGNORECASE), _message(raised.value)[-2000:]
    if isinstance(raised.value, subprocess.CalledProcessError):  # an app: one line, exit status 1, no traceback
        assert raised.value.returncode == 1 and "Traceback" not in raised.value.stderr, raised.value.stderr[-2000:]
    # TensorBoard logs of the failed round may stay; no result, backup or summary may.
    left = [path for path in tmp_path.rglob("*") if path.is_file() and "tensorboard" not in path.parts]
    if case[0] not in PRE_EXISTING:
        assert not left, f"partial results left behind: {left}"


def test_catalogue_matches_the_docs():
    table_ids = re.findall(r"^\| `([a-z0-9-]+)` \|", DOCS.read_text(), re.MULTILINE)
    assert sorted(table_ids) == sorted(case[0] for case in CASES)
    assert len(CASES) >= 25
