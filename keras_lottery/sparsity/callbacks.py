"""Callbacks: `UpdateMasks` applies pruning schedules; `RewindCallback` rewinds tickets.

Both keep per-step Python work at zero when they have nothing to do at the next
step: Keras only calls batch hooks of callbacks that say they need them, and these
say so only while a mask update or a snapshot is pending. Both keep state outside the
model's variables; `backup_state()` / `restore_backup_state()` hand it to a mid-round
backup (`round_backup.RoundBackup`).
"""

import json

import numpy as np

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import criteria
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import on_flip
from keras_lottery.sparsity import pruning
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import sign_flip
from keras_lottery.sparsity import wrappers

keras = compat.keras


def optimizer_step(model):
    """The optimizer's iteration count (the step schedules and rewinding count)."""
    return int(model.optimizer.iterations.numpy())


def optimizer_variables(optimizer):
    """An optimizer's variables as a list (a method on legacy optimizers, a property on new ones)."""
    variables = optimizer.variables
    return list(variables() if callable(variables) and not isinstance(variables, list) else variables)


def reset_optimizer(optimizer):
    """Zeroes an optimizer's state (iterations, momenta, moments); keeps its learning rate.

    LTH and OpenLTH restart the optimizer each round; this does it in place, so the
    compiled training function is reused instead of retraced.
    """
    if optimizer is None:
        return
    for variable in optimizer_variables(optimizer):
        if "learning_rate" in variable.name:
            continue
        variable.assign(np.zeros(variable.shape, variable.dtype.as_numpy_dtype))


def exact_sparsity(schedule, step, sparsity_tensor):
    """The schedule's sparsity as a Python float, without float32 error.

    Schedules return float32 tensors: float32(0.3) is 0.30000001, which would keep
    one weight fewer than `keep_count(n, 0.3)` for some n. Our schedules give the
    exact value; for others the shortest decimal that rounds to the same float32
    (0.3 for float32(0.3)) is what the user wrote.
    """
    if hasattr(schedule, "exact_sparsity"):
        return schedule.exact_sparsity(step)
    return float(str(np.float32(sparsity_tensor)))


