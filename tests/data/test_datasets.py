"""Tests of data/datasets.py: IDX files, the TFDS path on data on disk, fail-fast errors.

Nothing here touches the network: the only TFDS dataset is built offline in tmp_path,
and the reachability check is monkeypatched or pointed at localhost.
"""

import gzip
import hashlib
import os
import pathlib
import socket
import time
import uuid

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from keras_lottery.data import augment
from keras_lottery.data import datasets as data

TRAIN, TEST = 60, 20


def idx_bytes(array, magic):
    """The bytes of an IDX file holding the uint8 `array`."""
    header = magic.to_bytes(4, "big") + b"".join(int(size).to_bytes(4, "big") for size in array.shape)
    return header + np.ascontiguousarray(array, np.uint8).tobytes()


def write_idx_dataset(folder, train=TRAIN, test=TEST, compress=True):
    """Writes the four IDX files: image i is filled with pixel value 3 * i, labelled i % 10.

    Returns:
      The folder, as a string.
    """
    os.makedirs(folder, exist_ok=True)
    for prefix, count in (("train", train), ("t10k", test)):
        images = np.broadcast_to((3 * np.arange(count))[:, None, None], (count, 28, 28))
        labels = np.arange(count) % 10
        for stem, array, magic in ((f"{prefix}-images-idx3-ubyte", images, 0x803),
                                   (f"{prefix}-labels-idx1-ubyte", labels, 0x801)):
            content = idx_bytes(array, magic)
            path = os.path.join(folder, stem + (".gz" if compress else ""))
            with (gzip.open if compress else open)(path, "wb") as file:
                file.write(content)
    return str(folder)


def image_ids(images):
    """Recovers each synthetic image's index i from its pixel value 3 * i."""
    return np.rint(images[:, 0, 0, 0] * 255 / 3).astype(int)


def expected_images(ids):
    """The images `load` must return for synthetic indices `ids`, bit for bit."""
    pixels = (3 * np.asarray(ids)).astype(np.float32) / np.float32(255)
    return np.broadcast_to(pixels[:, None, None, None], (len(ids), 28, 28, 1))


# ---------------------------------------------------------------------------- IDX files


@pytest.mark.parametrize("compress", [True, False], ids=["gzip", "plain"])
def test_idx_files_are_read_exactly(tmp_path, compress):
    folder = write_idx_dataset(tmp_path, compress=compress)
    splits = data.load("mnist", folder, validation_examples=10)
    assert splits.source == folder
    assert splits.num_classes == 10 and splits.input_shape == (28, 28, 1)
    for images, labels, count in ((splits.train_x, splits.train_y, 50), (splits.validation_x, splits.validation_y, 10),
                                  (splits.test_x, splits.test_y, TEST)):
        assert images.shape == (count, 28, 28, 1) and images.dtype == np.float32
        assert labels.shape == (count,) and labels.dtype == np.int64
        ids = image_ids(images)
        np.testing.assert_array_equal(images, expected_images(ids))
        np.testing.assert_array_equal(labels, ids % 10)
    np.testing.assert_array_equal(image_ids(splits.test_x), np.arange(TEST))  # test split untouched, in order


def test_validation_is_held_out_disjoint_and_deterministic(tmp_path):
    folder = write_idx_dataset(tmp_path)
    first = data.load("mnist", folder, validation_examples=15, split_seed=0)
    again = data.load("mnist", folder, validation_examples=15, split_seed=0)
    other = data.load("mnist", folder, validation_examples=15, split_seed=1)
    train_ids, validation_ids = image_ids(first.train_x), image_ids(first.validation_x)
    assert (len(train_ids), len(validation_ids)) == (45, 15)
    assert set(train_ids).isdisjoint(validation_ids)
    assert sorted(np.concatenate([validation_ids, train_ids])) == list(range(TRAIN))
    # The permutation of default_rng(split_seed): first the validation examples, then train.
    order = np.random.default_rng(0).permutation(TRAIN)
    np.testing.assert_array_equal(validation_ids, order[:15])
    np.testing.assert_array_equal(train_ids, order[15:])
    for field in ("train_x", "train_y", "validation_x", "validation_y"):
        np.testing.assert_array_equal(getattr(first, field), getattr(again, field))
    assert set(image_ids(other.validation_x)) != set(validation_ids)


