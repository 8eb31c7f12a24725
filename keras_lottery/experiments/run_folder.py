"""Run folders: summary.json, per-round masks and weights, the rewind snapshot.

One folder per run, so that rerunning the same command resumes it. Every file is
written atomically (`foundations/files.py`: a temporary file in the same folder, fsync,
then rename), so an interrupted run never leaves a half-written file under a real name. `summary.json`
is written last for each round: a round counts as finished only once it is listed
there, and files of an unfinished round are simply overwritten on resume. A round in
progress keeps its latest backup (`round_backup.py`) until it is listed there; a
temporary file left by a write that was killed is never read, and is removed when the
run resumes (`remove_leftovers`).

One writer per folder: a run holds an OS lock (`fcntl.flock` on `run.lock`) for as long
as it works in the folder (`RunFolder.locked()`), so a second process on the same
folder fails at once naming the holder. The kernel drops the lock when its process ends,
however it ends, so a lock left by a killed run never blocks the rerun.

Every file read back is checked: `summary.json` against its structure, and on resume
the results of every finished round (`verify_rounds`); a round whose files are missing
or unreadable is recomputed from the last round whose files read back, with a logged
warning, so rerunning the same command is the repair. The data a run read (each
file's SHA-256, `data_record`) is recorded in `summary.json` and checked on resume.

Layout::

    <output_dir>/summary.json          config + one record per finished round
    <output_dir>/rewind_snapshot.npz   weights at the rewind step
    <output_dir>/round_<r>/masks.npz   0/1 mask per prunable kernel, keyed by layer name
    <output_dir>/round_<r>/final_weights.npz  weights after the round's training
    <output_dir>/round_<r>/backup.npz  the unfinished round's state at its last evaluation
    <output_dir>/tensorboard/...       TensorBoard logs
    <output_dir>/run.lock              while a run works here: its pid, host, start time, command
"""

import contextlib
import datetime
import fcntl
import glob
import json
import logging
import numbers
import os
import socket
import sys
import tempfile
import zipfile

import numpy as np

from keras_lottery.foundations import files
from keras_lottery.training import strategies

SUMMARY = "summary.json"
SNAPSHOT = "rewind_snapshot.npz"
BACKUP = "backup.npz"
LOCK = "run.lock"
ROUND_FILES = ("masks.npz", "final_weights.npz")  # every finished round has both; sign-flip runs add FLIP_STATE
FLIP_STATE = "flip_state.npz"
# The keys every round record has (the first release wrote these already): what resuming and reports read.
RECORD_KEYS = ("round", "weights_remaining", "test_accuracy", "iterations")

_LOG = logging.getLogger(__name__)

# Fields that may change between a run and its resumption: where things are read
# from or written to, and how many rounds to run (so a run can be extended).
RESUMABLE_FIELDS = ("rounds", "output_dir", "data_dir", "verbose", "backup_seconds", "distribution_strategy")


class ConfigMismatchError(ValueError):
    """The output folder holds a run with a different config."""


class CorruptRecordError(ValueError):
    """A results file cannot be read back."""


class RunInUseError(ValueError):
    """Another process is running in the output folder."""


class OutputDirError(ValueError):
    """The output folder cannot be created or written."""


class DataMismatchError(ValueError):
    """A run is resumed on other data than it started with."""


