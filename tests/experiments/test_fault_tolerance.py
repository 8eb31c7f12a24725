"""Fault tolerance of IMP runs: killed anywhere, the same command resumes to the same results.

The app runs as a subprocess (forked by the app server of tests/processes.py, where
TensorFlow is imported already) on the tiny on-disk dataset and is SIGKILLed between rounds,
mid-epoch (once a mid-round backup exists) and while it writes its results (the test
hook `files.KILL_AT_VARIABLE` kills it between a temporary file and its rename), the
same command rerun after each kill. It must end with the summary (all but the
wall-clock `train_seconds`), masks and weights of an uninterrupted run, bit for bit
(CPU).
The uninterrupted reference runs in this process (so the comparisons also check that
runs are deterministic across processes); in-process tests cover what is cheaper to
reach here: two runs with one seed, corrupt backups, a backup of another config,
one-pass runs.
"""

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from keras_lottery.experiments import imp
from keras_lottery.experiments import round_backup
from keras_lottery.experiments import run_folder
from keras_lottery.foundations import files
from tests import processes

# 6 evaluations per round (5 backups), a rewind step and sign-flip state to restore.
# backup_seconds=0: a backup at every check, for the kills to land between them.
SETTINGS = dict(rounds=1, iterations=60, batch_size=20, validation_examples=100, evaluations_per_round=6,
                backup_seconds=0, rewind_step=20, criterion="hybrid", verbose=0)
RESULT_FILES = ("masks.npz", "final_weights.npz", "flip_state.npz")
pytestmark = pytest.mark.usefixtures("app_server")


def _command(data_dir, output):
    flags = [f"--{name}={value}" for name, value in SETTINGS.items()]
    return [sys.executable, "-m", "apps.imp_main", f"--data_dir={data_dir}", f"--output_dir={output}", *flags]


def _config(data_dir, output, **overrides):
    """The `ImpConfig` of `_command`, for runs in this process."""
    return imp.ImpConfig(**{"output_dir": str(output), "data_dir": data_dir, **SETTINGS, **overrides})


def _environment(kill_at=None):
    environment = {key: value for key, value in os.environ.items() if key != files.KILL_AT_VARIABLE}
    if kill_at:
        environment[files.KILL_AT_VARIABLE] = kill_at
    return environment


def _run_app(data_dir, output, kill_at=None):
    """Runs the app to its end (or to the kill the hook asks for); returns (exit status, stderr)."""
    result = processes.run(_command(data_dir, output), cwd=processes.REPOSITORY, env=_environment(kill_at))
    return result.returncode, result.stderr


def _finish(data_dir, output):
    """Reruns the same command; it must finish. Returns its stderr."""
    status, stderr = _run_app(data_dir, output)
    assert status == 0, stderr[-3000:]
    return stderr


def _rounds_saved(output):
    path = output / "summary.json"
    return len(json.loads(path.read_text())["rounds"]) if path.exists() else 0


def _temporaries(output):
    return [os.path.join(folder, name) for folder, _, names in os.walk(output) for name in names
            if name.startswith(files.TEMPORARY_PREFIX)]


def _assert_same_results(output, expected):
    """The summary but its wall-clock fields, and every results file, equal bit for bit."""
    summaries = []
    for folder in (output, expected):
        summary = json.loads((folder / "summary.json").read_text())
        del summary["config"]["output_dir"]
        for record in summary["rounds"]:
            del record["train_seconds"]
        summaries.append(summary)
    assert summaries[0] == summaries[1]
    for round_index in range(len(summaries[0]["rounds"])):
        for name in RESULT_FILES:
            if not (expected / f"round_{round_index}" / name).exists():  # no flip_state without sign flips
                continue
            got, want = (run_folder.read_npz(folder / f"round_{round_index}" / name) for folder in (output, expected))
            assert sorted(got) == sorted(want)
            for key in want:
                np.testing.assert_array_equal(got[key], want[key], err_msg=f"round {round_index} {name} {key}")
    if (expected / run_folder.SNAPSHOT).exists():  # IMP runs
        got, want = (run_folder.read_npz(folder / run_folder.SNAPSHOT) for folder in (output, expected))
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])
    assert not _temporaries(output)
    assert not [path for path in output.glob("round_*/" + run_folder.BACKUP)]


