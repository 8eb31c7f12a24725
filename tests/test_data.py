"""Tests of dataset loading: IDX files, the TFDS path on data on disk, fail-fast errors."""

import gzip
import os
import time

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_lottery import data


def _idx_bytes(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx_dataset(folder, train=60, test=20, compress=True):
    """Four IDX files with pixel value (i % 256) in image i and label i % 10."""
    os.makedirs(folder, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images = np.broadcast_to((np.arange(count) % 256)[:, None, None], (count, 28, 28))
        labels = np.arange(count) % 10
        for stem, array, magic in ((f"{prefix}-images-idx3-ubyte", images, 0x803),
                                   (f"{prefix}-labels-idx1-ubyte", labels, 0x801)):
            content = _idx_bytes(array, magic)
            if compress:
                with gzip.open(os.path.join(folder, stem + ".gz"), "wb") as file:
                    file.write(content)
            else:
                with open(os.path.join(folder, stem), "wb") as file:
                    file.write(content)
    return str(folder)


@pytest.mark.parametrize("compress", [True, False])
def test_idx_files_are_read_exactly(tmp_path, compress):
    folder = write_idx_dataset(tmp_path, compress=compress)
    splits = data.load("mnist", folder, validation_examples=10)
    assert splits.train_x.shape == (50, 28, 28, 1) and splits.train_x.dtype == np.float32
    assert splits.validation_x.shape == (10, 28, 28, 1)
    assert splits.test_x.shape == (20, 28, 28, 1) and splits.test_y.dtype == np.int64
    assert splits.num_classes == 10 and splits.input_shape == (28, 28, 1)
    assert splits.source == folder
    # Every image i is filled with i / 255 and labelled i % 10.
    for images, labels in ((splits.train_x, splits.train_y), (splits.validation_x, splits.validation_y)):
        index = np.rint(images[:, 0, 0, 0] * 255).astype(int)
        np.testing.assert_array_equal(labels, index % 10)
        np.testing.assert_allclose(images[:, 5, 7, 0], index / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(splits.test_y, np.arange(20) % 10)


def test_validation_is_held_out_disjoint_and_deterministic(tmp_path):
    folder = write_idx_dataset(tmp_path)
    first = data.load("mnist", folder, validation_examples=15, split_seed=0)
    again = data.load("mnist", folder, validation_examples=15, split_seed=0)
    other = data.load("mnist", folder, validation_examples=15, split_seed=1)
    ids = lambda x: set(np.rint(x[:, 0, 0, 0] * 255).astype(int))  # noqa: E731
    assert ids(first.train_x).isdisjoint(ids(first.validation_x))
    assert ids(first.train_x) | ids(first.validation_x) == set(range(60))
    np.testing.assert_array_equal(first.validation_x, again.validation_x)
    assert ids(other.validation_x) != ids(first.validation_x)


def test_train_examples_takes_a_subset_after_the_hold_out(tmp_path):
    folder = write_idx_dataset(tmp_path)
    full = data.load("mnist", folder, validation_examples=10)
    subset = data.load("mnist", folder, validation_examples=10, train_examples=7)
    np.testing.assert_array_equal(subset.train_x, full.train_x[:7])
    np.testing.assert_array_equal(subset.validation_x, full.validation_x)


@pytest.mark.parametrize("subfolder", ["fashion_mnist", "fashion-mnist"])
def test_idx_files_are_found_in_a_subfolder_named_after_the_dataset(tmp_path, subfolder):
    write_idx_dataset(tmp_path / subfolder)
    splits = data.load("fashion_mnist", str(tmp_path), validation_examples=10)
    assert splits.source == str(tmp_path / subfolder)


def test_corrupt_files_are_refused_naming_the_file(tmp_path):
    folder = write_idx_dataset(tmp_path, compress=False)
    path = os.path.join(folder, "train-images-idx3-ubyte")
    content = open(path, "rb").read()
    open(path, "wb").write(content[:-100])
    with pytest.raises(ValueError, match="train-images-idx3-ubyte is truncated"):
        data.load("mnist", folder, validation_examples=10)
    open(path, "wb").write(b"\x00\x00\x08\x01" + content[4:])
    with pytest.raises(ValueError, match="bad magic number"):
        data.load("mnist", folder, validation_examples=10)


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"name": ""}, "non-empty string"),
        ({"name": "mnist", "validation_examples": -1}, "validation_examples"),
        ({"name": "mnist", "train_examples": 0}, "train_examples"),
        ({"name": "mnist", "validation_examples": 60}, "has 60 training examples"),
    ],
)
def test_bad_arguments_are_refused(tmp_path, arguments, message):
    folder = write_idx_dataset(tmp_path)
    with pytest.raises(ValueError, match=message):
        data.load(data_dir=folder, **arguments)


@pytest.mark.parametrize("name, hint", [("mnist", "IDX files"), ("cifar10", "download_and_prepare")])
def test_missing_dataset_fails_fast_saying_where_to_put_it(tmp_path, monkeypatch, name, hint):
    monkeypatch.setattr(data, "_network_reachable", lambda *args, **kwargs: False)
    start = time.perf_counter()
    with pytest.raises(data.DataUnavailableError, match=hint):
        data.load(name, str(tmp_path), validation_examples=10)
    assert time.perf_counter() - start < 5


def test_unknown_dataset_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown to TFDS"):
        data.load("no_such_dataset_xyz", str(tmp_path))


class TinyLotteryImages(tfds.core.GeneratorBasedBuilder):
    """A 3-class dataset prepared offline, to test the real TFDS code path."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(num_classes=3)}
            ),
            supervised_keys=("image", "label"),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {"train": self._generate_examples(30), "test": self._generate_examples(9)}

    def _generate_examples(self, count):
        for index in range(count):
            image = np.full((28, 28, 1), index * 5, np.uint8)
            yield index, {"image": image, "label": index % 3}


def test_tfds_path_reads_a_prepared_dataset_from_data_dir(tmp_path):
    TinyLotteryImages(data_dir=str(tmp_path)).download_and_prepare()
    splits = data.load("tiny_lottery_images", str(tmp_path), validation_examples=6)
    assert splits.source.startswith("tfds:tiny_lottery_images")
    assert splits.train_x.shape == (24, 28, 28, 1) and splits.validation_x.shape == (6, 28, 28, 1)
    assert splits.test_x.shape == (9, 28, 28, 1) and splits.num_classes == 3
    index = np.rint(splits.train_x[:, 0, 0, 0] * 255 / 5).astype(int)
    np.testing.assert_array_equal(splits.train_y, index % 3)


@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST_DIR), reason="Debian's dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    splits = data.load("fashion_mnist")
    assert (len(splits.train_y), len(splits.validation_y), len(splits.test_y)) == (55000, 5000, 10000)
    assert splits.num_classes == 10 and set(np.unique(splits.test_y)) == set(range(10))
    assert splits.source == data.DEBIAN_FASHION_MNIST_DIR


def test_to_dataset_batches_and_shuffles_reproducibly():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    batches = [b[1].numpy().tolist() for b in data.to_dataset(x, y, 4)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    first = [b[1].numpy().tolist() for b in data.to_dataset(x, y, 10, shuffle_seed=3)]
    second = [b[1].numpy().tolist() for b in data.to_dataset(x, y, 10, shuffle_seed=3)]
    assert first == second and first[0] != list(range(10)) and sorted(first[0]) == list(range(10))
