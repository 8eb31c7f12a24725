"""CIFAR's standard augmentation, stateless: pad 4, random crop back to size, random horizontal flip.

OpenLTH (and the ResNet paper before it) trains CIFAR networks on images padded with 4
pixels of zeros on every side, cropped back to 32x32 at a uniformly random offset, and
flipped left-right with probability 1/2 (torchvision's `RandomCrop(32, padding=4)`, whose
default padding is constant 0, and `RandomHorizontalFlip()`). Here the randomness comes
from stateless ops keyed on a seed per example, derived from (run seed, position of the
example in the training stream), so a stream resumed at any position augments every
example as the uninterrupted one did, in any process:

    image = augment.pad_crop_flip(image, augment.example_seed(seed, position))

Padding happens before normalization, as in torchvision (the pad is black, 0 in [0, 1]).
"""

from keras_lottery import compat  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)

import tensorflow as tf  # noqa: E402

PADDING = 4
AUGMENTED_BY_DEFAULT = ("cifar10", "cifar100")  # as OpenLTH: augmentation on for CIFAR, off elsewhere
RNG_ALGORITHM = "philox"  # named, not "auto_select": the same numbers on every device and TF build
_AUGMENT_SALT = 0xA06  # keeps augmentation keys apart from other keys made from the same run seed


def default_augment(name):
    """Whether dataset `name` is augmented when the caller does not say (augment=None)."""
    return name in AUGMENTED_BY_DEFAULT


def resolve_augment(augment, name):
    """`augment` as a bool: None means the dataset's default (`default_augment`).

    Raises:
      ValueError: `augment` is neither None nor a bool.
    """
    if augment is None:
        return default_augment(name)
    if not isinstance(augment, bool):
        raise ValueError(f"augment must be True, False or None (the dataset's default); got {augment!r}.")
    return augment


def example_seed(seed, position):
    """The stateless seed (shape [2], int64) of the example at `position` of the stream of run `seed`.

    Args:
      seed: the run's data seed (an int or int64 scalar tensor).
      position: the example's position in the training stream, counted from 0 over all
        epochs (an int64 scalar tensor).
    """
    base = tf.stack([tf.cast(seed, tf.int64), tf.constant(_AUGMENT_SALT, tf.int64)])
    return tf.random.experimental.stateless_fold_in(base, tf.cast(position, tf.int64), alg=RNG_ALGORITHM)


def pad_crop_flip(image, seed, padding=PADDING):
    """Pads `image` with `padding` zeros per side, crops it back at a random offset, flips it at random.

    The crop offset is uniform over the (2 * padding + 1)^2 positions and the flip has
    probability 1/2, both decided by `seed` alone: the same seed gives the same image.

    Args:
      image: a (H, W, C) float tensor (any H, W, C: 32x32x3 CIFAR, 28x28x1 MNIST).
      seed: a stateless seed, shape [2] int32/int64 (see `example_seed`).
      padding: pixels of zeros added on each side before cropping.

    Returns:
      The augmented image, (H, W, C), the dtype of `image`.
    """
    image = tf.convert_to_tensor(image)
    height, width = tf.unstack(tf.shape(image, out_type=tf.int64)[:2])
    # One draw decides all three: row offset, column offset, flip (upper bounds exclusive).
    row, column, flip = tf.unstack(tf.random.stateless_uniform(
        [3], seed=seed, minval=tf.constant(0, tf.int64), maxval=tf.constant(2**62, tf.int64), dtype=tf.int64,
        alg=RNG_ALGORITHM) % tf.constant([2 * padding + 1, 2 * padding + 1, 2], tf.int64))
    padded = tf.pad(image, [[padding, padding], [padding, padding], [0, 0]])  # zeros, as torchvision
    cropped = tf.slice(padded, tf.stack([row, column, tf.constant(0, tf.int64)]),
                       tf.stack([height, width, tf.constant(-1, tf.int64)]))
    cropped = tf.cond(flip > 0, lambda: tf.reverse(cropped, axis=[1]), lambda: cropped)
    cropped.set_shape(image.shape)
    return cropped


def positioned_batches(examples, first_position, batch_size, transform):
    """Batches of `transform(position, example)` over `examples`, whose first is at `first_position`.

    The map runs in parallel (AUTOTUNE) with a deterministic order, then batches are
    prefetched: the pipeline end that both training streams share.

    Args:
      examples: a `tf.data.Dataset`, already skipped to `first_position`.
      first_position: position in the uninterrupted stream of the first element.
      batch_size: examples per batch.
      transform: (int64 position, element) -> element, e.g. decode and augment.
    """
    positioned = tf.data.Dataset.zip(tf.data.Dataset.counter(first_position), examples)
    mapped = positioned.map(lambda position, example: transform(position, example),
                            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    return mapped.batch(batch_size).prefetch(tf.data.AUTOTUNE)
