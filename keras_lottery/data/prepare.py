"""Offline preparation of TFDS's CIFAR-10 and CIFAR-100 from CIFAR's own binary files.

TFDS prepares `cifar10` by downloading `cifar-10-binary.tar.gz` from the CIFAR page;
a machine without internet cannot, and TFDS's manual_dir route is pre-empted by the
network check of `datasets.py`. `prepare_offline` runs the real TFDS builder with only
its download step replaced by a local folder, so the result is the dataset TFDS itself
would have written (same features, same record order, same version):

    prepare_offline("cifar10", data_dir="/data/tfds", manual_dir="/downloads")

`manual_dir` holds the archive as downloaded from https://www.cs.toronto.edu/~kriz/cifar.html
(`cifar-10-binary.tar.gz`, the "binary version", not the Python or MATLAB one) or the
folder it extracts to (`cifar-10-batches-bin/`). The files are checked (present, whole
records, labels in range, class names) before TFDS starts, so a bad download fails in a
second with the name of the bad file instead of inside TFDS.
"""

from keras_lottery import compat  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)

import collections  # noqa: E402
import contextlib  # noqa: E402
import os  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402

HOMEPAGE = "https://www.cs.toronto.edu/~kriz/cifar.html"
IMAGE_BYTES = 32 * 32 * 3  # an R plane, a G plane, a B plane, each 32x32 row-major

BinaryLayout = collections.namedtuple(
    "BinaryLayout", ["url", "archive", "folder", "train_files", "test_files", "label_files", "label_classes"])
BinaryLayout.__doc__ = """Where a CIFAR binary release keeps what, as TFDS's builder reads it.

`label_files` are the class-name files, one name a line; `label_classes` the number of
classes of each label byte that starts a record (CIFAR-100: coarse, then fine), in the
order of `label_files`.
"""

LAYOUTS = {
    "cifar10": BinaryLayout(
        url="https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        archive="cifar-10-binary.tar.gz",
        folder="cifar-10-batches-bin",
        train_files=tuple(f"data_batch_{index}.bin" for index in range(1, 6)),
        test_files=("test_batch.bin",),
        label_files=("batches.meta.txt",),
        label_classes=(10,),
    ),
    "cifar100": BinaryLayout(
        url="https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz",
        archive="cifar-100-binary.tar.gz",
        folder="cifar-100-binary",
        train_files=("train.bin",),
        test_files=("test.bin",),
        label_files=("coarse_label_names.txt", "fine_label_names.txt"),
        label_classes=(20, 100),
    ),
}
OFFLINE_DATASETS = tuple(LAYOUTS)


def _redownload(layout):
    return f"download {layout.archive} again from {HOMEPAGE} (the binary version)"


def record_bytes(layout):
    """Bytes of one record of `layout`: its label bytes, then the image."""
    return len(layout.label_classes) + IMAGE_BYTES


def check_binary_folder(name, folder):
    """Checks that `folder`/<layout folder> holds a whole CIFAR binary release.

    Args:
      name: 'cifar10' or 'cifar100'.
      folder: the folder that contains `cifar-10-batches-bin` (or `cifar-100-binary`).

    Returns:
      {file name: number of records} of the train and test files.

    Raises:
      ValueError: a file is missing, empty, not a whole number of records, holds a label
        out of range, or a class-name file lists the wrong number of names; the message
        names the file and says how to fix it.
    """
    layout = _layout(name)
    root = os.path.join(folder, layout.folder)
    counts = {}
    size = record_bytes(layout)
    for file_name in layout.train_files + layout.test_files:
        path = os.path.join(root, file_name)
        if not os.path.isfile(path):
            raise ValueError(f"{path} is missing: the folder is not a whole {layout.folder}; {_redownload(layout)}.")
        records = np.fromfile(path, np.uint8)
        if not records.size or records.size % size:
            raise ValueError(
                f"{path} holds {records.size} bytes, not a whole number of {size}-byte records "
                f"({len(layout.label_classes)} label byte(s) + {IMAGE_BYTES} pixel bytes): it is truncated or "
                f"from another release; {_redownload(layout)}."
            )
        labels = records.reshape(-1, size)[:, :len(layout.label_classes)]
        for column, classes in enumerate(layout.label_classes):
            if labels[:, column].max() >= classes:
                raise ValueError(f"{path} holds label {labels[:, column].max()}, above {classes - 1}: it is corrupt "
                                 f"or from another release; {_redownload(layout)}.")
        counts[file_name] = len(labels)
    for file_name, classes in zip(layout.label_files, layout.label_classes):
        path = os.path.join(root, file_name)
        if not os.path.isfile(path):
            raise ValueError(f"{path} (the class names) is missing; {_redownload(layout)}.")
        with open(path, encoding="utf-8", errors="replace") as file:
            names = [line for line in file.read().split("\n") if line]  # as TFDS's builder reads it
        if len(names) != classes:
            raise ValueError(f"{path} lists {len(names)} class names, not {classes}: {_redownload(layout)}.")
    return counts


def _layout(name):
    if name not in LAYOUTS:
        raise ValueError(f"dataset {name!r} cannot be prepared offline: only {', '.join(OFFLINE_DATASETS)} can "
                         "(from CIFAR's binary files); prepare other TFDS datasets on a machine with internet "
                         f"(tfds.builder({name!r}, data_dir=...).download_and_prepare()) and copy them over.")
    return LAYOUTS[name]


