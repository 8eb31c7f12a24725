"""Datasets: IDX files on disk for (Fashion-)MNIST, TFDS for everything else.

`load` returns NumPy splits with a validation set held out from train (5,000
examples, as in the LTH paper), drawn with a fixed permutation so that every run
with the same `split_seed` sees the same split. Offline machines read MNIST and
Fashion-MNIST from IDX files (Debian ships Fashion-MNIST's in
`/usr/share/datasets/fashion-mnist`; TFDS's checksums do not match those re-packed
files, so they are parsed here). Other datasets go through TFDS. A dataset that is
neither on disk nor downloadable fails within seconds instead of after minutes of
TFDS retries.
"""

from keras_lottery import compat  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)

import gzip  # noqa: E402
import hashlib  # noqa: E402
import os  # noqa: E402
import socket  # noqa: E402
import threading  # noqa: E402

import numpy as np  # noqa: E402

from keras_lottery.data import prepare  # noqa: E402
from keras_lottery.data.splits import Splits, to_dataset, to_unit_float  # noqa: E402, F401  (re-exported)
from keras_lottery.foundations.validation import check_int  # noqa: E402

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
IDX_DATASETS = ("mnist", "fashion_mnist")
IDX_CLASSES = 10
IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}
IMAGE_MAGIC = 0x00000803  # unsigned bytes, 3 dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, 1 dimension
_REDOWNLOAD = "re-download it (or reinstall the package that ships it)"


class DataUnavailableError(RuntimeError):
    """The dataset is neither on disk nor downloadable from this machine."""


def idx_folders(name, data_dir):
    """Returns the folders searched for `name`'s IDX files, in search order.

    A given `data_dir` is the only place searched (it and its subfolder named after the
    dataset): data from elsewhere never stands in for it. Without one, Fashion-MNIST is
    read from Debian's package.
    """
    if data_dir:
        return [data_dir, os.path.join(data_dir, name), os.path.join(data_dir, name.replace("_", "-"))]
    return [DEBIAN_FASHION_MNIST_DIR] if name == "fashion_mnist" else []


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _check_data_dir(data_dir):
    """Refuses a `data_dir` that is not an existing folder, before anything is read."""
    if data_dir is None:
        return
    if not os.path.exists(data_dir):
        raise ValueError(f"data_dir {data_dir} does not exist: fix the path, or leave --data_dir out to use the "
                         "default location.")
    if not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir} is a file, not a folder: pass the folder that holds the dataset.")


def _idx_path(folder, stem):
    """The path of IDX file `stem` in `folder`, plain or .gz, or None if absent."""
    for candidate in (stem, stem + ".gz"):
        path = os.path.join(folder, candidate)
        if os.path.isfile(path):
            return path
    return None


def read_idx(path, expected_magic):
    """Parses one IDX file (plain or gzip'ed) into a uint8 array.

    Args:
      path: the file.
      expected_magic: IMAGE_MAGIC or LABEL_MAGIC.

    Returns:
      A read-only uint8 array with the shape the header declares.

    Raises:
      ValueError: the file cannot be read, has the wrong magic number, or holds a
        different number of bytes than its header declares.
    """
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as file:
            content = file.read()
    except (OSError, EOFError) as error:  # gzip raises both on truncated archives
        raise ValueError(f"cannot read {path} ({error}): {_REDOWNLOAD}.") from error
    magic = int.from_bytes(content[:4], "big")
    if magic != expected_magic:  # also catches files shorter than 4 bytes
        raise ValueError(
            f"{path} is not an IDX {'image' if expected_magic == IMAGE_MAGIC else 'label'} file "
            f"(bad magic number 0x{magic:08x}, expected 0x{expected_magic:08x}): {_REDOWNLOAD}."
        )
    header_bytes = 4 + 4 * (expected_magic & 0xFF)
    if len(content) < header_bytes:
        raise ValueError(f"{path} is truncated inside its header: {_REDOWNLOAD}.")
    shape = tuple(int.from_bytes(content[offset:offset + 4], "big") for offset in range(4, header_bytes, 4))
    data_bytes = len(content) - header_bytes
    if data_bytes != int(np.prod(shape)):
        raise ValueError(
            f"{path} is truncated or corrupt: its header declares shape {shape} "
            f"({int(np.prod(shape))} bytes) but it holds {data_bytes}: {_REDOWNLOAD}."
        )
    return np.frombuffer(content, np.uint8, offset=header_bytes).reshape(shape)


