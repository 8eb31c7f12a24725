"""Early-bird tickets (You et al., ICLR 2020): draw the ticket once masks stop changing.

Each epoch, `EarlyBirdCallback` computes the mask the chosen criterion would give at
each target sparsity *without applying it* (the shared `masks.compute`), keeps the
last `queue_size` masks, and measures the normalized Hamming distance between the
newest mask and each older one. The ticket is drawn when every distance is <=
`epsilon`. `EarlyBirdSchedule` makes pruning fire at the step the ticket was drawn,
so the whole flow runs inside one `model.fit`:

    detector = EarlyBirdCallback(target_sparsity=0.5)
    pruned = prune_low_magnitude(model, pruning_schedule=EarlyBirdSchedule(detector))
    pruned.fit(..., callbacks=[detector, UpdateMasks()])

A saved model keeps its schedule's drawn step, not the detector (see `EarlyBirdSchedule`;
`attach_detector` gives a loaded model a new one).

Criteria: `'magnitude'` (unstructured |w| per kernel, layerwise or global),
`'bn_gamma'` (channels, one global threshold on |BatchNorm gamma|, as the paper) and
`'l1'` (channels: L1 norm of each Conv2D filter / Dense unit, for models without
BatchNorm; the output layer's units, the classes, are never removed), and the
unstructured sign-flip criteria `'sign_flip'` / `'hybrid'` (the model must be wrapped
with `prune_low_sign_flip`; scores as in `criteria.py`). Channel masks name the units a
ticket removes (`removed_units`), which is what neuron fusion needs.
"""

import collections

import numpy as np
import tensorflow as tf

from keras_lottery import compat
from keras_lottery.foundations.validation import check_int
from keras_lottery.sparsity import masks as masks_lib
from keras_lottery.sparsity import pruning
from keras_lottery.sparsity import schedules
from keras_lottery.sparsity import wrappers

keras = compat.keras

CRITERIA = ("magnitude", "bn_gamma", "l1", "sign_flip", "hybrid")
CHANNEL_CRITERIA = ("bn_gamma", "l1")


def mask_distance(first, second):
    """Normalized Hamming distance between two mask dicts: differing entries / all entries.

    Raises:
      ValueError: the dicts name different layers or shapes.
    """
    if list(first) != list(second):
        raise ValueError(f"masks name different layers: {list(first)} vs {list(second)}.")
    differing = total = 0
    for name in first:
        a, b = np.asarray(first[name]), np.asarray(second[name])
        if a.shape != b.shape:
            raise ValueError(f"mask {name!r} has shapes {a.shape} and {b.shape}.")
        differing += int(np.count_nonzero((a > 0.5) != (b > 0.5)))
        total += a.size
    return differing / total if total else 0.0


class MaskQueue:
    """The last `queue_size` masks and the early-bird test on them."""

    def __init__(self, queue_size=5, epsilon=0.1):
        """Args:
          queue_size: masks kept (>= 2).
          epsilon: the largest distance that counts as "not changing", in (0, 1).

        Raises:
          ValueError: queue_size < 2 or epsilon outside (0, 1).
        """
        check_int(queue_size, "queue_size", 2)
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not 0 < epsilon < 1:
            raise ValueError(f"epsilon must be in (0, 1) (e.g. 0.1); got {epsilon!r}.")
        self.queue_size, self.epsilon = int(queue_size), float(epsilon)
        self.masks = collections.deque(maxlen=self.queue_size)

    def push(self, masks):
        """Adds the newest masks; returns its distances to every older mask in the queue."""
        self.masks.append(masks)
        return [mask_distance(masks, older) for older in list(self.masks)[:-1]]

    def stable(self, distances):
        """True when the queue is full and every distance is <= epsilon."""
        return len(self.masks) == self.queue_size and max(distances) <= self.epsilon


def _kernel_layers(model):
    """(name, layer, kernel variable, mask variable or None) for Dense/Conv layers."""
    entries = {name: (wrapper.layer, weight, mask) for name, wrapper, weight, mask in wrappers.pruning_entries(model)}
    found = []
    for layer in model.layers:
        inner = getattr(layer, "layer", layer)
        if inner.name in entries:
            found.append((inner.name, *entries[inner.name]))
        elif isinstance(inner, (keras.layers.Dense, keras.layers.Conv2D)):
            found.append((inner.name, inner, inner.kernel, None))
    return found


