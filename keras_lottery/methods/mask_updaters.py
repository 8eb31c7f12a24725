"""Dynamic sparse training: SET, SNFS and RigL as mask updaters, run by one Keras callback.

A `MaskUpdater` moves active weights while keeping each layer's active count fixed, as
google-research/rigl does on tfmot's wrappers (`rigl_tf2/mask_updaters.py`,
`sparse_optimizers_base.py`). At each update step, in every prunable layer:

* **Drop** the `k` active weights of lowest `|w|`, `k = active - keep_count(active, f)`:
  `round(f * active)` by the package's count rule (an exact half drops one fewer; one old
  weight always stays). rigl truncates `f * active`.
* **Regrow** `k` weights that were inactive before the update, by score: SET random (seeded by
  `(seed, step)`, stateless as rigl's, so a resumed run draws the same), SNFS `|momentum|`,
  RigL `|dense gradient|`. Both choices are `masks.top_k_mask` (ties to the lower index).
  A weight just dropped is no candidate, so exactly `k` leave and `k` others arrive; rigl's
  code and the paper's Algorithm 1 (`i not in theta \\ I_drop`) let it compete, keeping its
  value and optimizer state if chosen: `regrow_dropped=True` does that.
* **Regrown weights start at 0, and so do all their optimizer slots** (momentum, Adam's m and v),
  as rigl's `grow_init='zeros'` (its default for SET, SNFS and RigL) and `reset_momentum`
  (every slot). `wrappers.set_masks` zeroes the dropped weights and their slots.
* **Schedule**: updates at `begin_step + j * frequency` (j >= 1, optimizer steps) up to
  `end_step`, by default 75% of `total_steps`; drop fraction `f0 * (1 + cos(pi * t / T)) / 2`,
  `t = step - begin_step`, `T = end_step - begin_step` (rigl's cosine; its TF1 code takes the
  absolute step), or `f0` ('constant'); 0 outside `[begin_step, end_step]`.

**The dense gradient.** The package's wrappers mask the kernel's gradient, so `d loss / d w`
and the optimizer's momentum are 0 on every inactive weight (a test checks it). As pruned
weights are exactly 0, masks of ones leave the network's function unchanged and make the
gradient w.r.t. the kernel `d loss / d (w * m)`, masked entries included (rigl_tf2 gets it the
same way: tfmot's forward reads the masked variable itself). `dense_gradients` takes it with a
tape on one batch (compiled and regularization losses, training mode, as rigl_tf2's `loss_fn`),
then restores masks, BatchNorm statistics and the loss metric. SNFS thus keeps its own moving
average of dense gradients (rigl's `SparseMomentumOptimizer._ema_grads`) with the optimizer's
coefficient (SGD `momentum`, Adam `beta_1`); as rigl's SNFS it redistributes nothing.

Use, after initial masks (e.g. `prune_at_init(model, "random", distributions.distribute(model,
"erk", 0.9), strategy="layerwise")` on `prune_low_magnitude(dense, pruning_schedule=OneShot(0.0))`)::

    updater = mask_updaters.get("rigl", total_steps=epochs * steps_per_epoch)
    model.fit(train, epochs=epochs, callbacks=[MaskUpdateCallback(updater, train)])
"""

import math
import numbers

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int
from keras_lottery.methods.mask_update_callback import MaskUpdateCallback  # noqa: F401  (this module's API)
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import wrappers

keras = compat.keras

DECAYS = ("cosine", "constant")
END_FRACTION = 0.75  # RigL: the drop fraction reaches 0 at 75% of training


def drop_count(active, fraction):
    """How many of `active` weights an update at drop fraction `fraction` swaps (the package's count rule)."""
    return active - masks_lib.keep_count(active, fraction) if active and fraction > 0 else 0