@pytest.fixture(scope="module")
def uninterrupted(tiny_fashion, tmp_path_factory):
    """An uninterrupted run in this process: the app's runs must match it bit for bit."""
    output = tmp_path_factory.mktemp("uninterrupted")
    imp.run(_config(tiny_fashion, output))
    return output


def test_two_runs_with_one_seed_are_identical(tiny_fashion, uninterrupted, tmp_path):
    # On CPU, bit for bit; the tests below also compare the app's own processes with this one.
    imp.run(_config(tiny_fashion, tmp_path))
    _assert_same_results(tmp_path, uninterrupted)


def _kill_mid_epoch(command, backup, stderr_path):
    """Starts `command` and SIGKILLs it as soon as `backup` exists: during the next epoch."""
    with open(stderr_path, "w") as stderr:
        process = processes.popen(command, stdout=subprocess.DEVNULL, stderr=stderr, cwd=processes.REPOSITORY,
                                 env=_environment())
        try:
            deadline = time.monotonic() + 240
            while not backup.exists():
                assert process.poll() is None, stderr_path.read_text()[-3000:]
                assert time.monotonic() < deadline, f"no {backup} in time"
                time.sleep(0.002)
            os.kill(process.pid, signal.SIGKILL)
        finally:
            process.kill()  # no-op when already killed; never leave it running
            process.wait()
    assert process.returncode == -signal.SIGKILL
    return stderr_path.read_text()


def test_killed_at_several_points_the_same_command_ends_as_an_uninterrupted_run(
        tiny_fashion, uninterrupted, tmp_path):
    output = tmp_path / "run"
    # 1. Between rounds: right after round 0's summary.json is saved, before its backup is deleted.
    status, stderr = _run_app(tiny_fashion, output, kill_at="after_rename:summary.json")
    assert status == -signal.SIGKILL, stderr[-3000:]
    assert _rounds_saved(output) == 1 and (output / "round_0" / run_folder.BACKUP).exists()
    # 2. Mid-epoch: round 1 starts anew, and is killed once its first evaluation is backed up.
    backup = output / "round_1" / run_folder.BACKUP
    stderr = _kill_mid_epoch(_command(tiny_fashion, output), backup, tmp_path / "stderr")
    assert "resumes from its backup" not in stderr  # round 0's backup was removed, never read
    assert _rounds_saved(output) == 1 and backup.exists(), "the kill came after round 1 had finished"
    assert (output / run_folder.LOCK).exists()  # the killed run's lock file stays; its lock went with it
    # 3. While writing results: round 1 resumes from its backup and finishes training; its masks
    # and weights are saved, its summary.json is a temporary file not renamed yet when it is killed.
    status, stderr = _run_app(tiny_fashion, output, kill_at="before_rename:summary.json")
    assert status == -signal.SIGKILL, stderr[-3000:]
    assert "Round 1 resumes from its backup after evaluation" in stderr
    assert _rounds_saved(output) == 1 and _temporaries(output) and backup.exists()
    for name in RESULT_FILES:  # what the round resumed mid-epoch ended with
        got, want = (run_folder.read_npz(folder / "round_1" / name) for folder in (output, uninterrupted))
        for key in want:
            np.testing.assert_array_equal(got[key], want[key], err_msg=f"{name} {key}")
    # 4. It finishes: round 1 resumes at its last backup (evaluation 5 of 6) and is saved again.
    stderr = _finish(tiny_fashion, output)
    assert "Round 1 resumes from its backup after evaluation 5 of 6" in stderr
    _assert_same_results(output, uninterrupted)  # the temporary summary.json was removed, never read