def _load_idx_folder(folder):
    """Reads the four IDX files of `folder` into (train_x, train_y, test_x, test_y, file hashes)."""
    arrays, hashes = {}, []
    for key, stem in IDX_FILES.items():
        path = _idx_path(folder, stem)
        hashes.append((os.path.basename(path), _sha256(path)))
        array = read_idx(path, IMAGE_MAGIC if key.endswith("_x") else LABEL_MAGIC)
        if key.endswith("_y") and array.size and array.max() >= IDX_CLASSES:
            raise ValueError(f"{path} holds label {array.max()}, above {IDX_CLASSES - 1}: {_REDOWNLOAD}.")
        arrays[key] = (array, path)
    for split in ("train", "test"):
        (images, images_path), (labels, labels_path) = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(images) != len(labels):
            raise ValueError(
                f"{images_path} holds {len(images)} images but {labels_path} holds {len(labels)} labels: "
                f"one of them is from another dataset or corrupt; {_REDOWNLOAD}."
            )
        if not len(images):
            raise ValueError(f"{images_path} holds no images: the {split} split would be empty; {_REDOWNLOAD}.")
    images = {key: (arrays[key][0].astype(np.float32) / 255.0)[..., np.newaxis] for key in ("train_x", "test_x")}
    labels = {key: arrays[key][0].astype(np.int64) for key in ("train_y", "test_y")}
    return images["train_x"], labels["train_y"], images["test_x"], labels["test_y"], tuple(hashes)


def _network_reachable(host="storage.googleapis.com", port=443, timeout=3.0):
    """Returns True if a TCP connection to `host`:`port` opens within `timeout` seconds.

    The connection runs in a daemon thread so that a slow DNS lookup, which the
    socket timeout does not cover, cannot delay the answer past `timeout` either.
    """
    opened = []

    def connect():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                opened.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=connect, name="keras_lottery_network_check", daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(opened)


def _where_to_put(name, data_dir):
    """The sentence of DataUnavailableError's message that says how to provide `name`."""
    if name in IDX_DATASETS:
        if name != "fashion_mnist":
            apt_hint = ""
        elif data_dir:
            apt_hint = " (or leave --data_dir out to read Debian's copy: apt-get install dataset-fashion-mnist)"
        else:
            apt_hint = " (or apt-get install dataset-fashion-mnist)"
        missing = _missing_idx_files(name, data_dir)
        return (
            f"put the four IDX files ({', '.join(IDX_FILES.values())}, plain or .gz) in --data_dir{apt_hint}; "
            f"searched {idx_folders(name, data_dir) or 'no folder (no data_dir given)'}"
            + (f"; {missing}" if missing else "")
        )
    where = f"--data_dir={data_dir}" if data_dir else "the default TFDS data_dir (no --data_dir given)"
    target = data_dir or "<dir>"
    offline = ""
    if name in prepare.LAYOUTS:
        offline = (f"prepare it offline with `python -m apps.prepare_data_main --dataset={name} --manual_dir=<folder "
                   f"with {prepare.LAYOUTS[name].archive}> --data_dir={target}`, or ")
    return (
        f"it is not prepared in {where}; {offline}on a machine with internet run "
        f"tfds.builder({name!r}, data_dir=...).download_and_prepare() and copy <data_dir>/{name} into "
        f"{data_dir or 'the TFDS data_dir (~/tensorflow_datasets), or into a folder passed as --data_dir'}"
    )


