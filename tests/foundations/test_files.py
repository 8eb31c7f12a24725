"""Tests of the atomic writes and of the background writer of backups."""

import os
import threading

import numpy as np
import pytest

from keras_lottery.experiments import run_folder
from keras_lottery.foundations import files


def test_a_non_durable_write_is_still_atomic_and_whole(tmp_path, monkeypatch):
    synced = []
    monkeypatch.setattr(files.os, "fsync", lambda descriptor: synced.append(descriptor))
    files.write_npz(tmp_path / "a.npz", {"x": np.arange(5)}, durable=False)
    assert synced == []
    files.write_npz(tmp_path / "b.npz", {"x": np.arange(5)})
    assert len(synced) == 1
    np.testing.assert_array_equal(run_folder.read_npz(tmp_path / "a.npz")["x"], np.arange(5))
    assert sorted(os.listdir(tmp_path)) == ["a.npz", "b.npz"]


def test_the_background_writer_writes_the_newest_and_wait_returns_when_it_is_on_disk(tmp_path, monkeypatch):
    started, release = threading.Event(), threading.Event()
    written = []
    original = files.write_npz

    def slow_write(path, arrays, durable=True):
        started.set()
        release.wait(10)
        original(path, arrays, durable)
        written.append(int(arrays["x"][0]))

    monkeypatch.setattr(files, "write_npz", slow_write)
    writer = files.BackgroundWriter()
    path = tmp_path / "backup.npz"
    writer.submit(path, {"x": np.array([1])})
    assert started.wait(10)  # the first write is under way...
    for value in (2, 3, 4):
        writer.submit(path, {"x": np.array([value])})  # ...and these queue behind it, newest replacing the rest
    release.set()
    writer.wait()
    assert written == [1, 4]
    assert int(run_folder.read_npz(path)["x"][0]) == 4


def test_an_error_of_a_background_write_reaches_the_caller(tmp_path):
    writer = files.BackgroundWriter()
    (tmp_path / "file").write_text("not a folder")
    writer.submit(tmp_path / "file" / "backup.npz", {"x": np.zeros(2)})
    with pytest.raises(OSError):
        writer.wait()
    writer.wait()  # reported once
    writer.submit(tmp_path / "ok.npz", {"x": np.zeros(2)})
    writer.wait()
    assert (tmp_path / "ok.npz").exists()