def criterion_scores(model, criterion, layers=None):
    """Scores per weight ('magnitude', 'sign_flip', 'hybrid') or per unit ('bn_gamma', 'l1'), by layer name.

    Args:
      model: the model being trained.
      criterion: one of CRITERIA.
      layers: optional names of the layers to score (BatchNormalization layers for
        'bn_gamma', Dense/Conv2D layers otherwise); None: every layer the criterion scores.

    Raises:
      ValueError: unknown criterion, 'bn_gamma' on a model without BatchNorm, a
        sign-flip criterion on a model not wrapped with `prune_low_sign_flip`, or
        `layers` naming a layer the criterion does not score.
    """
    scores = _all_scores(model, criterion)
    if layers is None:
        return scores
    layers = list(layers)
    unknown = [name for name in layers if name not in scores]
    if unknown or not layers:
        raise ValueError(f"layers={layers} must name layers that criterion={criterion!r} scores: "
                         f"{'none given' if not layers else f'{unknown} are not among them'}; it scores "
                         f"{list(scores)}.")
    return {name: scores[name] for name in layers}


def _all_scores(model, criterion):
    if criterion not in CRITERIA:
        raise ValueError(f"unknown early-bird criterion {criterion!r}; choose one of {CRITERIA}.")
    if criterion in ("sign_flip", "hybrid"):
        return pruning.scores(model, criterion)
    if criterion == "bn_gamma":
        layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
        if not layers:
            raise ValueError(
                "criterion='bn_gamma' needs BatchNormalization layers, and the model has none: "
                "use criterion='l1' (L1 norm of filters / units) instead."
            )
        return {layer.name: np.abs(layer.gamma.numpy()) for layer in layers}
    scores = {}
    layers = _kernel_layers(model)
    if criterion == "l1":
        layers = layers[:-1]  # the output layer's units are the classes: never removed
    for name, _, kernel, mask in layers:
        value = kernel.numpy() * (1.0 if mask is None else mask.numpy())
        if criterion == "magnitude":
            scores[name] = np.abs(value)
        else:  # l1: one score per output unit (the kernel's last axis)
            scores[name] = np.abs(value).reshape(-1, value.shape[-1]).sum(axis=0)
    return scores


def add_gamma_l1_penalty(model, strength=1e-4):
    """Adds `strength * sum |gamma|` of every BatchNorm layer to the model's loss.

    The paper's search phase uses this sparsity penalty (1e-4). Returns the
    `tf.Variable` holding the strength: assign 0 to switch the penalty off after the
    search without rebuilding the model.

    Raises:
      ValueError: the model has no BatchNormalization layer, or strength < 0.
    """
    if not strength >= 0:
        raise ValueError(f"strength must be >= 0; got {strength!r}.")
    layers = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not layers:
        raise ValueError("add_gamma_l1_penalty needs BatchNormalization layers; the model has none.")
    variable = tf.Variable(float(strength), trainable=False, name="gamma_l1_strength")
    for layer in layers:
        layer.add_loss(lambda layer=layer: variable * tf.reduce_sum(tf.abs(layer.gamma)))
    return variable


