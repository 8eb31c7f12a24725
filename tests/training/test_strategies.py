"""Distribution strategies by name: what each gives, and the errors before any work."""

import json

import pytest
import tensorflow as tf

from keras_lottery.training import strategies


def test_default_is_tensorflows_default_strategy():
    strategy = strategies.get("default")
    assert strategy is tf.distribute.get_strategy()
    assert strategies.is_chief(strategy) and strategy.num_replicas_in_sync == 1


def test_one_device_and_mirrored_span_the_devices_there_are():
    assert isinstance(strategies.get("one_device"), tf.distribute.OneDeviceStrategy)
    mirrored = strategies.get("mirrored")
    assert isinstance(mirrored, tf.distribute.MirroredStrategy)
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    assert mirrored.num_replicas_in_sync == len(devices)


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"distribution_strategy must be one of .*'mirrored'.*got 'mirror'"):
        strategies.get("mirror")


@pytest.mark.parametrize("tf_config, message", [
    (None, "needs the cluster in TF_CONFIG"),
    ("not json", "is not a cluster description"),
    (json.dumps({"cluster": {"worker": ["localhost:1"]}, "task": {"type": "worker", "index": 3}}),
     "task index 3 is not among its 1 workers"),
])
def test_multi_worker_without_a_cluster_says_how_to_describe_it(monkeypatch, tf_config, message):
    if tf_config is None:
        monkeypatch.delenv("TF_CONFIG", raising=False)
    else:
        monkeypatch.setenv("TF_CONFIG", tf_config)
    with pytest.raises(ValueError, match=message):
        strategies.get("multi_worker_mirrored")


def test_split_cpu_after_initialization_names_the_fix():
    tf.constant(1.0)  # TensorFlow is initialized with one CPU device in the test process
    existing = len(tf.config.list_logical_devices("CPU"))
    strategies.split_cpu(existing)  # the number it already has: nothing to do
    with pytest.raises(ValueError, match="already runs with"):
        strategies.split_cpu(existing + 1)
    with pytest.raises(ValueError, match="cpu_devices must be an integer >= 1"):
        strategies.split_cpu(0)


def test_tpu_where_there_is_none_says_so():
    with pytest.raises(ValueError, match="found no TPU"):
        strategies.get("tpu")
