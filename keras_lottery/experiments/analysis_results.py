"""The results file of an analysis over finished runs (shift, instability, fusion sweep).

Each analysis keeps one JSON file in its output folder, rewritten atomically after every
unit of work so that the same command resumes it. Its recorded settings decide whether
numbers computed later are comparable with the ones already there: a call with other
settings for the same folder is refused, naming each difference.
"""

import json

from keras_lottery.foundations.validation import check_int


def read(path, keys, error_class):
    """The results at `path`, which must hold every top-level key in `keys`.

    Raises:
      error_class: the file cannot be read, is not JSON, or lacks one of `keys` (damaged, or
        written by something else).
    """
    try:
        with open(path) as file:
            results = json.load(file)
        missing = [key for key in keys if key not in results]
    except (OSError, ValueError, TypeError) as error:
        missing, results = None, error
    if missing is None or missing:
        reason = results if missing is None else f"no {', '.join(missing)}"
        raise error_class(f"cannot read {path} ({reason}): it was damaged or written by something else; "
                          "remove it or pass another --output_dir.")
    return results


def check_same_settings(results, settings, path, error_class, what="settings"):
    """Raises `error_class` unless `results` were made with `settings` (each difference named).

    `what` names the settings in the advice ("pass the same <what> to resume it").
    """
    differences = [f"{key} {results['settings'].get(key)!r} there, {value!r} now" for key, value in settings.items()
                   if results["settings"].get(key) != value]
    if differences:
        raise error_class(f"{path} was made with other settings ({'; '.join(differences)}): pass the same "
                          f"{what} to resume it, or another --output_dir.")


def parse_levels(levels, error_class):
    """'all', or the sorted distinct IMP rounds of "0,3,6" (or a list of ints): which rounds an analysis reads.

    Raises:
      error_class: anything else.
    """
    if levels == "all":
        return "all"
    try:
        parts = str(levels).split(",") if isinstance(levels, str) else list(levels)
        values = sorted({check_int(int(part) if isinstance(part, str) else part, "level", 0)
                         for part in parts if str(part).strip()})
    except (TypeError, ValueError):
        values = []
    if not values:
        raise error_class(f"levels must be 'all' or comma-separated IMP rounds >= 0 such as '0,3,6'; got {levels!r}.")
    return values