def swap(magnitudes, grow_scores, active, fraction, regrow_dropped=False):
    """One layer's drop (lowest `magnitudes` of `active`) and regrowth (highest `grow_scores`), in NumPy.

    Returns:
      (kept, grown): disjoint boolean arrays; the new mask is `kept | grown`, and `grown`
      holds as many weights as `active` lost.
    """
    active = np.asarray(active, dtype=bool)
    k = drop_count(int(active.sum()), fraction)
    if not regrow_dropped:
        k = min(k, int((~active).sum()))  # a dense layer has no candidates: nothing moves
    kept = masks_lib.top_k_mask(magnitudes, int(active.sum()) - k, alive=active) > 0
    candidates = ~kept if regrow_dropped else ~active
    grown = masks_lib.top_k_mask(grow_scores, k, alive=candidates) > 0
    return kept, grown


def _check_fraction(value, name):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number in (0, 1), the fraction of each layer's active weights swapped at "
                         f"an update (RigL uses 0.3); got {value!r}.")
    return float(value)


def _check_model(model):
    """The model's pruning entries.

    Raises:
      TypeError: tfmot's own wrappers.
      ValueError: no wrappers, block or m-by-n patterns, or tfmot's callback driving them.
    """
    compat.check_not_keras3(model)
    found = wrappers.prunable_wrappers(model) if isinstance(model, keras.Model) else []
    if not found:
        raise ValueError("mask updaters move the masks of pruning wrappers, and the model has none: wrap it with "
                         "keras_lottery.prune_low_magnitude(model) and set initial masks (e.g. prune_at_init).")
    foreign = [wrapper.layer.name for wrapper in found if not isinstance(wrapper, wrappers.PruneLowMagnitude)]
    if foreign:
        raise TypeError(f"layers {foreign} are wrapped by tfmot's prune_low_magnitude, whose training step runs "
                        "tfmot's own mask schedule: wrap the model with keras_lottery.prune_low_magnitude instead.")
    driven = [wrapper.layer.name for wrapper in found if int(wrapper.pruning_step.numpy()) >= 0]
    if driven:
        raise ValueError(f"layers {driven} are driven by tfmot's UpdatePruningStep, whose schedule would overwrite "
                         "the updated masks: leave it out of the callbacks.")
    structured = sorted(wrappers.patterns(model))
    if structured:
        raise ValueError(f"layers {structured} have block or m-by-n patterns; mask updaters move single weights.")
    return wrappers.pruning_entries(model)


def dense_gradients(model, batch):
    """`d loss / d (w * m)` of every prunable weight on one batch, masked entries included.

    Args:
      model: a compiled model with keras_lottery's pruning wrappers.
      batch: (x, y) or (x, y, sample_weight).

    Returns:
      dict mask name -> gradient as a NumPy array shaped like the kernel.

    Raises:
      ValueError: the model is not compiled, or the batch has no labels.
    """
    if getattr(model, "compiled_loss", None) is None:
        raise ValueError("the dense gradient is that of the model's compiled loss: compile the model first.")
    x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(tuple(batch) if isinstance(batch, list) else batch)
    if y is None:
        raise ValueError("the dense gradient needs labels: pass batches of (x, y).")
    entries = wrappers.pruning_entries(model)
    wrappers.manage_masks(model)  # masks of ones must not look like a schedule nobody applies
    wrappers.apply_masks(model)  # pruned weights exactly 0: ones as masks then compute the same function
    state = list(model.non_trainable_variables) + [v for metric in model.metrics for v in metric.variables]
    saved = [variable.numpy() for variable in state]
    try:
        for _, _, _, mask in entries:
            mask.assign(tf.ones_like(mask))
        key, function = getattr(model, "_keras_lottery_dense_gradient", (None, None))
        if key is not model.compiled_loss:  # traced once per compiled loss, not per call
            weights = [weight for _, _, weight, _ in entries]

            @tf.function(reduce_retracing=True)
            def function(x, y, sample_weight):
                with tf.GradientTape() as tape:
                    y_pred = model(x, training=True)
                    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight)
                return tape.gradient(loss, weights)

            object.__setattr__(model, "_keras_lottery_dense_gradient", (model.compiled_loss, function))  # untracked
        gradients = function(x, y, sample_weight)
    finally:
        for variable, value in zip(state, saved):  # masks, BatchNorm statistics, the loss metric
            variable.assign(value)
    return {name: (np.zeros(weight.shape) if gradient is None else gradient.numpy())
            for (name, _, weight, _), gradient in zip(entries, gradients)}