def _event_files(output):
    return sorted(str(path.relative_to(output)).split("events")[0] for path in output.rglob("events.out.tfevents.*"))


def test_a_second_process_on_the_folder_is_refused_at_once_and_the_first_ends_as_a_clean_run(
        tiny_fashion, uninterrupted, tmp_path):
    output = tmp_path / "run"
    with open(tmp_path / "first.stderr", "w") as stderr:
        first = processes.popen(_command(tiny_fashion, output), stdout=subprocess.DEVNULL, stderr=stderr,
                                cwd=processes.REPOSITORY, env=_environment())
        try:
            deadline = time.monotonic() + 120
            while not (output / run_folder.LOCK).exists() or f'"pid": {first.pid}' not in \
                    (output / run_folder.LOCK).read_text():
                assert first.poll() is None and time.monotonic() < deadline, (tmp_path / "first.stderr").read_text()
                time.sleep(0.01)
            # The same folder with another seed (the runs would mix), while the first trains.
            second = processes.run([*_command(tiny_fashion, output), "--seed=1"], cwd=processes.REPOSITORY,
                                   env=_environment(), timeout=120)
            assert first.poll() is None, "the first run ended before the second was refused: make it longer"
            assert first.wait(240) == 0, (tmp_path / "first.stderr").read_text()[-3000:]
        finally:
            first.kill()
            first.wait()
    assert second.returncode == 1 and "Traceback" not in second.stderr, second.stderr[-3000:]
    assert f"is in use by another run (pid {first.pid} on host" in second.stderr
    _assert_same_results(output, uninterrupted)  # nothing of the second run in it
    assert _event_files(output) == _event_files(uninterrupted)  # nor in its TensorBoard logs
    assert not (output / run_folder.LOCK).exists()
    # The advice, followed: once the first has ended, its command returns the finished run (no training),
    # and the second's runs in another --output_dir.
    _finish(tiny_fashion, output)
    _assert_same_results(output, uninterrupted)
    assert _event_files(output) == _event_files(uninterrupted)
    other = processes.run([*_command(tiny_fashion, tmp_path / "other"), "--seed=1"], cwd=processes.REPOSITORY,
                          env=_environment())
    assert other.returncode == 0 and _rounds_saved(tmp_path / "other") == 2, other.stderr[-3000:]


# ----------------------------------------------------------------------------------------
# In-process: a crash is an exception raised right after a backup was written.


class _Crash(Exception):
    pass


def _crash_after_backup(monkeypatch, round_index, evaluations):
    """Makes training raise once round `round_index` has backed up `evaluations` evaluations."""
    original = round_backup.RoundBackup.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if self.round_index == round_index and len(self.logs) == evaluations:
            raise _Crash

    monkeypatch.setattr(round_backup.RoundBackup, "on_epoch_end", on_epoch_end)