class UpdateMasks(keras.callbacks.Callback):
    """Computes masks when the wrappers' schedules fire (our `UpdatePruningStep`).

    At each step where some wrapper's schedule fires, the masks of all firing wrappers
    are computed together by `pruning.prune` (layerwise or global, as each wrapper's
    `strategy` says) and assigned; layers with an `OnFlip` schedule are checked by
    `on_flip.prune` instead (their flipped weights pruned, up to the target). At the end of training, pruned weights are set to
    exactly 0. Steps are the optimizer's iterations; with `steps_per_execution > 1` a
    mask update happens at the first step >= its scheduled step that starts an
    execution.
    """

    def __init__(self, criterion=None, seed=0):
        """Args:
          criterion: None (default): each layer by its wrapper's criterion ('magnitude',
            or the one given to `prune_low_sign_flip`); or a name from
            `criteria.CRITERIA` / a callable (weights, rng[, state]) -> scores for all.
          seed: seed of the random generator passed to the criterion.
        """
        super().__init__()
        if criterion is not None:
            criteria.get(criterion)  # fail now on an unknown name
        self.criterion = criterion
        self.rng = np.random.default_rng(seed)
        self._next_step = None
        self._train_begin_step = None

    def _schedules(self):
        return [(wrapper, wrapper.pruning_schedule) for wrapper in wrappers.prunable_wrappers(self.model)]

    def _compute_next_step(self, step):
        upcoming = [schedules.next_prune_step(schedule, step) for _, schedule in self._schedules()]
        upcoming = [value for value in upcoming if value is not None]
        self._next_step = min(upcoming) if upcoming else None

    def _implements_train_batch_hooks(self):
        # Keras asks this once per fit; answering False removes all per-step calls.
        # An update due at the current step is done by on_train_begin, so only later
        # steps need batch hooks.
        if getattr(self.model, "optimizer", None) is None:
            return False
        self._compute_next_step(optimizer_step(self.model) + 1)
        return self._next_step is not None

    def _update(self, due_step):
        firing = {}
        for wrapper, schedule in self._schedules():
            should_prune, sparsity = schedule(due_step)
            if bool(should_prune):
                firing[wrapper] = exact_sparsity(schedule, due_step, sparsity)
        entries = wrappers.pruning_entries(self.model)
        for strategy in masks_lib.STRATEGIES:
            # tfmot's own wrappers have no strategy: they are layerwise.
            sparsity = {name: firing[wrapper] for name, wrapper, _, _ in entries
                        if wrapper in firing and getattr(wrapper, "strategy", "layerwise") == strategy}
            # OnFlip layers prune what flipped (on_flip.py); the others to their schedule's sparsity.
            flips = [name for name, wrapper, _, _ in entries
                     if name in sparsity and isinstance(wrapper.pruning_schedule, schedules.OnFlip)]
            rest = {name: value for name, value in sparsity.items() if name not in flips}
            if rest:
                pruning.prune(self.model, rest, strategy, self.criterion, self.rng, names=list(rest))
            if flips:
                on_flip.prune(self.model, due_step, flips, strategy, self.criterion, self.rng)

    def _maybe_update(self):
        step = optimizer_step(self.model)
        if self._next_step is None:
            self._compute_next_step(step)
        while self._next_step is not None and self._next_step <= step:
            due = self._next_step
            self._update(due)
            self._compute_next_step(due + 1)

    def on_train_begin(self, logs=None):
        self._check_our_wrappers()
        pruning.check_criterion(self.model, self.criterion)
        on_flip.check_model(self.model)
        self._take_over_from_tfmot()
        wrappers.manage_masks(self.model)
        wrappers.apply_masks(self.model)
        self._compute_next_step(optimizer_step(self.model))
        self._check_reference_reachable()
        self._maybe_update()
        self._train_begin_step = optimizer_step(self.model)

    def _take_over_from_tfmot(self):
        """This callback drives the masks: tfmot's step goes back to -1, and a step traced for tfmot's
        callback (masks updated inside it) is traced again without that."""
        ours = [wrapper for wrapper in wrappers.prunable_wrappers(self.model)
                if isinstance(wrapper, wrappers.PruneLowMagnitude)]
        for wrapper in ours:
            if int(wrapper.pruning_step.numpy()) >= 0:
                wrapper.pruning_step.assign(-1)
        if any(getattr(wrapper, "_traced_driven", False) for wrapper in ours) and \
                getattr(self.model, "train_function", None) is not None:
            self.model.train_function = self.model.make_train_function(force=True)

    def _check_our_wrappers(self):
        """Fails before training on tfmot's own wrappers, whose step only tfmot's callback advances."""
        foreign = [wrapper.layer.name for wrapper in wrappers.prunable_wrappers(self.model)
                   if not isinstance(wrapper, wrappers.PruneLowMagnitude)]
        if foreign:
            raise TypeError(
                f"layers {foreign} are wrapped by tfmot's prune_low_magnitude, which UpdateMasks does not drive (its "
                "pruning step stays -1 and the first step fails). Wrap the model with "
                "keras_lottery.prune_low_magnitude instead, or train the tfmot model with "
                "callbacks=[tfmot.sparsity.keras.UpdatePruningStep()]."
            )

    def _check_reference_reachable(self):
        """Fails before training if a sign-flip reference='rewind' would not exist in time."""
        waiting = [w for w in sign_flip.sign_flip_wrappers(self.model)
                   if w.reference == "rewind" and not w.reference_available()]
        if not waiting or self._next_step is None:
            return
        rewind = getattr(self.model, REWIND_ATTRIBUTE, None)
        if rewind is None or rewind.rewind_step > self._next_step:
            found = "no RewindCallback in this fit" if rewind is None else f"rewind_step={rewind.rewind_step}"
            raise ValueError(
                f"Layer {waiting[0].layer.name!r} takes its sign reference from the rewind snapshot "
                f"(reference='rewind'), but the first prune is at step {self._next_step} and there is {found}: "
                "add keras_lottery.RewindCallback(rewind_step=k) with k <= the first prune step to the "
                "callbacks, or use reference='init'."
            )

    def on_epoch_begin(self, epoch, logs=None):
        # Schedules can learn their step only during training (EarlyBirdSchedule
        # learns it at an epoch end): look again at every epoch start but the first,
        # where on_train_begin has just done so (an update due there is done once, at
        # whichever epoch a fit starts: a resumed fit updates as an uninterrupted one).
        step = optimizer_step(self.model)
        if step == self._train_begin_step:
            return
        self._compute_next_step(step)
        self._maybe_update()

    def on_train_batch_begin(self, batch, logs=None):
        if self._next_step is not None:
            self._maybe_update()

    def on_train_end(self, logs=None):
        wrappers.apply_masks(self.model)

    def backup_state(self):
        """The random generator's state, for a mid-round backup (the rest is recomputed from the step)."""
        return {"rng": np.array(json.dumps(self.rng.bit_generator.state))}

    def restore_backup_state(self, arrays):
        """Restores what `backup_state` returned."""
        self.rng.bit_generator.state = json.loads(str(arrays["rng"]))


REWIND_ATTRIBUTE = "_keras_lottery_rewind_callback"  # how UpdateMasks finds the fit's RewindCallback


