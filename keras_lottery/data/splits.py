"""The in-memory `Splits` of a dataset and its tf.data pipelines (`to_dataset`, `Splits.train_batches`).

`datasets.load` returns `Splits`: NumPy arrays of train, validation and test. Their
training stream is tf.data's seeded shuffle of the arrays, repeated, batched across
epoch boundaries; `train_batches` adds resuming at a batch and the CIFAR augmentation of
`augment.py`. For a training set streamed from TFDS's files instead, see `streaming.py`.
"""

from keras_lottery import compat  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TF loads)

import dataclasses  # noqa: E402

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from keras_lottery.data import augment as augmentation  # noqa: E402
from keras_lottery.foundations.validation import check_int  # noqa: E402


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train, validation and test arrays of one dataset.

    Images are float32 in [0, 1] with a channel axis, (N, H, W, C); labels are int64.
    `source` says where the data came from: the IDX folder, or "tfds:<name> in <dir>";
    `file_hashes` the SHA-256 of every file read, as ((name, hex digest), ...), so that a
    run can record what it trained on and check it when it resumes; `name` the dataset
    name `load` was given (it picks the default of `train_batches(augment=None)`).
    """

    train_x: np.ndarray
    train_y: np.ndarray
    validation_x: np.ndarray
    validation_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    num_classes: int
    input_shape: tuple
    source: str
    file_hashes: tuple = ()
    name: str = ""

    @property
    def train_size(self):
        """Number of training examples."""
        return len(self.train_y)

    def train_batches(self, batch_size, seed, skip_batches=0, augment=None):
        """The endless, shuffled training stream of (images, labels) batches, from batch `skip_batches` on.

        Without augmentation it is `to_dataset(train_x, train_y, batch_size, shuffle_seed=seed,
        repeat=True).skip(skip_batches)`, batch for batch: runs that used that resume
        identically. With it, the same examples in the same order go through
        `augment.pad_crop_flip` keyed on (seed, position in the stream) before batching, so a
        resumed stream augments as the uninterrupted one did; skipped examples are not
        augmented. Images stay in [0, 1] (no normalization, unlike `StreamingSplits`).

        The order comes from tf.data's seeded shuffle, which also depends on TensorFlow's
        global seed (`keras.utils.set_random_seed`): the same seed and global seed give the
        same batches.

        Args:
          batch_size: examples per batch; batches run across epoch boundaries.
          seed: shuffle seed (and augmentation seed).
          skip_batches: batches of the uninterrupted stream to leave out at its start.
          augment: True, False, or None for the dataset's default (on for cifar10 and
            cifar100, as in OpenLTH).

        Returns:
          An infinite `tf.data.Dataset` of (float32 images, int64 labels) batches.

        Raises:
          ValueError: a bad argument.
        """
        batch_size = check_int(batch_size, "batch_size", 1)
        skip_batches = check_int(skip_batches, "skip_batches", 0)
        seed = check_int(seed, "seed", 0)
        if not augmentation.resolve_augment(augment, self.name):
            return to_dataset(self.train_x, self.train_y, batch_size, shuffle_seed=seed, repeat=True).skip(skip_batches)
        first = skip_batches * batch_size
        examples = tf.data.Dataset.from_tensor_slices((self.train_x, self.train_y))
        examples = examples.shuffle(len(self.train_x), seed=seed, reshuffle_each_iteration=True).repeat().skip(first)

        def augmented(position, example):
            image, label = example
            return augmentation.pad_crop_flip(image, augmentation.example_seed(seed, position)), label

        return augmentation.positioned_batches(examples, first, batch_size, augmented)


def to_unit_float(images):
    """uint8 images as float32 in [0, 1] (other dtypes as float32), with a channel axis."""
    images = images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
    return images[..., np.newaxis] if images.ndim == 3 else images


def to_dataset(x, y, batch_size, shuffle_seed=None, repeat=False):
    """Returns a batched, prefetched tf.data pipeline over in-memory arrays.

    Args:
      x: inputs, indexed along the first axis.
      y: labels, as many as `x`.
      batch_size: examples per batch (the last batch of a pass may be smaller).
      shuffle_seed: if not None, shuffle the whole array with this seed, anew each pass.
      repeat: repeat forever (for training by steps).

    Returns:
      A `tf.data.Dataset` of (x, y) batches.
    """
    batch_size = check_int(batch_size, "batch_size", 1)
    dataset = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    if repeat:
        dataset = dataset.repeat()
    return dataset.batch(batch_size).prefetch(tf.data.AUTOTUNE)