def test_a_corrupt_backup_restarts_the_round_with_a_warning(tiny_fashion, uninterrupted, tmp_path, monkeypatch, caplog):
    # Round 0 as the uninterrupted run left it (so only round 1 is trained here), then a crash in round 1.
    shutil.copytree(uninterrupted, tmp_path, dirs_exist_ok=True)
    shutil.rmtree(tmp_path / "round_1")
    summary = json.loads((tmp_path / "summary.json").read_text())
    summary["rounds"] = summary["rounds"][:1]
    (tmp_path / "summary.json").write_text(json.dumps(summary))
    _crash_after_backup(monkeypatch, round_index=1, evaluations=2)
    with pytest.raises(_Crash):
        imp.run(_config(tiny_fashion, tmp_path))
    monkeypatch.undo()
    backup = tmp_path / "round_1" / run_folder.BACKUP
    content = backup.read_bytes()
    backup.write_bytes(content[: len(content) // 2])  # e.g. a disk that filled up
    (tmp_path / "round_1" / (files.TEMPORARY_PREFIX + "x1y2backup.npz")).write_bytes(content)  # a killed write
    with caplog.at_level(logging.WARNING, logger=round_backup.__name__):
        imp.run(_config(tiny_fashion, tmp_path))
    assert "Round 1 cannot resume from" in caplog.text and "restarts from its beginning" in caplog.text
    _assert_same_results(tmp_path, uninterrupted)


def test_a_backup_of_another_config_is_refused(tiny_fashion, tmp_path, monkeypatch):
    _crash_after_backup(monkeypatch, round_index=0, evaluations=1)
    with pytest.raises(_Crash):
        imp.run(_config(tiny_fashion, tmp_path))  # no summary.json yet: only the backup knows the config
    monkeypatch.undo()
    with pytest.raises(run_folder.ConfigMismatchError, match="seed: 0 there, 1 now"):
        imp.run(_config(tiny_fashion, tmp_path, seed=1))
    assert (tmp_path / "round_0" / run_folder.BACKUP).exists()  # the other run's progress is kept


def test_a_one_pass_run_resumes_with_its_mask_updates_and_random_generator(tiny_fashion, tmp_path, monkeypatch,
                                                                           caplog):
    # Mask updates every 6 steps from step 12 to 42; the crash is at step 30, where one is due.
    settings = dict(mode="one_pass", criterion="random", rewind_step=0, one_pass_iterations=60, prune_updates=5)
    imp.run(_config(tiny_fashion, tmp_path / "uninterrupted", **settings))
    _crash_after_backup(monkeypatch, round_index=0, evaluations=3)
    with pytest.raises(_Crash):
        imp.run(_config(tiny_fashion, tmp_path / "resumed", **settings))
    monkeypatch.undo()
    assert (tmp_path / "resumed" / "round_0" / run_folder.BACKUP).exists()
    with caplog.at_level(logging.INFO, logger=round_backup.__name__):
        imp.run(_config(tiny_fashion, tmp_path / "resumed", **settings))
    # It resumed (a rejected backup would restart the round and end the same): 3 of 6 checks were restored.
    assert "Round 0 resumes from its backup after evaluation 3 of 6" in caplog.text, caplog.text
    _assert_same_results(tmp_path / "resumed", tmp_path / "uninterrupted")


def test_an_on_flip_one_pass_run_resumes_with_its_checks_and_their_record(tiny_fashion, tmp_path, monkeypatch,
                                                                          caplog):
    # Checks every 6 steps from 12 to 42 (the last the fill), flips counted from the weights at step 6; the crash
    # is at step 30, where a check is due. The summary holds each check's record: it must match too.
    settings = dict(mode="one_pass", criterion="hybrid", prune_schedule="on_flip", rewind_step=6,
                    one_pass_iterations=60, prune_updates=5, learning_rate=0.01)
    uninterrupted = imp.run(_config(tiny_fashion, tmp_path / "uninterrupted", **settings))
    history = uninterrupted["rounds"][0]["on_flip"]
    assert [c["iteration"] for c in history["fc1"]["checks"]] == [12, 18, 24, 30, 36, 42]
    assert sum(c["pruned_for_flips"] for c in history["fc1"]["checks"][3:]) > 0  # checks after the resume prune
    _crash_after_backup(monkeypatch, round_index=0, evaluations=3)
    with pytest.raises(_Crash):
        imp.run(_config(tiny_fashion, tmp_path / "resumed", **settings))
    monkeypatch.undo()
    with caplog.at_level(logging.INFO, logger=round_backup.__name__):
        imp.run(_config(tiny_fashion, tmp_path / "resumed", **settings))
    assert "Round 0 resumes from its backup after evaluation 3 of 6" in caplog.text, caplog.text
    _assert_same_results(tmp_path / "resumed", tmp_path / "uninterrupted")
