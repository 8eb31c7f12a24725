"""Pruning schedules: when to update masks and to which sparsity.

Our schedules are `tfmot` `PruningSchedule` subclasses (`schedule(step) ->
(should_prune, sparsity)`), so they also work inside tfmot's own wrapper. In
keras_lottery, masks are not updated inside the training graph: the `UpdateMasks`
callback asks each wrapper's schedule at the steps it may fire and computes the masks
with `masks.compute` (one tie rule, masks that only shrink, layerwise or global).
`next_prune_step` tells the callback when that is, so that a fit with no pending
mask update does no per-step Python work at all. `OnFlip` is the one schedule whose
checks prune by what happened in training (sign flips, `on_flip.py`) rather than to a
sparsity set in advance.

A *step* is the optimizer's iteration count; `RewindCallback.rewind` resets it, so in
the IMP loop each round counts its steps from 0.
"""

import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import pruning_schedule as tfmot_schedule

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity.masks import check_sparsity, sparsity_after_rounds

keras = compat.keras

PruningSchedule = tfmot_schedule.PruningSchedule


@keras.utils.register_keras_serializable(package="keras_lottery")
class OneShot(PruningSchedule):
    """Prune once, to `target_sparsity`, at `prune_step`.

    Typical use: train a dense model, wrap it with this schedule, and fine-tune or
    rewind; the masks are computed from the weights as they are at `prune_step`.
    """

    def __init__(self, target_sparsity, prune_step=0):
        """Args:
          target_sparsity: fraction of weights pruned, in [0, 1).
          prune_step: the step at which the mask is computed.

        Raises:
          ValueError: sparsity outside [0, 1) or a negative step.
        """
        check_sparsity(target_sparsity, "target_sparsity")
        self.target_sparsity = float(target_sparsity)
        self.prune_step = check_int(prune_step, "prune_step")

    def __call__(self, step):
        return (tf.math.equal(step, self.prune_step), tf.constant(self.target_sparsity, tf.float32))

    def next_prune_step(self, step):
        """The first step >= `step` at which this schedule fires, or None."""
        return self.prune_step if step <= self.prune_step else None

    def exact_sparsity(self, step):
        """The sparsity at `step` as a Python float (the tensor is float32)."""
        del step
        return self.target_sparsity

    def get_config(self):
        return {
            "class_name": self.__class__.__name__,
            "config": {"target_sparsity": self.target_sparsity, "prune_step": self.prune_step},
        }


