"""Criteria: a layer's state -> one score per weight (higher survives).

Each criterion takes `weights` (dict name -> current effective kernel values, pruned
weights already 0) and a NumPy random generator, and returns a dict of scores with
the same keys and shapes. `masks.compute` turns the scores into masks.
"""

import numpy as np


def magnitude(weights, rng=None):
    """|w|: the lottery-ticket criterion (`rng` is unused)."""
    del rng
    return {name: np.abs(value) for name, value in weights.items()}


def random(weights, rng):
    """Uniform noise: the random-pruning control (`rng` makes it reproducible)."""
    return {name: rng.random(np.shape(value)) for name, value in weights.items()}


CRITERIA = {"magnitude": magnitude, "random": random}


def get(name):
    """Returns the criterion called `name`.

    Raises:
      ValueError: unknown name; the message lists the known ones.
    """
    if callable(name):
        return name
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose one of {sorted(CRITERIA)}.")
    return CRITERIA[name]