class RewindCallback(keras.callbacks.Callback):
    """Snapshots weights at training iteration `rewind_step` and rewinds to them.

    `rewind_step=0` snapshots the original initialization, before any update.
    `rewind()` (called between rounds, e.g. by the IMP loop) sets every surviving
    weight back to its snapshot value, keeps pruned weights at exactly 0, restores the
    other variables (biases, BatchNorm statistics), and resets the optimizer state.
    The snapshot is taken on the model's weights, so masks never enter it.
    """

    def __init__(self, rewind_step=0):
        """Args:
          rewind_step: the optimizer iteration whose weights are the ticket's reference.

        Raises:
          ValueError: negative or non-integer step.
        """
        super().__init__()
        self.rewind_step = check_int(rewind_step, "rewind_step (0 = the original init)")
        self.snapshot = None  # list of arrays, in the order of `rewindable_variables`

    def set_model(self, model):
        super().set_model(model)
        # object.__setattr__: not a Keras attribute to track or save.
        object.__setattr__(model, REWIND_ATTRIBUTE, self)

    @staticmethod
    def rewindable_variables(model):
        """The model's variables except the wrappers' pruning bookkeeping."""
        compat.check_not_keras3(model)
        bookkeeping = set()
        for wrapper in wrappers.prunable_wrappers(model):
            if hasattr(wrapper, "bookkeeping_variables"):
                bookkeeping.update(id(variable) for variable in wrapper.bookkeeping_variables())
                continue
            bookkeeping.add(id(wrapper.pruning_step))  # tfmot's own wrapper
            for _, mask, threshold in wrapper.pruning_vars:
                bookkeeping.update((id(mask), id(threshold)))
        return [variable for variable in model.weights if id(variable) not in bookkeeping]

    def take_snapshot(self, model=None):
        """Records the current weights as the rewind point.

        Sign-flip wrappers with reference='rewind' take these weights' signs as their
        reference, and start counting flips from here.
        """
        model = model or self.model
        self.snapshot = [variable.numpy() for variable in self.rewindable_variables(model)]
        step = optimizer_step(model) if getattr(model, "optimizer", None) is not None else self.rewind_step
        sign_flip.reset_reference(model, step, only_rewind=True)

    def snapshot_kernels(self, model=None):
        """dict mask name -> snapshot value of that prunable weight."""
        model = model or self.model
        position = {id(v): i for i, v in enumerate(self.rewindable_variables(model))}
        return {name: self.snapshot[position[id(weight)]] for name, _, weight, _ in wrappers.pruning_entries(model)}

    def _implements_train_batch_hooks(self):
        if getattr(self.model, "optimizer", None) is None or self.snapshot is not None:
            return False
        return optimizer_step(self.model) < self.rewind_step

    def _maybe_snapshot(self):
        step = optimizer_step(self.model)
        if self.snapshot is None and step >= self.rewind_step:
            if step != self.rewind_step:
                raise RuntimeError(
                    f"RewindCallback missed rewind_step={self.rewind_step} (training is at step {step}): "
                    "with steps_per_execution > 1, make rewind_step a multiple of it."
                )
            self.take_snapshot()

    def on_train_begin(self, logs=None):
        # A rewind point means IMP by hand: the caller prunes between rounds (`prune`), so a round
        # trained without UpdateMasks is meant to be (the round 0 of it dense).
        wrappers.manage_masks(self.model)
        self._maybe_snapshot()

    def on_train_batch_begin(self, batch, logs=None):
        if self.snapshot is None:
            self._maybe_snapshot()

    def on_train_end(self, logs=None):
        if self.snapshot is None and self.rewind_step > 0 and optimizer_step(self.model) == self.rewind_step:
            self.take_snapshot()

    def rewind(self, model=None, reset_optimizer_state=True):
        """Sets surviving weights to the snapshot, pruned ones to 0, and resets the optimizer.

        Raises:
          RuntimeError: no snapshot yet (training has not reached `rewind_step`).
        """
        model = model or self.model
        if self.snapshot is None:
            raise RuntimeError(
                f"No snapshot to rewind to: training has not reached rewind_step={self.rewind_step} yet."
            )
        variables = self.rewindable_variables(model)
        if len(variables) != len(self.snapshot):
            raise ValueError("The snapshot was taken on a different model: its variables do not match.")
        mask_of = {id(weight): mask for _, _, weight, mask in wrappers.pruning_entries(model)}
        for variable, value in zip(variables, self.snapshot):
            if tuple(variable.shape) != value.shape:
                raise ValueError(f"Snapshot shape {value.shape} does not match variable {variable.name}.")
            if id(variable) in mask_of:
                value = value * mask_of[id(variable)].numpy()
            variable.assign(value)
        if reset_optimizer_state:
            reset_optimizer(getattr(model, "optimizer", None))

    def state(self):
        """The snapshot as a dict for saving (`np.savez`)."""
        return {f"{index:04d}": value for index, value in enumerate(self.snapshot)}

    def load_state(self, arrays):
        """Restores a snapshot saved with `state()`."""
        self.snapshot = [np.asarray(arrays[key]) for key in sorted(arrays)]

    def backup_state(self):
        """The snapshot once taken (else nothing), for a mid-round backup."""
        return self.state() if self.snapshot is not None else {}

    def restore_backup_state(self, arrays):
        """Restores what `backup_state` returned: no snapshot yet if it is empty."""
        self.snapshot = None
        if arrays:
            self.load_state(arrays)
