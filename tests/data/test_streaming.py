"""Tests of data/streaming.py: `load_streaming`'s splits and its resumable, seeded training stream.

All on a tiny CIFAR-10 prepared by TFDS's real builder offline (tests/data/cifar_fixture.py):
200 training examples, 20 held out, so one epoch is 180 examples (5 batches of 36).
"""

import hashlib
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

from keras_lottery import data
from keras_lottery.data import augment
from keras_lottery.data import datasets
from keras_lottery.data import streaming
from tests.data import cifar_fixture
from tests.data.test_datasets import prepare_tiny_tfds_dataset

VALIDATION, BATCH = 20, 36  # 180 kept examples: an epoch is 5 batches


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return cifar_fixture.prepare_tiny_cifar10(tmp_path_factory.mktemp("tfds"))


@pytest.fixture(scope="module")
def cifar(data_dir):
    return data.load_streaming("cifar10", data_dir, validation_examples=VALIDATION, split_seed=3)


@pytest.fixture(scope="module")
def in_memory(data_dir):
    return data.load("cifar10", data_dir, validation_examples=VALIDATION, split_seed=3)


def batches(dataset, count):
    return [(images.numpy(), labels.numpy()) for images, labels in dataset.take(count)]


def fingerprint(batch_list):
    digest = hashlib.sha256()
    for images, labels in batch_list:
        digest.update(images.tobytes())
        digest.update(labels.tobytes())
    return digest.hexdigest()


def keys(images):
    return sorted(image.tobytes() for image in images)


def test_fields_match_what_load_returns(cifar, in_memory):
    assert cifar.train_size == 180 and cifar.num_classes == 10 and cifar.input_shape == (32, 32, 3)
    assert cifar.source == in_memory.source and cifar.file_hashes == in_memory.file_hashes
    assert (cifar.mean, cifar.std) == streaming.CHANNEL_STATISTICS["cifar10"]
    for field in ("validation_x", "test_x"):
        assert getattr(cifar, field).dtype == np.float32 and getattr(cifar, field).shape[1:] == (32, 32, 3)
    assert cifar.validation_y.dtype == np.int64 and cifar.test_y.dtype == np.int64
    # Normalized: a zero pixel is -mean / std, not 0.
    assert cifar.test_x.min() < -1.5


@pytest.mark.parametrize("arguments", [{"split_seed": 3}, {"split_seed": 8, "train_examples": 50}])
def test_the_held_out_and_kept_examples_are_those_of_load(data_dir, arguments):
    streamed = data.load_streaming("cifar10", data_dir, validation_examples=VALIDATION, **arguments)
    loaded = data.load("cifar10", data_dir, validation_examples=VALIDATION, **arguments)
    np.testing.assert_array_equal(streamed.validation_x, streamed.normalize(loaded.validation_x))  # same order too
    np.testing.assert_array_equal(streamed.validation_y, loaded.validation_y)
    np.testing.assert_array_equal(streamed.test_x, streamed.normalize(loaded.test_x))
    np.testing.assert_array_equal(streamed.test_y, loaded.test_y)
    assert streamed.train_size == len(loaded.train_y)
    # One epoch of the unaugmented stream is exactly load's training set, normalized alike.
    size = streamed.train_size
    epoch = batches(streamed.train_batches(size, seed=0, augment=False), 1)[0]
    assert keys(epoch[0]) == keys(streamed.normalize(loaded.train_x))
    labels_of = {image.tobytes(): label for image, label in zip(streamed.normalize(loaded.train_x), loaded.train_y)}
    assert [labels_of[image.tobytes()] for image in epoch[0]] == list(epoch[1])


def test_batches_have_the_shapes_and_types_a_model_takes(cifar):
    images, labels = batches(cifar.train_batches(BATCH, seed=0), 1)[0]
    assert images.shape == (BATCH, 32, 32, 3) and images.dtype == np.float32
    assert labels.shape == (BATCH,) and labels.dtype == np.int64
    spec = cifar.train_batches(BATCH, seed=0).element_spec
    assert spec[0].shape.as_list() == [None, 32, 32, 3]