@keras.utils.register_keras_serializable(package="keras_lottery")
class Iterative(PruningSchedule):
    """IMP rounds inside one fit: prune `prune_rate` of the survivors every round.

    Round `r` (r = 1..rounds) starts at `begin_step + r * steps_per_round` and prunes
    to sparsity `1 - (1 - prune_rate) ** r`, so exactly
    `round((1 - prune_rate) ** r * n)` weights remain (see `masks.keep_count`). Used
    alone, training simply continues after each prune (iterative pruning with
    fine-tuning); `keras_lottery.imp.run` adds the rewinding between rounds.
    """

    def __init__(self, prune_rate, steps_per_round, rounds, begin_step=0):
        """Args:
          prune_rate: fraction of the surviving weights pruned per round, in [0, 1).
          steps_per_round: training steps between two prunes (> 0).
          rounds: number of prunes (> 0).
          begin_step: the step that counts as the start of round 0.

        Raises:
          ValueError: any argument out of range.
        """
        check_sparsity(prune_rate, "prune_rate")
        for value, what in ((steps_per_round, "steps_per_round"), (rounds, "rounds")):
            if check_int(value, what) == 0:
                raise ValueError(f"{what} must be > 0.")
        self.prune_rate = float(prune_rate)
        self.steps_per_round = int(steps_per_round)
        self.rounds = int(rounds)
        self.begin_step = check_int(begin_step, "begin_step")

    def sparsity_at_round(self, round_index):
        """The target sparsity of round `round_index` (0 for the dense round)."""
        return sparsity_after_rounds(self.prune_rate, round_index)

    def exact_sparsity(self, step):
        """The sparsity at `step` as a Python float (the tensor is float32)."""
        round_index = (step - self.begin_step) // self.steps_per_round
        return self.sparsity_at_round(min(max(round_index, 0), self.rounds))

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        offset = step - self.begin_step
        round_index = tf.math.floordiv(offset, self.steps_per_round)
        should_prune = tf.logical_and(
            tf.equal(tf.math.floormod(offset, self.steps_per_round), 0),
            tf.logical_and(round_index >= 1, round_index <= self.rounds),
        )
        clipped = tf.cast(tf.clip_by_value(round_index, 0, self.rounds), tf.float32)
        sparsity = 1.0 - tf.pow(1.0 - self.prune_rate, clipped)
        return should_prune, sparsity

    def next_prune_step(self, step):
        """The first step >= `step` at which this schedule fires, or None."""
        first = self.begin_step + self.steps_per_round
        last = self.begin_step + self.rounds * self.steps_per_round
        if step <= first:
            return first
        candidate = first + -(-(step - first) // self.steps_per_round) * self.steps_per_round
        return candidate if candidate <= last else None

    def get_config(self):
        return {
            "class_name": self.__class__.__name__,
            "config": {
                "prune_rate": self.prune_rate,
                "steps_per_round": self.steps_per_round,
                "rounds": self.rounds,
                "begin_step": self.begin_step,
            },
        }


class _Periodic(PruningSchedule):
    """A schedule that fires at `begin_step`, `begin_step + frequency`, ..., `end_step` (Gradual, OnFlip).

    Subclasses set `begin_step`, `frequency` and `updates`.
    """

    @property
    def end_step(self):
        """The step of the last update (Gradual: where the target is reached; OnFlip: the fill)."""
        return self.begin_step + self.updates * self.frequency

    def _fires(self, step):
        """A bool tensor: whether the int64 `step` is one of the updates."""
        offset = step - self.begin_step
        return tf.logical_and(tf.logical_and(offset >= 0, step <= self.end_step),
                              tf.equal(tf.math.floormod(offset, self.frequency), 0))

    def next_prune_step(self, step):
        """The first step >= `step` at which this schedule fires, or None."""
        if step <= self.begin_step:
            return self.begin_step
        candidate = self.begin_step + -(-(step - self.begin_step) // self.frequency) * self.frequency
        return candidate if candidate <= self.end_step else None


@keras.utils.register_keras_serializable(package="keras_lottery")
class Gradual(_Periodic):
    """Gradual pruning while training continues (Zhu & Gupta's cubic schedule).

    Fires at `begin_step`, `begin_step + frequency`, ..., `begin_step + updates *
    frequency`; at the k-th of these steps the sparsity is
    `target * (1 - (1 - k / updates) ** power)`, so it rises fast first and reaches
    exactly `target_sparsity` at the last update. The one-pass mode of
    `keras_lottery.imp` uses it with the sign-flip criteria.
    """

    def __init__(self, target_sparsity, begin_step, frequency, updates, power=3):
        """Args:
          target_sparsity: the final sparsity, in [0, 1).
          begin_step: the first update (sparsity 0: nothing pruned yet).
          frequency: steps between updates (> 0).
          updates: number of updates after `begin_step` (> 0).
          power: the polynomial's exponent (> 0; 1 is linear).

        Raises:
          ValueError: any argument out of range.
        """
        check_sparsity(target_sparsity, "target_sparsity")
        self.target_sparsity = float(target_sparsity)
        self.begin_step = check_int(begin_step, "begin_step")
        for value, what in ((frequency, "frequency"), (updates, "updates")):
            if check_int(value, what) == 0:
                raise ValueError(f"{what} must be > 0.")
        if isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0:
            raise ValueError(f"power must be a number > 0; got {power!r}.")
        self.frequency, self.updates, self.power = int(frequency), int(updates), power

    def exact_sparsity(self, step):
        """The sparsity at `step` as a Python float (the tensor is float32)."""
        done = min(max((step - self.begin_step) // self.frequency, 0), self.updates)
        return self.target_sparsity * (1.0 - (1.0 - done / self.updates) ** self.power)

    def __call__(self, step):
        step = tf.cast(step, tf.int64)
        should_prune = self._fires(step)
        offset = step - self.begin_step
        done = tf.cast(tf.clip_by_value(tf.math.floordiv(offset, self.frequency), 0, self.updates), tf.float32)
        sparsity = self.target_sparsity * (1.0 - tf.pow(1.0 - done / self.updates, self.power))
        return should_prune, sparsity

    def get_config(self):
        return {
            "class_name": self.__class__.__name__,
            "config": {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
                       "frequency": self.frequency, "updates": self.updates, "power": self.power},
        }


@keras.utils.register_keras_serializable(package="keras_lottery")
class OnFlip(_Periodic):
    """Prune weights as their signs flip, while training continues, up to a target sparsity.

    The schedule of sign-flip pruning's own idea (`on_flip.py` has the method): it checks
    at `begin_step`, `begin_step + frequency`, ..., `end_step = begin_step + updates *
    frequency`; at each check every surviving weight that changed sign at least
    `min_flips` times since its reference is pruned, capped at `target_sparsity` (the
    weights with the lowest criterion score go first when more flipped than the cap
    allows). With `fill` (the default), the last check also prunes, by the criterion,
    whatever the flips left to reach `target_sparsity`, so that the run ends at exactly the
    target. With `floor='gradual'` each check also keeps at most what the cubic `Gradual`
    schedule of the same begin, frequency, updates and target keeps at that step: the
    flipped weights go first, then, if the layer is still above that count, the lowest
    criterion scores (gradual magnitude pruning in which flipped weights go first).
    `UpdateMasks` applies it (the flip counts need `prune_low_sign_flip`);
    tfmot's `UpdatePruningStep` cannot, and a layer so driven is refused.

    `__call__` fires at the checks and returns the cap, `target_sparsity`: how far a check
    may go, not where it goes (that depends on the flips).
    """

    def __init__(self, target_sparsity, begin_step, frequency, updates, min_flips=1, fill=True, floor="none"):
        """Args:
          target_sparsity: the cap (and, with `fill`, the final sparsity), in [0, 1).
          begin_step: the first check.
          frequency: steps between checks (> 0).
          updates: checks after `begin_step` (>= 0; 0: one check, at `begin_step`).
          min_flips: sign changes since the reference that make a weight prunable (>= 1).
          fill: the last check fills the layer up to `target_sparsity` by the criterion.
          floor: 'none' (a check prunes only the flipped weights, and the fill) or 'gradual'
            (a check keeps at most `floor_schedule()`'s count at its step; its last count is
            the target, so the last check fills whatever `fill` says).

        Raises:
          ValueError: any argument out of range, an unknown `floor`.
          TypeError: `fill` is not a bool.
        """
        check_sparsity(target_sparsity, "target_sparsity")
        self.target_sparsity = float(target_sparsity)
        self.begin_step = check_int(begin_step, "begin_step")
        if check_int(frequency, "frequency") == 0:
            raise ValueError("frequency must be > 0.")
        self.frequency = int(frequency)
        self.updates = check_int(updates, "updates")
        self.min_flips = check_min_flips(min_flips)
        if not isinstance(fill, bool):
            raise TypeError(f"fill must be True or False; got {fill!r}.")
        self.fill = fill
        if floor not in ON_FLIP_FLOORS:
            raise ValueError(f"floor must be one of {ON_FLIP_FLOORS} ('gradual': each check keeps at most what "
                             f"the cubic Gradual schedule keeps at its step); got {floor!r}.")
        self.floor = floor

    def floor_schedule(self):
        """The schedule whose `exact_sparsity(step)` a check must reach at least, or None for floor 'none'.

        `Gradual(target_sparsity, begin_step, frequency, updates)`, the schedule one-pass
        gradual runs use; `OneShot(target_sparsity, begin_step)` for a single check
        (`updates=0`), as one pass does for an empty window.
        """
        if self.floor == "none":
            return None
        if self.updates == 0:
            return OneShot(self.target_sparsity, self.begin_step)
        return Gradual(self.target_sparsity, self.begin_step, self.frequency, self.updates)

    def check_index(self, step):
        """The index (0..updates) of the check at `step`.

        Raises:
          ValueError: `step` is not one of this schedule's checks.
        """
        offset = step - self.begin_step
        if offset < 0 or step > self.end_step or offset % self.frequency:
            raise ValueError(f"step {step} is not a check of {self.get_config()['config']}.")
        return offset // self.frequency

    def exact_sparsity(self, step):
        """The cap as a Python float (the tensor is float32)."""
        del step
        return self.target_sparsity

    def __call__(self, step):
        return self._fires(tf.cast(step, tf.int64)), tf.constant(self.target_sparsity, tf.float32)

    def get_config(self):
        return {
            "class_name": self.__class__.__name__,
            "config": {"target_sparsity": self.target_sparsity, "begin_step": self.begin_step,
                       "frequency": self.frequency, "updates": self.updates, "min_flips": self.min_flips,
                       "fill": self.fill, "floor": self.floor},
        }


# What an `OnFlip` check keeps at most besides the cap: nothing more ('none'), or `Gradual`'s count.
ON_FLIP_FLOORS = ("none", "gradual")


def check_min_flips(min_flips):
    """Returns `min_flips` as an int; raises ValueError unless it is an integer >= 1."""
    return check_int(min_flips, "min_flips (the sign changes since the reference that make a weight prunable)", 1)


def next_prune_step(schedule, step):
    """The first step >= `step` at which `schedule` may fire, or None if never again.

    Knows our schedules and tfmot's ConstantSparsity/PolynomialDecay (from their
    begin_step, end_step and frequency); for any other schedule it answers `step`,
    so the callback asks that schedule at every step.
    """
    if hasattr(schedule, "next_prune_step"):
        return schedule.next_prune_step(step)
    attributes = ("begin_step", "end_step", "frequency")
    if not all(hasattr(schedule, name) for name in attributes):
        return step
    begin, end, frequency = schedule.begin_step, schedule.end_step, schedule.frequency
    candidate = begin if step <= begin else begin + -(-(step - begin) // frequency) * frequency
    if end >= 0 and candidate > end:
        return None
    return candidate


def lth_prune_rates(layers, dense_rate=0.2, conv_rate=0.1, output_rate_factor=0.5):
    """Per-layer prune rates as in the LTH paper.

    Dense layers are pruned at `dense_rate` per round and convolutions at
    `conv_rate`; the last prunable layer (the output layer) at `output_rate_factor`
    times its type's rate. Biases and BatchNorm are never pruned.

    Args:
      layers: the model's layers in order (e.g. `model.layers`), wrapped or not.
      dense_rate: per-round rate of Dense layers.
      conv_rate: per-round rate of convolutional layers.
      output_rate_factor: factor applied to the last prunable layer's rate.

    Returns:
      dict layer name -> prune rate, for the layers that have a kernel to prune.
    """
    for value, what in ((dense_rate, "dense_rate"), (conv_rate, "conv_rate")):
        check_sparsity(value, what)
    if not isinstance(output_rate_factor, (int, float)) or not 0 <= output_rate_factor:
        raise ValueError(f"output_rate_factor must be a number >= 0; got {output_rate_factor!r}.")
    rates = {}
    for layer in layers:
        inner = getattr(layer, "layer", layer)
        if isinstance(inner, keras.layers.Dense):
            rates[inner.name] = dense_rate
        elif isinstance(inner, keras.layers.Conv2D) or isinstance(inner, keras.layers.Conv1D):
            rates[inner.name] = conv_rate
    if rates:
        last = list(rates)[-1]
        rates[last] *= output_rate_factor
        check_sparsity(rates[last], f"the output layer's rate ({output_rate_factor} x {rates[last] / output_rate_factor if output_rate_factor else 0})")
    return rates
