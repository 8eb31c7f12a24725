"""Training lengths ("80ep", "500it") and OpenLTH's learning-rate schedule: `RecipeSchedule`.

OpenLTH multiplies independent factors of the absolute iteration `it` (its
`get_lr_schedule`): `gamma ** (milestones <= it)` for step decay and
`min(1, it / warmup)` for warmup. `RecipeSchedule` does the same, plus a cosine
factor (not in OpenLTH) `(1 + cos(pi * it / total)) / 2`, which reaches 0 at `total`.
`it` is the optimizer's step plus a start step held in a variable, so that an IMP round
rewound to iteration k continues the schedule from k (OpenLTH trains from k to the end)
without retracing the compiled train function.
"""

import math

import tensorflow as tf

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int

keras = compat.keras

KINDS = ("constant", "step", "cosine")
UNITS = ("ep", "it")


def parse_length(text, what):
    """Parses a training length: "160ep", "1.5ep" (epochs), "500it" or "500" (iterations).

    Args:
      text: the length; a bare integer counts iterations, as everywhere else in keras_lottery.
      what: the field it comes from ("--warmup"), for the message.

    Returns:
      (value, unit): a float number of epochs with unit 'ep', or an int of iterations with 'it'.

    Raises:
      ValueError: not a string, an unknown unit, a negative or non-finite number, or a
        fractional number of iterations; the message names `what`.
    """
    accepted = "a length such as '80ep', '1.5ep' (epochs) or '500it' / '500' (iterations)"
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{what} must be {accepted}; got {text!r}.")
    body = text.strip()
    unit = body[-2:] if body[-2:] in UNITS else "it"
    number = body[:-2] if body[-2:] in UNITS else body
    try:
        value = float(number) if unit == "ep" else int(number)
    except ValueError:
        raise ValueError(f"{what} must be {accepted}; got {text!r}.") from None
    if not (0 <= value < math.inf):  # also refuses NaN
        raise ValueError(f"{what} must be {accepted}, with a finite number >= 0; got {text!r}.")
    return value, unit


def to_iterations(text, steps_per_epoch, what):
    """A training length in iterations: epochs times `steps_per_epoch`, rounded half up.

    Args:
      text: a length `parse_length` accepts.
      steps_per_epoch: iterations per epoch (an int >= 1).
      what: the field it comes from, for the message.

    Raises:
      ValueError: a bad length (see `parse_length`) or `steps_per_epoch`.
    """
    value, unit = parse_length(text, what)
    if unit == "it":
        return value
    check_int(steps_per_epoch, "steps_per_epoch", 1)
    return int(math.floor(value * steps_per_epoch + 0.5))