def test_every_epoch_is_a_new_permutation_and_batches_cross_epochs(cifar):
    stream = np.concatenate([images for images, _ in batches(cifar.train_batches(BATCH, seed=1, augment=False), 11)])
    first, second = stream[:180], stream[180:360]
    assert keys(first) == keys(second) and len(set(keys(first))) == 180  # each epoch: every example once
    assert any(not np.array_equal(a, b) for a, b in zip(first, second))  # in another order
    other_seed = np.concatenate([images for images, _ in batches(cifar.train_batches(180, seed=2, augment=False), 1)])
    assert not np.array_equal(other_seed, first)


def test_the_same_seed_gives_the_same_batches_whatever_the_global_seed(cifar):
    first = batches(cifar.train_batches(BATCH, seed=4), 7)
    tf.random.set_seed(1234)  # a model's initialization sets it; the stream must not depend on it
    try:
        again = batches(cifar.train_batches(BATCH, seed=4), 7)
    finally:
        tf.random.set_seed(None)
    assert fingerprint(first) == fingerprint(again)
    dataset = cifar.train_batches(BATCH, seed=4)  # two iterators of one dataset agree too
    assert fingerprint(batches(dataset, 3)) == fingerprint(batches(dataset, 3)) == fingerprint(first[:3])


def test_another_process_gets_the_same_batches(cifar, data_dir):
    script = (
        "import hashlib, sys\n"
        "from keras_lottery import data\n"
        f"splits = data.load_streaming('cifar10', {data_dir!r}, validation_examples={VALIDATION}, split_seed=3)\n"
        "digest = hashlib.sha256()\n"
        f"for images, labels in splits.train_batches({BATCH}, seed=9, skip_batches=2).take(4):\n"
        "    digest.update(images.numpy().tobytes()); digest.update(labels.numpy().tobytes())\n"
        "print(digest.hexdigest())\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True,
                            cwd=str(__import__("pathlib").Path(__file__).parents[2]))
    assert result.stdout.strip().splitlines()[-1] == fingerprint(batches(cifar.train_batches(BATCH, 9, 2), 4))


@pytest.mark.parametrize("skip", [1, 5, 7, 26])  # inside the first epoch, at its end, across epochs
def test_a_resumed_stream_is_the_uninterrupted_one_minus_its_first_batches(cifar, skip):
    uninterrupted = batches(cifar.train_batches(BATCH, seed=5, augment=True), skip + 4)
    resumed = batches(cifar.train_batches(BATCH, seed=5, skip_batches=skip, augment=True), 4)
    assert fingerprint(resumed) == fingerprint(uninterrupted[skip:])


def test_augmentation_is_on_by_default_for_cifar_and_changes_the_images(cifar):
    plain = batches(cifar.train_batches(BATCH, seed=6, augment=False), 5)
    default = batches(cifar.train_batches(BATCH, seed=6), 5)
    assert fingerprint(default) == fingerprint(batches(cifar.train_batches(BATCH, seed=6, augment=True), 5))
    for (plain_images, plain_labels), (images, labels) in zip(plain, default):
        np.testing.assert_array_equal(labels, plain_labels)  # the same examples in the same order
    changed = [not np.array_equal(a, b) for (a, _), (b, _) in zip(plain, default) for a, b in zip(a, b)]
    assert np.mean(changed) > 0.9  # 1 in 162 augmentations is the identity


