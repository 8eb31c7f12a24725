"""Atomic file writes: a file is either absent, its previous version, or complete.

Every result keras_lottery writes (run folders, reports, TFLite files) goes through
these functions: the content is written to a temporary file in the same folder,
fsynced, then renamed over the real name, so an interrupted process never leaves a
half-written file under a real name. A temporary file left by a killed write starts
with `TEMPORARY_PREFIX` and is never read back (run folders remove them on resume).
"""

import json
import os
import signal
import tempfile

import numpy as np

TEMPORARY_PREFIX = ".tmp-"

# Test hook, inert unless set: KILL_AT_VARIABLE="before_rename:<path end>" (or
# "after_rename:<path end>") makes the process SIGKILL itself while it writes the file
# whose path ends with <path end> (e.g. "round_1/backup.npz"), just before (after) the
# temporary file is renamed to it. tests/experiments/test_fault_tolerance.py crashes runs with it.
KILL_AT_VARIABLE = "KERAS_LOTTERY_KILL_AT"


def _kill_if_asked(moment, path):
    """SIGKILLs this process at `moment` of writing `path` if KILL_AT_VARIABLE asks for it."""
    asked = os.environ.get(KILL_AT_VARIABLE)
    if asked and asked.startswith(moment + ":") and os.fspath(path).endswith(asked[len(moment) + 1:]):
        os.kill(os.getpid(), signal.SIGKILL)


def _write_atomic(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        # mkstemp makes the file private (0600); results are ordinary files (0666 & ~umask).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)
        _kill_if_asked("before_rename", path)
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise
    _kill_if_asked("after_rename", path)


def write_json(path, value):
    """Writes `value` as JSON to `path`, atomically."""
    _write_atomic(path, lambda file: file.write(json.dumps(value, indent=2, sort_keys=True).encode()))


def write_bytes(path, content):
    """Writes `content` (bytes) to `path`, atomically."""
    _write_atomic(path, lambda file: file.write(content))


def write_text(path, text):
    """Writes `text` (UTF-8) to `path`, atomically."""
    write_bytes(path, text.encode("utf-8"))


def write_npz(path, arrays):
    """Writes a dict of arrays to `path` (.npz), atomically."""
    _write_atomic(path, lambda file: np.savez(file, **arrays))