def read_npz(path):
    """Reads an .npz written by `files.write_npz` into a dict.

    Raises:
      CorruptRecordError: missing or unreadable file, with what to do about it.
    """
    try:
        with np.load(path) as loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise CorruptRecordError(
            f"cannot read {path} ({error}). Rerun the command of the run it belongs to (the same settings and "
            "--output_dir): rounds whose files cannot be read are recomputed from the last round whose files can."
        ) from error


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def check_summary(summary, required=("config", "rounds")):
    """Raises ValueError unless `summary` has the structure `imp.run` or `early_bird_flow.run` writes.

    Args:
      summary: the parsed summary.json.
      required: its top-level keys: ("config", "rounds") for IMP and one-pass runs,
        ("config", "retrain") for early-bird runs.
    """
    if not isinstance(summary, dict):
        raise ValueError(f"it holds a {type(summary).__name__}, not an object")
    for key in required:
        if key not in summary:
            raise ValueError(f"it has no {key!r}")
    if not isinstance(summary["config"], dict):
        raise ValueError(f"'config' is a {type(summary['config']).__name__}, not an object")
    if "rounds" in required:
        rounds = summary["rounds"]
        if not isinstance(rounds, list):
            raise ValueError(f"'rounds' is {rounds!r}, not a list of round records")
        # A branch (`branch.py`) holds only the levels it retrained: increasing, not every one.
        previous = -1
        for index, record in enumerate(rounds):
            if not isinstance(record, dict) or any(key not in record for key in RECORD_KEYS):
                raise ValueError(f"round record {index} is not an object with the keys {list(RECORD_KEYS)}")
            expected = record["round"] if "branch" in summary and _is_number(record["round"]) and \
                record["round"] > previous else index
            previous = record["round"]
            if record["round"] != expected or not all(_is_number(record[key]) for key in RECORD_KEYS[1:]):
                raise ValueError(f"round record {index} has round {record['round']!r} or a value that is not a number")
    if "retrain" in required:
        retrain = summary["retrain"]
        if not isinstance(retrain, dict) or not _is_number(retrain.get("test_accuracy")):
            raise ValueError("'retrain' is not an object with a numeric 'test_accuracy'")
        if not _is_number(summary.get("weights_remaining")):
            raise ValueError("'weights_remaining' is not a number")


def data_record(splits):
    """What a run read: {"source": where from, "files": {file name: SHA-256}} of `data.Splits`."""
    return {"source": splits.source, "files": dict(splits.file_hashes)}


def worker_output_dir(output_dir, strategy):
    """Where this process writes: `output_dir`, or a scratch folder on a multi-worker non-chief.

    One writer per run folder: under `MultiWorkerMirroredStrategy` every worker runs the
    same steps, and only the chief (`strategies.is_chief`) writes `output_dir`; each other
    worker keeps its own copy in `<tmp>/keras_lottery_workers/<task>/<folder name>`, which it
    resumes from when restarted on the same machine.
    """
    if strategies.is_chief(strategy):
        return output_dir
    resolver = strategy.cluster_resolver
    return os.path.join(tempfile.gettempdir(), "keras_lottery_workers", f"{resolver.task_type}_{resolver.task_id}",
                        os.path.basename(os.path.abspath(output_dir)))


