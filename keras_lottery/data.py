"""Datasets: IDX files on disk for (Fashion-)MNIST, TFDS for everything else.

`load` returns NumPy splits with a validation set held out from train (5,000
examples, as in the LTH paper), drawn with a fixed permutation so that every run
with the same `split_seed` sees the same split. Offline machines read MNIST and
Fashion-MNIST from IDX files (Debian ships Fashion-MNIST's in
`/usr/share/datasets/fashion-mnist`; TFDS's checksums do not match those re-packed
files, so they are parsed directly). A dataset that is neither on disk nor
downloadable fails within seconds instead of after minutes of TFDS retries.
"""

import dataclasses
import gzip
import os
import socket

import numpy as np

from keras_lottery import compat  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)
from keras_lottery.validation import check_int

import tensorflow as tf  # noqa: E402

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_DATASETS = ("mnist", "fashion_mnist")
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
_IMAGE_MAGIC, _LABEL_MAGIC = 0x00000803, 0x00000801


class DataUnavailableError(RuntimeError):
    """The dataset is neither on disk nor downloadable from here."""


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train, validation and test arrays: images float32 in [0, 1] (N, H, W, C), labels int64."""

    train_x: np.ndarray
    train_y: np.ndarray
    validation_x: np.ndarray
    validation_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    input_shape: tuple
    source: str


def _find_file(folder, stem):
    for name in (stem, stem + ".gz"):
        if os.path.isfile(os.path.join(folder, name)):
            return os.path.join(folder, name)
    return None


def idx_folders(name, data_dir):
    """Folders searched for `name`'s IDX files, in order."""
    folders = []
    if data_dir:
        folders += [data_dir, os.path.join(data_dir, name), os.path.join(data_dir, name.replace("_", "-"))]
    if name == "fashion_mnist":
        folders.append(DEBIAN_FASHION_MNIST_DIR)
    return folders


def read_idx(path, expected_magic):
    """Parses one IDX file (optionally gzip'ed) into a uint8 array.

    Raises:
      ValueError: wrong magic number or a size that does not match the header.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            content = file.read()
    except (OSError, EOFError) as error:
        raise ValueError(f"cannot read {path} ({error}): re-download or reinstall the file.") from error
    if len(content) < 4 or int.from_bytes(content[:4], "big") != expected_magic:
        raise ValueError(f"{path} is not an IDX file of the expected kind (bad magic number): re-download it.")
    dimensions = expected_magic & 0xFF
    header = 4 + 4 * dimensions
    shape = tuple(int.from_bytes(content[4 + 4 * i:8 + 4 * i], "big") for i in range(dimensions))
    if len(content) != header + int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated or corrupt (header says {shape}, file has {len(content) - header} "
            "data bytes): re-download or reinstall it."
        )
    return np.frombuffer(content, np.uint8, offset=header).reshape(shape)


def _load_idx(folder):
    paths = {key: _find_file(folder, stem) for key, stem in IDX_FILES.items()}
    arrays = {}
    for key, path in paths.items():
        arrays[key] = read_idx(path, _IMAGE_MAGIC if key.endswith("_x") else _LABEL_MAGIC)
    for split in ("train", "test"):
        if len(arrays[f"{split}_x"]) != len(arrays[f"{split}_y"]):
            raise ValueError(f"{folder}: the {split} images and labels have different counts.")
    images = {key: (arrays[key].astype(np.float32) / 255.0)[..., None] for key in ("train_x", "test_x")}
    labels = {key: arrays[key].astype(np.int64) for key in ("train_y", "test_y")}
    return images["train_x"], labels["train_y"], images["test_x"], labels["test_y"], 10


def _network_reachable(host="storage.googleapis.com", port=443, timeout=3.0):
    """True if a TCP connection to TFDS's download host opens within `timeout` seconds."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _where_to_put(name, data_dir):
    if name in IDX_DATASETS:
        return (f"put the four IDX files ({', '.join(IDX_FILES.values())}, optionally .gz) in --data_dir"
                + (" (or apt-get install dataset-fashion-mnist)" if name == "fashion_mnist" else ""))
    return (f"run tfds.builder({name!r}, data_dir=...).download_and_prepare() on a machine with internet "
            f"access and copy <data_dir>/{name} into {data_dir or '~/tensorflow_datasets'}")


def _load_tfds(name, data_dir):
    import tensorflow_datasets as tfds  # slow import: only when needed

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(f"dataset {name!r} is unknown to TFDS and has no IDX files on disk.") from error
    if not builder.is_prepared():
        if not _network_reachable():
            raise DataUnavailableError(
                f"dataset {name!r} is not on disk and the download host is unreachable: "
                + _where_to_put(name, data_dir) + "."
            )
        builder.download_and_prepare()
    arrays = {}
    for split in ("train", "test"):
        x, y = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
        arrays[split] = (x.astype(np.float32) / 255.0 if x.dtype == np.uint8 else x.astype(np.float32),
                         y.astype(np.int64))
    num_classes = builder.info.features["label"].num_classes
    return (*arrays["train"], *arrays["test"], num_classes, f"tfds:{name} in {builder.data_dir}")


def load(name, data_dir=None, validation_examples=5000, train_examples=None, split_seed=0):
    """Loads a dataset as NumPy splits with a validation set held out from train.

    Args:
      name: a TFDS name (mnist, fashion_mnist, cifar10, ...).
      data_dir: folder with IDX files, or a TFDS data_dir.
      validation_examples: examples held out from train for validation.
      train_examples: if set, train on only this many examples (after the hold-out).
      split_seed: seed of the permutation that picks the held-out examples.

    Returns:
      `Splits`.

    Raises:
      ValueError: bad arguments, an unknown or corrupt dataset, or too few examples.
      DataUnavailableError: the dataset is not on disk and cannot be downloaded.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string; got {name!r}.")
    check_int(validation_examples, "validation_examples", 0)
    if train_examples is not None:
        check_int(train_examples, "train_examples", 1)
    folder = next((f for f in idx_folders(name, data_dir) if name in IDX_DATASETS
                   and all(_find_file(f, stem) for stem in IDX_FILES.values())), None)
    if folder is not None:
        train_x, train_y, test_x, test_y, num_classes = _load_idx(folder)
        source = folder
    else:
        train_x, train_y, test_x, test_y, num_classes, source = _load_tfds(name, data_dir)
    needed = validation_examples + (train_examples or 1)
    if needed > len(train_x):
        raise ValueError(
            f"{name} has {len(train_x)} training examples: not enough for {validation_examples} validation "
            f"examples plus {train_examples or 1} training examples. Lower validation_examples or train_examples."
        )
    order = np.random.default_rng(split_seed).permutation(len(train_x))
    held_out, kept = order[:validation_examples], order[validation_examples:]
    if train_examples is not None:
        kept = kept[:train_examples]
    return Splits(train_x[kept], train_y[kept], train_x[held_out], train_y[held_out], test_x, test_y,
                  int(num_classes), tuple(train_x.shape[1:]), source)


def to_dataset(x, y, batch_size, shuffle_seed=None, repeat=False):
    """A batched tf.data pipeline over arrays, reshuffled each pass when seeded."""
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