def supervised_arrays(builder, split):
    """Reads a whole prepared TFDS split as (float32 images in [0, 1], int64 labels)."""
    import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import, only needed here)

    images, labels = tfds.as_numpy(builder.as_dataset(split=split, batch_size=-1, as_supervised=True))
    return to_unit_float(images), labels.astype(np.int64)


def prepared_builder(name, data_dir):
    """The TFDS builder of `name` in `data_dir`, prepared (downloading only if the host answers).

    Raises:
      ValueError: an unknown name, or a dataset without train and test splits and
        (image, label) supervised keys.
      DataUnavailableError: not prepared, and the download host does not answer.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import, only needed here)

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.registered.DatasetNotFoundError as error:
        raise ValueError(
            f"dataset name {name!r} is unknown to TFDS and no prepared copy of it is in "
            f"{data_dir or 'the TFDS data_dir'}. Check the spelling against tfds.list_builders()."
        ) from error
    if not builder.is_prepared():
        if not _network_reachable():
            raise DataUnavailableError(
                f"dataset {name!r} is not on disk and its download host is unreachable from here: "
                f"{_where_to_put(name, data_dir)}."
            )
        builder.download_and_prepare()
    info = builder.info
    missing = {"train", "test"} - set(info.splits.keys())
    if missing or not info.supervised_keys:
        raise ValueError(
            f"TFDS dataset {name!r} needs train and test splits and (image, label) supervised keys; "
            f"it has splits {sorted(info.splits.keys())} and supervised keys {info.supervised_keys}."
        )
    for split in ("train", "test"):
        if not info.splits[split].num_examples:
            raise ValueError(f"the {split} split of TFDS dataset {name!r} in {builder.data_dir} is empty: prepare it "
                             "again (tfds.builder(...).download_and_prepare()).")
    return builder


def tfds_record(name, data_dir, builder):
    """(source, file hashes) of a prepared TFDS dataset: what `Splits` records of where its data came from."""
    hashes = tuple((os.path.relpath(os.path.join(folder, file_name), builder.data_dir),
                    _sha256(os.path.join(folder, file_name)))
                   for folder, _, file_names in sorted(os.walk(builder.data_dir)) for file_name in sorted(file_names))
    return f"tfds:{name} in {data_dir or builder.data_dir}", hashes


def _load_tfds(name, data_dir):
    """Loads train and test of `name` through TFDS, downloading only if the host answers."""
    builder = prepared_builder(name, data_dir)
    train_x, train_y = supervised_arrays(builder, "train")
    test_x, test_y = supervised_arrays(builder, "test")
    num_classes = builder.info.features[builder.info.supervised_keys[1]].num_classes
    return (train_x, train_y, test_x, test_y, num_classes) + tfds_record(name, data_dir, builder)


def _load_arrays(name, data_dir):
    """(train_x, train_y, test_x, test_y, num_classes, source, file hashes) from IDX files or TFDS."""
    if name in IDX_DATASETS:
        for folder in idx_folders(name, data_dir):
            if all(_idx_path(folder, stem) for stem in IDX_FILES.values()):
                train_x, train_y, test_x, test_y, hashes = _load_idx_folder(folder)
                return train_x, train_y, test_x, test_y, IDX_CLASSES, folder, hashes
    return _load_tfds(name, data_dir)  # a TFDS data_dir (prepared, or to download into), else the error says how


def _missing_idx_files(name, data_dir):
    """What the folders searched for `name` lack, e.g. "/d lacks t10k-images-idx3-ubyte", or None."""
    found = {folder: [stem for stem in IDX_FILES.values() if not _idx_path(folder, stem)]
             for folder in idx_folders(name, data_dir) if os.path.isdir(folder)}
    partial = {folder: missing for folder, missing in found.items() if len(missing) < len(IDX_FILES)}
    if not partial:
        return None
    closest = min(partial, key=lambda folder: len(partial[folder]))
    return f"{closest} lacks {', '.join(partial[closest])}"


def load(name, data_dir=None, validation_examples=5000, train_examples=None, split_seed=0):
    """Loads a dataset as NumPy splits with a validation set held out from train.

    MNIST and Fashion-MNIST are read from IDX files when found in `data_dir`,
    `data_dir/<name>` or `data_dir/<name with - for _>`, or, with no `data_dir`
    (Fashion-MNIST only), DEBIAN_FASHION_MNIST_DIR; a given `data_dir` is never
    bypassed. Everything else goes through TFDS, which downloads only when the data
    is not prepared in `data_dir` and the download host answers. The SHA-256 of each
    file read is in `Splits.file_hashes`.

    Args:
      name: a dataset name: mnist, fashion_mnist, or any TFDS name (cifar10, ...).
      data_dir: folder with IDX files, or a TFDS data_dir; None for TFDS's default.
      validation_examples: examples held out from train for validation.
      train_examples: if set, keep only this many training examples (after the hold-out).
      split_seed: seed of the permutation that picks the held-out examples.

    Returns:
      `Splits`. The test split is the dataset's own, untouched.

    Raises:
      ValueError: bad arguments, a `data_dir` that is not a folder, an unknown name,
        corrupt files, an empty split, or too few examples.
      DataUnavailableError: the dataset is not on disk and cannot be downloaded.
    """
    data_dir, validation_examples, train_examples, split_seed = check_load_arguments(
        name, data_dir, validation_examples, train_examples, split_seed)
    train_x, train_y, test_x, test_y, num_classes, source, hashes = _load_arrays(name, data_dir)
    held_out, kept = split_indices(name, len(train_x), validation_examples, train_examples, split_seed)
    return Splits(
        train_x=train_x[kept], train_y=train_y[kept],
        validation_x=train_x[held_out], validation_y=train_y[held_out],
        test_x=test_x, test_y=test_y,
        num_classes=int(num_classes), input_shape=tuple(train_x.shape[1:]), source=source, file_hashes=hashes,
        name=name,
    )


def check_load_arguments(name, data_dir, validation_examples, train_examples, split_seed):
    """`load`'s arguments checked, before anything is read: (data_dir, validation_examples, train_examples, split_seed).

    Raises:
      ValueError: a bad argument, or a `data_dir` that is not an existing folder.
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"dataset name must be a non-empty string such as 'fashion_mnist'; got {name!r}.")
    if data_dir is not None and not isinstance(data_dir, (str, os.PathLike)):
        raise ValueError(f"data_dir must be a folder path or None; got {data_dir!r}.")
    validation_examples = check_int(validation_examples, "validation_examples", 0)
    if train_examples is not None:
        train_examples = check_int(train_examples, "train_examples", 1)
    split_seed = check_int(split_seed, "split_seed", 0)
    data_dir = os.fspath(data_dir) if data_dir is not None else None
    _check_data_dir(data_dir)
    return data_dir, validation_examples, train_examples, split_seed


def split_indices(name, train_size, validation_examples, train_examples, split_seed):
    """The training indices held out for validation and those kept, as `load` picks them.

    The permutation `np.random.default_rng(split_seed).permutation(train_size)`: its first
    `validation_examples` indices are held out, the rest kept (the first `train_examples`
    of them, if given), both in the permutation's order.

    Returns:
      (held_out, kept): int arrays of indices into the dataset's train split.

    Raises:
      ValueError: the split has fewer examples than asked for.
    """
    needed = validation_examples + (train_examples or 1)
    if needed > train_size:
        raise ValueError(
            f"{name} has {train_size} training examples, fewer than the {validation_examples} validation "
            f"examples plus {train_examples or 1} training example(s) asked for. "
            "Lower validation_examples or train_examples."
        )
    order = np.random.default_rng(split_seed).permutation(train_size)
    held_out, kept = order[:validation_examples], order[validation_examples:]
    if train_examples is not None:
        kept = kept[:train_examples]
    return held_out, kept
