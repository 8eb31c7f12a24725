"""Tests of the run folder: atomic writes, corrupt files, the config guard."""

import json
import os

import numpy as np
import pytest

from keras_lottery.experiments import run_folder
from keras_lottery.foundations import files


def test_npz_round_trip_and_no_temporary_files_left(tmp_path):
    arrays = {"fc1": np.eye(3, dtype=np.float32), "output": np.zeros((2, 2))}
    files.write_npz(tmp_path / "masks.npz", arrays)
    loaded = run_folder.read_npz(tmp_path / "masks.npz")
    assert sorted(loaded) == ["fc1", "output"]
    np.testing.assert_array_equal(loaded["fc1"], arrays["fc1"])
    assert os.listdir(tmp_path) == ["masks.npz"]


def test_failed_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "summary.json"
    files.write_json(path, {"rounds": [1]})

    class Unserializable:
        pass

    with pytest.raises(TypeError):
        files.write_json(path, {"rounds": [Unserializable()]})
    assert json.loads(path.read_text()) == {"rounds": [1]}
    assert os.listdir(tmp_path) == ["summary.json"]


@pytest.mark.parametrize("content", [b"", b"PK\x03\x04 truncated", b"not a zip"])
def test_corrupt_npz_is_refused_with_what_to_do(tmp_path, content):
    path = tmp_path / "masks.npz"
    path.write_bytes(content)
    with pytest.raises(run_folder.CorruptRecordError, match="Delete the round folder"):
        run_folder.read_npz(path)


def test_corrupt_summary_is_refused(tmp_path):
    (tmp_path / "summary.json").write_text('{"config": {"seed": 0}, "rou')
    with pytest.raises(run_folder.CorruptRecordError, match="not a valid summary"):
        run_folder.RunFolder(tmp_path).load_summary()


def test_config_guard_names_the_differences_and_allows_more_rounds(tmp_path):
    folder = run_folder.RunFolder(tmp_path)
    summary = {"config": {"seed": 0, "rounds": 2, "model": "lenet_300_100"}, "rounds": []}
    folder.check_config(summary, {"seed": 0, "rounds": 5, "model": "lenet_300_100"})
    with pytest.raises(run_folder.ConfigMismatchError, match="seed: 0 there, 1 now"):
        folder.check_config(summary, {"seed": 1, "rounds": 2, "model": "lenet_300_100"})


def test_output_dir_is_required():
    with pytest.raises(ValueError, match="output_dir"):
        run_folder.RunFolder("")


def test_a_flipped_bit_in_an_npz_is_refused(tmp_path):
    path = tmp_path / "backup.npz"
    files.write_npz(path, {"weights": np.arange(1000, dtype=np.float32)})
    content = bytearray(path.read_bytes())
    content[len(content) // 3] ^= 0x40  # inside the array's bytes: only the zip's CRC tells
    path.write_bytes(bytes(content))
    with pytest.raises(run_folder.CorruptRecordError, match="CRC"):
        run_folder.read_npz(path)


def test_leftovers_of_killed_writes_and_backups_of_finished_rounds_are_removed(tmp_path):
    folder = run_folder.RunFolder(tmp_path)
    for round_index in (0, 1):
        folder.save_backup(round_index, {"weights": np.zeros(2)})
    (tmp_path / (files.TEMPORARY_PREFIX + "a1summary.json")).write_text('{"config"')
    (tmp_path / "round_1" / (files.TEMPORARY_PREFIX + "b2backup.npz")).write_bytes(b"PK")
    assert folder.load_backup(2) is None
    folder.remove_leftovers(finished_rounds=1)
    assert sorted(os.listdir(tmp_path)) == ["round_0", "round_1"]
    assert os.listdir(tmp_path / "round_0") == []
    assert os.listdir(tmp_path / "round_1") == [run_folder.BACKUP]
    np.testing.assert_array_equal(folder.load_backup(1)["weights"], np.zeros(2))
    folder.remove_backup(1)
    assert folder.load_backup(1) is None
