"""Criteria: a layer's state -> one score per weight (higher survives).

Each criterion takes `weights` (dict name -> current effective kernel values, pruned
weights already 0), a NumPy random generator, and `state` (dict name -> extra
per-weight state the wrapper keeps, e.g. sign-flip counts), and returns a dict of
scores with the same keys and shapes. `masks.compute` turns the scores into masks;
`score` is how callers invoke a criterion.

The sign-flip criteria read the state `prune_low_sign_flip` keeps for every weight:
`flip_count` (how many times its sign changed since the reference point),
`flipped` (its sign now differs from its reference sign) and the hybrid's `alpha`.

* `'magnitude'`: |w|.
* `'sign_flip'` (alias `'flip'`): weights flipped now (relative to the reference) go
  first — more sign changes first, and among equal counts the smaller |w| first —
  then, if the sparsity asks for more, the rest by magnitude. As a score:
  `-max(flip_count, 1) + |w| / (2 max|w|)` for flipped weights (always < 0) and
  `|w|` for the others (>= 0), where max|w| is taken over the layers ranked together.
* `'hybrid'`: `|w| / (1 + flip_count) ** alpha` — magnitude discounted by how often a
  weight changed sign (FlipOut's |w|^p / (flips + 1) with p = 1, alpha = 1). alpha = 0 is
  magnitude; a larger alpha weighs flips more.
* `'random'`: uniform noise (the random-pruning control).
"""

import inspect

import numpy as np


def magnitude(weights, rng=None, state=None):
    """|w|: the lottery-ticket criterion (`rng` and `state` are unused)."""
    del rng, state
    return {name: np.abs(value) for name, value in weights.items()}


def random(weights, rng, state=None):
    """Uniform noise: the random-pruning control (`rng` makes it reproducible)."""
    del state
    return {name: rng.random(np.shape(value)) for name, value in weights.items()}


def _flip_state(state, name, criterion):
    entry = (state or {}).get(name) or {}
    if "flip_count" not in entry:
        raise ValueError(
            f"criterion {criterion!r} needs sign-flip counts for {name!r}, and its layer has none: "
            "wrap the model with keras_lottery.prune_low_sign_flip(...) instead of prune_low_magnitude."
        )
    return entry


def sign_flip(weights, rng=None, state=None):
    """Flipped weights first (by flip count, then magnitude), then the rest by magnitude."""
    del rng
    largest = max((float(np.max(np.abs(value))) for value in weights.values() if np.size(value)), default=0.0)
    scale = 2.0 * largest if largest > 0 else 1.0
    scores = {}
    for name, value in weights.items():
        entry = _flip_state(state, name, "sign_flip")
        magnitude_score = np.abs(value).astype(np.float64)
        flipped_score = -np.maximum(entry["flip_count"], 1) + magnitude_score / scale
        scores[name] = np.where(entry["flipped"], flipped_score, magnitude_score)
    return scores


def hybrid(weights, rng=None, state=None):
    """|w| / (1 + flip_count) ** alpha, alpha from the wrapper (default 1)."""
    del rng
    scores = {}
    for name, value in weights.items():
        entry = _flip_state(state, name, "hybrid")
        alpha = entry.get("alpha", 1.0)
        scores[name] = np.abs(value).astype(np.float64) / (1.0 + entry["flip_count"]) ** alpha
    return scores


CRITERIA = {"magnitude": magnitude, "random": random, "sign_flip": sign_flip, "flip": sign_flip, "hybrid": hybrid}
FLIP_CRITERIA = ("sign_flip", "flip", "hybrid")  # the ones that need flip counts


def get(name):
    """Returns the criterion called `name` (or `name` itself if it is a callable).

    Raises:
      ValueError: unknown name; the message lists the known ones.
    """
    if callable(name):
        return name
    if name not in CRITERIA:
        raise ValueError(f"unknown criterion {name!r}; choose one of {sorted(CRITERIA)}.")
    return CRITERIA[name]


def score(criterion, weights, rng, state):
    """Scores `weights` with `criterion`; a user callable may take (weights, rng) only."""
    function = get(criterion)
    parameters = inspect.signature(function).parameters
    takes_state = len(parameters) >= 3 or any(p.kind == p.VAR_POSITIONAL for p in parameters.values())
    return function(weights, rng, state) if takes_state else function(weights, rng)
