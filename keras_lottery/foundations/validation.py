"""Argument checks shared by the public API, so every message reads the same."""

import numpy as np


def check_int(value, name, minimum=0):
    """Returns `value` as an int, or raises ValueError naming the argument.

    Args:
      value: the argument; Python and NumPy integers are accepted, bools are not.
      name: the argument's name, for the message.
      minimum: the smallest value allowed.

    Raises:
      ValueError: not an integer, or below `minimum`.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}; got {value!r}.")
    return int(value)