def test_an_augmented_example_is_the_plain_one_padded_cropped_and_flipped(cifar):
    # Position p of the augmented stream is pad_crop_flip(plain example p, example_seed(seed, p)), then normalized.
    mean, std = np.float32(cifar.mean), np.float32(cifar.std)
    plain = batches(cifar.train_batches(BATCH, seed=6, skip_batches=3, augment=False), 1)[0][0]
    augmented = batches(cifar.train_batches(BATCH, seed=6, skip_batches=3, augment=True), 1)[0][0]
    for offset in (0, 17, 35):
        unit = plain[offset] * std + mean
        expected = augment.pad_crop_flip(tf.constant(unit), augment.example_seed(6, 3 * BATCH + offset)).numpy()
        np.testing.assert_allclose(augmented[offset], (expected - mean) / std, atol=1e-5)


def test_skipping_decodes_nothing_skipped(cifar):
    def first_batch_seconds(skip_batches):
        start = time.perf_counter()
        next(iter(cifar.train_batches(BATCH, seed=7, skip_batches=skip_batches)))
        return time.perf_counter() - start

    first_batch_seconds(0)  # warm up (tracing, thread pools)
    start = time.perf_counter()
    for _ in cifar.train_batches(BATCH, seed=7).take(10 * 5):  # ten epochs, decoded and augmented
        pass
    producing = time.perf_counter() - start
    skipping = min(first_batch_seconds(100 * 5) for _ in range(2))  # a hundred epochs skipped
    baseline = min(first_batch_seconds(0) for _ in range(2))
    # Were skipped examples decoded, skipping 100 epochs would cost ~10x producing 10.
    assert skipping - baseline < 0.5 * producing, (skipping, baseline, producing)


def test_other_datasets_are_normalized_with_statistics_of_their_kept_examples(tmp_path):
    name = prepare_tiny_tfds_dataset(tmp_path, register=True)  # 30 + 9 images of 28x28x1, 3 classes
    streamed = data.load_streaming(name, tmp_path, validation_examples=6, split_seed=1)
    loaded = data.load(name, tmp_path, validation_examples=6, split_seed=1)
    pixels = loaded.train_x.astype(np.float64)
    np.testing.assert_allclose(streamed.mean, [pixels.mean()], rtol=1e-6)  # float32 x / 255 in load
    np.testing.assert_allclose(streamed.std, [pixels.std()], rtol=1e-6)
    np.testing.assert_array_equal(streamed.validation_x, streamed.normalize(loaded.validation_x))
    epoch = batches(streamed.train_batches(24, seed=0), 1)[0][0]  # augmentation off by default
    np.testing.assert_allclose(np.sort(epoch.ravel()), np.sort(streamed.normalize(loaded.train_x).ravel()), atol=1e-6)
    assert abs(epoch.mean()) < 1e-5 and abs(epoch.std() - 1) < 1e-4


def test_mnist_and_fashion_mnist_are_sent_to_load(tmp_path):
    with pytest.raises(ValueError, match=r"fits in memory: use data.load\('fashion_mnist'"):
        data.load_streaming("fashion_mnist", tmp_path)


def test_an_unprepared_dataset_fails_as_load_does_naming_the_offline_route(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_network_reachable", lambda *args, **kwargs: False)
    with pytest.raises(data.DataUnavailableError, match="apps.prepare_data_main --dataset=cifar10") as raised:
        data.load_streaming("cifar10", tmp_path)
    assert f"--data_dir={tmp_path}" in str(raised.value)
    with pytest.raises(ValueError, match="'no_such_dataset_xyz' is unknown to TFDS"):
        data.load_streaming("no_such_dataset_xyz", tmp_path)


@pytest.mark.parametrize("arguments, message", [
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"skip_batches": -1}, "skip_batches must be an integer >= 0"),
    ({"augment": "yes"}, "augment must be True, False or None"),
])
def test_bad_stream_arguments_are_refused(cifar, arguments, message):
    with pytest.raises(ValueError, match=message):
        cifar.train_batches(**{"batch_size": BATCH, "seed": 0, **arguments})


def test_too_many_held_out_examples_are_refused_as_by_load(data_dir):
    with pytest.raises(ValueError, match="cifar10 has 200 training examples"):
        data.load_streaming("cifar10", data_dir, validation_examples=200)