def test_train_examples_keeps_the_first_training_examples_after_the_hold_out(tmp_path):
    folder = write_idx_dataset(tmp_path)
    full = data.load("mnist", folder, validation_examples=10)
    subset = data.load("mnist", folder, validation_examples=10, train_examples=7)
    np.testing.assert_array_equal(subset.train_x, full.train_x[:7])
    np.testing.assert_array_equal(subset.train_y, full.train_y[:7])
    np.testing.assert_array_equal(subset.validation_x, full.validation_x)
    np.testing.assert_array_equal(subset.test_x, full.test_x)
    edge = data.load("mnist", folder, validation_examples=10, train_examples=50)  # exactly all that is left
    assert len(edge.train_x) == 50


@pytest.mark.parametrize("subfolder", ["fashion_mnist", "fashion-mnist"])
def test_idx_files_are_found_in_a_subfolder_named_after_the_dataset(tmp_path, subfolder):
    expected = write_idx_dataset(tmp_path / subfolder)
    splits = data.load("fashion_mnist", tmp_path, validation_examples=10)  # a pathlib.Path works too
    assert splits.source == expected and len(splits.train_x) == TRAIN - 10


def test_data_dir_itself_comes_before_its_subfolders(tmp_path):
    write_idx_dataset(tmp_path / "mnist", train=40)
    folder = write_idx_dataset(tmp_path, train=30)
    splits = data.load("mnist", folder, validation_examples=10)
    assert splits.source == folder and len(splits.train_x) == 20


def _corrupt_truncated(content):
    return content[:-100]


def _corrupt_magic(content):
    return (0x801).to_bytes(4, "big") + content[4:]


def _corrupt_header(content):
    return content[:10]


@pytest.mark.parametrize(
    "corrupt, message",
    [(_corrupt_truncated, "is truncated or corrupt"), (_corrupt_magic, "bad magic number"),
     (_corrupt_header, "truncated inside its header")],
    ids=["truncated", "bad-magic", "short-header"],
)
def test_corrupt_files_are_refused_naming_the_file(tmp_path, corrupt, message):
    folder = write_idx_dataset(tmp_path, compress=False)
    path = os.path.join(folder, "train-images-idx3-ubyte")
    with open(path, "rb") as file:
        content = file.read()
    with open(path, "wb") as file:
        file.write(corrupt(content))
    with pytest.raises(ValueError, match=message) as raised:
        data.load("mnist", folder, validation_examples=10)
    assert path in str(raised.value) and "re-download" in str(raised.value)


