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
import threading

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


def _write_atomic(path, write, durable=True):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=TEMPORARY_PREFIX, suffix=os.path.basename(path))
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            if durable:
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


def write_npz(path, arrays, durable=True):
    """Writes a dict of arrays to `path` (.npz), atomically.

    Args:
      path: the file.
      arrays: dict name -> array.
      durable: fsync before the rename, so that the file survives a crash of the
        operating system too. Without it, a killed process still leaves either the old
        or the new file whole; only an OS crash can leave a torn one, which the zip's
        CRC check refuses when it is read. Backups that are replaced every few seconds
        and have a fallback skip it: an fsync can stall for seconds on a busy disk.
    """
    _write_atomic(path, lambda file: np.savez(file, **arrays), durable)


class BackgroundWriter:
    """Writes files on one background thread, newest first: training goes on while a backup is written.

    `submit(path, arrays)` queues an atomic `write_npz`; a write queued for the same path
    and not begun yet is replaced (only the newest backup matters). `wait()` blocks until
    every queued write is done and re-raises the first error one of them met (a full
    disk, say) in the caller's thread; `submit` re-raises it too.
    """

    def __init__(self, durable=False):
        self.durable = durable
        self._condition = threading.Condition()
        self._pending = {}  # path -> arrays, in submission order
        self._running = False  # a thread is working through _pending
        self._error = None

    def submit(self, path, arrays):
        with self._condition:
            self._raise_error()
            self._pending.pop(path, None)
            self._pending[path] = arrays
            if not self._running:
                self._running = True
                threading.Thread(target=self._work, name="keras_lottery_background_writer", daemon=True).start()

    def wait(self):
        with self._condition:
            while self._running:
                self._condition.wait()
            self._raise_error()

    def _raise_error(self):
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _work(self):
        while True:
            with self._condition:
                if not self._pending:
                    self._running = False
                    self._condition.notify_all()
                    return
                path = next(iter(self._pending))
                arrays = self._pending.pop(path)
            try:
                write_npz(path, arrays, self.durable)
            except BaseException as error:  # noqa: BLE001  (handed to the caller's thread)
                with self._condition:
                    self._error = self._error or error
