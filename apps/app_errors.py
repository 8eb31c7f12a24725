"""How every app ends on an error it can explain: one line `error: ...`, exit status 1, no traceback.

    if __name__ == "__main__":
        app.run(app_errors.one_line_errors(main))

The library raises typed errors whose message names the problem and the fix (a bad
dataset, an output folder in use or holding another run, a corrupt record, a diverged
round: `ValueError` and its subclasses, `DataUnavailableError`), and the operating system
raises `OSError` (a full disk, a permission). Those end the app with their message on one
line. Ctrl-C ends it with the line that says how to go on: finished work is saved
atomically and a run resumes where it stopped. A flag absl itself cannot parse keeps
absl's own two-line message; an `app.UsageError` that `main` raises (flags that parse but
do not fit together, a config its `resolved()` refuses) ends with its one line too, not
absl's dump of every flag's help above it. Anything else is a bug and keeps its traceback.
"""

import functools

from absl import app

from keras_lottery import data

EXPLAINED_ERRORS = (ValueError, data.DataUnavailableError, OSError)
INTERRUPTED = "error: interrupted; rerun the same command to resume (what was finished is kept)"


def one_line_errors(main, interrupted=INTERRUPTED):
    """`main` (an absl main), with explained errors and Ctrl-C turned into one line and exit status 1."""

    @functools.wraps(main)
    def wrapped(argv):
        try:
            return main(argv)
        except app.UsageError as error:
            raise SystemExit(f"error: {_one_line(error)}") from None
        except KeyboardInterrupt:
            raise SystemExit(interrupted) from None
        except EXPLAINED_ERRORS as error:
            raise SystemExit(f"error: {_one_line(error)}") from None

    return wrapped


def _one_line(error):
    return " ".join(str(error).split()) or type(error).__name__