class RunFolder:
    """The output folder of one run."""

    def __init__(self, output_dir):
        if not output_dir:
            raise ValueError("output_dir is required: the folder where this run's results go.")
        self.path = os.path.abspath(output_dir)

    def file(self, *parts):
        return os.path.join(self.path, *parts)

    def round_dir(self, round_index):
        return self.file(f"round_{round_index}")

    def load_summary(self, required=("config", "rounds")):
        """The summary dict, or None for a new run.

        Args:
          required: keys a valid summary has (IMP's by default; an early-bird run's
            summary has "retrain" instead of "rounds").

        Raises:
          CorruptRecordError: summary.json exists but is not valid JSON, or not of the
            structure `check_summary` checks.
        """
        path = self.file(SUMMARY)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as file:
                summary = json.load(file)
            check_summary(summary, required)
        except (OSError, ValueError) as error:
            raise CorruptRecordError(
                f"{path} is not a valid summary ({error}). Move the folder away or choose another --output_dir."
            ) from error
        return summary

    def check_config(self, summary, config, defaults=None):
        """Refuses to resume a run whose config differs (except `RESUMABLE_FIELDS`).

        Args:
          summary: the saved summary.
          config: the config dict of this run.
          defaults: optional dict field -> default; a field missing from the saved
            config (a run saved before the field existed) counts as its default. A
            callable default is called with the saved config (a default that depends on it).

        Raises:
          ConfigMismatchError: naming each differing field and both values.
        """
        saved = {**{k: v(summary["config"]) if callable(v) else v for k, v in (defaults or {}).items() if k in config},
                 **summary["config"]}
        keys = (set(saved) | set(config)) - set(RESUMABLE_FIELDS)
        differences = [f"{key}: {saved.get(key)!r} there, {config.get(key)!r} now" for key in sorted(keys)
                       if saved.get(key) != config.get(key)]
        if differences:
            raise ConfigMismatchError(
                f"{self.path} holds a run with a different config ({'; '.join(differences)}). "
                "Use another --output_dir, or rerun with the same settings to resume it."
            )

    def load_checked(self, config, defaults=None, required=("config", "rounds")):
        """The saved summary (None for a new run), after refusing a different config.

        Raises:
          ConfigMismatchError, CorruptRecordError: see `check_config`, `load_summary`.
        """
        summary = self.load_summary(required)
        if summary is not None:
            self.check_config(summary, config, defaults)
        return summary

    def save_summary(self, summary):
        files.write_json(self.file(SUMMARY), summary)

    def save_round(self, round_index, masks, final_weights, flip_state=None):
        """Writes a round's masks, final weights and (sign-flip runs) flip state, each atomically."""
        files.write_npz(os.path.join(self.round_dir(round_index), "masks.npz"), masks)
        files.write_npz(os.path.join(self.round_dir(round_index), "final_weights.npz"), final_weights)
        if flip_state:
            files.write_npz(os.path.join(self.round_dir(round_index), "flip_state.npz"), flip_state)

    def load_flip_state(self, round_index):
        """The flip state saved with round `round_index`, or None if it has none."""
        path = os.path.join(self.round_dir(round_index), "flip_state.npz")
        return read_npz(path) if os.path.exists(path) else None

    def load_masks(self, round_index):
        return read_npz(os.path.join(self.round_dir(round_index), "masks.npz"))

    def load_final_weights(self, round_index):
        return read_npz(os.path.join(self.round_dir(round_index), "final_weights.npz"))

    def save_snapshot(self, arrays):
        files.write_npz(self.file(SNAPSHOT), arrays)

    def load_snapshot(self):
        return read_npz(self.file(SNAPSHOT))

    def backup_path(self, round_index):
        return os.path.join(self.round_dir(round_index), BACKUP)

    def save_backup(self, round_index, arrays):
        """Writes the backup of unfinished round `round_index` (replacing the previous one), atomically."""
        files.write_npz(self.backup_path(round_index), arrays)

    def load_backup(self, round_index):
        """The backup of round `round_index`, or None if it has none.

        Raises:
          CorruptRecordError: the backup cannot be read.
        """
        path = self.backup_path(round_index)
        return read_npz(path) if os.path.exists(path) else None

    def remove_backup(self, round_index):
        """Deletes round `round_index`'s backup, if any (once the round's results are saved)."""
        if os.path.exists(self.backup_path(round_index)):
            os.remove(self.backup_path(round_index))

    def remove_leftovers(self, finished_rounds):
        """Deletes what an interrupted run leaves behind and never reads back.

        That is the temporary files of writes that were killed before their rename, and
        the backups of rounds 0 .. `finished_rounds` - 1, whose results are saved.
        """
        for folder in [self.path, *glob.glob(os.path.join(glob.escape(self.path), "round_*"))]:
            for temporary in glob.glob(os.path.join(glob.escape(folder), files.TEMPORARY_PREFIX + "*")):
                os.remove(temporary)
        for round_index in range(finished_rounds):
            self.remove_backup(round_index)

    def verify_rounds(self, summary, flip_state=False, snapshot=True):
        """Drops the finished rounds whose files do not read back, and those after them.

        Resuming needs the rewind snapshot and the last round's files; reports and
        `load_run_model` read every round's. So every finished round is read back, and
        from the first whose masks, final weights (or, with `flip_state`, flip state)
        are missing or unreadable, the rounds are dropped from `summary["rounds"]` to
        be recomputed from the round before, with a logged warning. An unreadable
        snapshot (written after round 0) drops every round.

        Args:
          summary: the loaded summary; its "rounds" list is shortened in place.
          flip_state: whether each round has a flip state (sign-flip and hybrid runs).
          snapshot: whether the run has a rewind snapshot (IMP runs).

        Returns:
          The number of rounds kept: where the run continues.
        """
        rounds = summary["rounds"]
        names = ROUND_FILES + ((FLIP_STATE,) if flip_state else ())
        checks = [(0, self.file(SNAPSHOT))] if snapshot and rounds else []
        checks += [(r, os.path.join(self.round_dir(r), name)) for r in range(len(rounds)) for name in names]
        for round_index, path in checks:
            try:
                read_npz(path)
            except CorruptRecordError as error:
                _LOG.warning("%s cannot be read (%s): rounds %d to %d are recomputed%s.", path, error.__cause__,
                             round_index, len(rounds) - 1,
                             f" from round {round_index - 1}" if round_index else " from the start")
                del rounds[round_index:]
                return round_index
        return len(rounds)

    def check_data(self, summary, record):
        """Refuses to resume on data other than the run started with; adds the record to an older summary.

        Args:
          summary: the loaded summary (or a backup's progress dict), or None for a new run.
          record: `data_record(splits)` of the data read now.

        Raises:
          DataMismatchError: a file differs, is missing or is new, naming it.
        """
        if summary is None:
            return
        saved = summary.get("data")
        if saved is None:  # a run saved before data was recorded: record it from now on
            summary["data"] = record
            return
        before, now = saved["files"], record["files"]
        differences = [f"{name}: sha256 {before.get(name, 'absent')[:12]} then, {now.get(name, 'absent')[:12]} now"
                       for name in sorted(set(before) | set(now)) if before.get(name) != now.get(name)]
        if differences:
            raise DataMismatchError(
                f"{self.path} was started on other data than {record['source']} holds ({'; '.join(differences)}); "
                f"it read {saved['source']}. Point --data_dir at the data the run started with, or use another "
                "--output_dir for a run on this data."
            )

    @contextlib.contextmanager
    def locked(self):
        """Holds this folder's lock while the block runs: one writer per run folder.

        Creates the folder if needed and checks that it can be written before any work.
        The lock is `fcntl.flock` on `run.lock`, which the kernel releases when the
        process ends, however it ends; the file says who holds it, and is removed when
        the block ends (and the folder too, if the run created it and left nothing).

        Raises:
          OutputDirError: the path is a file, or the folder cannot be created or written.
          RunInUseError: another process holds the lock; the message names it.
        """
        created = not os.path.exists(self.path)
        path = self.file(LOCK)
        try:
            self._check_writable()
            descriptor = self._acquire(path)
        except (OutputDirError, RunInUseError):
            self._remove_if_created_and_empty(created)
            raise
        try:
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": " ".join(sys.argv),
                      "started": datetime.datetime.now().isoformat(timespec="seconds")}
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, json.dumps(holder).encode(), 0)
            yield self
        finally:
            with contextlib.suppress(OSError):  # unlinked while still locked: no process can lock this file after us
                os.unlink(path)
            os.close(descriptor)
            self._remove_if_created_and_empty(created)

    def _remove_if_created_and_empty(self, created):
        if created:
            with contextlib.suppress(OSError):  # only an empty folder goes
                os.rmdir(self.path)

    def _check_writable(self):
        if os.path.exists(self.path) and not os.path.isdir(self.path):
            raise OutputDirError(f"output_dir {self.path} is a file, not a folder: choose a folder path.")
        try:
            os.makedirs(self.path, exist_ok=True)
            handle, probe = tempfile.mkstemp(dir=self.path, prefix=files.TEMPORARY_PREFIX)
            os.close(handle)
            os.remove(probe)
        except OSError as error:
            raise OutputDirError(
                f"cannot write in output_dir {self.path} ({error.strerror or error}): choose a folder you can "
                "write to, or fix its permissions."
            ) from error

    def _acquire(self, path):
        while True:
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(descriptor)
                os.close(descriptor)
                raise RunInUseError(
                    f"{self.path} is in use by another run ({holder}). Two runs in one folder would mix their "
                    "results: wait for it to end (rerunning the same command then resumes or returns the "
                    "finished run), or use another --output_dir. Under MultiWorkerMirroredStrategy, give each "
                    "worker but the chief its own scratch --output_dir."
                ) from None
            try:
                same_file = os.fstat(descriptor).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same_file = False
            if same_file:
                return descriptor
            os.close(descriptor)  # the holder removed the file between our open and our lock: try again


def _read_holder(descriptor):
    try:
        holder = json.loads(os.pread(descriptor, 4096, 0).decode() or "{}")
        return (f"pid {holder['pid']} on host {holder['host']}, started {holder['started']}, "
                f"command: {holder['command'] or '(none)'}")
    except (OSError, ValueError, KeyError, TypeError):
        return "it has not yet said which: it is starting"