class EarlyBirdCallback(keras.callbacks.Callback):
    """Detects early-bird tickets during training; see the module docstring.

    Attributes:
      distances: dict sparsity -> list (one per check) of the max distance to the
        older masks in the queue (None until the queue has two masks).
      drawn_epoch: dict sparsity -> epochs completed when the ticket was drawn.
      drawn_step: dict sparsity -> optimizer iteration when it was drawn.
      drawn_masks: dict sparsity -> the masks of the drawn ticket.
    """

    def __init__(self, target_sparsity=0.5, criterion="magnitude", strategy="layerwise", epsilon=0.1,
                 queue_size=5, stop_training=False, layers=None):
        """Args:
          target_sparsity: one sparsity or a list (the paper runs 0.3, 0.5, 0.7 together).
          criterion: 'magnitude', 'bn_gamma', 'l1', 'sign_flip' or 'hybrid'.
          strategy: 'layerwise' or 'global' ('bn_gamma' is always global, as the paper).
          epsilon: distance threshold, in (0, 1).
          queue_size: masks compared, >= 2.
          stop_training: stop `fit` once every target sparsity has its ticket (the
            search phase ends, like EarlyStopping).
          layers: optional names of the layers whose weights or units the masks
            cover (`criterion_scores`); None: all the criterion scores. For a channel
            ticket of a network whose some units cannot go (a ResNet's convolutions
            that feed an Add), `fusion.removable_unit_layers` gives the names.

        Raises:
          ValueError: any argument out of range, before training starts.
        """
        super().__init__()
        sparsities = target_sparsity if isinstance(target_sparsity, (list, tuple)) else [target_sparsity]
        if not sparsities:
            raise ValueError("target_sparsity must name at least one sparsity.")
        for value in sparsities:
            masks_lib.check_sparsity(value, "target_sparsity")
        if criterion not in CRITERIA:
            raise ValueError(f"unknown early-bird criterion {criterion!r}; choose one of {CRITERIA}.")
        masks_lib.check_strategy(strategy)
        MaskQueue(queue_size, epsilon)  # validates
        self.sparsities = [float(value) for value in sparsities]
        self.criterion = criterion
        self.layers = None if layers is None else list(layers)
        self.strategy = "global" if criterion == "bn_gamma" else strategy
        self.epsilon, self.queue_size, self.stop_training = float(epsilon), int(queue_size), stop_training
        self.queues = {s: MaskQueue(queue_size, epsilon) for s in self.sparsities}
        self.distances = {s: [] for s in self.sparsities}
        self.drawn_epoch, self.drawn_masks = {}, {}
        # The drawn step lives in a variable (-1 until drawn) so that EarlyBirdSchedule
        # can read it inside a traced graph too.
        self.drawn_step_variables = {s: tf.Variable(-1, dtype=tf.int64, trainable=False) for s in self.sparsities}

    @property
    def drawn_step(self):
        """dict sparsity -> optimizer iteration at which its ticket was drawn."""
        return {s: int(v.numpy()) for s, v in self.drawn_step_variables.items() if v.numpy() >= 0}

    def on_train_begin(self, logs=None):
        criterion_scores(self.model, self.criterion, self.layers)  # fails now if the criterion cannot apply

    def compute_masks(self, sparsity):
        """The masks the criterion gives now at `sparsity`, not applied to the model."""
        return masks_lib.compute(criterion_scores(self.model, self.criterion, self.layers), sparsity, self.strategy)

    def on_epoch_end(self, epoch, logs=None):
        step = int(self.model.optimizer.iterations.numpy()) if getattr(self.model, "optimizer", None) else 0
        for sparsity in self.sparsities:
            masks = self.compute_masks(sparsity)
            distances = self.queues[sparsity].push(masks)
            self.distances[sparsity].append(max(distances) if distances else None)
            if logs is not None and distances:
                logs[f"early_bird_distance_{sparsity:g}"] = max(distances)
            if sparsity not in self.drawn_epoch and distances and self.queues[sparsity].stable(distances):
                self.drawn_epoch[sparsity] = epoch + 1
                self.drawn_masks[sparsity] = masks
                self.drawn_step_variables[sparsity].assign(step)
        if self.stop_training and len(self.drawn_epoch) == len(self.sparsities):
            self.model.stop_training = True

    def removed_units(self, sparsity):
        """dict layer name -> sorted indices of the units the drawn channel ticket removes.

        Raises:
          ValueError: the criterion is unstructured, or no ticket was drawn at `sparsity`.
        """
        if self.criterion not in CHANNEL_CRITERIA:
            raise ValueError("removed_units needs a channel criterion ('bn_gamma' or 'l1').")
        if sparsity not in self.drawn_masks:
            raise ValueError(f"no early-bird ticket drawn at sparsity {sparsity} yet.")
        return {name: np.flatnonzero(mask < 0.5).tolist() for name, mask in self.drawn_masks[sparsity].items()}


