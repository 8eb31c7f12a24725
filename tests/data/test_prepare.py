"""Tests of data/prepare.py and apps/prepare_data_main.py: TFDS's real CIFAR builders run offline on CIFAR's files.

Every test here runs with name resolution and outgoing connections refused, so a step
that reached for the network would fail instead of waiting.
"""

import os
import socket
import sys
import tarfile

import numpy as np
import pytest
import tensorflow_datasets as tfds

from keras_lottery.data import datasets
from keras_lottery.data import prepare
from tests import processes
from tests.data import cifar_fixture

pytestmark = pytest.mark.usefixtures("app_server")


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("the tests refuse network access")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def by_id(builder, split):
    """{TFDS id: (image, label)} of a prepared split: the id ("train_00042") is the record's index in the files."""
    return {example["id"].decode(): (example["image"], example["label"])
            for example in tfds.as_numpy(builder.as_dataset(split=split))}


def assert_holds(builder, written):
    for split, (images, labels) in written.items():
        examples = by_id(builder, split)
        assert len(examples) == len(labels)
        for index, (image, label) in enumerate(zip(images, labels)):
            stored_image, stored_label = examples[f"{split}_{index:05d}"]
            np.testing.assert_array_equal(stored_image, image)  # the R, G, B planes put back in place
            assert stored_label == label


def test_prepares_the_real_builder_from_an_extracted_folder(tmp_path):
    manual_dir, written = cifar_fixture.write_cifar10_binary(tmp_path / "manual", train_per_batch=6, test_examples=7)
    prepared = prepare.prepare_offline("cifar10", tmp_path / "tfds", manual_dir)
    builder = tfds.builder("cifar10", data_dir=str(tmp_path / "tfds"))
    assert builder.is_prepared() and prepared == os.fspath(builder.data_dir)
    assert builder.info.splits["train"].num_examples == 30 and builder.info.splits["test"].num_examples == 7
    assert builder.info.features["label"].names == list(cifar_fixture.CLASS_NAMES)
    assert_holds(builder, written)
    assert os.listdir(tmp_path / "tfds") == ["cifar10"]  # no downloads/ or extracted/ left behind


def test_prepares_from_the_archive_and_removes_the_extraction(tmp_path, monkeypatch):
    folder, written = cifar_fixture.write_cifar10_binary(tmp_path / "release", train_per_batch=4, test_examples=5)
    manual_dir = tmp_path / "manual"
    manual_dir.mkdir()
    with tarfile.open(manual_dir / "cifar-10-binary.tar.gz", "w:gz") as tar:
        tar.add(os.path.join(folder, "cifar-10-batches-bin"), arcname="cifar-10-batches-bin")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("TMPDIR", str(scratch))
    monkeypatch.setattr("tempfile.tempdir", None)  # so that tempfile reads TMPDIR again
    prepare.prepare_offline("cifar10", tmp_path / "tfds", manual_dir)
    assert_holds(tfds.builder("cifar10", data_dir=str(tmp_path / "tfds")), written)
    assert [name for name in os.listdir(scratch) if name.startswith("keras_lottery_")] == []  # TFDS leaves its own


def test_the_download_step_is_replaced_for_that_builder_only(tmp_path):
    original = tfds.download.DownloadManager.download_and_extract
    cifar_fixture.prepare_tiny_cifar10(tmp_path, train_per_batch=2, test_examples=2)
    assert tfds.download.DownloadManager.download_and_extract is original


def test_the_extracted_folder_itself_and_an_already_prepared_dataset(tmp_path):
    manual_dir, _ = cifar_fixture.write_cifar10_binary(tmp_path / "manual", train_per_batch=2, test_examples=3)
    first = prepare.prepare_offline("cifar10", tmp_path / "tfds", os.path.join(manual_dir, "cifar-10-batches-bin"))
    # Prepared already: kept as it is, manual_dir not even needed.
    assert prepare.prepare_offline("cifar10", tmp_path / "tfds", None) == first