def _extract(layout, archive, target):
    """Extracts the files TFDS reads from `archive` into `target`/<layout folder>."""
    wanted = {f"{layout.folder}/{file_name}"
              for file_name in layout.train_files + layout.test_files + layout.label_files}
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = [member for member in tar.getmembers() if member.isfile() and member.name.lstrip("./") in wanted]
            missing = wanted - {member.name.lstrip("./") for member in members}
            if missing:
                raise ValueError(f"{archive} lacks {', '.join(sorted(missing))}: it is not CIFAR's binary release "
                                 f"(the Python and MATLAB versions hold other files); {_redownload(layout)}.")
            tar.extractall(target, members=members, filter="data")  # "data": no links or paths outside target
    except (tarfile.TarError, OSError, EOFError) as error:  # gzip raises EOFError on a truncated archive
        raise ValueError(f"cannot read {archive} ({error}): {_redownload(layout)}.") from error


@contextlib.contextmanager
def _source_folder(layout, manual_dir):
    """Yields the folder holding `layout.folder`: `manual_dir` itself, or a temporary extraction."""
    if manual_dir is None:
        raise ValueError(f"manual_dir is required: the folder that holds {layout.archive} (from {HOMEPAGE}) or the "
                         f"{layout.folder}/ folder it extracts to.")
    manual_dir = os.fspath(manual_dir)
    if not os.path.isdir(manual_dir):
        raise ValueError(f"manual_dir {manual_dir} is not a folder: pass the folder that holds {layout.archive} "
                         f"or {layout.folder}/.")
    if os.path.basename(os.path.normpath(manual_dir)) == layout.folder:  # given the extracted folder itself
        manual_dir = os.path.dirname(os.path.normpath(manual_dir))
    if os.path.isdir(os.path.join(manual_dir, layout.folder)):
        yield manual_dir
        return
    archive = os.path.join(manual_dir, layout.archive)
    if not os.path.isfile(archive):
        raise ValueError(f"{manual_dir} holds neither {layout.archive} nor {layout.folder}/: download "
                         f"{layout.archive} from {HOMEPAGE} (the binary version) into it.")
    with tempfile.TemporaryDirectory(prefix="keras_lottery_cifar_") as target:
        _extract(layout, archive, target)
        yield target


def _prepare_from_folder(builder, layout, folder):
    """Runs `builder.download_and_prepare()` with its one download answered by `folder`.

    The replacement is made on this builder's own download manager (the one
    `download_and_prepare` creates through `_make_download_manager`), so nothing global
    changes and nothing else can reach the network through it.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import, only needed here)

    make_manager = builder._make_download_manager  # noqa: SLF001  (TFDS's hook for the download manager)

    def make_local_manager(download_dir, download_config):
        manager = make_manager(download_dir=download_dir, download_config=download_config)

        def download_and_extract(url_or_urls):
            if url_or_urls != layout.url:
                raise ValueError(f"TFDS's {builder.name} builder asked for {url_or_urls!r}, not {layout.url}: this "
                                 "TFDS version prepares it differently; prepare it on a machine with internet.")
            return folder

        manager.download_and_extract = download_and_extract
        return manager

    builder._make_download_manager = make_local_manager  # noqa: SLF001
    with tempfile.TemporaryDirectory(prefix="keras_lottery_tfds_downloads_") as downloads:
        builder.download_and_prepare(download_dir=downloads,
                                     download_config=tfds.download.DownloadConfig(try_download_gcs=False))


def prepare_offline(name, data_dir, manual_dir):
    """Prepares TFDS dataset `name` in `data_dir` from CIFAR's binary files, offline.

    Args:
      name: 'cifar10' or 'cifar100'.
      data_dir: the TFDS data_dir to write into (created if missing); None for TFDS's
        default (~/tensorflow_datasets).
      manual_dir: a folder holding the binary archive (`cifar-10-binary.tar.gz`,
        `cifar-100-binary.tar.gz`), or the folder it extracts to
        (`cifar-10-batches-bin/`, `cifar-100-binary/`), or that folder itself. An archive
        is extracted to a temporary folder, removed afterwards.

    Returns:
      The prepared dataset's folder (the builder's data_dir, e.g.
      <data_dir>/cifar10/3.0.2). A dataset already prepared there is left as it is.

    Raises:
      ValueError: a name that cannot be prepared offline, a `manual_dir` without the
        files, a missing or damaged file (named), or a `data_dir` that is a file.
    """
    import tensorflow_datasets as tfds  # noqa: PLC0415  (slow import, only needed here)

    layout = _layout(name)
    data_dir = None if data_dir is None else os.fspath(data_dir)
    if data_dir is not None and os.path.exists(data_dir) and not os.path.isdir(data_dir):
        raise ValueError(f"data_dir {data_dir} is a file, not a folder: pass the TFDS data_dir to prepare into.")
    builder = tfds.builder(name, data_dir=data_dir)
    if builder.is_prepared():
        return os.fspath(builder.data_dir)
    with _source_folder(layout, manual_dir) as folder:
        check_binary_folder(name, folder)
        if data_dir is not None:
            os.makedirs(data_dir, exist_ok=True)
        _prepare_from_folder(builder, layout, folder)
    return os.fspath(builder.data_dir)
