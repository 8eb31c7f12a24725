"""Pruning, rewinding and early-bird detection under MirroredStrategy equal the one-device run.

Two logical CPU devices must be configured before TensorFlow initializes, so the runs
happen in a fresh Python process (shared with `test_sign_flip.py`'s, see
`processes.TWO_CPU_SCRIPTS`): it trains the same models on one device and on
`MirroredStrategy(["/cpu:0", "/cpu:1"])` and returns what each run ended with. Masks,
the drawn epoch and step, and early-bird distances must be equal; weights equal to float
tolerance (the two replicas' gradients are summed in another order than one device sums
the whole batch).

An opt-in test (KERAS_LOTTERY_MULTI_WORKER=1, about 30 s) starts two
MultiWorkerMirroredStrategy workers on localhost and checks that both end with the
same masks, weights, early-bird distances and rewound weights.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests import processes

_SCRIPT = r'''
import numpy as np
import tensorflow as tf
import keras_lottery as kl
from keras_lottery.sparsity.wrappers import optimizer_slots, pruning_entries

keras = kl.keras
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8, 8)).astype("float32"), rng.integers(0, 10, 64).astype("int32")


def build(strategy, schedule):
    with strategy.scope():
        keras.utils.set_random_seed(0)
        dense = keras.Sequential([keras.layers.InputLayer(input_shape=(8, 8)), keras.layers.Flatten(),
                                  keras.layers.Dense(16, activation="relu", name="fc1"),
                                  keras.layers.Dense(10, name="out")])
        model = kl.prune_low_magnitude(dense, pruning_schedule=schedule)
        model.compile(keras.optimizers.SGD(0.1, momentum=0.9),
                      keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def fit(model, epochs, callbacks):
    model.fit(x, y, batch_size=16, epochs=epochs, shuffle=False, verbose=0, callbacks=callbacks)


def arrays(values):
    return {name: np.asarray(value).tolist() for name, value in values.items()}


def prune_and_rewind(strategy):
    # Iterative prunes at steps 4 and 8; the snapshot is taken at step 2.
    model = build(strategy, kl.Iterative(0.5, steps_per_round=4, rounds=2))
    rewind = kl.RewindCallback(rewind_step=2)
    fit(model, 3, [rewind, kl.UpdateMasks()])
    trained = {"masks": arrays(kl.get_masks(model)), "weights": [w.tolist() for w in model.get_weights()],
               "slots": [len(optimizer_slots(model.optimizer, weight)) for _, _, weight, _ in pruning_entries(model)]}
    rewind.rewind()
    return {"trained": trained,
            "snapshot": [value.tolist() for value in rewind.snapshot],
            "rewound": {"masks": arrays(kl.get_masks(model)), "weights": [w.tolist() for w in model.get_weights()],
                        "step": int(model.optimizer.iterations.numpy())}}


def early_bird(strategy):
    detector = kl.EarlyBirdCallback([0.5, 0.8], queue_size=2, epsilon=0.13)
    model = build(strategy, kl.EarlyBirdSchedule(detector, target_sparsity=0.5))
    fit(model, 5, [detector, kl.UpdateMasks()])  # 0.5 drawn at epoch 3, pruned at step 12
    return {"distances": {str(s): d for s, d in detector.distances.items()},
            "drawn_epoch": {str(s): e for s, e in detector.drawn_epoch.items()},
            "drawn_step": {str(s): e for s, e in detector.drawn_step.items()},
            "masks": arrays(kl.get_masks(model))}


RESULT = {}
for name, strategy in (("single", tf.distribute.get_strategy()),
                       ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))):
    RESULT[name] = {"replicas": strategy.num_replicas_in_sync, "prune_and_rewind": prune_and_rewind(strategy),
                    "early_bird": early_bird(strategy)}
'''
processes.TWO_CPU_SCRIPTS["distribute"] = _SCRIPT


@pytest.fixture(scope="module")
def runs(two_cpu_result):
    """{"single": ..., "mirrored": ...}: what the script's runs ended with."""
    runs = two_cpu_result("distribute")
    assert (runs["single"]["replicas"], runs["mirrored"]["replicas"]) == (1, 2)
    return runs


def assert_same_masks_and_weights(mirrored, single):
    assert mirrored["masks"] == single["masks"]  # exact
    for copy, value in zip(mirrored["weights"], single["weights"]):
        np.testing.assert_allclose(copy, value, rtol=1e-5, atol=1e-5)