def optimizer_momentum(optimizer):
    """The optimizer's momentum coefficient (SGD's `momentum`, Adam's `beta_1`), or None if it has none."""
    while hasattr(optimizer, "inner_optimizer"):  # LossScaleOptimizer
        optimizer = optimizer.inner_optimizer
    for attribute in ("beta_1", "momentum"):
        value = getattr(optimizer, attribute, None)
        if value is None:  # legacy optimizers keep them as hyperparameters
            value = getattr(optimizer, "_hyper", {}).get(attribute)
        if callable(value):
            value = value()
        if value is not None:
            # float32 variables hold 0.8 as 0.800000011920929: take the decimal the user wrote.
            value = float(str(np.float32(value.numpy() if hasattr(value, "numpy") else value)))
            if 0.0 < value < 1.0:
                return value
    return None


class MaskUpdater:
    """Drops the lowest-magnitude active weights of each layer and regrows as many by a score.

    Subclasses define `grow_scores`. See the module docstring for the conventions.
    """

    name = None
    needs_data = False  # whether MaskUpdateCallback must draw batches from `data`
    batch_at_update = False  # whether `update` itself needs a batch

    def __init__(self, total_steps=None, drop_fraction=0.3, frequency=100, begin_step=0, end_step=None,
                 decay="cosine", regrow_dropped=False, seed=0):
        """Args:
          total_steps: the training's length in optimizer steps; sets the default `end_step`.
          drop_fraction: the fraction of each layer's active weights swapped at the first
            update, in (0, 1) (RigL's 0.3).
          frequency: steps between updates, >= 1 (RigL's 100).
          begin_step: updates happen at `begin_step + j * frequency`, j >= 1.
          end_step: the last step an update may happen; default 75% of `total_steps`.
          decay: 'cosine' (to 0 at `end_step`) or 'constant'.
          regrow_dropped: let weights dropped at an update be regrown at it (rigl's rule).
          seed: seeds SET's random regrowth.

        Raises:
          ValueError: a drop fraction outside (0, 1), frequency < 1, a negative step, an
            unknown decay, neither `total_steps` nor `end_step`, or `end_step <= begin_step`.
        """
        self.drop_fraction = _check_fraction(drop_fraction, "drop_fraction")
        self.frequency = check_int(frequency, "frequency (steps between mask updates)", minimum=1)
        self.begin_step = check_int(begin_step, "begin_step")
        if decay not in DECAYS:
            raise ValueError(f"decay must be one of {DECAYS}; got {decay!r}.")
        self.decay = decay
        if end_step is None:
            if total_steps is None:
                raise ValueError("pass total_steps (the training's length in steps; updates end at 75% of it) "
                                 "or end_step.")
            end_step = int(math.floor(END_FRACTION * check_int(total_steps, "total_steps", minimum=1) + 0.5))
        self.end_step = check_int(end_step, "end_step")
        if self.end_step <= self.begin_step:
            raise ValueError(f"end_step ({self.end_step}) must come after begin_step ({self.begin_step}).")
        self.regrow_dropped = bool(regrow_dropped)
        self.seed = check_int(seed, "seed")

    def is_update_step(self, step):
        """True at the steps where masks are updated (and the drop fraction is above 0)."""
        return self.next_update_step(step) == step

    def next_update_step(self, step):
        """The first update step >= `step`, or None."""
        candidate = self.begin_step + max(1, -(-(step - self.begin_step) // self.frequency)) * self.frequency
        while candidate <= self.end_step:
            if self.drop_fraction_at(candidate) > 0:
                return candidate
            candidate += self.frequency
        return None

    def drop_fraction_at(self, step):
        """The drop fraction at `step`: cosine-decayed or constant within [begin_step, end_step], else 0."""
        if not self.begin_step <= step <= self.end_step:
            return 0.0
        if self.decay == "constant":
            return self.drop_fraction
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.drop_fraction * (1.0 + math.cos(math.pi * progress)) / 2.0

    def prepare(self, model):
        """Checks `model` (see `_check_model`; the callback calls this before training); returns its entries."""
        return _check_model(model)

    def grow_scores(self, model, entries, step, batch):
        """dict mask name -> regrowth score (higher regrows first)."""
        raise NotImplementedError

    def observes(self, step):  # pylint: disable=unused-argument
        """True at the steps where `observe` wants a batch (SNFS's momentum); none here."""
        return False

    def observe(self, model, batch, step):
        """Takes in a training step's dense gradient (SNFS); nothing here."""

    def backup_state(self):
        """dict name -> array of the Python state a resumed training needs (SNFS's momenta); none here."""
        return {}

    def restore_backup_state(self, arrays):
        """Restores what `backup_state` returned."""
        del arrays

    def update(self, model, step, batch=None):
        """Drops and regrows each layer's weights at the drop fraction of `step`.

        Args:
          model: a model with keras_lottery's pruning wrappers and its initial masks.
          step: the optimizer step (sets the drop fraction and SET's random draw).
          batch: (x, y), the batch RigL takes its gradient on; unused by the others.

        Returns:
          dict mask name -> the number of weights dropped (as many were regrown).
        """
        entries = self.prepare(model)
        fraction = self.drop_fraction_at(step)
        if fraction <= 0:
            return {name: 0 for name, _, _, _ in entries}
        scores = self.grow_scores(model, entries, step, batch)
        optimizer = getattr(model, "optimizer", None)
        new_masks, dropped = {}, {}
        for name, _, weight, mask in entries:
            active = mask.numpy() > 0.5
            kept, grown = swap(np.abs(weight.numpy()) * active, scores[name], active, fraction, self.regrow_dropped)
            arriving = grown & ~active
            if arriving.any():
                # New connections start at 0 with no optimizer history (rigl's grow_init='zeros', reset_momentum).
                keep = (~arriving).astype(weight.dtype.as_numpy_dtype)
                weight.assign(weight.numpy() * keep)
                for slot in wrappers.optimizer_slots(optimizer, weight):
                    slot.assign(slot.numpy() * keep)
            new_masks[name] = (kept | grown).astype(np.float32)
            dropped[name] = int((active & ~kept).sum())
        wrappers.set_masks(model, new_masks)  # also zeroes the dropped weights and their slots
        return dropped


class SET(MaskUpdater):
    """SET (Mocanu et al. 2018): regrow at random, seeded by `(seed, step)`."""

    name = "set"

    def grow_scores(self, model, entries, step, batch):
        rng = np.random.default_rng([self.seed, int(step)])
        return {name: rng.random(tuple(weight.shape)) for name, _, weight, _ in entries}


class RigL(MaskUpdater):
    """RigL (Evci et al. 2020): regrow by `|dense gradient|` on one batch (`dense_gradients`)."""

    name = "rigl"
    needs_data = True
    batch_at_update = True

    def grow_scores(self, model, entries, step, batch):
        if batch is None:
            raise ValueError("RigL regrows by the gradient on a batch: pass batch=(x, y) to update().")
        return {name: np.abs(gradient) for name, gradient in dense_gradients(model, batch).items()}


class SNFS(MaskUpdater):
    """SNFS (Dettmers & Zettlemoyer 2019): regrow by `|momentum|` of the dense gradient.

    The momentum is an exponential moving average of `dense_gradients` with the optimizer's
    coefficient `beta` (rigl's `SparseMomentumOptimizer`), fed by `observe` at the
    `momentum_steps` steps up to each update (`MaskUpdateCallback` does this). By default
    that window is long enough that the steps before it would weigh under 1% (44 steps at
    beta 0.9), at most `frequency`.
    """

    name = "snfs"
    needs_data = True

    def __init__(self, *args, beta=None, momentum_steps=None, **kwargs):
        """Args (and Raises) as `MaskUpdater`, and `beta`: the momentum coefficient in (0, 1), default
        the optimizer's; `momentum_steps` (>= 1): steps observed before each update, default as above.
        """
        super().__init__(*args, **kwargs)
        self.beta = None if beta is None else _check_fraction(beta, "beta (the momentum coefficient)")
        self.momentum_steps = None if momentum_steps is None else check_int(momentum_steps, "momentum_steps", 1)
        self.momenta, self._last_observed = {}, None

    def prepare(self, model):
        """As `MaskUpdater.prepare`; also refuses an optimizer without momentum when no `beta` is given."""
        entries = super().prepare(model)
        if self.beta is None:
            beta = optimizer_momentum(getattr(model, "optimizer", None))
            if beta is None:
                raise ValueError(
                    f"SNFS regrows by momentum, and the optimizer {type(model.optimizer).__name__} has none: compile "
                    "with e.g. keras.optimizers.SGD(learning_rate, momentum=0.9) or Adam, or pass SNFS(beta=0.9).")
            self.beta = beta
        return entries

    def window(self):
        """How many steps up to each update are observed."""
        if self.momentum_steps is not None:
            return min(self.momentum_steps, self.frequency)
        return min(self.frequency, int(math.ceil(math.log(0.01) / math.log(self.beta))))

    def observes(self, step):
        """True at the steps whose dense gradient enters the momentum of the next update."""
        upcoming = self.next_update_step(step)
        return upcoming is not None and upcoming - step < self.window()

    def observe(self, model, batch, step):
        """Folds the dense gradient at `step` into the momentum (decayed by `beta` per step since the last)."""
        entries = self.prepare(model)
        gradients = dense_gradients(model, batch)
        gap = 1 if self._last_observed is None else max(1, step - self._last_observed)
        decay = self.beta ** gap
        for name, _, weight, _ in entries:
            previous = self.momenta.get(name, np.zeros(tuple(weight.shape)))
            self.momenta[name] = decay * previous + (1.0 - decay) * gradients[name]
        self._last_observed = step

    def grow_scores(self, model, entries, step, batch):
        missing = [name for name, _, _, _ in entries if name not in self.momenta]
        if missing:
            raise RuntimeError(f"SNFS has no momentum for layers {missing}: train with MaskUpdateCallback, or call "
                               "observe(model, batch, step) before update().")
        return {name: np.abs(self.momenta[name]) for name, _, _, _ in entries}

    def update(self, model, step, batch=None):
        dropped = super().update(model, step, batch)
        self.momenta, self._last_observed = {}, None  # the next window starts afresh
        return dropped

    def backup_state(self):
        """The momenta of the current window and its last observed step (-1: none yet)."""
        state = {f"momentum/{name}": value for name, value in self.momenta.items()}
        state["last_observed"] = np.array(-1 if self._last_observed is None else self._last_observed)
        return state

    def restore_backup_state(self, arrays):
        """Restores what `backup_state` returned."""
        last = int(arrays.get("last_observed", -1))
        self._last_observed = None if last < 0 else last
        self.momenta = {key[len("momentum/"):]: np.asarray(value) for key, value in arrays.items()
                        if key.startswith("momentum/")}


UPDATERS = {cls.name: cls for cls in (SET, SNFS, RigL)}


def get(name, **kwargs):
    """A new mask updater by name ('set', 'snfs', 'rigl'), built with `kwargs`.

    Raises:
      ValueError: unknown name (the message lists the known ones), or bad arguments.
    """
    key = name.lower() if isinstance(name, str) else name
    if key not in UPDATERS:
        raise ValueError(f"unknown mask updater {name!r}; choose one of {sorted(UPDATERS)}.")
    return UPDATERS[key](**kwargs)

