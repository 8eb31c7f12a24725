"""Run folders: summary.json, per-round masks and weights, the rewind snapshot.

One folder per run, so that rerunning the same command resumes it. Every file is
written atomically (`foundations/files.py`: a temporary file in the same folder, fsync,
then rename), so an interrupted run never leaves a half-written file under a real name. `summary.json`
is written last for each round: a round counts as finished only once it is listed
there, and files of an unfinished round are simply overwritten on resume. A round in
progress keeps its latest backup (`round_backup.py`) until it is listed there; a
temporary file left by a write that was killed is never read, and is removed when the
run resumes (`remove_leftovers`).

Layout::

    <output_dir>/summary.json          config + one record per finished round
    <output_dir>/rewind_snapshot.npz   weights at the rewind step
    <output_dir>/round_<r>/masks.npz   0/1 mask per prunable kernel, keyed by layer name
    <output_dir>/round_<r>/final_weights.npz  weights after the round's training
    <output_dir>/round_<r>/backup.npz  the unfinished round's state at its last evaluation
    <output_dir>/tensorboard/...       TensorBoard logs
"""

import glob
import json
import os
import zipfile

import numpy as np

from keras_lottery.foundations import files

SUMMARY = "summary.json"
SNAPSHOT = "rewind_snapshot.npz"
BACKUP = "backup.npz"

# Fields that may change between a run and its resumption: where things are read
# from or written to, and how many rounds to run (so a run can be extended).
RESUMABLE_FIELDS = ("rounds", "output_dir", "data_dir", "verbose")


class ConfigMismatchError(ValueError):
    """The output folder holds a run with a different config."""


class CorruptRecordError(ValueError):
    """A results file cannot be read back."""


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
            f"cannot read {path} ({error}). Delete the round folder it is in and rerun the same "
            "command: the round is recomputed."
        ) from error


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
          CorruptRecordError: summary.json exists but is not valid JSON, or lacks a required key.
        """
        path = self.file(SUMMARY)
        if not os.path.exists(path):
            return None
        try:
            with open(path) as file:
                summary = json.load(file)
            for key in required:
                summary[key]  # noqa: B018  (every required key must be there)
        except (ValueError, KeyError, TypeError) as error:
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
            config (a run saved before the field existed) counts as its default.

        Raises:
          ConfigMismatchError: naming each differing field and both values.
        """
        saved = {**{k: v for k, v in (defaults or {}).items() if k in config}, **summary["config"]}
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