def test_masks_and_weights_after_pruning_with_update_masks_equal_one_device(runs):
    single, mirrored = (runs[name]["prune_and_rewind"]["trained"] for name in ("single", "mirrored"))
    assert_same_masks_and_weights(mirrored, single)
    assert mirrored["slots"] == single["slots"] == [1, 1]  # each kernel's momentum, found to be masked
    kept = [np.mean(mask) for mask in single["masks"].values()]
    assert kept == pytest.approx([0.25, 0.25], abs=0.01)  # both rounds happened


def test_rewind_snapshot_and_rewound_weights_equal_one_device(runs):
    single, mirrored = (runs[name]["prune_and_rewind"] for name in ("single", "mirrored"))
    for copy, value in zip(mirrored["snapshot"], single["snapshot"]):
        np.testing.assert_allclose(copy, value, rtol=1e-5, atol=1e-5)
    assert_same_masks_and_weights(mirrored["rewound"], single["rewound"])
    assert mirrored["rewound"]["step"] == single["rewound"]["step"] == 0  # the optimizer was reset


def test_early_bird_distances_draw_and_pruning_equal_one_device(runs):
    single, mirrored = (runs[name]["early_bird"] for name in ("single", "mirrored"))
    assert mirrored["distances"] == single["distances"]
    assert mirrored["drawn_epoch"] == single["drawn_epoch"] and mirrored["drawn_step"] == single["drawn_step"]
    assert single["drawn_epoch"]["0.5"] < 5  # drawn before the last epoch, so the schedule pruned
    assert mirrored["masks"] == single["masks"]
    assert [np.mean(mask) for mask in single["masks"].values()] == pytest.approx([0.5, 0.5])


_WORKER_SCRIPT = r'''
import json
import os
import sys

index, ports = int(sys.argv[1]), sys.argv[2:]
os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": [f"localhost:{port}" for port in ports]},
                                      "task": {"type": "worker", "index": index}})
import numpy as np
import tensorflow as tf
import keras_lottery as kl

keras = kl.keras
strategy = tf.distribute.MultiWorkerMirroredStrategy()
rng = np.random.default_rng(0)
x, y = rng.normal(size=(64, 8, 8)).astype("float32"), rng.integers(0, 10, 64).astype("int32")
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16).with_options(options)
with strategy.scope():  # built in the scope: the chief's initial values are broadcast to every worker
    keras.utils.set_random_seed(index)  # a different seed per worker must not matter
    dense = keras.Sequential([keras.layers.InputLayer(input_shape=(8, 8)), keras.layers.Flatten(),
                              keras.layers.Dense(16, activation="relu", name="fc1"), keras.layers.Dense(10, name="out")])
    detector = kl.EarlyBirdCallback(0.8, queue_size=2, epsilon=0.5)
    model = kl.prune_low_magnitude(dense, pruning_schedule={"fc1": kl.Iterative(0.5, 4, 2),
                                                            "out": kl.EarlyBirdSchedule(detector)})
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
rewind = kl.RewindCallback(rewind_step=2)
model.fit(data, epochs=4, verbose=0, callbacks=[rewind, detector, kl.UpdateMasks()])
result = {"masks": {name: mask.tolist() for name, mask in kl.get_masks(model).items()},
          "weights": [w.tolist() for w in model.get_weights()], "distances": detector.distances[0.8],
          "drawn_step": detector.drawn_step}
rewind.rewind()
result["rewound"] = [w.tolist() for w in model.get_weights()]
print("RESULT" + json.dumps(result))
'''


@pytest.mark.skipif(not os.environ.get("KERAS_LOTTERY_MULTI_WORKER"),
                    reason="starts two gRPC workers on localhost (~30 s): set KERAS_LOTTERY_MULTI_WORKER=1 to run")
def test_multi_worker_mirrored_workers_compute_the_same_masks_rewind_and_early_bird():
    import socket

    ports = []
    for _ in range(2):
        with socket.socket() as probe:
            probe.bind(("localhost", 0))
            ports.append(str(probe.getsockname()[1]))
    workers = [subprocess.Popen([sys.executable, "-c", _WORKER_SCRIPT, str(index), *ports], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=processes.REPOSITORY)
               for index in range(2)]
    outputs = [worker.communicate(timeout=300) for worker in workers]
    for worker, (_, stderr) in zip(workers, outputs):
        assert worker.returncode == 0, stderr[-3000:]
    chief, other = (json.loads(stdout.split("RESULT", 1)[1]) for stdout, _ in outputs)
    assert chief == other  # bitwise: every worker computed the same masks, weights, distances, rewind
    assert np.mean(chief["masks"]["fc1"]) == pytest.approx(0.25, abs=0.01)  # both Iterative rounds
    assert chief["drawn_step"] and np.mean(chief["masks"]["out"]) == pytest.approx(0.2)  # the early-bird ticket