def write_cifar100_binary(folder, train=30, test=8):
    root = os.path.join(folder, "cifar-100-binary")
    os.makedirs(root)
    rng = np.random.default_rng(0)
    written = {}
    for split, count, file_name in (("train", train, "train.bin"), ("test", test, "test.bin")):
        fine = rng.integers(0, 100, count)
        images = cifar_fixture.cifar10_images(fine % 10, seed=count)
        records = np.frombuffer(cifar_fixture.cifar10_records(images, fine), np.uint8).reshape(count, -1)
        with open(os.path.join(root, file_name), "wb") as file:  # coarse label byte, fine label byte, planes
            file.write(np.concatenate([(fine // 5).astype(np.uint8)[:, None], records], axis=1).tobytes())
        written[split] = (images, fine)
    for file_name, count in (("coarse_label_names.txt", 20), ("fine_label_names.txt", 100)):
        with open(os.path.join(root, file_name), "w") as file:
            file.write("\n".join(f"class_{index}" for index in range(count)) + "\n")
    return written


def test_prepares_cifar100_with_both_labels(tmp_path):
    written = write_cifar100_binary(tmp_path / "manual")
    prepare.prepare_offline("cifar100", tmp_path / "tfds", tmp_path / "manual")
    builder = tfds.builder("cifar100", data_dir=str(tmp_path / "tfds"))
    assert_holds(builder, written)
    coarse = {example["id"].decode(): example["coarse_label"] for example in tfds.as_numpy(builder.as_dataset("test"))}
    assert [coarse[f"test_{index:05d}"] for index in range(8)] == list(written["test"][1] // 5)


def _truncate(root):
    path = os.path.join(root, "data_batch_3.bin")
    with open(path, "r+b") as file:
        file.truncate(os.path.getsize(path) - 100)
    return "data_batch_3.bin", "not a whole number of 3073-byte records"


def _bad_label(root):
    path = os.path.join(root, "test_batch.bin")
    content = bytearray(open(path, "rb").read())
    content[3073] = 10  # the second record's label byte
    open(path, "wb").write(bytes(content))
    return "test_batch.bin", "holds label 10, above 9"


def _missing_batch(root):
    os.remove(os.path.join(root, "data_batch_5.bin"))
    return "data_batch_5.bin", "is missing"


def _short_meta(root):
    open(os.path.join(root, "batches.meta.txt"), "w").write("cat\ndog\n")
    return "batches.meta.txt", "lists 2 class names, not 10"


@pytest.mark.parametrize("damage", [_truncate, _bad_label, _missing_batch, _short_meta],
                         ids=["truncated", "bad-label", "missing-batch", "short-meta"])
def test_damaged_files_are_refused_before_tfds_runs_naming_the_file(tmp_path, damage):
    manual_dir, _ = cifar_fixture.write_cifar10_binary(tmp_path / "manual", train_per_batch=2, test_examples=2)
    file_name, message = damage(os.path.join(manual_dir, "cifar-10-batches-bin"))
    with pytest.raises(ValueError, match=message) as raised:
        prepare.prepare_offline("cifar10", tmp_path / "tfds", manual_dir)
    assert file_name in str(raised.value) and "cifar-10-binary.tar.gz again from" in str(raised.value)
    assert not tfds.builder("cifar10", data_dir=str(tmp_path / "tfds")).is_prepared()


def _write_archive(path, members):
    with tarfile.open(path, "w:gz") as tar:
        for name in members:
            info = tarfile.TarInfo(name)
            tar.addfile(info)


@pytest.mark.parametrize("setup, message", [
    (lambda folder: None, "holds neither cifar-10-binary.tar.gz nor cifar-10-batches-bin/"),
    (lambda folder: open(folder / "cifar-10-binary.tar.gz", "wb").write(b"not a tar file"),
     "cannot read .*cifar-10-binary.tar.gz"),
    (lambda folder: _write_archive(folder / "cifar-10-binary.tar.gz", ["cifar-10-batches-py/data_batch_1"]),
     "lacks cifar-10-batches-bin/batches.meta.txt"),
], ids=["empty-folder", "not-an-archive", "python-version-archive"])
def test_a_manual_dir_without_the_release_is_refused(tmp_path, setup, message):
    setup(tmp_path)
    with pytest.raises(ValueError, match=message):
        prepare.prepare_offline("cifar10", tmp_path / "tfds", tmp_path)


@pytest.mark.parametrize("name, manual_dir, message", [
    ("mnist", "", "'mnist' cannot be prepared offline: only cifar10, cifar100 can"),
    ("cifar10", None, "manual_dir is required: the folder that holds cifar-10-binary.tar.gz"),
    ("cifar10", "missing", "is not a folder"),
])
def test_bad_arguments_are_refused(tmp_path, name, manual_dir, message):
    with pytest.raises(ValueError, match=message):
        prepare.prepare_offline(name, tmp_path / "tfds", manual_dir if manual_dir is None else tmp_path / manual_dir)


def test_the_fixture_prepares_a_learnable_tiny_cifar10_that_load_reads(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets, "_network_reachable", lambda *args, **kwargs: pytest.fail("network checked"))
    data_dir = cifar_fixture.prepare_tiny_cifar10(tmp_path)
    splits = datasets.load("cifar10", data_dir, validation_examples=50)
    assert (len(splits.train_y), len(splits.validation_y), len(splits.test_y)) == (150, 50, 50)
    assert splits.input_shape == (32, 32, 3) and splits.num_classes == 10
    # Nearest class mean colour, learnt on train, classifies the test set far above chance (10%).
    means = np.stack([splits.train_x[splits.train_y == label].mean(axis=(0, 1, 2)) for label in range(10)])
    colours = splits.test_x.mean(axis=(1, 2))
    predicted = np.argmin(((colours[:, None] - means[None]) ** 2).sum(axis=-1), axis=1)
    assert np.mean(predicted == splits.test_y) > 0.8


def _app(*arguments):
    command = [sys.executable, "-m", "apps.prepare_data_main", *arguments]
    return processes.run(command, cwd=processes.REPOSITORY, timeout=120)


def test_the_app_prepares_cifar10_and_names_the_flags_to_train_with(tmp_path):
    manual_dir, _ = cifar_fixture.write_cifar10_binary(tmp_path / "manual", train_per_batch=2, test_examples=2)
    result = _app("--dataset=cifar10", f"--manual_dir={manual_dir}", f"--data_dir={tmp_path / 'tfds'}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"train with --dataset=cifar10 --data_dir={tmp_path / 'tfds'}" in result.stderr
    assert tfds.builder("cifar10", data_dir=str(tmp_path / "tfds")).is_prepared()


@pytest.mark.parametrize("arguments, message", [
    (["--dataset=imagenet2012"], "error: dataset 'imagenet2012' cannot be prepared offline"),
    (["--dataset=cifar10"], "error: manual_dir is required"),
    (["--dataset=cifar10", "--manual_dir={tmp}"], "error: {tmp} holds neither cifar-10-binary.tar.gz"),
], ids=["unknown-dataset", "no-manual-dir", "empty-manual-dir"])
def test_the_app_reports_bad_input_in_one_line(tmp_path, arguments, message):
    result = _app(*[argument.format(tmp=tmp_path) for argument in arguments], f"--data_dir={tmp_path / 'tfds'}")
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith(message.format(tmp=tmp_path)), result.stderr[-2000:]
