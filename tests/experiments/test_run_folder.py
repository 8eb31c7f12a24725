"""Tests of the run folder: atomic writes, corrupt files, the config guard, the lock, verification."""

import json
import os
import re
import signal
import subprocess
import sys

import numpy as np
import pytest

from keras_lottery.experiments import run_folder
from keras_lottery.foundations import files
from tests import processes


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
    with pytest.raises(run_folder.CorruptRecordError, match="Rerun the command of the run it belongs to"):
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


# ---------------------------------------------------------------------------- one writer per folder

_HOLD_LOCK = """
import sys, time
from keras_lottery.experiments import run_folder
with run_folder.RunFolder(sys.argv[1]).locked():
    print("locked", flush=True)
    time.sleep(60)
"""


def _holder(folder):
    """A process that holds `folder`'s lock until killed (a plain subprocess: no TensorFlow runtime)."""
    process = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(folder)], stdout=subprocess.PIPE, text=True,
                               cwd=processes.REPOSITORY)
    assert process.stdout.readline().strip() == "locked"
    return process


def test_a_second_process_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    holder = _holder(tmp_path / "run")
    try:
        with pytest.raises(run_folder.RunInUseError, match=rf"in use by another run \(pid {holder.pid} on host .*"
                                                           r"started .*use another --output_dir"):
            with run_folder.RunFolder(tmp_path / "run").locked():
                pytest.fail("entered a folder another process holds")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert (tmp_path / "run" / run_folder.LOCK).exists()  # left by the killed holder...
    with run_folder.RunFolder(tmp_path / "run").locked():  # ...and no obstacle
        assert json.loads((tmp_path / "run" / run_folder.LOCK).read_text())["pid"] == os.getpid()
    assert os.listdir(tmp_path / "run") == []  # the lock file goes; the folder was there before, so it stays


def test_the_lock_file_goes_with_the_run_and_a_created_empty_folder_too(tmp_path):
    with run_folder.RunFolder(tmp_path / "new").locked() as folder:
        files.write_json(folder.file(run_folder.SUMMARY), {"config": {}, "rounds": []})
    assert os.listdir(tmp_path / "new") == [run_folder.SUMMARY]
    with pytest.raises(RuntimeError, match="boom"):
        with run_folder.RunFolder(tmp_path / "empty").locked():
            raise RuntimeError("boom")
    assert not (tmp_path / "empty").exists()


def test_an_output_dir_that_is_a_file_or_cannot_be_written_is_refused(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    with pytest.raises(run_folder.OutputDirError, match="is a file, not a folder"):
        with run_folder.RunFolder(tmp_path / "file").locked():
            pass
    read_only = tmp_path / "read_only"
    read_only.mkdir(mode=0o555)
    if os.geteuid() == 0:  # root writes into a 0555 folder: make the write fail as it would for a user
        def denied(*args, **kwargs):
            raise PermissionError(13, "Permission denied")
        monkeypatch.setattr(run_folder.tempfile, "mkstemp", denied)
    try:
        with pytest.raises(run_folder.OutputDirError, match="cannot write in output_dir .*read_only/run "
                                                            r"\(Permission denied\): choose a folder you can"):
            with run_folder.RunFolder(read_only / "run").locked():
                pytest.fail("entered a folder it cannot write")
        assert os.listdir(read_only) == []  # nothing created is left behind
    finally:
        read_only.chmod(0o755)


# ---------------------------------------------------------------------------- what is read back is checked

def _summary(rounds=2):
    records = [{"round": r, "weights_remaining": 0.8 ** r, "test_accuracy": 0.5, "iterations": 10}
               for r in range(rounds)]
    return {"config": {"seed": 0}, "rounds": records}


@pytest.mark.parametrize("summary, words", [
    ([], "holds a list"),
    ({"config": {}}, "no 'rounds'"),
    ({"config": "x", "rounds": []}, "'config' is a str"),
    ({"config": {}, "rounds": "oops"}, "'rounds' is 'oops', not a list"),
    ({"config": {}, "rounds": [{"round": 0}]}, "round record 0 is not an object with the keys"),
    ({"config": {}, "rounds": [{"round": 1, "weights_remaining": 1, "test_accuracy": 1, "iterations": 1}]},
     "round record 0 has round 1"),
    ({"config": {}, "rounds": [{"round": 0, "weights_remaining": "1", "test_accuracy": 1, "iterations": 1}]},
     "not a number"),
])
def test_a_summary_of_the_wrong_structure_is_refused(tmp_path, summary, words):
    (tmp_path / run_folder.SUMMARY).write_text(json.dumps(summary))
    with pytest.raises(run_folder.CorruptRecordError, match=f"not a valid summary .*{re.escape(words)}.*another --output_dir"):
        run_folder.RunFolder(tmp_path).load_summary()


def test_rounds_whose_files_do_not_read_back_are_dropped_with_those_after_them(tmp_path, caplog):
    folder = run_folder.RunFolder(tmp_path)
    folder.save_snapshot({"0000": np.zeros(2)})
    for round_index in range(3):
        folder.save_round(round_index, {"fc1": np.ones(2)}, {"0000": np.zeros(2)}, {"flips": np.zeros(2)})
    summary = _summary(3)
    assert folder.verify_rounds(summary, flip_state=True) == 3 and len(summary["rounds"]) == 3
    (tmp_path / "round_1" / "flip_state.npz").write_bytes(b"PK")
    with caplog.at_level("WARNING"):
        assert folder.verify_rounds(summary, flip_state=True) == 1
    assert [record["round"] for record in summary["rounds"]] == [0]
    assert "rounds 1 to 2 are recomputed from round 0" in caplog.text
    (tmp_path / run_folder.SNAPSHOT).unlink()
    assert folder.verify_rounds(summary) == 0 and summary["rounds"] == []


def test_data_other_than_the_run_started_with_is_refused(tmp_path):
    folder = run_folder.RunFolder(tmp_path)
    record = {"source": "/a", "files": {"train.gz": "aa" * 32, "test.gz": "bb" * 32}}
    summary = {"data": record}
    folder.check_data(summary, {"source": "/b", "files": dict(record["files"])})  # moved, same content: fine
    changed = {"source": "/b", "files": {**record["files"], "test.gz": "cc" * 32}}
    with pytest.raises(run_folder.DataMismatchError, match="test.gz: sha256 bbbbbbbbbbbb then, cccccccccccc now.*"
                                                           "it read /a.*--data_dir"):
        folder.check_data(summary, changed)
    older = {}  # a summary written before data was recorded takes the record
    folder.check_data(older, changed)
    assert older["data"] == changed