def test_truncated_gzip_is_refused_naming_the_file(tmp_path):
    folder = write_idx_dataset(tmp_path)
    path = os.path.join(folder, "t10k-labels-idx1-ubyte.gz")
    with open(path, "rb") as file:
        content = file.read()
    with open(path, "wb") as file:
        file.write(content[: len(content) // 2])
    with pytest.raises(ValueError, match="re-download") as raised:
        data.load("mnist", folder, validation_examples=10)
    assert path in str(raised.value)


def test_images_and_labels_of_different_counts_are_refused(tmp_path):
    folder = write_idx_dataset(tmp_path, compress=False)
    with open(os.path.join(folder, "train-labels-idx1-ubyte"), "wb") as file:
        file.write(idx_bytes(np.zeros(TRAIN - 1, np.uint8), 0x801))
    with pytest.raises(ValueError, match=f"holds {TRAIN} images but .*train-labels-idx1-ubyte holds {TRAIN - 1}"):
        data.load("mnist", folder, validation_examples=10)


# ---------------------------------------------------------------------------- arguments


@pytest.mark.parametrize(
    "arguments, message",
    [
        ({"name": ""}, "non-empty string"),
        ({"name": None}, "non-empty string"),
        ({"name": "mnist", "data_dir": 3}, "data_dir must be a folder path"),
        ({"name": "mnist", "validation_examples": -1}, "validation_examples must be an integer >= 0"),
        ({"name": "mnist", "validation_examples": 10.0}, "validation_examples must be an integer"),
        ({"name": "mnist", "train_examples": 0}, "train_examples must be an integer >= 1"),
        ({"name": "mnist", "split_seed": "zero"}, "split_seed must be an integer"),
    ],
)
def test_bad_arguments_are_refused_before_any_loading(tmp_path, monkeypatch, arguments, message):
    def fail_if_called(*args, **kwargs):
        raise AssertionError("load() read data before checking its arguments")

    monkeypatch.setattr(data, "_load_arrays", fail_if_called)
    with pytest.raises(ValueError, match=message):
        data.load(**{"data_dir": str(tmp_path), **arguments})


@pytest.mark.parametrize("arguments", [{"validation_examples": TRAIN}, {"validation_examples": 50, "train_examples": 11}])
def test_too_many_examples_asked_for_says_how_many_exist(tmp_path, arguments):
    folder = write_idx_dataset(tmp_path)
    with pytest.raises(ValueError, match=f"mnist has {TRAIN} training examples"):
        data.load("mnist", folder, **arguments)


# ---------------------------------------------------------------------------- not on disk


@pytest.mark.parametrize(
    "name, hint",
    [("mnist", "put the four IDX files"), ("cifar10", r"on a machine with internet run tfds.builder\('cifar10'"),
     ("cifar10", "prepare it offline with `python -m apps.prepare_data_main --dataset=cifar10 --manual_dir=<folder "
      "with cifar-10-binary.tar.gz> --data_dir="),
     ("svhn_cropped", r"it is not prepared in --data_dir=.*; on a machine with internet run")],
)
def test_missing_dataset_fails_fast_saying_where_to_put_it(tmp_path, monkeypatch, name, hint):
    monkeypatch.setattr(data, "_network_reachable", lambda *args, **kwargs: False)
    start = time.perf_counter()
    with pytest.raises(data.DataUnavailableError, match=hint) as raised:
        data.load(name, str(tmp_path), validation_examples=10)
    assert time.perf_counter() - start < 5
    assert repr(name) in str(raised.value) and str(tmp_path) in str(raised.value)
    if name != "mnist":
        assert f"--data_dir={tmp_path}" in str(raised.value)


def test_missing_tfds_dataset_without_data_dir_names_the_default_and_the_flag():
    message = data._where_to_put("cifar10", None)
    assert "not prepared in the default TFDS data_dir (no --data_dir given)" in message
    assert "--data_dir=<dir>`" in message


def test_missing_fashion_mnist_suggests_the_debian_package(tmp_path, monkeypatch):
    monkeypatch.setattr(data, "_network_reachable", lambda *args, **kwargs: False)
    monkeypatch.setattr(data, "DEBIAN_FASHION_MNIST_DIR", str(tmp_path / "not-installed"))
    with pytest.raises(data.DataUnavailableError, match="apt-get install dataset-fashion-mnist"):
        data.load("fashion_mnist", str(tmp_path), validation_examples=10)


def test_incomplete_idx_folder_is_not_used(tmp_path, monkeypatch):
    folder = write_idx_dataset(tmp_path)
    os.remove(os.path.join(folder, "t10k-images-idx3-ubyte.gz"))
    monkeypatch.setattr(data, "_network_reachable", lambda *args, **kwargs: False)
    with pytest.raises(data.DataUnavailableError, match="put the four IDX files"):
        data.load("mnist", folder, validation_examples=10)


@pytest.mark.parametrize("make", ["missing", "file"])
def test_a_data_dir_that_is_not_a_folder_is_refused(tmp_path, make):
    path = tmp_path / "data"
    if make == "file":
        path.write_text("not a folder")
    with pytest.raises(ValueError, match="does not exist" if make == "missing" else "is a file, not a folder"):
        data.load("fashion_mnist", str(path), validation_examples=10)


def test_a_given_data_dir_is_never_bypassed_for_debians_copy(tmp_path, monkeypatch):
    # Debian's copy stands in only when no data_dir is given: an incomplete given folder is refused.
    folder = write_idx_dataset(tmp_path)
    os.remove(os.path.join(folder, "train-labels-idx1-ubyte.gz"))
    monkeypatch.setattr(data, "_network_reachable", lambda *args, **kwargs: False)
    monkeypatch.setattr(data, "_load_idx_folder", lambda folder: pytest.fail(f"read {folder}"))
    with pytest.raises(data.DataUnavailableError, match=f"{folder} lacks train-labels-idx1-ubyte"):
        data.load("fashion_mnist", folder, validation_examples=10)


def test_an_empty_split_is_refused_naming_its_file(tmp_path):
    folder = write_idx_dataset(tmp_path, test=0)
    with pytest.raises(ValueError, match="t10k-images-idx3-ubyte.gz holds no images: the test split would be empty"):
        data.load("mnist", folder, validation_examples=10)


def test_the_hash_of_every_file_read_is_recorded(tmp_path):
    folder = write_idx_dataset(tmp_path)
    splits = data.load("mnist", folder, validation_examples=10)
    expected = {name: hashlib.sha256((pathlib.Path(folder) / name).read_bytes()).hexdigest()
                for name in os.listdir(folder)}
    assert dict(splits.file_hashes) == expected and len(expected) == 4


def test_unknown_dataset_name_is_refused(tmp_path):
    with pytest.raises(ValueError, match="'no_such_dataset_xyz' is unknown to TFDS"):
        data.load("no_such_dataset_xyz", str(tmp_path))


def test_network_check_answers_within_its_timeout():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        assert data._network_reachable("127.0.0.1", port, timeout=2.0)
    start = time.perf_counter()
    assert not data._network_reachable("127.0.0.1", port, timeout=2.0)  # closed now: refused
    assert time.perf_counter() - start < 2.5


# ---------------------------------------------------------------------------- TFDS on disk


def prepare_tiny_tfds_dataset(data_dir, register):
    """Builds a 3-class 28x28x1 TFDS dataset offline in `data_dir`; returns its name.

    Image i (30 in train, 9 in test) is filled with pixel value 5 * i, labelled i % 3.
    The name is unique per call, so a registered builder never collides with another
    test's; with register=False TFDS must find the dataset from its files alone, as
    when someone copied <data_dir>/<name> from another machine.
    """
    dataset_name = f"keras_lottery_tiny_{uuid.uuid4().hex[:12]}"

    class TinyImages(tfds.core.GeneratorBasedBuilder, skip_registration=not register):
        name = dataset_name
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            return self.dataset_info_from_configs(
                features=tfds.features.FeaturesDict(
                    {"image": tfds.features.Image(shape=(28, 28, 1)), "label": tfds.features.ClassLabel(num_classes=3)}
                ),
                supervised_keys=("image", "label"),
            )

        def _split_generators(self, dl_manager):
            del dl_manager  # nothing to download
            return {"train": self._generate_examples(30), "test": self._generate_examples(9)}

        def _generate_examples(self, count):
            for index in range(count):
                yield index, {"image": np.full((28, 28, 1), 5 * index, np.uint8), "label": index % 3}

    TinyImages(data_dir=str(data_dir)).download_and_prepare()
    return dataset_name


@pytest.mark.parametrize("register", [True, False], ids=["registered-builder", "files-only"])
def test_tfds_path_reads_a_prepared_dataset_from_data_dir(tmp_path, monkeypatch, register):
    name = prepare_tiny_tfds_dataset(tmp_path, register)

    def no_network(*args, **kwargs):
        raise AssertionError("a prepared dataset must not need the network")

    monkeypatch.setattr(data, "_network_reachable", no_network)
    splits = data.load(name, tmp_path, validation_examples=6, split_seed=4)
    assert splits.source == f"tfds:{name} in {tmp_path}"
    assert splits.num_classes == 3 and splits.input_shape == (28, 28, 1)
    assert (len(splits.train_x), len(splits.validation_x), len(splits.test_x)) == (24, 6, 9)
    all_ids = []
    for images, labels in ((splits.train_x, splits.train_y), (splits.validation_x, splits.validation_y),
                           (splits.test_x, splits.test_y)):
        assert images.dtype == np.float32 and labels.dtype == np.int64
        ids = np.rint(images[:, 0, 0, 0] * 255 / 5).astype(int)
        pixels = (5 * ids).astype(np.float32) / np.float32(255)
        np.testing.assert_array_equal(images, np.broadcast_to(pixels[:, None, None, None], images.shape))
        np.testing.assert_array_equal(labels, ids % 3)
        all_ids.append(ids)
    assert sorted(np.concatenate(all_ids[:2])) == list(range(30)) and sorted(all_ids[2]) == list(range(9))
    again = data.load(name, tmp_path, validation_examples=6, split_seed=4)
    np.testing.assert_array_equal(again.validation_y, splits.validation_y)


# ---------------------------------------------------------------------------- real data, tf.data


@pytest.mark.skipif(not os.path.isdir(data.DEBIAN_FASHION_MNIST_DIR), reason="Debian's dataset-fashion-mnist not installed")
def test_debian_fashion_mnist():
    splits = data.load("fashion_mnist")  # no data_dir: Debian's folder
    assert splits.source == data.DEBIAN_FASHION_MNIST_DIR
    assert sorted(name for name, _ in splits.file_hashes) == sorted(
        name for name in os.listdir(data.DEBIAN_FASHION_MNIST_DIR) if "ubyte" in name)
    assert (len(splits.train_y), len(splits.validation_y), len(splits.test_y)) == (55000, 5000, 10000)
    assert splits.train_x.shape == (55000, 28, 28, 1) and splits.test_x.shape == (10000, 28, 28, 1)
    assert splits.num_classes == 10 and set(np.unique(splits.test_y)) == set(range(10))
    assert splits.train_x.min() == 0.0 and splits.train_x.max() == 1.0


def test_to_dataset_batches_and_shuffles_reproducibly():
    x = np.arange(10, dtype=np.float32)[:, None]
    y = np.arange(10)
    batches = [labels.numpy().tolist() for _, labels in data.to_dataset(x, y, 4)]
    assert batches == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    shuffled = data.to_dataset(x, y, 10, shuffle_seed=3)
    first_pass, second_pass = ([labels.numpy().tolist() for _, labels in shuffled][0] for _ in range(2))
    rebuilt = [labels.numpy().tolist() for _, labels in data.to_dataset(x, y, 10, shuffle_seed=3)][0]
    assert sorted(first_pass) == list(range(10)) and first_pass != list(range(10))
    assert first_pass == rebuilt and second_pass != first_pass  # same seed, same order; reshuffled each pass
    repeated = data.to_dataset(x, y, 4, repeat=True).take(5)
    assert [labels.numpy().tolist() for _, labels in repeated][3] == [2, 3, 4, 5]


# ---------------------------------------------------------------------------- Splits.train_batches


def _labels(batches):
    return [labels.numpy().tolist() for _, labels in batches]


@pytest.fixture()
def mnist_splits(tmp_path):
    return data.load("mnist", write_idx_dataset(tmp_path), validation_examples=10)


@pytest.mark.parametrize("skip", [0, 3, 8])
def test_train_batches_without_augmentation_are_to_datasets_batch_for_batch(mnist_splits, skip):
    assert mnist_splits.name == "mnist" and mnist_splits.train_size == 50
    for augment_value in (None, False):  # None: mnist's default, off
        # Built afresh each time: a second iterator of one reshuffling dataset draws another order.
        old = data.to_dataset(mnist_splits.train_x, mnist_splits.train_y, 16, shuffle_seed=4, repeat=True).skip(skip)
        new = mnist_splits.train_batches(16, seed=4, skip_batches=skip, augment=augment_value)
        for (old_x, old_y), (new_x, new_y) in zip(old.take(7), new.take(7)):
            np.testing.assert_array_equal(new_x.numpy(), old_x.numpy())
            np.testing.assert_array_equal(new_y.numpy(), old_y.numpy())


def test_augmented_train_batches_augment_the_same_examples_and_resume_exactly(mnist_splits):
    plain = list(mnist_splits.train_batches(16, seed=4).take(8))
    augmented = list(mnist_splits.train_batches(16, seed=4, augment=True).take(8))
    assert _labels(augmented) == _labels(plain)  # same examples, same order
    for batch, ((plain_x, _), (augmented_x, _)) in enumerate(zip(plain, augmented)):
        for offset in (0, 9, 15):
            expected = augment.pad_crop_flip(plain_x[offset], augment.example_seed(4, 16 * batch + offset))
            np.testing.assert_array_equal(augmented_x[offset].numpy(), expected.numpy())
    assert np.mean([not np.array_equal(a, b) for (a, _), (b, _) in zip(plain, augmented)]) == 1
    resumed = list(mnist_splits.train_batches(16, seed=4, skip_batches=5, augment=True).take(3))
    for (resumed_x, resumed_y), (x, y) in zip(resumed, augmented[5:]):
        np.testing.assert_array_equal(resumed_x.numpy(), x.numpy())
        np.testing.assert_array_equal(resumed_y.numpy(), y.numpy())
    assert float(tf.reduce_min(augmented[0][0])) >= 0.0  # [0, 1] images: no normalization in memory


def test_train_batches_augment_cifar_by_default():
    x = np.random.default_rng(0).random((12, 8, 8, 3), dtype=np.float32)
    splits = data.Splits(x, np.arange(12), x[:2], np.arange(2), x[:2], np.arange(2), 10, (8, 8, 3), "test",
                         name="cifar10")
    default = next(iter(splits.train_batches(12, seed=1)))[0].numpy()
    on = next(iter(splits.train_batches(12, seed=1, augment=True)))[0].numpy()
    off = next(iter(splits.train_batches(12, seed=1, augment=False)))[0].numpy()
    np.testing.assert_array_equal(default, on)
    assert not np.array_equal(default, off)