@keras.utils.register_keras_serializable(package="keras_lottery")
class EarlyBirdSchedule(schedules.PruningSchedule):
    """Prunes once, at the step its `EarlyBirdCallback` drew the ticket.

    Use with `UpdateMasks`, which checks it at each epoch start: the ticket is drawn
    at an epoch end, so pruning happens before the next epoch's first step.

    Saving and loading (H5, `.keras`, SavedModel): the detector is a callback, not part
    of the model, so the saved config holds what the schedule knows at save time,
    `{"target_sparsity": s, "drawn_step": step or None}`, and the loaded schedule has
    no detector (`detector is None`):

    * With a drawn step, it fires at that step, as the original would have: a model
      saved between the draw and the prune prunes when training resumes, one saved
      after the prune does not prune again. SavedModel drops the optimizer state, so
      the step count restarts at 0 and the schedule fires again when it reaches the
      drawn step; the masks only shrink, so re-pruning at the same sparsity keeps them.
    * Without one (saved before the draw), it refuses to run under `UpdateMasks`
      (RuntimeError) until a new detector is attached with
      `attach_detector(model, detector)`; the search then starts over, since the
      detector's queue of masks is not saved.
    """

    def __init__(self, detector=None, target_sparsity=None, drawn_step=None):
        """Args:
          detector: the `EarlyBirdCallback` of the same fit; None only for a schedule
            rebuilt from a saved config (then `target_sparsity` is required).
          target_sparsity: which of the detector's sparsities (default: its first).
          drawn_step: without a detector, the step the ticket was drawn at (None: not
            drawn yet, a detector must be attached before pruning).

        Raises:
          TypeError: `detector` is not an `EarlyBirdCallback`.
          ValueError: a sparsity the detector does not watch, no detector and no
            sparsity, a negative `drawn_step`, or a `drawn_step` next to a detector
            (the detector's own draw decides).
        """
        self.detector = None
        self.recorded_step = None  # the drawn step of a schedule without a detector
        if detector is None:
            if target_sparsity is None:
                raise ValueError("an EarlyBirdSchedule without a detector needs its target_sparsity.")
            masks_lib.check_sparsity(target_sparsity, "target_sparsity")
            self.target_sparsity = float(target_sparsity)
            if drawn_step is not None:
                self.recorded_step = check_int(drawn_step, "drawn_step")
            return
        if drawn_step is not None:
            raise ValueError("drawn_step is for a schedule without a detector; the detector's draw decides.")
        target_sparsity = detector.sparsities[0] if target_sparsity is None else target_sparsity
        self.target_sparsity = float(target_sparsity)
        self.attach(detector)

    def attach(self, detector):
        """Makes the schedule follow `detector`'s draw from now on (any recorded step is dropped).

        Raises:
          TypeError: `detector` is not an `EarlyBirdCallback`.
          ValueError: the detector does not watch this schedule's sparsity.
        """
        if not isinstance(detector, EarlyBirdCallback):
            raise TypeError(f"detector must be an EarlyBirdCallback; got {type(detector).__name__}.")
        if self.target_sparsity not in detector.sparsities:
            raise ValueError(f"the detector watches sparsities {detector.sparsities}, not {self.target_sparsity}.")
        self.detector, self.recorded_step = detector, None

    @property
    def drawn_step(self):
        """The step the ticket was drawn at, or None if not drawn (yet)."""
        if self.detector is None:
            return self.recorded_step
        return self.detector.drawn_step.get(self.target_sparsity)

    def _check_can_fire(self):
        if self.detector is None and self.recorded_step is None:
            raise RuntimeError(
                f"This EarlyBirdSchedule (target_sparsity={self.target_sparsity}) was loaded from a model saved "
                "before its ticket was drawn, and has no EarlyBirdCallback to draw it: create one and attach it with "
                "keras_lottery.early_bird.attach_detector(model, detector), then pass it to fit with UpdateMasks."
            )

    def __call__(self, step):
        self._check_can_fire()
        if self.detector is None:
            drawn = tf.constant(self.recorded_step, tf.int64)
        else:
            drawn = self.detector.drawn_step_variables[self.target_sparsity]
        fire = tf.logical_and(drawn >= 0, tf.equal(tf.cast(step, tf.int64), drawn))
        return fire, tf.constant(self.target_sparsity, tf.float32)

    def exact_sparsity(self, step):
        del step
        return self.target_sparsity

    def next_prune_step(self, step):
        self._check_can_fire()
        drawn = self.drawn_step
        return drawn if drawn is not None and drawn >= step else None

    def get_config(self):
        return {"class_name": self.__class__.__name__,
                "config": {"target_sparsity": self.target_sparsity, "drawn_step": self.drawn_step}}


def attach_detector(model, detector):
    """Attaches `detector` to every `EarlyBirdSchedule` of `model` (e.g. after loading it).

    Returns:
      The number of schedules attached.

    Raises:
      ValueError: the model has no EarlyBirdSchedule, or the detector does not watch
        one of their sparsities.
    """
    found = [wrapper.pruning_schedule for wrapper in wrappers.prunable_wrappers(model)
             if isinstance(wrapper.pruning_schedule, EarlyBirdSchedule)]
    if not found:
        raise ValueError("the model's pruning wrappers have no EarlyBirdSchedule to attach a detector to.")
    for schedule in found:
        schedule.attach(detector)
    return len(found)