@keras.utils.register_keras_serializable("keras_lottery")
class RecipeSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """OpenLTH's learning rate at an iteration: base x warmup x (step decay or cosine).

    With `it = step + start_step` (step: the optimizer's iteration count),
    `lr(it) = learning_rate * warmup(it) * decay(it)` where

    * `warmup(it) = min(1, it / warmup_iterations)` (1 without warmup). As in OpenLTH
      (whose LambdaLR is evaluated at 0 for the first update), the first update of a
      warmed-up run has learning rate exactly 0.
    * `decay(it)` is 1 ('constant'), `gamma ** (number of milestones <= it)` ('step': the
      drop applies from the milestone iteration itself, as OpenLTH's `bisect`), or
      `(1 + cos(pi * min(it, total) / total)) / 2` ('cosine', not in OpenLTH: multiplied
      with the warmup like OpenLTH's factors, it is 0 from `total_iterations` on).

    The start step is a `tf.Variable` named `learning_rate_start_step` (so that
    `sparsity.callbacks.reset_optimizer`, which keeps variables named `learning_rate`,
    would keep it; it is not one of the optimizer's variables anyway). Create the schedule
    in the distribution strategy's scope, as the model and optimizer, so the variable is
    mirrored.
    """

    def __init__(self, learning_rate, kind="constant", warmup_iterations=0, milestones=(), gamma=0.1,
                 total_iterations=None, start_step=0, name=None):
        """Args:
          learning_rate: the base rate, a number > 0.
          kind: 'constant', 'step' or 'cosine'.
          warmup_iterations: linear warmup from 0 over this many iterations (0: none).
          milestones: increasing iterations where 'step' multiplies the rate by `gamma`.
          gamma: the factor at each milestone, in (0, 1].
          total_iterations: the schedule's length (OpenLTH's `training_steps`); needed by
            'cosine', which reaches 0 there.
          start_step: the iteration that the optimizer's step 0 stands for.
          name: the name scope of the ops.

        Raises:
          ValueError: naming the bad argument.
        """
        super().__init__()
        if isinstance(learning_rate, bool) or not isinstance(learning_rate, (int, float)) or not (
                0 < learning_rate < math.inf):
            raise ValueError(f"learning_rate must be a number > 0; got {learning_rate!r}.")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}.")
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma <= 1:
            raise ValueError(f"gamma must be a number in (0, 1]; got {gamma!r}.")
        milestones = [check_int(m, "each milestone", 0) for m in milestones]
        if any(later <= earlier for earlier, later in zip(milestones, milestones[1:])):
            raise ValueError(f"milestones must be increasing iterations; got {milestones}.")
        if kind == "step" and not milestones:
            raise ValueError("kind='step' needs at least one milestone.")
        if kind != "step" and milestones:
            raise ValueError(f"milestones {milestones} have no effect with kind={kind!r}: use kind='step'.")
        if kind == "cosine" or total_iterations is not None:
            total_iterations = check_int(total_iterations, "total_iterations (needed by kind='cosine')", 1)
        self.learning_rate = float(learning_rate)
        self.kind = kind
        self.warmup_iterations = check_int(warmup_iterations, "warmup_iterations", 0)
        self.milestones = milestones
        self.gamma = float(gamma)
        self.total_iterations = total_iterations
        self.name = name
        # int64 like the optimizer's `iterations`; not trainable, one value on every replica.
        self._start_step = tf.Variable(
            check_int(start_step, "start_step", 0), dtype=tf.int64, trainable=False,
            name="learning_rate_start_step", aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA,
        )

    @property
    def start_step(self):
        """The iteration that the optimizer's step 0 stands for, as an int."""
        return int(self._start_step.numpy())

    def set_start_step(self, start_step):
        """Continues the schedule from iteration `start_step` at the optimizer's step 0.

        An assignment, not a new constant: train functions traced before keep working and
        read the new value.

        Raises:
          ValueError: not an int >= 0.
        """
        self._start_step.assign(check_int(start_step, "start_step", 0))

    def __call__(self, step):
        with tf.name_scope(self.name or "RecipeSchedule"):
            iteration = tf.cast(step, tf.int64) + tf.convert_to_tensor(self._start_step)
            # float64: exact iterations up to 2**53, and gamma ** k as Python computes it.
            it = tf.cast(iteration, tf.float64)
            factor = tf.constant(self.learning_rate, tf.float64)
            if self.warmup_iterations:
                factor *= tf.minimum(tf.constant(1.0, tf.float64), it / self.warmup_iterations)
            if self.kind == "step":
                passed = tf.reduce_sum(tf.cast(iteration >= tf.constant(self.milestones, tf.int64), tf.float64))
                factor *= tf.pow(tf.constant(self.gamma, tf.float64), passed)
            elif self.kind == "cosine":
                progress = tf.minimum(it, float(self.total_iterations)) / self.total_iterations
                factor *= 0.5 * (1.0 + tf.cos(math.pi * progress))
            return tf.cast(factor, tf.float32)

    def get_config(self):
        """The constructor's arguments, with the current start step."""
        return {
            "learning_rate": self.learning_rate,
            "kind": self.kind,
            "warmup_iterations": self.warmup_iterations,
            "milestones": list(self.milestones),
            "gamma": self.gamma,
            "total_iterations": self.total_iterations,
            "start_step": self.start_step,
            "name": self.name,
        }


def schedule_for(config, steps_per_epoch, total_iterations):
    """The `RecipeSchedule` of a resolved `TrainingConfig` (lengths in epochs made iterations).

    Args:
      config: a resolved `TrainingConfig` (its `learning_rate`, `lr_schedule`,
        `lr_milestones`, `lr_gamma` and `warmup`).
      steps_per_epoch: iterations per epoch, to convert "80ep".
      total_iterations: the schedule's length in iterations, the end of the full run (OpenLTH's
        `training_steps`) also for rounds that start later; 'cosine' reaches 0 there. None is
        allowed for the other schedules.

    Raises:
      ValueError: a bad length, or milestones that are not increasing once converted
        (those in different units can only be compared here).
    """
    check_int(steps_per_epoch, "steps_per_epoch", 1)
    milestones = [to_iterations(text, steps_per_epoch, "--lr_milestones")
                  for text in split_lengths(config.lr_milestones)]
    if any(later <= earlier for earlier, later in zip(milestones, milestones[1:])):
        raise ValueError(
            f"--lr_milestones must be increasing; {config.lr_milestones!r} is {milestones} iterations at "
            f"{steps_per_epoch} iterations per epoch."
        )
    warmup = to_iterations(config.warmup, steps_per_epoch, "--warmup") if config.warmup else 0
    return RecipeSchedule(
        config.learning_rate, config.lr_schedule, warmup, milestones, config.lr_gamma, total_iterations,
    )


def split_lengths(text):
    """The lengths of a comma-separated list ("80ep,120ep" -> ["80ep", "120ep"]; "" -> [])."""
    return [part.strip() for part in text.split(",")] if text.strip() else []
